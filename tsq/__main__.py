"""`python -m tsq`: the same as the `tsq` command."""

from tsq.cli import main

raise SystemExit(main())

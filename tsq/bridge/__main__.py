"""`python -m tsq.bridge PORT... --server HOST[:PORT]...`: the same as `tsq bridge`."""

from tsq.bridge.cli import main

raise SystemExit(main())

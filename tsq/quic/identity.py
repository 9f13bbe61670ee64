"""The server's persistent identity: one key and self-signed certificate, made once, reused.

A TSQ server without `--cert/--key` keeps `key.pem` and `cert.pem` in its state directory
($STATE_DIRECTORY under systemd's StateDirectory=, else /var/lib/tsq, else
~/.local/state/tsq), so its SPKI pin — what gateways configure with `--pin` — survives restarts.
The key is written 0600 and atomically (temporary file, fsync, rename), so a crash never leaves a
half-written key that would change the pin. `tsq pin` prints the pin of a certificate file or of a
live server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

from tsq.atomicfile import write_atomic
from tsq.quic.trust import generate_self_signed, spki_pin_pem

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALID_DAYS = 3650   # the pin, not the expiry, is what clients check for a self-signed identity


class IdentityError(OSError):
    """The state directory cannot hold the identity; the message says which path and why."""


def default_state_dir() -> Path:
    """$STATE_DIRECTORY (first entry), else /var/lib/tsq when usable, else ~/.local/state/tsq."""
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    system = Path("/var/lib/tsq")
    if (system.is_dir() and os.access(system, os.W_OK)) or os.access(system.parent, os.W_OK):
        return system
    return Path.home() / ".local" / "state" / "tsq"


def load_or_create(state_dir: Optional[Path] = None, names: Sequence[str] = ("localhost",)
                   ) -> Tuple[bytes, bytes, str, bool]:
    """(cert PEM, key PEM, pin, created now) of the identity in `state_dir`."""
    directory = state_dir or default_state_dir()
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    try:
        if cert_path.is_file() and key_path.is_file():
            cert, key = cert_path.read_bytes(), key_path.read_bytes()
            return cert, key, spki_pin_pem(cert), False
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert, key = generate_self_signed(list(names), days=VALID_DAYS)
        write_atomic(str(key_path), key, 0o600)
        write_atomic(str(cert_path), cert, 0o644)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise IdentityError(f"server identity in {directory}: {reason}") from None
    return cert, key, spki_pin_pem(cert), True

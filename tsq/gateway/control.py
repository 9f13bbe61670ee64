"""The control socket of `tsq sync` (and of the bridge, which embeds the runner).

Protocol (docs/internals.md): a client connects to the Unix stream socket, sends one line
`status\\n`, and reads one JSON object followed by EOF. Anything else gets `{"version": 1, "error": ...}`.
The server side is asyncio (it lives in the daemon's loop); the client side is blocking (it is what
`tsq status` runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from typing import Any, Callable, Dict, Optional

PROTOCOL_VERSION = 1
MAX_RESPONSE_BYTES = 16 << 20   # a status with thousands of sources stays far below this
_REQUEST_TIMEOUT_S = 5.0

StatusFn = Callable[[], Dict[str, Any]]


class ControlError(Exception):
    """The control socket cannot be served or queried; the message says why, for a human."""


def default_control_path() -> str:
    """`/run/tsq/control.sock` when /run is writable, else `$XDG_RUNTIME_DIR/tsq/control.sock`,
    else `/tmp/tsq-$UID/control.sock`."""
    if os.access("/run", os.W_OK):
        return "/run/tsq/control.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "tsq", "control.sock")
    return f"/tmp/tsq-{os.getuid()}/control.sock"


def _socket_alive(path: str) -> bool:
    """Whether something accepts connections on the Unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def _prepare_path(path: str) -> None:
    """Create the socket's directory and remove a stale socket; refuse to take over a live one."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlError(f"control socket path {path} exists and is not a socket")
    if _socket_alive(path):
        raise ControlError(f"another daemon is already serving the control socket {path}")
    os.unlink(path)


class ControlServer:
    """Serves `status` on a Unix socket from the running asyncio loop."""

    def __init__(self, path: str, status: StatusFn) -> None:
        self.path = path
        self._status = status
        self._server: Optional[asyncio.AbstractServer] = None
        self._inode: Optional[int] = None

    async def start(self) -> None:
        """Bind and listen. Raises ControlError (path in use, not creatable)."""
        try:
            _prepare_path(self.path)
            self._server = await asyncio.start_unix_server(self._handle, self.path)
            self._inode = os.stat(self.path).st_ino
        except OSError as exc:
            raise ControlError(f"cannot serve the control socket {self.path}: {exc}") from exc

    async def close(self) -> None:
        """Stop serving and remove the socket file (only if it is still ours)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def serve_forever(self) -> None:
        """start(), then serve until cancelled; the socket file is removed on the way out."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    def response(self, line: bytes) -> Dict[str, Any]:
        """The JSON object answering one request line (never raises)."""
        command = line.strip().decode("ascii", "replace")
        if command != "status":
            return {"version": PROTOCOL_VERSION, "error": f"unknown command {command[:40]!r}"}
        try:
            return self._status()
        except Exception as exc:  # a bug in a status provider must not kill the daemon
            return {"version": PROTOCOL_VERSION, "error": f"status failed: {exc!r}"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), _REQUEST_TIMEOUT_S)
            writer.write(json.dumps(self.response(line), allow_nan=False, default=str).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, OSError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def query_status(path: Optional[str] = None, timeout_s: float = 3.0) -> Dict[str, Any]:
    """Ask the daemon on `path` (default: default_control_path()) for its status.

    Raises ControlError with a message naming the path when no daemon answers.
    """
    path = path or default_control_path()
    data = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no tsq daemon is running (nothing listens on {path}); "
                               "start `tsq sync` or give --control PATH") from None
        except OSError as exc:
            reason = exc.strerror or exc
            raise ControlError(f"cannot connect to the control socket {path}: {reason}") from None
        try:
            s.sendall(b"status\n")
            while len(data) <= MAX_RESPONSE_BYTES:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            raise ControlError(f"the daemon on {path} did not answer within {timeout_s:g} s") from None
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    try:
        obj = json.loads(bytes(data))
    except ValueError:
        raise ControlError(f"the daemon on {path} sent something that is not JSON") from None
    if not isinstance(obj, dict):
        raise ControlError(f"the daemon on {path} sent JSON that is not an object")
    if "error" in obj:
        raise ControlError(f"the daemon on {path} says: {obj['error']}")
    return obj

"""The control socket of `tsq sync` (and of the bridge, which embeds the runner).

Protocol (docs/internals.md): a client connects to the Unix stream socket, sends one line
`status\\n`, and reads one JSON object followed by EOF. Anything else gets `{"version": 1, "error": ...}`.
The server side is asyncio (it lives in the daemon's loop); the client side is blocking (it is what
`tsq status` runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import socket
import stat
from typing import Any, Callable, Dict, List, Optional

PROTOCOL_VERSION = 1
MAX_RESPONSE_BYTES = 16 << 20   # a status with thousands of sources stays far below this
_REQUEST_TIMEOUT_S = 5.0

StatusFn = Callable[[], Dict[str, Any]]


class ControlError(Exception):
    """The control socket cannot be served or queried; the message says why, for a human."""


SERVICE_NAME = "tsq"          # the service user and the group whose members may read the status
SYSTEM_PATH = "/run/tsq/control.sock"
SOCKET_MODE = 0o660


def candidate_paths() -> List[str]:
    """Where a control socket may be, in the order daemons choose and clients look."""
    out = [SYSTEM_PATH]
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        out.append(os.path.join(xdg, "tsq", "control.sock"))
    out.append(f"/tmp/tsq-{os.getuid()}/control.sock")
    return out


def default_control_path() -> str:
    """The path a daemon serves by default: /run/tsq/control.sock when /run/tsq exists or can be
    made, else the first per-user fallback."""
    for path in candidate_paths():
        directory = os.path.dirname(path)
        if os.path.isdir(directory) and os.access(directory, os.W_OK):
            return path
        parent = os.path.dirname(directory)
        if not os.path.exists(directory) and os.access(parent, os.W_OK):
            return path
    return candidate_paths()[-1]


def client_control_path() -> str:
    """The socket a client talks to by default: the first candidate that exists."""
    for path in candidate_paths():
        if os.path.exists(path):
            return path
    return SYSTEM_PATH


def _service_uid() -> Optional[int]:
    try:
        return pwd.getpwnam(SERVICE_NAME).pw_uid
    except KeyError:
        return None


def _service_gid() -> Optional[int]:
    try:
        return grp.getgrnam(SERVICE_NAME).gr_gid
    except KeyError:
        return None


def check_directory(directory: str) -> None:
    """Raise ControlError unless `directory` may hold a control socket this process can trust."""
    try:
        st = os.lstat(directory)
    except OSError as exc:
        raise ControlError(f"control socket directory {directory}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ControlError(f"refusing control socket directory {directory}: not a plain directory")
    trusted = {0, os.geteuid()}
    service = _service_uid()
    if service is not None:
        trusted.add(service)
    if st.st_uid not in trusted:
        raise ControlError(f"refusing control socket directory {directory}: owned by uid {st.st_uid}, "
                           f"not by root, the {SERVICE_NAME!r} user or you (someone else could "
                           "replace the socket)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ControlError(f"refusing control socket directory {directory}: writable by others "
                           f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod go-w it")


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
    """Create (or check) the socket's directory and remove a stale socket; refuse to take over a
    live one, or to use a directory someone else controls."""
    directory = os.path.dirname(path) or "."
    if not os.path.exists(directory):
        old = os.umask(0o022)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
        finally:
            os.umask(old)
    check_directory(directory)
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
            old = os.umask(0o177)   # never briefly world-connectable, whatever the caller's umask
            try:
                self._server = await asyncio.start_unix_server(self._handle, self.path)
            finally:
                os.umask(old)
            gid = _service_gid()
            if gid is not None:
                with contextlib.suppress(OSError):  # only root or a member may chgrp: then keep ours
                    os.chown(self.path, -1, gid)
            os.chmod(self.path, SOCKET_MODE)
            self._inode = os.stat(self.path).st_ino
        except OSError as exc:
            raise ControlError(f"cannot serve the control socket {self.path}: {exc.strerror or exc}") from exc

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
    path = path or client_control_path()
    directory = os.path.dirname(path) or "."
    if not os.path.exists(directory):
        raise ControlError(f"no tsq daemon is running (nothing listens on {path}); "
                           "start `tsq gateway` / `tsq sync` or give --control PATH")
    check_directory(directory)
    data = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no tsq daemon is running (nothing listens on {path}); "
                               "start `tsq gateway` / `tsq sync` or give --control PATH") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path}: the status is readable by root and the "
                               f"{SERVICE_NAME!r} group (sudo usermod -aG {SERVICE_NAME} $USER)") from None
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

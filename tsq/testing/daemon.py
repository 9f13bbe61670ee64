"""Real `tsq server` and `tsq sync` processes on loopback, for the daemon tests and benchmarks.

    pki = make_pki(tmp)
    with ServerProcess(pki) as a, ServerProcess(pki, clock_offset=0.1) as liar:
        with SyncProcess([a.address, liar.address], ca=pki.ca_cert, workdir=tmp) as sync:
            st = sync.wait_status(lambda s: s["state"] == "synchronised", timeout=20)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

from tsq.gateway.control import ControlError, query_status
from tsq.testing.certs import TestPki
from tsq.testing.relay import Impairment

_LISTENING = re.compile(r"listening on (\S+):(\d+) ")
_RELAY = re.compile(r"^relay (\S+):(\d+) -> ")
_PIN = re.compile(r"pin (sha256/\S+)")
_P = TypeVar("_P", bound="_Proc")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago (for servers that must come back on the same port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def subprocess_env() -> Dict[str, str]:
    """os.environ with this tree first on PYTHONPATH (so `python -m tsq` runs this checkout)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else ""), "PYTHONUNBUFFERED": "1"}


class _Proc:
    """A subprocess whose combined output is collected by a thread (never blocks on a full pipe)."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=subprocess_env(), start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first output line matching `pattern`; RuntimeError on exit or timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    m = pattern.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise RuntimeError(f"{self.args[3:5]}: no line matching {pattern.pattern!r}:\n"
                                       + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def _listen_on(self, pattern: re.Pattern[str], timeout: float) -> None:
        """Wait for the line announcing the listening port (group 2 of `pattern`) and keep it as
        `port` and `address`; stop the process when it never comes."""
        try:
            m = self.wait_line(pattern, timeout)
        except RuntimeError:
            self.stop()
            raise
        self.port = int(m.group(2))
        self.address = f"127.0.0.1:{self.port}"

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait; SIGKILL when it does not end. Returns the exit status."""
        self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout)
        self._reader.join(timeout)
        return rc


class ServerProcess(_Proc):
    """`tsq server` on 127.0.0.1 with the test PKI's certificate; `clock_offset` makes it lie."""

    pin = ""

    def __init__(self, pki: TestPki, port: int = 0, clock_offset: float = 0.0,
                 extra: Sequence[str] = (), timeout: float = 20.0) -> None:
        super().__init__([sys.executable, "-m", "tsq", "server", "--listen", f"127.0.0.1:{port}",
                          "--cert", pki.server_cert, "--key", pki.server_key,
                          "--clock-offset", repr(clock_offset), "--stats-interval", "0", *extra])
        self._listen_on(_LISTENING, timeout)

    @classmethod
    def without_certificate(cls, state_dir: str, timeout: float = 20.0) -> ServerProcess:
        """`tsq server --state-dir DIR` (its own self-signed identity); `pin` is what it printed."""
        proc = cls.__new__(cls)
        _Proc.__init__(proc, [sys.executable, "-m", "tsq", "server", "--listen", "127.0.0.1:0",
                              "--state-dir", state_dir, "--stats-interval", "0"])
        proc.pin = proc.wait_line(_PIN, timeout).group(1)
        proc._listen_on(_LISTENING, timeout)
        return proc

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing its connections."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class PeerProcess(_Proc):
    """A deployed-implementation-like server (tsq.testing.peers) on 127.0.0.1 with the test PKI."""

    def __init__(self, pki: TestPki, kind: str = "legacy-server", hold_fin_s: float = 3.0,
                 timeout: float = 20.0) -> None:
        super().__init__([sys.executable, "-m", "tsq.testing.peers", kind, "--listen", "127.0.0.1:0",
                          "--cert", pki.server_cert, "--key", pki.server_key, "--hold-fin", repr(hold_fin_s)])
        self._listen_on(_LISTENING, timeout)


class RelayProcess(_Proc):
    """`python -m tsq.testing.relay` in its own process, so its timing never waits on the GIL of
    the process under test (a relay thread beside a busy client adds delay to its legs)."""

    def __init__(self, upstream_port: int, forward: Impairment, backward: Impairment,
                 seed: Optional[int] = None, timeout: float = 20.0, *, nat_idle_s: Optional[float] = None,
                 rebind_every_s: Optional[float] = None) -> None:
        args = [sys.executable, "-m", "tsq.testing.relay", "--upstream", f"127.0.0.1:{upstream_port}"]
        for side, imp in (("fwd", forward), ("back", backward)):
            args += [f"--{side}-delay-ms", repr(imp.delay_s * 1e3), f"--{side}-jitter-ms",
                     repr(imp.jitter_s * 1e3), f"--{side}-loss", repr(imp.loss),
                     f"--{side}-duplicate", repr(imp.duplicate), f"--{side}-reorder", repr(imp.reorder),
                     f"--{side}-burst-every-s", repr(imp.burst_every_s),
                     f"--{side}-burst-length-s", repr(imp.burst_length_s),
                     f"--{side}-burst-delay-ms", repr(imp.burst_delay_s * 1e3)]
        if nat_idle_s is not None:
            args += ["--nat-idle-s", repr(nat_idle_s)]     # NAT rebinding (tsq.testing.relay)
        if rebind_every_s is not None:
            args += ["--rebind-every-s", repr(rebind_every_s)]
        if seed is not None:
            args += ["--seed", str(seed)]
        super().__init__(args)
        self._listen_on(_RELAY, timeout)


class SyncProcess(_Proc):
    """`tsq sync` (or `command`: `gateway`) against `servers`, with its control socket and log
    directory under `workdir`."""

    def __init__(self, servers: Sequence[str], workdir: str, *, ca: Optional[str] = None,
                 extra: Sequence[str] = (), log: bool = True, timeout: float = 20.0,
                 command: str = "sync", python: Sequence[str] = ()) -> None:
        """`python`: the interpreter command (this one by default), e.g. another installation's."""
        self.control = os.path.join(workdir, "control.sock")
        self.log_dir = os.path.join(workdir, "log")
        args = [*(python or [sys.executable]), "-m", "tsq", command, "--control", self.control]
        for s in servers:
            args += ["--server", s]
        if ca:
            args += ["--ca", ca]
        if log:
            args += ["--log", self.log_dir]
        super().__init__([*args, *extra])
        try:
            self.wait_status(lambda s: True, timeout)
        except RuntimeError:
            self.stop()
            raise

    def status(self) -> Dict[str, Any]:
        return query_status(self.control, timeout_s=5.0)

    def wait_status(self, predicate: Callable[[Dict[str, Any]], bool], timeout: float,
                    interval: float = 0.2) -> Dict[str, Any]:
        """Poll `tsq status` until `predicate(status)`; RuntimeError (with the output) on timeout/exit."""
        deadline = time.monotonic() + timeout
        last: Optional[Dict[str, Any]] = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tsq sync exited with {self.proc.returncode}:\n{self.output}")
            try:
                last = self.status()
                if predicate(last):
                    return last
            except ControlError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"status condition not met in {timeout} s; "
                                   f"last status {last}\n{self.output}")
            time.sleep(interval)


class ChronyProcess:
    """chronyd from the distribution, ALWAYS with -x (it never touches the clock), in a private 0700
    directory with its own command socket: `conf_lines` are added to chrony.conf.

        with ChronyProcess([f"refclock SOCK {{dir}}/tsq.sock refid TSQ poll 0"]) as c:
            c.sources()   # `chronyc -c sources` rows

    `{dir}` in a line is replaced by the private directory. Needs root (chronyd -u root) here.
    """

    def __init__(self, conf_lines: Sequence[str], wait_for: Sequence[str] = (),
                 timeout: float = 10.0) -> None:
        if shutil.which("chronyd") is None or shutil.which("chronyc") is None:
            raise FileNotFoundError("chronyd/chronyc not installed")
        self.dir = tempfile.mkdtemp(prefix="tsq-chrony-")
        os.chmod(self.dir, 0o700)      # chronyd refuses a command socket in a directory others can enter
        self.cmdsock = os.path.join(self.dir, "chronyd.sock")
        conf = os.path.join(self.dir, "chrony.conf")
        lines = [line.replace("{dir}", self.dir) for line in conf_lines]
        lines += [f"bindcmdaddress {self.cmdsock}", f"pidfile {self.dir}/chronyd.pid"]
        if not any(line.startswith("port ") for line in lines):
            lines.append("port 0")
        with open(conf, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        args = ["chronyd", "-x", "-d", "-f", conf]
        if os.geteuid() == 0:
            args[1:1] = ["-u", "root"]  # stay root so it can use the private 0700 directory
        self._proc = _Proc(args)
        deadline = time.monotonic() + timeout
        for path in [self.cmdsock, *(p.replace("{dir}", self.dir) for p in wait_for)]:
            while not os.path.exists(path):
                if self._proc.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"chronyd did not start:\n{self._proc.output}")
                time.sleep(0.05)

    def chronyc(self, *args: str) -> List[List[str]]:
        """`chronyc -c ARGS` against this chronyd, as CSV rows."""
        r = subprocess.run(["chronyc", "-h", self.cmdsock, "-c", *args], capture_output=True, text=True,
                           timeout=10)
        return [line.split(",") for line in r.stdout.splitlines() if line]

    def sources(self) -> List[List[str]]:
        return self.chronyc("sources")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ChronyProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

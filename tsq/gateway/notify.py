"""systemd's notify protocol (sd_notify(3)), without libsystemd: READY, STATUS, WATCHDOG, RELOADING.

Active only when systemd set $NOTIFY_SOCKET (a unit with Type=notify); otherwise every call is a
no-op. The gateway says READY=1 once its model is synchronised — so `Before=time-sync.target`
orders boot after the first good time — or after `ready_timeout_s` without it (a gateway with a
dead uplink must still finish booting; `tsq waitsync` is there for what must wait). STATUS= carries
the tracking line `tsq status` prints first; WATCHDOG=1 is sent at half of $WATCHDOG_USEC from the
loop that also drives the outputs, so a hung event loop gets the service restarted. A SIGHUP reload
is bracketed by RELOADING=1 (with MONOTONIC_USEC, as Type=notify-reload wants) and READY=1.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Optional


class SystemdNotifier:
    """Sends sd_notify messages to $NOTIFY_SOCKET (nothing when it is not set)."""

    def __init__(self, environ: Optional[dict[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: Optional[str] = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]        # abstract namespace
        elif path.startswith("/"):
            self.address = path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s: Optional[float] = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 2e6        # ping at half the timeout, as sd_watchdog_enabled
        self.ready_sent = False
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of `KEY=value` lines; False (and counted) when it could not be sent."""
        if self.address is None:
            return False
        payload = "\n".join(f.replace("\n", "; ") for f in fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(payload, self.address)
        except OSError:
            self.failures += 1
            return False
        return True

    def ready(self, status: str) -> None:
        if not self.ready_sent:
            self.ready_sent = self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        if self.watchdog_s is not None:
            self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """RELOADING=1 (sd_notify(3)): systemd then holds `systemctl reload` until READY=1, which
        `reloaded()` sends. Only once ready: before that nothing waits, and READY=1 must still mean
        "synchronised or timed out", not "reloaded". True when a reload was announced."""
        if not self.ready_sent:
            return False
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={now_us}")

    def reloaded(self, status: str) -> None:
        """The reload is done (READY=1 again after RELOADING=1: without it `systemctl reload` hangs
        until its timeout, as a real systemd showed), with a STATUS= line."""
        if self.ready_sent:
            self.send("READY=1", f"STATUS={status}")
        else:
            self.status(status)

    def stopping(self) -> None:
        self.send("STOPPING=1")

"""Discipline the system clock (CLOCK_REALTIME) from the model: the policy and the adjtimex edge.

Policy (sans-IO, `decide`), after chrony's `makestep` and `maxchange`:
- |offset| beyond `panic` (when non-zero): refuse, touch nothing, say so loudly;
- else within the first `makestep_limit` updates and |offset| beyond `makestep`: step;
- else: slew (the kernel's adjtime-style single-shot slew, at most 500 ppm).
`offset` is the system clock minus the model's UTC (`system_offset_ns` of the status), so the
correction applied is its negative.

Executor (`SystemClockAdjuster`): only with `--adjust-system`. With `dry_run` it never makes a
syscall that writes; it returns the description of what it would do. Without CAP_SYS_TIME it refuses
at construction with a clear message. Frequency: the kernel's frequency correction is set to the
model's UTC-vs-raw frequency, since CLOCK_MONOTONIC_RAW is the bare oscillator and CLOCK_REALTIME is
that oscillator times (1 + kernel frequency).

`struct timex` and the adjtimex symbol (and their ABI notes) are tsq.clock's (tsq/_kerneltime.py).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Optional

from tsq.clock import Timex, adjtimex_function

CAP_SYS_TIME = 25

# <sys/timex.h>
ADJ_OFFSET = 0x0001
ADJ_FREQUENCY = 0x0002
ADJ_MAXERROR = 0x0004
ADJ_ESTERROR = 0x0008
ADJ_STATUS = 0x0010
ADJ_SETOFFSET = 0x0100
ADJ_NANO = 0x2000
ADJ_OFFSET_SINGLESHOT = 0x8001
MAX_FREQ_PPM = 500.0
MAX_SLEW_US = 2**31 - 1   # ADJ_OFFSET_SINGLESHOT takes a long in microseconds (500 ppm slew)


class SysclockError(OSError):
    """The system clock cannot be disciplined (no capability, adjtimex failed); says why."""


@dataclass(frozen=True)
class Action:
    """What to do with the system clock: kind "slew" | "step" | "refuse", correction in ns
    (added to the system clock), and why."""

    kind: str
    amount_ns: int
    reason: str


def decide(offset_ns: int, update_index: int, makestep_ns: int, makestep_limit: int,
           panic_ns: int) -> Action:
    """The step/slew/refuse decision for one model update (sans-IO).

    offset_ns: system clock minus model UTC. update_index: 0 for the first update that reaches the
    clock. makestep_ns/makestep_limit: step when |offset| > makestep_ns during the first
    makestep_limit updates (makestep_ns < 0 disables stepping). panic_ns: never act on |offset| >
    panic_ns (0 disables the limit).
    """
    mag = abs(offset_ns)
    if panic_ns > 0 and mag > panic_ns:
        return Action("refuse", 0, f"offset {offset_ns / 1e9:+.6f} s beyond the panic limit "
                                   f"{panic_ns / 1e9:g} s: not touching the clock")
    if 0 <= makestep_ns < mag and update_index < makestep_limit:
        return Action("step", -offset_ns, f"offset {offset_ns / 1e9:+.6f} s > makestep "
                                          f"{makestep_ns / 1e9:g} s in update {update_index + 1}")
    return Action("slew", -offset_ns, f"offset {offset_ns / 1e9:+.9f} s")


def has_cap_sys_time(status_text: Optional[str] = None) -> bool:
    """Whether this process holds CAP_SYS_TIME (CapEff bit 25 of /proc/self/status)."""
    if status_text is None:
        try:
            with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
                status_text = fh.read()
        except OSError:
            return False
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            try:
                return bool(int(line.split()[1], 16) >> CAP_SYS_TIME & 1)
            except (IndexError, ValueError):
                return False
    return False


def step_timex(amount_ns: int) -> Timex:
    """The timex of an ADJ_SETOFFSET|ADJ_NANO step by amount_ns (time.tv_usec holds ns)."""
    tx = Timex()
    tx.modes = ADJ_SETOFFSET | ADJ_NANO
    sec, nsec = divmod(amount_ns, 1_000_000_000)  # the kernel wants 0 <= nsec < 1e9
    tx.time.tv_sec = sec
    tx.time.tv_usec = nsec
    return tx


def slew_timex(amount_ns: int) -> Timex:
    """The timex of a single-shot slew (adjtime) by amount_ns, rounded to µs and clamped."""
    tx = Timex()
    tx.modes = ADJ_OFFSET_SINGLESHOT
    tx.offset = max(-MAX_SLEW_US, min(MAX_SLEW_US, round(amount_ns / 1000)))
    return tx


def frequency_timex(freq_ppm: float, maxerror_ns: int) -> Timex:
    """The timex setting the kernel frequency (scaled ppm, ±500 ppm) and max/est error (µs)."""
    tx = Timex()
    tx.modes = ADJ_FREQUENCY | ADJ_MAXERROR | ADJ_ESTERROR
    tx.freq = round(max(-MAX_FREQ_PPM, min(MAX_FREQ_PPM, freq_ppm)) * 65536)
    tx.maxerror = max(0, min(16_000_000, maxerror_ns // 1000))
    tx.esterror = tx.maxerror
    return tx


class SystemClockAdjuster:
    """Applies Actions with adjtimex; in dry-run mode describes them and makes no writing syscall."""

    def __init__(self, *, makestep: float = 1.0, makestep_limit: int = 3, panic: float = 1000.0,
                 dry_run: bool = False, set_frequency: bool = True) -> None:
        self.makestep_ns = round(makestep * 1e9)
        self.makestep_limit = makestep_limit
        self.panic_ns = round(panic * 1e9)
        self.dry_run = dry_run
        self.set_frequency = set_frequency
        self.updates = 0
        self.last: Optional[Action] = None
        self._adjtimex: Any = None
        if not dry_run:
            if not has_cap_sys_time():
                raise SysclockError(
                    "--adjust-system needs CAP_SYS_TIME (run as root or grant it, e.g. systemd "
                    "AmbientCapabilities=CAP_SYS_TIME); use --dry-run to see what it would do")
            self._adjtimex = adjtimex_function()
            if self._adjtimex is None:
                raise SysclockError("no C library found for adjtimex")

    def _call(self, tx: Timex) -> None:
        if self._adjtimex(ctypes.byref(tx)) < 0:
            err = ctypes.get_errno()
            raise SysclockError(err, f"adjtimex(modes={tx.modes:#x}) failed")

    def update(self, offset_ns: int, freq_ppm: Optional[float] = None,
               bound_ns: Optional[int] = None) -> str:
        """Decide and apply one model update; returns a one-line description of what was done."""
        action = decide(offset_ns, self.updates, self.makestep_ns, self.makestep_limit, self.panic_ns)
        self.last = action
        if action.kind != "refuse":
            self.updates += 1
        prefix = "would " if self.dry_run else ""
        if action.kind == "refuse":
            return f"refused: {action.reason}"
        todo = [step_timex(action.amount_ns) if action.kind == "step" else slew_timex(action.amount_ns)]
        if self.set_frequency and freq_ppm is not None:
            todo.append(frequency_timex(freq_ppm, bound_ns or 0))
        if not self.dry_run:
            for tx in todo:
                self._call(tx)
        text = f"{prefix}{action.kind} the system clock by {action.amount_ns / 1e9:+.9f} s ({action.reason})"
        if len(todo) > 1:
            text += f"; {prefix}set kernel frequency {freq_ppm:+.3f} ppm"
        return text

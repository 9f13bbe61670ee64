"""What a serial port path is, why it cannot be opened, and low latency on the link behind it.

- `resolve(path)`: the node behind a path (symlinks such as /dev/serial/by-id/... resolved), whether
  it is a pseudo-terminal, its driver from sysfs (/sys/class/tty/NAME/device, walking up to the
  first driver that is not the serial core's own) and so its link profile (`tsq.bridge.links`).
- `diagnose(path, errno)`: a one-line reason and a hint for a port that cannot be opened (missing,
  permission denied, not a tty, busy), naming the file's group, the program holding it, or the
  /dev/serial/by-id entries that are there.
- `set_low_latency(fd, info)`: ASYNC_LOW_LATENCY through TIOCGSERIAL/TIOCSSERIAL and, on FTDI, the
  sysfs latency timer at 1 ms; an outcome string for the status and the log, never an exception.

Every root (sysfs, /dev/serial/by-id, /proc) is a parameter so tests can build a fake tree.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import grp
import os
import pwd
import stat
import termios
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

from tsq.bridge import links
from tsq.bridge.links import LinkProfile

SYSFS = "/sys"
BY_ID_DIR = "/dev/serial/by-id"
PROC = "/proc"

# UNIX98 pty slaves (/dev/pts/N) have majors 136-143 (the kernel's Documentation/admin-guide/devices.txt).
PTY_MAJORS = range(136, 144)
# Since Linux 6.5 the serial core puts "port" and "ctrl" devices (bus serial-base) between a UART's
# tty and its real driver: skip them on the way up.
_SERIAL_CORE_DRIVERS = frozenset({"port", "ctrl"})
# Driver names links.DRIVERS does not carry yet: the 8250 PNP/PCI glue registers as "serial" (the
# ttyS0 of a PC), the device-tree one as "of_serial"; all are 16550-style UARTs.
# The ioctls of <asm-generic/ioctls.h> (x86, ARM, RISC-V; Python's termios has them on Linux) and
# ASYNC_LOW_LATENCY of <linux/tty_flags.h> (ASYNCB_LOW_LATENCY = 13).
TIOCGSERIAL = getattr(termios, "TIOCGSERIAL", 0x541E)
TIOCSSERIAL = getattr(termios, "TIOCSSERIAL", 0x541F)
ASYNC_LOW_LATENCY = 1 << 13

UDEV_RULE = ('ACTION=="add", SUBSYSTEM=="usb-serial", DRIVER=="ftdi_sio", ATTR{latency_timer}="1" '
             "in /etc/udev/rules.d/99-ftdi-low-latency.rules")


class SerialStruct(ctypes.Structure):
    """`struct serial_struct` of <linux/serial.h>, with its C field types so that ctypes lays it out
    as the kernel does on this ABI (72 bytes on LP64, 60 on ILP32: the pointer and the long)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("line", ctypes.c_int),
        ("port", ctypes.c_uint),
        ("irq", ctypes.c_int),
        ("flags", ctypes.c_int),
        ("xmit_fifo_size", ctypes.c_int),
        ("custom_divisor", ctypes.c_int),
        ("baud_base", ctypes.c_int),
        ("close_delay", ctypes.c_ushort),
        ("io_type", ctypes.c_char),
        ("reserved_char", ctypes.c_char * 1),
        ("hub6", ctypes.c_int),
        ("closing_wait", ctypes.c_ushort),
        ("closing_wait2", ctypes.c_ushort),
        ("iomem_base", ctypes.c_void_p),
        ("iomem_reg_shift", ctypes.c_ushort),
        ("port_high", ctypes.c_uint),
        ("iomap_base", ctypes.c_ulong),
    ]


class _SerialBuffer(ctypes.Structure):
    # Spare room after the struct: a kernel whose struct grew must not write past our buffer.
    _fields_ = [("s", SerialStruct), ("_spare", ctypes.c_char * 64)]


@dataclass(frozen=True)
class PortInfo:
    """What `resolve` found out about a port path."""

    path: str
    real_path: str                     # symlinks resolved
    name: str                          # the tty's name, e.g. ttyUSB0
    exists: bool
    is_pty: bool
    driver: Optional[str]              # the Linux driver behind the tty (sysfs), if any
    profile: Optional[LinkProfile]     # the driver's link profile; None for a pty or unknown
    latency_timer: Optional[str]       # the FTDI latency timer's sysfs file, if there is one

    def describe(self) -> str:
        """How the link was identified, for the log: 'ftdi (driver ftdi_sio)', 'pty', ..."""
        if self.is_pty:
            return "pty"
        if self.profile is not None:
            return f"{self.profile.name} (driver {self.driver})"
        if self.driver is not None:
            return f"unknown (driver {self.driver})"
        return "unknown (no sysfs node)" if self.exists else "unknown (not present)"


def _driver_of(device_dir: str, sysfs_root: str) -> Optional[str]:
    """The first driver up the device chain from `device_dir` that is not the serial core's."""
    top = os.path.realpath(sysfs_root)
    cur = os.path.realpath(device_dir)
    while cur.startswith(top + os.sep) and cur != top:
        drv = os.path.join(cur, "driver")
        if os.path.lexists(drv):
            name = os.path.basename(os.path.realpath(drv))
            if name not in _SERIAL_CORE_DRIVERS:
                return name
        cur = os.path.dirname(cur)
    return None


def profile_for_driver(driver: Optional[str]) -> Optional[LinkProfile]:
    """links.for_driver, or None without a driver."""
    return None if driver is None else links.for_driver(driver)


def resolve(path: str, sysfs_root: str = SYSFS) -> PortInfo:
    """Identify the port at `path` (which need not exist)."""
    real = os.path.realpath(path)
    name = os.path.basename(real)
    try:
        st = os.stat(real)
    except OSError:
        st = None
    is_pty = (st is not None and stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_MAJORS)
    driver = None
    timer = None
    if not is_pty:
        device = os.path.join(sysfs_root, "class", "tty", name, "device")
        if os.path.isdir(device):
            driver = _driver_of(device, sysfs_root)
        for cand in (os.path.join(sysfs_root, "bus", "usb-serial", "devices", name, "latency_timer"),
                     os.path.join(device, "latency_timer")):
            if os.path.exists(cand):
                timer = cand
                break
    return PortInfo(path, real, name, st is not None, is_pty, driver, profile_for_driver(driver), timer)


def link_for(choice: str, info: PortInfo) -> LinkProfile:
    """The link profile a port runs with: `choice` by name, or for "auto" the detected one (for a pty
    and an unknown driver "pty", the link that adds nothing). An FTDI adapter's profile follows its
    latency timer as it reads now (after `set_low_latency`). ValueError for an unknown name."""
    if choice != "auto":
        return links.profile(choice)
    found = info.profile if info.profile is not None else links.PROFILES["pty"]
    if found.latency_timer_ns and info.latency_timer is not None:
        ms = _read_int(info.latency_timer)
        if ms is not None and ms > 0:
            for p in links.PROFILES.values():
                if p.kind == found.kind and p.latency_timer_ns == ms * 1_000_000:
                    return p
            return replace(found, name=f"{found.name}-{ms}ms", latency_timer_ns=ms * 1_000_000,
                           description=f"{found.description}, latency timer set to {ms} ms")
    return found


def by_id_entries(by_id_dir: str = BY_ID_DIR) -> List[Tuple[str, str]]:
    """(by-id path, the node it points to) for every entry of /dev/serial/by-id, sorted."""
    try:
        names = sorted(os.listdir(by_id_dir))
    except OSError:
        return []
    return [(os.path.join(by_id_dir, n), os.path.realpath(os.path.join(by_id_dir, n))) for n in names]


def _by_id_hint(by_id_dir: str) -> str:
    entries = by_id_entries(by_id_dir)
    if not entries:
        return f"no serial adapter is attached ({by_id_dir} is empty or absent)"
    shown = ", ".join(f"{p} -> {os.path.basename(t)}" for p, t in entries[:4])
    more = f" and {len(entries) - 4} more" if len(entries) > 4 else ""
    return f"attached: {shown}{more} (a by-id path stays the same across replugs)"


def holders(real_path: str, proc_root: str = PROC) -> List[Tuple[int, str]]:
    """(pid, command) of the other processes with `real_path` open, as far as /proc lets us see."""
    out: List[Tuple[int, str]] = []
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        return out
    for pid in sorted(pids):
        if pid == me:
            continue
        fd_dir = os.path.join(proc_root, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target == real_path:
                try:
                    with open(os.path.join(proc_root, str(pid), "comm")) as fh:
                        comm = fh.read().strip()
                except OSError:
                    comm = "?"
                out.append((pid, comm))
                break
    return out


@dataclass(frozen=True)
class OpenProblem:
    """Why a port cannot be opened: errno, a one-line reason, and what to do about it."""

    errno: int
    reason: str
    hint: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.hint}" if self.hint else self.reason


def _errname(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def not_a_tty(path: str) -> Optional[OpenProblem]:
    """An OpenProblem when `path` exists but is a regular file or a directory (pyserial would open a
    file and fail later with no errno); None otherwise."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISREG(st.st_mode):
        what = "a regular file"
    elif stat.S_ISDIR(st.st_mode):
        what = "a directory"
    else:
        return None
    return OpenProblem(errno.ENOTTY, f"{path}: not a serial port ({what})",
                       "give the device node, e.g. /dev/ttyUSB0 or a /dev/serial/by-id/ path")


def diagnose(path: str, err: int, by_id_dir: str = BY_ID_DIR, proc_root: str = PROC) -> OpenProblem:
    """The reason and hint for a failed open of `path` with errno `err`."""
    real = os.path.realpath(path)
    if err == errno.ENOENT:
        dangling = f" (a link to {real}, which is not there)" if real != os.path.abspath(path) else ""
        return OpenProblem(err, f"{path}: no such device{dangling}",
                           f"is it plugged in? {_by_id_hint(by_id_dir)}")
    if err in (errno.EACCES, errno.EPERM):
        return OpenProblem(err, f"{path}: permission denied", _permission_hint(real))
    if err in (errno.ENOTTY, errno.EISDIR):
        problem = not_a_tty(real)
        if problem is not None:
            return OpenProblem(err, problem.reason.replace(real, path, 1), problem.hint)
        return OpenProblem(err, f"{path}: not a terminal (a device, but not a serial port)",
                           f"give the serial device node; {_by_id_hint(by_id_dir)}")
    if err in (errno.EBUSY, errno.EAGAIN):
        held = holders(real, proc_root)
        who = ", ".join(f"{comm} (pid {pid})" for pid, comm in held) if held else None
        return OpenProblem(err, f"{path}: busy", f"{who} has it open" if who else
                           "another program has it open (a terminal program, ModemManager, a second "
                           "bridge?)")
    if err in (errno.ENXIO, errno.ENODEV, errno.EIO):
        return OpenProblem(err, f"{path}: no device behind the node ({_errname(err)})",
                           "unplugged, or its driver is gone; waiting for it to come back")
    return OpenProblem(err, f"{path}: {os.strerror(err)} ({_errname(err)})", "")


def _permission_hint(real: str) -> str:
    try:
        st = os.stat(real)
    except OSError:
        return "check the file's permissions"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = "$USER"
    mode = stat.filemode(st.st_mode)
    if st.st_mode & 0o060 != 0o060:
        return (f"{real} is {mode} (group {group}): no group may read and write it; a udev rule "
                f'MODE="0660", GROUP="dialout" for the device, then add the user to dialout: '
                f"sudo usermod -aG dialout {user}, then log in again")
    return (f"{real} is {mode}, group {group}: add the user to the {group} group: "
            f"sudo usermod -aG {group} {user}, then log in again")


# -- low latency ----------------------------------------------------------------------------------
def set_async_low_latency(fd: int, is_pty: bool) -> Tuple[str, str]:
    """Set ASYNC_LOW_LATENCY on an open tty: (outcome, detail), outcome one of "set", "already",
    "not applicable", "not supported", "could not"."""
    buf = _SerialBuffer()
    try:
        fcntl.ioctl(fd, TIOCGSERIAL, buf, True)
    except OSError as exc:
        if is_pty:
            return "not applicable", "pty"
        return "not supported", f"TIOCGSERIAL: {_errname(exc.errno or 0)}"
    if buf.s.flags & ASYNC_LOW_LATENCY:
        return "already", "ASYNC_LOW_LATENCY"
    buf.s.flags |= ASYNC_LOW_LATENCY
    try:
        fcntl.ioctl(fd, TIOCSSERIAL, buf, False)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            return "could not", "TIOCSSERIAL: permission denied"
        return "not supported", f"TIOCSSERIAL: {_errname(exc.errno or 0)}"
    back = _SerialBuffer()
    try:
        fcntl.ioctl(fd, TIOCGSERIAL, back, True)
    except OSError as exc:
        return "not supported", f"TIOCGSERIAL after setting: {_errname(exc.errno or 0)}"
    if not back.s.flags & ASYNC_LOW_LATENCY:
        return "not supported", "the driver ignores ASYNC_LOW_LATENCY"
    return "set", "ASYNC_LOW_LATENCY"


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def set_latency_timer(path: str, target_ms: int = 1) -> Tuple[str, str]:
    """Set an FTDI latency timer (sysfs, ms) to `target_ms` and read it back: (outcome, detail)."""
    before = _read_int(path)
    if before is None:
        return "not supported", f"cannot read {path}"
    if before <= target_ms:
        return "already", f"latency_timer {before} ms"
    try:
        with open(path, "w") as fh:
            fh.write(f"{target_ms}\n")
    except PermissionError:
        return "could not", (f"permission denied (latency_timer is root-writable; a udev rule: "
                             f"{UDEV_RULE}); latency_timer stays {before} ms")
    except OSError as exc:
        return "could not", f"writing {path}: {exc.strerror or exc}"
    after = _read_int(path)
    if after != target_ms:
        return "could not", f"latency_timer reads {after} ms after writing {target_ms}"
    return "set", f"latency_timer {before} -> {after} ms"


def set_low_latency(fd: int, info: PortInfo) -> str:
    """Ask for the lowest receive latency the link has; the outcome for the status and the log:
    "set (...)", "already (...)", "not applicable (pty)", "not supported: ...", "could not: ...".
    Never raises: a port that cannot be made faster still works."""
    steps = [set_async_low_latency(fd, info.is_pty)]
    if info.latency_timer is not None:
        # FTDI: ftdi_sio programs a 1 ms timer along with ASYNC_LOW_LATENCY (and latency_timer then
        # reads 1), so the ioctl alone does it without root; the sysfs write (root only) is for a
        # kernel or chip where the flag did not take. Read back either way.
        steps.append(set_latency_timer(info.latency_timer))
    outcomes = [o for o, _ in steps]
    details = "; ".join(d if o in ("set", "already", "not applicable") else f"{o}: {d}" for o, d in steps)
    for outcome in ("could not", "set", "already", "not supported"):
        if outcome in outcomes:
            if outcome in ("could not", "not supported"):
                # The failing step first, as "could not: <why>", then the others.
                first = next(d for o, d in steps if o == outcome)
                rest = "; ".join(f"{o}: {d}" for o, d in steps if d != first)
                return f"{outcome}: {first}" + (f" ({rest})" if rest else "")
            return f"{outcome} ({details})"
    return f"not applicable ({details})"

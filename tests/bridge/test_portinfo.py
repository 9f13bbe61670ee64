"""tsq.bridge.portinfo: link detection from a sysfs tree (fake trees built in tmp_path, and the real
/sys for a pty), the serial_struct layout against the kernel, low latency and the latency timer."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tsq.bridge import links, portinfo


def _fake_tty(sysfs: Path, name: str, chain: list[tuple[str, str]], timer: str | None = None) -> None:
    """A sysfs tree in which tty `name`'s device is the last of `chain` ((dir, driver or "")), each
    nested in the one before, and class/tty/NAME/device points at it, as the kernel lays it out."""
    cur = sysfs / "devices"
    for dirname, driver in chain:
        cur = cur / dirname
        cur.mkdir(parents=True)
        if driver:
            drv_dir = sysfs / "bus" / "some-bus" / "drivers" / driver
            drv_dir.mkdir(parents=True, exist_ok=True)
            (cur / "driver").symlink_to(drv_dir)
    tty = sysfs / "class" / "tty" / name
    tty.mkdir(parents=True)
    (tty / "device").symlink_to(cur)
    if timer is not None:
        (cur / "latency_timer").write_text(timer)


def _node(tmp_path: Path, name: str) -> Path:
    # Detection only reads the node's name and sysfs; a regular file stands in for /dev/NAME.
    dev = tmp_path / "dev"
    dev.mkdir(exist_ok=True)
    (dev / name).write_text("")
    return dev / name


def test_ftdi_behind_a_by_id_link_is_detected_with_its_latency_timer(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    _fake_tty(sysfs, "ttyUSB0", [("pci0000:00", ""), ("usb1", "usb"), ("1-1:1.0", "ftdi_sio"),
                                 ("ttyUSB0", "ftdi_sio")], timer="16\n")
    node = _node(tmp_path, "ttyUSB0")
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0").symlink_to(node)
    info = portinfo.resolve(str(by_id / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"), str(sysfs))
    assert (info.name, info.real_path, info.driver, info.is_pty) == ("ttyUSB0", str(node), "ftdi_sio", False)
    assert info.profile is links.PROFILES["ftdi"] and info.describe() == "ftdi (driver ftdi_sio)"
    assert info.latency_timer is not None and Path(info.latency_timer).read_text() == "16\n"
    # The profile follows the timer as it reads: 16 ms as shipped, 1 ms with low latency, or other.
    assert portinfo.link_for("auto", info).name == "ftdi"
    Path(info.latency_timer).write_text("1\n")
    assert portinfo.link_for("auto", info).name == "ftdi-low"
    Path(info.latency_timer).write_text("4\n")
    odd = portinfo.link_for("auto", info)
    assert (odd.name, odd.latency_timer_ns, odd.usb_frame_ns) == ("ftdi-4ms", 4_000_000, 1_000_000)
    assert portinfo.link_for("pl011", info) is links.PROFILES["pl011"]  # a name given wins
    with pytest.raises(ValueError, match="unknown link 'rs485'"):
        portinfo.link_for("rs485", info)
    assert portinfo.by_id_entries(str(by_id)) == [
        (str(by_id / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"), str(node))]


@pytest.mark.parametrize(("name", "chain", "profile"), [
    # Linux >= 6.5: tty -> serial-base "port" -> "ctrl" -> the UART's own driver
    ("ttyAMA0", [("fe201000.serial", "uart-pl011"), ("fe201000.serial:0", "ctrl"),
                 ("fe201000.serial:0.0", "port")], "pl011"),
    ("ttyS0", [("pnp0", ""), ("00:00", "serial"), ("00:00:0", "ctrl"), ("00:00:0.0", "port")], "16550"),
    ("ttyS4", [("serial8250", "serial8250")], "16550"),
    ("ttyACM0", [("usb1", "usb"), ("1-2", "usb"), ("1-2:1.0", "cdc_acm")], "cdc-acm"),
    ("ttyUSB1", [("usb1", "usb"), ("1-3:1.0", "ch341"), ("ttyUSB1", "ch341-uart")], "ch340"),
    ("ttyUSB2", [("usb1", "usb"), ("1-4:1.0", "cp210x"), ("ttyUSB2", "cp210x")], "cp210x"),
])
def test_uarts_and_usb_adapters_are_detected_through_the_serial_core(
        tmp_path: Path, name: str, chain: list[tuple[str, str]], profile: str) -> None:
    sysfs = tmp_path / "sys"
    _fake_tty(sysfs, name, chain)
    info = portinfo.resolve(str(_node(tmp_path, name)), str(sysfs))
    assert info.profile is not None and info.profile.name == profile, info
    assert info.latency_timer is None


def test_unknown_driver_and_missing_node_fall_back_to_pty(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    _fake_tty(sysfs, "ttyXY0", [("somewhere", "vendor_uart")])
    info = portinfo.resolve(str(_node(tmp_path, "ttyXY0")), str(sysfs))
    assert (info.driver, info.profile) == ("vendor_uart", None)
    assert info.describe() == "unknown (driver vendor_uart)"
    assert portinfo.link_for("auto", info).name == "pty"
    gone = portinfo.resolve(str(tmp_path / "dev" / "ttyUSB9"), str(sysfs))
    assert not gone.exists and gone.describe() == "unknown (not present)"


def test_a_real_pty_against_the_real_sysfs() -> None:
    master, slave = os.openpty()
    try:
        info = portinfo.resolve(os.ttyname(slave))
        assert info.is_pty and info.profile is None and info.describe() == "pty"
        assert portinfo.link_for("auto", info) is links.PROFILES["pty"]
        # A pty has no serial_struct: the ioctl is refused, which is "not applicable", not an error.
        assert portinfo.set_low_latency(slave, info) == "not applicable (pty)"
    finally:
        os.close(master)
        os.close(slave)


def test_serial_struct_has_the_kernels_layout() -> None:
    s = portinfo.SerialStruct
    lp64 = ctypes.sizeof(ctypes.c_void_p) == 8
    # <linux/serial.h>: 8 ints, ushort + 2 chars, int, 2 ushorts, pointer, ushort, uint, ulong
    assert ctypes.sizeof(s) == (72 if lp64 else 60)
    assert s.flags.offset == 16 and s.baud_base.offset == 28 and s.hub6.offset == 36
    assert s.iomem_base.offset == (48 if lp64 else 44) and s.iomap_base.offset == (64 if lp64 else 56)
    assert portinfo.ASYNC_LOW_LATENCY == 0x2000
    if platform.machine() in ("x86_64", "i686", "aarch64", "armv7l", "riscv64"):   # asm-generic ioctls
        assert (portinfo.TIOCGSERIAL, portinfo.TIOCSSERIAL) == (0x541E, 0x541F)


def test_serial_struct_read_from_a_real_uart() -> None:
    """Where the machine has a 16550 (a PC's, a VM's ttyS0), the kernel's answer reads as one."""
    try:
        fd = os.open("/dev/ttyS0", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        pytest.skip(f"no /dev/ttyS0 to read a serial_struct from: {exc.strerror}")
    try:
        buf = portinfo._SerialBuffer()
        try:
            fcntl.ioctl(fd, portinfo.TIOCGSERIAL, buf, True)
        except OSError as exc:
            pytest.skip(f"/dev/ttyS0 has no UART behind it: {errno.errorcode.get(exc.errno or 0)}")
        if buf.s.type == 0:
            pytest.skip("/dev/ttyS0 is a placeholder without a UART (PORT_UNKNOWN)")
        # 16550-class type, its line number, a sensible base clock; the spare room stays untouched.
        assert 1 <= buf.s.type <= 130 and buf.s.line == 0 and buf.s.baud_base >= 9600, (
            buf.s.type, buf.s.line, buf.s.baud_base)
        spare = ctypes.string_at(ctypes.addressof(buf) + ctypes.sizeof(portinfo.SerialStruct), 64)
        assert spare == bytes(64)
    finally:
        os.close(fd)


def test_latency_timer_set_already_and_unreadable(tmp_path: Path) -> None:
    timer = tmp_path / "latency_timer"
    timer.write_text("16\n")
    assert portinfo.set_latency_timer(str(timer)) == ("set", "latency_timer 16 -> 1 ms")
    assert timer.read_text().strip() == "1"
    assert portinfo.set_latency_timer(str(timer)) == ("already", "latency_timer 1 ms")
    timer.write_text("garbage")
    outcome, detail = portinfo.set_latency_timer(str(timer))
    assert outcome == "not supported" and "cannot read" in detail


def test_latency_timer_not_writable_says_how_to_fix_it(as_nobody: Any) -> None:
    with tempfile.TemporaryDirectory() as d:   # in /tmp: a place nobody can reach
        os.chmod(d, 0o755)
        timer = Path(d) / "latency_timer"
        timer.write_text("16\n")
        timer.chmod(0o444)           # no one but root may write it (sysfs: 0644 root)
        _check_not_writable(timer, as_nobody)


def _check_not_writable(timer: Path, as_nobody: Any) -> None:
    outcome, detail = as_nobody(lambda: portinfo.set_latency_timer(str(timer)))
    assert outcome == "could not"
    assert "permission denied (latency_timer is root-writable; a udev rule:" in detail
    assert 'ATTR{latency_timer}="1"' in detail and "stays 16 ms" in detail
    assert timer.read_text() == "16\n"


def test_low_latency_outcome_combines_the_ioctl_and_the_timer(tmp_path: Path) -> None:
    """A pty with an FTDI timer beside it: the ioctl is not applicable, the timer is set."""
    master, slave = os.openpty()
    timer = tmp_path / "latency_timer"
    timer.write_text("16\n")
    try:
        info = portinfo.resolve(os.ttyname(slave))
        info = portinfo.PortInfo(info.path, info.real_path, info.name, True, False, "ftdi_sio",
                                 links.PROFILES["ftdi"], str(timer))
        got = portinfo.set_low_latency(slave, info)
        assert got.startswith("set (") and "latency_timer 16 -> 1 ms" in got, got
        assert "not supported: TIOCGSERIAL: ENOTTY" in got
    finally:
        os.close(master)
        os.close(slave)


def test_async_low_latency_set_on_a_real_uart_and_restored() -> None:
    """On a real 16550 (a VM's ttyS0) the flag is set and read back; the original flags are put back."""
    try:
        fd = os.open("/dev/ttyS0", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        pytest.skip(f"no /dev/ttyS0: {exc.strerror}")
    try:
        orig = portinfo._SerialBuffer()
        try:
            fcntl.ioctl(fd, portinfo.TIOCGSERIAL, orig, True)
        except OSError as exc:
            pytest.skip(f"/dev/ttyS0 has no UART behind it: {errno.errorcode.get(exc.errno or 0)}")
        if orig.s.type == 0:
            pytest.skip("/dev/ttyS0 is a placeholder without a UART (PORT_UNKNOWN)")
        try:
            got = portinfo.set_async_low_latency(fd, is_pty=False)
            expected = "already" if orig.s.flags & portinfo.ASYNC_LOW_LATENCY else "set"
            assert got == (expected, "ASYNC_LOW_LATENCY")
            assert portinfo.set_async_low_latency(fd, is_pty=False) == ("already", "ASYNC_LOW_LATENCY")
            now = portinfo._SerialBuffer()
            fcntl.ioctl(fd, portinfo.TIOCGSERIAL, now, True)
            assert now.s.flags == orig.s.flags | portinfo.ASYNC_LOW_LATENCY
            assert (now.s.baud_base, now.s.closing_wait) == (orig.s.baud_base, orig.s.closing_wait)
        finally:
            fcntl.ioctl(fd, portinfo.TIOCSSERIAL, orig, False)
    finally:
        os.close(fd)

"""What a serial link does to a frame's timing: one profile per kind of link, from the datasheets.

Shared by the bridge (to calibrate the deterministic part of a link's delay and to know how coarse
its quantisation is) and by the line models in `tsq.testing.seriallink` (which reproduce it between
two pseudo-terminals). Nothing here does I/O.

Device -> host, a byte waits for
- a USB adapter: its chip's flush rule (FTDI: the latency timer, or a full 64-byte packet less the
  two modem-status bytes; CH340 and CP210x: an internal receive timeout) and then the next 1 ms
  full-speed frame in which the host polls the bulk-IN endpoint;
- a native-USB MCU (CDC-ACM): the next frame in which the host polls it;
- a native UART (PL011, 16550): the RX FIFO's trigger level, or for a short frame the receive
  timeout (PL011: 32 bit periods; 16550: 4 character times) after the last byte;
Host -> device, a USB write waits for the next frame; a UART write starts at once. Both ways the bytes
are serialised at the baud rate (10 bits a byte, 8N1) except on CDC-ACM, where there is no UART.

Sources: FTDI AN232B-04 "Data Throughput, Latency and Handshaking" (latency timer 1-255 ms, 16 ms
default; 64-byte packets with 2 status bytes); USB 2.0 §5.8 (full-speed bulk transfers scheduled in
1 ms frames); WCH CH340 datasheet (32-byte endpoint); Silicon Labs AN197 / CP2102N datasheet (64-byte
endpoint, receive timeout of the chip, no latency timer); ARM PrimeCell UART PL011 TRM DDI 0183
(receive timeout: 32 bit periods after the FIFO last received; FIFO 16 deep on the BCM2835/BCM2711,
RX trigger 1/2 as Linux sets it); TI PC16550D datasheet (16-byte FIFO, timeout 4 character times).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

NS_PER_S = 1_000_000_000
USB_FRAME_NS = 1_000_000          # full-speed USB: one bulk poll per 1 ms frame
BITS_PER_BYTE = 10                # 8N1: start + 8 data + stop


@dataclass(frozen=True)
class LinkProfile:
    """The timing rules of one kind of serial link (see the module doc for where they come from)."""

    name: str
    kind: str                          # "pty" | "usb" | "uart"
    description: str
    usb_frame_ns: int = 0              # >0: both directions wait for the next USB frame
    latency_timer_ns: int = 0          # FTDI: a partial packet is flushed when this expires
    packet_bytes: int = 0              # USB: a full packet is flushed at once
    rx_timeout_bits: int = 0           # chip or UART receive timeout after the last byte, in bit times
    fifo_bytes: int = 0                # UART: RX FIFO depth
    rx_trigger_bytes: int = 0          # UART: RX interrupt at this fill level
    serialises: bool = True            # bytes take 10 bit times each at the baud rate

    @property
    def anchor(self) -> str:
        """Where the bridge's estimate sits in its feasible region (tsq.bridge.feasible): "out" on
        USB, where the PONG leaves in the frame after the PING's (one IN poll a frame), so its wait
        is the frame less the device's turnaround and the back leg never comes near its minimum;
        the PING's wait for its frame is uniform over the frame (the bridge dithers its pings) and
        comes close. "centre" elsewhere."""
        return "out" if self.usb_frame_ns else "centre"

    def byte_ns(self, baud: int) -> int:
        """Time one byte takes on the wire (0 where there is no UART)."""
        return BITS_PER_BYTE * NS_PER_S // baud if self.serialises and baud > 0 else 0

    def rx_timeout_ns(self, baud: int) -> int:
        """The receive timeout in ns at `baud`."""
        return self.rx_timeout_bits * NS_PER_S // baud if baud > 0 else 0

    def fixed_rx_delay_ns(self, frame_bytes: int, baud: int) -> int:
        """The deterministic part of device->host delay for a short frame beyond its serialisation.

        A UART frame shorter than the RX trigger level is only seen after the receive timeout: a
        one-sided delay on the host's T4 that the four timestamps cannot see but the bridge can
        subtract. USB delays are not fixed (they depend on the phase of the frame clock).
        """
        if self.kind == "uart" and (self.rx_trigger_bytes == 0 or frame_bytes % self.rx_trigger_bytes):
            return self.rx_timeout_ns(baud)
        return 0


PROFILES: Dict[str, LinkProfile] = {p.name: p for p in (
    LinkProfile("pty", "pty", "pseudo-terminal (no line: tests and simulation)", serialises=False),
    LinkProfile("ftdi", "usb", "FTDI FT232R/FT2232 as shipped (latency timer 16 ms)",
                usb_frame_ns=USB_FRAME_NS, latency_timer_ns=16_000_000, packet_bytes=62),
    LinkProfile("ftdi-low", "usb", "FTDI with low latency set (latency timer 1 ms)",
                usb_frame_ns=USB_FRAME_NS, latency_timer_ns=1_000_000, packet_bytes=62),
    LinkProfile("ch340", "usb", "WCH CH340/CH341 (32-byte endpoint, chip receive timeout)",
                usb_frame_ns=USB_FRAME_NS, packet_bytes=32, rx_timeout_bits=40),
    LinkProfile("cp210x", "usb", "Silicon Labs CP210x (64-byte endpoint, chip receive timeout)",
                usb_frame_ns=USB_FRAME_NS, packet_bytes=64, rx_timeout_bits=40),
    LinkProfile("cdc-acm", "usb", "native-USB MCU (CDC-ACM, polled once per frame, no UART)",
                usb_frame_ns=USB_FRAME_NS, packet_bytes=64, serialises=False),
    LinkProfile("pl011", "uart", "ARM PL011 (Raspberry Pi ttyAMA0): 16-byte FIFO, RX trigger 8, "
                "receive timeout 32 bit periods", rx_timeout_bits=32, fifo_bytes=16, rx_trigger_bytes=8),
    LinkProfile("16550", "uart", "16550A-style UART (ttyS, Pi mini UART alike): 16-byte FIFO, "
                "RX trigger 8, receive timeout 4 characters", rx_timeout_bits=40, fifo_bytes=16,
                rx_trigger_bytes=8),
)}

# Linux driver names (sysfs .../device/driver) -> profile, for `tsq.bridge` to detect a port's link.
DRIVERS: Dict[str, str] = {
    "ftdi_sio": "ftdi", "ch341": "ch340", "ch341-uart": "ch340", "cp210x": "cp210x",
    "cdc_acm": "cdc-acm", "uart-pl011": "pl011", "serial8250": "16550", "dw-apb-uart": "16550",
    "bcm2835-aux-uart": "16550", "serial": "16550", "of_serial": "16550",  # the serial core's, x86/DT
}


def profile(name: str) -> LinkProfile:
    """The profile called `name`; ValueError naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown link {name!r}: one of {', '.join(PROFILES)}") from None


def for_driver(driver: str) -> Optional[LinkProfile]:
    """The profile of a Linux tty driver, or None when it is not one we know."""
    name = DRIVERS.get(driver)
    return PROFILES[name] if name else None

"""What the bridge reports about each device (sans-IO): one typed status, and its JSON.

`DeviceSession.status()` and `NmeaWriter.status()` build a `DeviceStatus`; the driver adds what its
port knows (`PortStatus`, from `PortLink.port_status()`). `to_json()` gives one entry of the control
socket's `devices` list (docs/internals.md, "Control socket"), with the same names and units as the
engine's status: `tsq status`, the metrics and the demo's table read these keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class PortStatus:
    """The port's part: which link, whether low latency is set, why it cannot be opened."""

    link: Optional[str] = None          # the link profile in use (tsq.bridge.links)
    low_latency: Optional[str] = None   # what asking for low latency did (None: not asked yet)
    port_error: Optional[str] = None    # why the port cannot be opened, in words
    port_hint: Optional[str] = None     # what to do about it (the dialout group, a by-id path)


@dataclass(frozen=True)
class DeviceStatus:
    """One device (or NMEA listener) on one port."""

    device: Optional[str]               # device id as 0x%08x ("nmea" for an NMEA port; None before HELLO)
    port: str
    state: str                          # disconnected | handshake | silent | tracking | unsynchronised |
                                        # or the time model's state
    firmware: Optional[str]
    residual_ns: Optional[int]          # the last ping about the line fit (NMEA: start error of the burst)
    line_delay_ns: Optional[int]        # the last ping's round trip on the line
    bound_ns: Optional[int]             # bound on the device's error now (model + line)
    last_seen_age_s: Optional[float]
    bad_frames: int
    link: Optional[str] = None
    fit_points: Optional[int] = None    # pings in the fit's window
    fit_width_ns: Optional[int] = None  # the feasible region's extent at the newest ping
    fit_empty_resets: Optional[int] = None
    fit_rejected: Optional[int] = None  # pings refused or held back as conflicts
    implausible_frames: int = 0         # frames with nonsense fields, dropped and counted
    source_ppm: Optional[float] = None  # set while timescales are withheld: the time source runs this
                                        # far from the device's ticks, beyond what the device accepts
    low_latency: Optional[str] = None
    port_error: Optional[str] = None
    port_hint: Optional[str] = None

    def with_port(self, port: PortStatus, implausible_frames: Optional[int] = None) -> DeviceStatus:
        """This status with the port's part (and the decoder's implausible-frame count) filled in."""
        return dataclasses.replace(
            self, link=port.link if port.link is not None else self.link, low_latency=port.low_latency,
            port_error=port.port_error, port_hint=port.port_hint,
            implausible_frames=self.implausible_frames if implausible_frames is None else implausible_frames)

    def to_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

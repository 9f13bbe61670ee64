"""The gateway's status (sans-IO): one typed object, one `to_json()` at the control socket.

`GatewayStatus` joins what each room reports at one instant: the engine's `TrackingStatus` (or, for a
bridge fed by the host's clock, `model_tracking()` of its model), what the QUIC edge knows of each
source (`SourceLink`), the outputs, the field logs' health, the drift file, aioquic's capabilities
and the bridge's `DeviceStatus` list. The daemon's own readers (status line, metrics, field-log rows)
read its attributes; `to_json()` gives the status object of docs/internals.md ("Control socket"),
key for key what the daemon answered before it was typed. `tsq status` reads that JSON back on the
other side of the socket, from a daemon that may be older or newer, so it stays tolerant of any
value (tsq.gateway.status_cli).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple

from tsq.bridge.status import DeviceStatus
from tsq.sync.model import TimeModel
from tsq.sync.tracking import TrackingStatus

__all__ = ["DriftStatus", "GatewayStatus", "RefclockOutputStatus", "SourceLink", "SystemClockOutputStatus",
           "model_tracking"]


class JsonPart(Protocol):
    """A part that reports itself as JSON (the field log's LogHealth, aioquic's Capabilities)."""

    def to_json(self) -> Dict[str, Any]: ...


@dataclass(frozen=True)
class SourceLink:
    """What the QUIC edge knows of one source, beside the engine's view of it."""

    alpn: Optional[str]                 # negotiated ALPN (tsq/1 is the deployed implementation's)
    connected: bool
    connections: int                    # connections opened, resumptions included
    resumed: int                        # of those, 0-RTT/resumed
    discarded: int                      # responses discarded under draft §6.6
    last_discard: Optional[str]         # why the last one was
    fell_back_to_streams: bool          # datagrams refused by the peer: stream mode since

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RefclockOutputStatus:
    """The chrony SOCK refclock output."""

    path: str
    sent: int
    dropped: int
    error: Optional[str]

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SystemClockOutputStatus:
    """The system clock discipline (adjtimex)."""

    dry_run: bool
    updates: int
    last_action: Optional[str]          # slew | step | frequency | ... of the last update

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DriftStatus:
    """The drift file: where, what it gave at start, why the last save failed."""

    file: str
    at_start: Optional[str]
    error: Optional[str]

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GatewayStatus:
    """Everything `tsq status` shows, at one instant."""

    tracking: TrackingStatus
    links: Mapping[str, SourceLink] = field(default_factory=dict)   # by source name
    refclock: Optional[RefclockOutputStatus] = None
    system_clock: Optional[SystemClockOutputStatus] = None
    logging: Optional[JsonPart] = None
    drift: Optional[DriftStatus] = None
    capabilities: Optional[JsonPart] = None
    devices: Optional[Tuple[DeviceStatus, ...]] = None   # None: no bridge in this process
    errors: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        st = self.tracking.to_json()
        for src in st["sources"]:
            link = self.links.get(src["name"])
            if link is not None:
                src.update(link.to_json())
        outputs: Dict[str, Any] = {}
        if self.refclock is not None:
            outputs["refclock"] = self.refclock.to_json()
        if self.system_clock is not None:
            outputs["system_clock"] = self.system_clock.to_json()
        if outputs:
            st["outputs"] = outputs
        if self.logging is not None:
            st["logging"] = self.logging.to_json()
        if self.drift is not None:
            st["drift"] = self.drift.to_json()
        if self.capabilities is not None:
            st["capabilities"] = self.capabilities.to_json()
        if self.devices is not None:
            st["devices"] = [d.to_json() for d in self.devices]
        if self.errors:
            st["errors"] = list(self.errors)
        return st


def model_tracking(model: TimeModel, now_raw: int, realtime_ns: int, reason: str) -> TrackingStatus:
    """The tracking part for a model that is not the engine's (a bridge fed by the host's clock):
    no sources, no frequency of its own."""
    utc = model.utc_ns(now_raw)
    return TrackingStatus(
        state=model.state(now_raw), reason=reason, utc_ns=utc, leap=model.leap(),
        system_offset_ns=None if utc is None else realtime_ns - utc, freq_ppm=None, freq_error_ppm=None,
        error_bound_ns=model.error_bound_ns(now_raw), last_update_utc_ns=None, last_update_age_s=None,
        poll_s=None, holdover_growth_ppb=None, configured=0, reachable=0, agreeing=0, quorum=0,
        minsources=0)


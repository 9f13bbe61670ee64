"""tsq.status: the gateway's typed status and its JSON (the control socket's object, docs/internals.md)."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from tsq.bridge.status import DeviceStatus
from tsq.status import (
    DriftStatus,
    GatewayStatus,
    RefclockOutputStatus,
    SourceLink,
    SystemClockOutputStatus,
    model_tracking,
)
from tsq.sync.tracking import SourceStatus, TrackingStatus

SOURCE = SourceStatus(name="a:4433", mode="datagram", selection="selected", reachable=True, missed_polls=0,
                      offset_ns=12, delay_ns=40_000, jitter_ns=300, reach=255, samples=12,
                      last_sample_age_s=0.5, stratum=1, distance_ns=21_000, freq_ppm=1.2, poll_s=16.0,
                      last_reason="ok")
TRACKING = TrackingStatus(
    state="synchronised", reason="1 of 2 sources agree", utc_ns=1_700_000_000_123_456_789, leap=0,
    system_offset_ns=-1234, freq_ppm=1.234, freq_error_ppm=0.01, error_bound_ns=2500,
    last_update_utc_ns=1_700_000_000_000_000_000, last_update_age_s=0.8, poll_s=16.0,
    holdover_growth_ppb=1003.0, configured=2, reachable=2, agreeing=1, quorum=1, minsources=1,
    sources=(SOURCE, SourceStatus(**{**SOURCE.__dict__, "name": "b:4433", "selection": "candidate"})))
LINK = SourceLink(alpn="tsq/1", connected=True, connections=2, resumed=1, discarded=3,
                  last_discard="nonce mismatch", fell_back_to_streams=False)


class Health:
    def to_json(self) -> Dict[str, Any]:
        return {"directory": "/var/log/tsq", "ok": True}


def test_minimal_status_is_the_tracking_alone() -> None:
    st = GatewayStatus(tracking=TRACKING)
    assert st.to_json() == TRACKING.to_json()
    assert not {"outputs", "logging", "drift", "capabilities", "devices", "errors"} & set(st.to_json())


def test_every_part_lands_under_its_key() -> None:
    dev = DeviceStatus(device="0x00000001", port="/dev/ttyUSB0", state="synchronised", firmware="1.0",
                       residual_ns=5, line_delay_ns=90_000, bound_ns=9000, last_seen_age_s=0.1, bad_frames=0)
    st = GatewayStatus(
        tracking=TRACKING, links={"a:4433": LINK, "gone:1": LINK},
        refclock=RefclockOutputStatus(path="/run/chrony.tsq.sock", sent=4, dropped=0, error=None),
        system_clock=SystemClockOutputStatus(dry_run=True, updates=2, last_action="slew"),
        logging=Health(), drift=DriftStatus(file="/var/lib/tsq/drift", at_start="1.2 ppm", error=None),
        capabilities=Health(), devices=(dev,), errors=("devices: boom",))
    js = st.to_json()
    json.dumps(js)   # plain JSON all through
    a, b = js["sources"]
    assert a["alpn"] == "tsq/1" and a["discarded"] == 3 and a["selection"] == "selected"
    assert "alpn" not in b                         # no link known for that source
    assert js["outputs"] == {"refclock": {"path": "/run/chrony.tsq.sock", "sent": 4, "dropped": 0,
                                          "error": None},
                             "system_clock": {"dry_run": True, "updates": 2, "last_action": "slew"}}
    assert js["logging"]["ok"] is True and js["capabilities"]["directory"] == "/var/log/tsq"
    assert js["drift"] == {"file": "/var/lib/tsq/drift", "at_start": "1.2 ppm", "error": None}
    assert js["devices"] == [dev.to_json()] and js["errors"] == ["devices: boom"]
    only_clock = GatewayStatus(tracking=TRACKING, system_clock=SystemClockOutputStatus(False, 0, None),
                               devices=())
    assert list(only_clock.to_json()["outputs"]) == ["system_clock"] and only_clock.to_json()["devices"] == []


class Model:
    def __init__(self, utc: Optional[int]) -> None:
        self.utc = utc

    def utc_ns(self, raw_ns: int) -> Optional[int]:
        return None if self.utc is None else raw_ns + self.utc

    def error_bound_ns(self, raw_ns: int) -> Optional[int]:
        return None if self.utc is None else 1000

    def state(self, raw_ns: int) -> str:
        return "unsynchronised" if self.utc is None else "synchronised"

    def leap(self) -> int:
        return 0 if self.utc is not None else 3


def test_model_tracking_of_a_host_clock() -> None:
    tr = model_tracking(Model(500), 1_000, 1_600, "time from this host's clock")
    assert (tr.state, tr.utc_ns, tr.system_offset_ns, tr.error_bound_ns) == ("synchronised", 1500, 100, 1000)
    assert tr.sources == () and tr.configured == 0 and tr.reason == "time from this host's clock"
    none = model_tracking(Model(None), 1_000, 1_600, "kernel clock not synchronised")
    assert none.utc_ns is None and none.system_offset_ns is None and none.to_json()["time_utc"] is None
    assert none.leap == 3 and not none.synchronised

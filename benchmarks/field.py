"""Field faults, measured (issue 13): real `tsq server` processes, relay processes
(tsq.testing.relay) and the gateway daemon as the product runs it (`python -m tsq sync`, read
through its control socket), with chrony (chronyd -x as server and client, read with `chronyc
tracking`) side by side through the same kind of relays where chrony has an equivalent.

Truth: every server serves this machine's system clock (the liar adds --clock-offset), so the true
offset is 0 at every instant: TSQ's error is -system_offset_ns of `tsq status` (the model's UTC
minus CLOCK_REALTIME, read by the daemon at one instant), chrony's the "System time" of `chronyc
tracking` (-x: it never adjusts the clock). A reading is inside its bound when |error| <= the
reported bound (TSQ error_bound_ns; chrony root delay / 2 + root dispersion). Nothing here touches
the system clock.

Scenarios (`--scenario NAME`, repeatable; default all):
  lone-liar   3 servers, one +100 ms; after convergence the two honest ones are killed
  outage      3 servers; every relay drops everything for a while, then the path comes back
  rebinding   1 server through a NAT whose mappings expire between polls
  long-path   1 server, 300 ms each way (600 ms RTT)
  lte         1 server, 30 +- 15 ms each way with bursts of hundreds of ms
  restart     1 server; the daemon restarts with its drift file, then again without one

    python3 benchmarks/field.py --quick                 # all scenarios in about 10 minutes
    python3 benchmarks/field.py                         # full: product poll defaults, ~2.5 hours
    python3 benchmarks/field.py --quick --scenario outage --no-chrony

Every process (servers, relays, daemons, chronyd) is stopped on exit, error or ctrl-C.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __name__ == "__main__":
    # run as a script from a checkout: its tsq. Imported (tests/benchmarks), the installed one stays
    # first: putting the checkout ahead of it would shadow the built extension for the whole run.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tsq.gateway.control import ControlError, query_status
from tsq.testing.certs import TestPki, make_pki
from tsq.testing.daemon import _RELAY, ChronyProcess, ServerProcess, SyncProcess, _Proc, free_udp_port
from tsq.testing.relay import Impairment

READ_EVERY_S = 0.5
LIAR_OFFSET_S = 0.1
IP_UDP_HEADER = 28        # IPv4 + UDP header bytes per datagram, counted into bytes per day
IMPOSSIBLE_MARGIN_NS = 20_000  # reading the model's error to within this (see TsqRig.exchanges)
STEADY_FROM_S = 20.0       # bytes per day are counted from here (after the start-up burst)


# ------------------------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Scenario:
    name: str
    servers: int
    duration_s: float
    minpoll: int
    maxpoll: int
    impairment: Impairment = Impairment()  # noqa: RUF009 (frozen: safe to share)
    actions: Tuple[Tuple[float, str], ...] = ()    # (seconds from start, action)
    liar: Optional[int] = None                     # index of the lying server
    nat_idle_s: Optional[float] = None
    drift: bool = False                            # the first daemon run keeps a drift file


LTE = Impairment(delay_s=0.030, jitter_s=0.015, burst_every_s=20.0, burst_length_s=2.0, burst_delay_s=0.3)
LONG = Impairment(delay_s=0.300, jitter_s=0.001)
RESTART_PATH = Impairment(delay_s=0.001, jitter_s=0.0003)


def scenarios(quick: bool) -> Dict[str, Scenario]:
    """The scenarios; quick: short and low polls (about 10 minutes in all), else product defaults."""
    if quick:
        return {s.name: s for s in [
            Scenario("lone-liar", 3, 65, 2, 2, liar=2, actions=((30, "kill-honest"),)),
            Scenario("outage", 3, 100, 2, 2, actions=((30, "drop"), (70, "undrop"))),
            Scenario("rebinding", 1, 75, 3, 3, nat_idle_s=5.0),
            Scenario("long-path", 1, 55, 0, 2, LONG),
            Scenario("lte", 1, 55, 0, 2, LTE),
            # a quieter path than the full run's, so that 90 s give a frequency the drift file trusts
            Scenario("restart", 1, 210, 0, 0, Impairment(delay_s=0.001, jitter_s=0.00005), drift=True,
                     actions=((90, "restart-drift"), (150, "restart-cold"))),
        ]}
    return {s.name: s for s in [
        Scenario("lone-liar", 3, 900, 0, 6, liar=2, actions=((300, "kill-honest"),)),
        Scenario("outage", 3, 720, 0, 6, actions=((300, "drop"), (420, "undrop"))),
        Scenario("rebinding", 1, 1800, 6, 6, nat_idle_s=30.0),
        Scenario("long-path", 1, 600, 0, 6, LONG),
        Scenario("lte", 1, 600, 0, 6, LTE),
        Scenario("restart", 1, 1200, 0, 6, RESTART_PATH, drift=True,
                 actions=((600, "restart-drift"), (900, "restart-cold"))),
    ]}


# ------------------------------------------------------------------------------------ processes
class Relay(_Proc):
    """`python -m tsq.testing.relay` (same impairment both ways, seeds apart), printing its counters
    every second; `listen_host` lets chrony see sources on distinct addresses."""

    def __init__(self, upstream_port: int, imp: Impairment, *, listen_host: str = "127.0.0.1",
                 nat_idle_s: Optional[float] = None, drop_file: Optional[str] = None,
                 seed: Optional[int] = None) -> None:
        args = [sys.executable, "-m", "tsq.testing.relay", "--listen", f"{listen_host}:0",
                "--upstream", f"127.0.0.1:{upstream_port}", "--stats-interval", "1"]
        for side in ("fwd", "back"):
            args += [f"--{side}-delay-ms", repr(imp.delay_s * 1e3),
                     f"--{side}-jitter-ms", repr(imp.jitter_s * 1e3), f"--{side}-loss", repr(imp.loss),
                     f"--{side}-burst-every-s", repr(imp.burst_every_s),
                     f"--{side}-burst-length-s", repr(imp.burst_length_s),
                     f"--{side}-burst-delay-ms", repr(imp.burst_delay_s * 1e3)]
        if nat_idle_s is not None:
            args += ["--nat-idle-s", repr(nat_idle_s)]
        if drop_file is not None:
            args += ["--drop-all-file", drop_file]
        if seed is not None:
            args += ["--seed", str(seed)]
        super().__init__(args)
        self._listen_on(_RELAY, 20.0)
        self.host = listen_host
        self.address = f"{listen_host}:{self.port}"

    def stats(self) -> Dict[str, int]:
        """The last counters it printed."""
        with self._cond:
            for line in reversed(self.lines):
                if line.startswith("stats "):
                    import json
                    return {k: int(v) for k, v in json.loads(line[6:]).items()}
        return {}


@dataclass
class Reading:
    t: float                      # seconds since the scenario started
    state: str                    # synchronised | holdover | unsynchronised
    err_ns: Optional[int]         # estimate of UTC minus truth
    bound_ns: Optional[int]
    poll_s: Optional[float]
    reason: str = ""
    wall: float = field(default_factory=time.time)   # to place the daemon's log lines


class Rig:
    """One system (TSQ or chrony) under one scenario: its servers, relays and client."""

    name = ""

    def __init__(self, sc: Scenario, tmp: str, seed: int) -> None:
        self.sc = sc
        self.tmp = tmp
        self.seed = seed
        self.stack = contextlib.ExitStack()
        self.relays: List[Relay] = []
        self.readings: List[Reading] = []
        self.events: Dict[str, float] = {}
        self.drop_file = os.path.join(tmp, f"{self.name}-drop")
        self.drift_path = os.path.join(tmp, f"{self.name}-drift")
        self.extra: Dict[str, Any] = {}
        self.snaps: Dict[str, Tuple[float, Dict[str, int]]] = {}   # relay totals at moments

    def relay(self, upstream_port: int, i: int, host: str = "127.0.0.1") -> Relay:
        r = Relay(upstream_port, self.sc.impairment, listen_host=host, nat_idle_s=self.sc.nat_idle_s,
                  drop_file=self.drop_file, seed=self.seed * 10 + i)
        self.stack.callback(r.stop)
        self.relays.append(r)
        return r

    def setup(self) -> None:
        raise NotImplementedError

    def start_client(self, drift: bool) -> None:
        raise NotImplementedError

    def stop_client(self) -> None:
        raise NotImplementedError

    def kill_honest(self) -> None:
        raise NotImplementedError

    def read(self, t: float) -> Optional[Reading]:
        raise NotImplementedError

    def finish(self) -> None:
        """Collect what is only known at the end (before the processes stop)."""
        if KEEP_DIR:
            with open(os.path.join(KEEP_DIR, f"{self.sc.name}-{self.name}-readings.csv"), "w") as fh:
                fh.write("t_s,state,err_ns,bound_ns,poll_s,reason\n")
                for r in self.readings:
                    fh.write(f"{r.t:.2f},{r.state},{r.err_ns},{r.bound_ns},{r.poll_s},\"{r.reason}\"\n")

    def act(self, action: str) -> None:
        if action == "drop":
            open(self.drop_file, "w").close()
        elif action == "undrop":
            os.unlink(self.drop_file)
        elif action == "kill-honest":
            self.kill_honest()
        elif action in ("restart-drift", "restart-cold"):
            self.stop_client()
            self.start_client(drift=action == "restart-drift")
        else:
            raise ValueError(action)

    def snap(self, label: str, t: float) -> None:
        self.snaps.setdefault(label, (t, self.relay_totals()))

    def bytes_per_day(self, a: str, b: str) -> Optional[float]:
        """Bytes per day through the relays between snapshots `a` and `b` (payload + IP/UDP headers)."""
        if a not in self.snaps or b not in self.snaps:
            return None
        (ta, sa), (tb, sb) = self.snaps[a], self.snaps[b]

        def wire(st: Dict[str, int]) -> int:
            return (st.get("bytes_in", 0) + st.get("bytes_out", 0)
                    + IP_UDP_HEADER * (st.get("datagrams_in", 0) + st.get("datagrams_out", 0)))
        return (wire(sb) - wire(sa)) * 86400.0 / max(tb - ta, 1e-9)

    def relay_totals(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for r in self.relays:
            for k, v in r.stats().items():
                out[k] = out.get(k, 0) + v
        return out


class TsqRig(Rig):
    name = "tsq"

    def __init__(self, sc: Scenario, tmp: str, seed: int) -> None:
        super().__init__(sc, tmp, seed)
        self.servers: List[ServerProcess] = []
        self.sync: Optional[SyncProcess] = None
        self.pki: Optional[TestPki] = None
        self.runs: List[SyncProcess] = []        # every daemon run (restart), for its -v output

    def setup(self) -> None:
        os.makedirs(os.path.join(self.tmp, "pki"))
        self.pki = make_pki(os.path.join(self.tmp, "pki"))
        for i in range(self.sc.servers):
            srv = ServerProcess(self.pki, clock_offset=LIAR_OFFSET_S if i == self.sc.liar else 0.0)
            self.stack.callback(srv.stop)
            self.servers.append(srv)
            self.relay(srv.port, i)
        self.start_client(drift=self.sc.drift)

    def start_client(self, drift: bool) -> None:
        assert self.pki is not None
        extra = ["--minpoll", str(self.sc.minpoll), "--maxpoll", str(self.sc.maxpoll), "-v"]
        if drift:
            extra += ["--drift-file", self.drift_path]
        work = os.path.join(self.tmp, f"tsq-run{len(self.runs)}")
        os.makedirs(work)
        self.sync = SyncProcess([r.address for r in self.relays], work, ca=self.pki.ca_cert, extra=extra)
        self.stack.callback(self.sync.stop)
        self.runs.append(self.sync)

    def stop_client(self) -> None:
        if self.sync is not None:
            self.sync.stop()

    def kill_honest(self) -> None:
        for i, srv in enumerate(self.servers):
            if i != self.sc.liar:
                srv.kill()

    def read(self, t: float) -> Optional[Reading]:
        if self.sync is None:
            return None
        try:
            st = query_status(self.sync.control, timeout_s=5.0)
        except ControlError:
            return None
        off = st.get("system_offset_ns")
        note = (st.get("drift") or {}).get("at_start")
        notes = self.extra.setdefault("drift notes", [])
        if note and (not notes or notes[-1] != note):
            notes.append(note)
        return Reading(t, str(st.get("state")), None if off is None else -int(off), st.get("error_bound_ns"),
                       st.get("poll_s"), str(st.get("reason", "")))

    def exchanges(self) -> Dict[str, Any]:
        """From the daemons' -v output: answered exchanges, failures, and samples whose error against
        truth exceeds half their round trip (+ IMPOSSIBLE_MARGIN_NS): no path can make a correctly
        stamped sample that wrong, so their timestamps do not belong together."""
        answered = failed = rejected = 0
        impossible = {"accepted": 0, "rejected": 0}
        worst = 0.0
        names = [r.address for r in self.relays]
        liar = None if self.sc.liar is None else names[self.sc.liar]   # its samples are wrong by design
        sample = re.compile(r"^(\S+ \S+) tsq\.sync: (\S+): \w+ (accepted|rejected)[^,]*, "
                            r"offset (-?\d+|None) ns, delay (-?\d+) ns")
        walls = [r.wall for r in self.readings]
        for run in self.runs:
            for line in run.lines:
                m = sample.search(line)
                if m:
                    answered += 1
                    rejected += m.group(3) == "rejected"
                    if m.group(4) == "None" or not walls or m.group(2) == liar:
                        continue
                    # the offset is relative to the model before this sample: add that model's error
                    wall = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                    k = max(0, bisect.bisect_left(walls, wall) - 1)
                    err = abs(int(m.group(4)) + (self.readings[k].err_ns or 0))
                    excess = err - int(m.group(5)) / 2
                    if excess > IMPOSSIBLE_MARGIN_NS:
                        impossible[m.group(3)] += 1
                        worst = max(worst, excess)
                elif any(n in line for n in names) and "tsq.sync: " in line and "sources [" not in line:
                    failed += 1
        return {"answered": answered, "rejected": rejected, "failed": failed, "wrong": impossible["accepted"],
                "wrong_rejected": impossible["rejected"], "worst_us": worst / 1e3}

    def finish(self) -> None:
        super().finish()
        if KEEP_DIR:
            for k, run in enumerate(self.runs):
                with open(os.path.join(KEEP_DIR, f"{self.sc.name}-tsq-sync{k}.log"), "w") as fh:
                    fh.write(run.output + "\n")


class ChronyRig(Rig):
    name = "chrony"

    def __init__(self, sc: Scenario, tmp: str, seed: int) -> None:
        super().__init__(sc, tmp, seed)
        self.client: Optional[ChronyProcess] = None
        self.ntpdata: List[Dict[str, str]] = []

    def setup(self) -> None:
        port = free_udp_port()
        srv = ChronyProcess([f"port {port}", "bindaddress 127.0.0.1", "local stratum 1", "allow 127.0.0.1"])
        self.stack.callback(srv.stop)
        for i in range(self.sc.servers):
            # distinct loopback addresses: chrony tells its sources apart by address
            self.relay(port, i, host=f"127.0.0.{2 + i}")
        self.start_client(drift=self.sc.drift)

    def start_client(self, drift: bool) -> None:
        lines = []
        for i, r in enumerate(self.relays):
            line = (f"server {r.host} port {r.port} iburst minpoll {self.sc.minpoll} "
                    f"maxpoll {self.sc.maxpoll} xleave")
            if i == self.sc.liar:
                line += f" offset {LIAR_OFFSET_S}"
            lines.append(line)
        if drift:
            lines.append(f"driftfile {self.drift_path}")
        self.client = ChronyProcess(lines)
        self.stack.callback(self.client.stop)

    def stop_client(self) -> None:
        if self.client is not None:
            self._collect_ntpdata()
            self.client.stop()

    def kill_honest(self) -> None:
        for i, r in enumerate(self.relays):
            if i != self.sc.liar:
                r.stop()

    def read(self, t: float) -> Optional[Reading]:
        if self.client is None:
            return None
        try:
            rows = self.client.chronyc("tracking")
        except Exception:
            return None
        if not rows or len(rows[0]) < 14:
            return None
        row = rows[0]
        if row[0] in ("00000000", "7F7F0101"):
            return Reading(t, "unsynchronised", None, None, None, "no reference")
        bound = abs(float(row[10])) / 2 + float(row[11])
        state = "unsynchronised" if row[13].strip() == "Not synchronised" else "synchronised"
        return Reading(t, state, round(float(row[4]) * 1e9), round(bound * 1e9), 2.0 ** self.sc.maxpoll,
                       row[13])

    def _collect_ntpdata(self) -> None:
        assert self.client is not None
        with contextlib.suppress(Exception):
            import subprocess
            out = subprocess.run(["chronyc", "-h", self.client.cmdsock, "ntpdata"], capture_output=True,
                                 text=True, timeout=10).stdout
            for block in out.split("\n\n"):
                kv = {}
                for line in block.splitlines():
                    k, _, v = line.partition(":")
                    kv[k.strip()] = v.strip()
                if kv:
                    self.ntpdata.append(kv)

    def finish(self) -> None:
        super().finish()
        self._collect_ntpdata()

    def exchanges(self) -> Dict[str, Any]:
        tx = sum(int(d.get("Total TX", "0") or 0) for d in self.ntpdata)
        valid = sum(int(d.get("Total valid RX", "0") or 0) for d in self.ntpdata)
        return {"answered": valid, "failed": tx - valid}


# ------------------------------------------------------------------------------------ running
STOP = threading.Event()
KEEP_DIR = ""             # --keep: the daemons' output goes here


def run_rig(rig: Rig, errors: List[BaseException]) -> None:
    """Set up, follow the timeline, read every READ_EVERY_S, tear down (always)."""
    try:
        with rig.stack:
            rig.setup()
            start = time.monotonic()
            rig.events["start"] = 0.0
            actions = list(rig.sc.actions)
            rig.snap("start", 0.0)
            while not STOP.is_set():
                t = time.monotonic() - start
                if t >= rig.sc.duration_s:
                    break
                if t >= STEADY_FROM_S:
                    rig.snap("steady", t)
                while actions and actions[0][0] <= t:
                    _, action = actions.pop(0)
                    rig.snap("first action", t)
                    rig.act(action)
                    rig.events[action] = time.monotonic() - start
                r = rig.read(time.monotonic() - start)
                if r is not None:
                    rig.readings.append(r)
                STOP.wait(max(0.0, READ_EVERY_S - (time.monotonic() - start - t)))
            rig.events["end"] = time.monotonic() - start
            time.sleep(1.1)      # the relays' next counters line
            rig.snap("first action", rig.events["end"])
            rig.snap("end", rig.events["end"])
            rig.finish()
    except BaseException as exc:
        errors.append(exc)


def _pct(mags: Sequence[int], q: float) -> Optional[float]:
    """Nearest-rank percentile in µs of an ascending list."""
    if not mags:
        return None
    return mags[min(len(mags) - 1, int(q * len(mags)))] / 1e3


def _us(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v / 1e3:.2f} ms" if v >= 10_000 else f"{v:.1f} µs"


def _first(readings: Sequence[Reading], after: float, pred: Callable[[Reading], bool]) -> Optional[float]:
    """Seconds from `after` to the first reading at or after it that satisfies `pred`."""
    for r in readings:
        if r.t >= after and pred(r):
            return r.t - after
    return None


def _poll_at(readings: Sequence[Reading], t: float) -> Optional[float]:
    before = [r.poll_s for r in readings if r.t < t and r.poll_s]
    return before[-1] if before else None


def _in_polls(dt: Optional[float], poll: Optional[float]) -> str:
    if dt is None:
        return "never"
    return f"{dt:.1f} s" + (f" ({dt / poll:.1f} polls)" if poll else "")


@dataclass
class Figures:
    lines: List[str] = field(default_factory=list)
    row: Dict[str, str] = field(default_factory=dict)


def figures(rig: Rig) -> Figures:
    """Per system: time to a truthful state, error percentiles, share inside the bound, bytes/day."""
    sc, rd, ev = rig.sc, rig.readings, rig.events
    f = Figures()
    synced = _first(rd, 0.0, lambda r: r.state == "synchronised")
    f.row["to sync"] = "never" if synced is None else f"{synced:.1f} s"
    for event, words in (("kill-honest", "after the kill"), ("drop", "after the outage began")):
        if event in ev:
            t = ev[event]
            truthful = _in_polls(_first(rd, t, lambda r: r.state != "synchronised"), _poll_at(rd, t))
            f.lines.append(f"not synchronised {words}: {truthful}")
            f.row["truthful"] = truthful
    if "kill-honest" in ev:
        after = [r for r in rd if r.t >= ev["kill-honest"] and r.err_ns is not None]
        out = sum(1 for r in after if r.bound_ns is None or abs(r.err_ns or 0) > r.bound_ns)
        followed = sum(1 for r in after if abs(r.err_ns or 0) > LIAR_OFFSET_S * 1e9 / 2)
        f.lines.append(f"after the kill: {len(after)} readings with an estimate, {out} outside the bound, "
                       f"{followed} following the liar (|error| > 50 ms)")
        f.row["liar followed"] = f"{followed}/{len(after)}"
    if "undrop" in ev:
        back = _first(rd, ev["undrop"], lambda r: r.state == "synchronised")
        f.lines.append("synchronised again after recovery: " + ("never" if back is None else f"{back:.1f} s"))
        f.row["back to sync"] = "never" if back is None else f"{back:.1f} s"
    est = [r for r in rd if r.err_ns is not None and r.bound_ns is not None]
    mags = sorted(abs(r.err_ns or 0) for r in est)
    inside = sum(1 for r in est if abs(r.err_ns or 0) <= (r.bound_ns or 0))
    share = f"{100.0 * inside / len(est):.1f} % ({inside}/{len(est)})" if est else "-"
    f.row.update({"p50": _us(_pct(mags, 0.5)), "p99": _us(_pct(mags, 0.99)), "inside bound": share})
    f.lines.append(f"|error| p50 {_us(_pct(mags, 0.5))}  p99 {_us(_pct(mags, 0.99))}  "
                   f"max {_us(mags[-1] / 1e3 if mags else None)}; inside the bound {share}")
    if "restart-drift" in ev:
        runs = [("before restart (steady)", ev["restart-drift"] / 2, ev["restart-drift"]),
                ("first minute, drift file", ev["restart-drift"], ev["restart-drift"] + 60),
                ("first minute, cold", ev.get("restart-cold", math.inf),
                 ev.get("restart-cold", math.inf) + 60)]
        p99: Dict[str, Optional[float]] = {}
        for label, lo, hi in runs:
            w = sorted(abs(r.err_ns or 0) for r in est if lo <= r.t < hi)
            ins = sum(1 for r in est if lo <= r.t < hi and abs(r.err_ns or 0) <= (r.bound_ns or 0))
            n = sum(1 for r in est if lo <= r.t < hi)
            p99[label] = _pct(w, 0.99)
            sync_at = _first(rd, lo, lambda r: r.state == "synchronised") if lo > 0 else None
            f.lines.append(f"{label}: p50 {_us(_pct(w, 0.5))} p99 {_us(p99[label])}, inside {ins}/{n}"
                           + ("" if sync_at is None else f", synchronised {sync_at:.1f} s after the restart"))
        steady = p99["before restart (steady)"]
        for label, key in (("first minute, drift file", "drift/steady"),
                           ("first minute, cold", "cold/steady")):
            v = p99[label]
            f.row[key] = f"{v / steady:.2f}x" if v is not None and steady else "-"
        f.lines.append("first-minute p99 / steady p99: drift file " + f.row["drift/steady"]
                       + ", cold " + f.row["cold/steady"])
    ex = rig.exchanges() if isinstance(rig, (TsqRig, ChronyRig)) else {}
    rel = rig.relay_totals()
    f.lines.append(f"exchanges: {ex}; relay rebinds {rel.get('rebinds', 0)}, "
                   f"dropped at expired mappings {rel.get('nat_dropped', 0)}")
    if sc.nat_idle_s is not None:
        f.row["lost exchanges"] = str(ex.get("failed", "-"))
    if "wrong" in ex:
        f.row["wrong samples"] = (f"{ex['wrong']} accepted (worst +{ex['worst_us']:.0f} µs), "
                                  f"{ex['wrong_rejected']} rejected")
    steady = rig.bytes_per_day("steady", "first action")
    whole = rig.bytes_per_day("start", "end")
    if sc.actions:
        faulted = rig.bytes_per_day("first action", "end")
        f.lines.append(f"bytes/day from the first fault to the end: {_mb(faulted)}")
    f.row["bytes/day"] = "-" if steady is None else f"{steady / 1e6:.2f} MB"
    f.lines.append(f"bytes/day through the relays (payload + IP/UDP headers): {_mb(steady)} from "
                   f"{STEADY_FROM_S:g} s to the first fault, {_mb(whole)} over the whole run "
                   f"(poll 2^{sc.minpoll}..2^{sc.maxpoll} s, handshakes and faults included)")
    for note in rig.extra.get("drift notes", []):
        f.lines.append(f"drift file at start: {note}")
    last = rd[-1] if rd else None
    if last is not None:
        f.lines.append(f"last reading: {last.state}, {last.reason}")
    return f


def _mb(v: Optional[float]) -> str:
    return "-" if v is None else f"{v / 1e6:.2f} MB"


def _describe(imp: Impairment) -> str:
    """The impairment's non-default fields, compactly (the same each way)."""
    parts = [f"{k} {v:g}" for k, v in vars(imp).items() if v != getattr(Impairment(), k)]
    return "each way: " + ", ".join(parts) if parts else "clean path"


def run_scenario(sc: Scenario, with_chrony: bool, seed: int) -> Dict[str, Figures]:
    print(f"[{sc.name}] {sc.servers} server(s), {sc.duration_s:g} s, poll 2^{sc.minpoll}..2^{sc.maxpoll} s, "
          f"{_describe(sc.impairment)}" + (f", NAT idle {sc.nat_idle_s:g} s" if sc.nat_idle_s else "")
          + (f", actions {list(sc.actions)}" if sc.actions else ""), flush=True)
    out: Dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix=f"tsq-field-{sc.name}-") as tmp:
        rigs: List[Rig] = [TsqRig(sc, tmp, seed)]
        if with_chrony:
            rigs.append(ChronyRig(sc, tmp, seed))
        errors: List[BaseException] = []
        done = [threading.Event() for _ in rigs]

        def job(rig: Rig, ev: threading.Event) -> None:
            try:
                run_rig(rig, errors)
            finally:
                ev.set()
        for rig, ev in zip(rigs, done):
            threading.Thread(target=job, args=(rig, ev), name=rig.name, daemon=True).start()
        try:
            for ev in done:
                while not ev.wait(0.5):
                    pass
        except BaseException:
            # Events, not Thread.join: a join interrupted by ctrl-C can make later joins return at once
            STOP.set()
            for ev in done:
                ev.wait(120)      # each thread's ExitStack stops its processes
            raise
        if errors:
            raise errors[0]
        for rig in rigs:
            f = figures(rig)
            out[rig.name] = f
            print(f"  {rig.name}:")
            for line in f.lines:
                print(f"    {line}")
        sys.stdout.flush()
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs, low polls (all in about 10 minutes)")
    ap.add_argument("--scenario", action="append", choices=sorted(scenarios(True)), help="default: all")
    ap.add_argument("--no-chrony", action="store_true", help="skip chrony even when installed")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", metavar="DIR", help="write each tsq sync run's -v output here")
    args = ap.parse_args(argv)
    global KEEP_DIR
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        KEEP_DIR = args.keep
    with_chrony = (not args.no_chrony and shutil.which("chronyd") is not None
                   and shutil.which("chronyc") is not None)
    if with_chrony and os.geteuid() != 0:
        print("chrony comparison needs root here (chronyd -u root, private sockets); skipped")
        with_chrony = False

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # even when started with it ignored (&)
    table = scenarios(args.quick)
    started = time.monotonic()
    print(f"field scenarios ({'quick' if args.quick else 'full'}), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.2f}, read every {READ_EVERY_S:g} s", flush=True)
    results: Dict[str, Dict[str, Figures]] = {}
    try:
        for name in args.scenario or list(table):
            results[name] = run_scenario(table[name], with_chrony, args.seed)
    except KeyboardInterrupt:
        print("interrupted: every process stopped", file=sys.stderr)
        return 130
    print(f"\nsummary ({time.monotonic() - started:.0f} s, load average now {os.getloadavg()[0]:.2f})")
    keys = ["to sync", "truthful", "back to sync", "liar followed", "lost exchanges", "wrong samples",
            "p50", "p99", "inside bound", "drift/steady", "cold/steady", "bytes/day"]
    print("| scenario | system | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for name, per in results.items():
        for system, f in per.items():
            print(f"| {name} | {system} | " + " | ".join(f.row.get(k, "") for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

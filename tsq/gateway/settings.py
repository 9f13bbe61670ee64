"""The gateway's settings (`SyncConfig`): what flags and the TOML file can say (examples/tsq.toml).

A module of its own, with no I/O imports, so that a gateway without servers (a bridge fed by the
host's clock) never loads the QUIC stack (tsq.gateway.app imports tsq.gateway.runner only for servers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class SyncConfig:
    """Everything `tsq sync` can be told (CLI flags or the TOML file; see examples/tsq.toml)."""

    servers: List[str] = field(default_factory=list)   # "HOST[:PORT]"
    ca: Optional[str] = None
    pin: Optional[str] = None
    insecure: bool = False
    allow_legacy_alpn: bool = False    # also speak ALPN tsq/1 (the deployed implementation)
    verify_key: Optional[str] = None   # key file: responses must carry a Signature Block it verifies
    key_id: int = 1
    require_signature: bool = False    # implied by verify_key
    mode: str = "auto"
    minpoll: int = 0                   # log2 seconds
    maxpoll: int = 6
    log_dir: Optional[str] = None
    fsync_interval_s: float = 5.0
    control_path: Optional[str] = None
    # outputs, all off by default
    adjust_system: bool = False
    makestep: float = 1.0            # step when |offset| > this ...
    makestep_limit: int = 3            # ... in the first N clock updates (then only slew)
    panic: float = 1000.0            # never touch the clock for |offset| > this (0: no limit)
    dry_run: bool = False              # --adjust-system only says what it would do
    refclock_sock: Optional[str] = None
    refclock_time_bits: str = "auto"
    metrics_file: Optional[str] = None
    metrics_port: Optional[int] = None
    # client
    # Two exchanges back to back per poll, the second sampled: its request leaves on the kernel's warm
    # send path like the server's answer, which removes a ~1 µs one-sided bias (docs/benchmarks.md).
    paired: bool = True
    # The longest wait for one answer; below it the session waits 8 x the slowest recent round trip
    # (at least 0.25 s), so this only matters on long paths (geostationary: 600 ms and more).
    timeout_s: float = 4.0
    connect_timeout_s: float = 3.0
    backoff_max_s: float = 64.0
    ready_timeout_s: float = 90.0      # systemd READY=1 at the first synchronisation, or after this
    drift_file: Optional[str] = None   # the raw clock's frequency across restarts (tsq.gateway.driftfile)
    # serial devices (tsq.bridge): none by default
    ports: List[str] = field(default_factory=list)
    baud: int = 115200
    link: Optional[str] = None         # link type of every port; None: detect (tsq.bridge)
    ping_interval_s: float = 1.0
    single_ping: bool = False
    reply_spin_ms: float = 0.0         # the PONG watched for without sleeping (tsq.bridge.port); 0: off
    read_probe: bool = False           # the host's read latency off the USB grid (tsq.bridge.readprobe)
    nmea: bool = False
    nmea_position: Optional[Tuple[float, float]] = None
    source: str = "engine"             # the devices' time: "engine" (the servers) | "system"
    assume_bound_ns: Optional[int] = None   # with source "system": vouch for the system clock
    quiet: bool = False

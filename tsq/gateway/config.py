"""The gateway's TOML configuration (`tsq gateway`, `tsq sync`, the bridge; examples/tsq.toml).

    servers = ["time.example.net:4433", "time2.example.net"]
    mode = "auto"            # auto | datagram | stream
    minpoll = 0              # log2 seconds
    maxpoll = 6
    control = "/run/tsq/control.sock"

    [trust]                  # ca = "FILE" | pin = "sha256/BASE64" | insecure = true;
                             # verify_key = "FILE", key_id = 1 (signed responses required);
                             # allow_legacy_alpn = true (also speak tsq/1, draft §7 says only tsq)
    [log]                    # dir = "/var/log/tsq", fsync_interval = 5.0
    [system_clock]           # adjust = true, makestep = 1.0, makestep_limit = 3, panic = 1000.0, dry_run
    [refclock]               # sock = "/run/chrony/tsq.sock", time_bits = "auto" | 32 | 64
    [metrics]                # file = "/var/lib/prometheus/node-exporter/tsq.prom", port = 9473
    [bridge]                 # ports = ["/dev/ttyUSB0"], baud = 115200, link = "auto", ping_interval = 1.0,
                             # single_ping, reply_spin_ms, read_probe, nmea, nmea_position = [lat, lon],
                             # source = "engine" | "system",
                             # assume_bound_ns (with source = "system")

Read from /etc/tsq/tsq.toml by default, then /etc/tsq/tsq.d/*.toml in name order (drop-ins).

`parse_config(text)` returns the keyword arguments of SyncConfig and raises ConfigError, and only
ConfigError, for anything wrong (syntax, unknown key, wrong type), naming the key.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]


class ConfigError(ValueError):
    """The configuration file is not valid; the message names the file, key and problem."""


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError("a string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("true or false")
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("an integer")
    return int(v)


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError("a number")
    if v != v or v in (float("inf"), float("-inf")):
        raise TypeError("a finite number")
    return float(v)


def _servers(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
        raise TypeError("a list of non-empty strings")
    return list(v)


def _mode(v: Any) -> str:
    if v not in ("auto", "datagram", "stream"):
        raise TypeError('"auto", "datagram" or "stream"')
    return str(v)


def _position(v: Any) -> Tuple[float, float]:
    if (not isinstance(v, list) or len(v) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        raise TypeError("[latitude, longitude] in degrees")
    lat, lon = float(v[0]), float(v[1])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise TypeError("[latitude, longitude] within [-90, 90] and [-180, 180]")
    return lat, lon


def _source(v: Any) -> str:
    if v not in ("engine", "system"):
        raise TypeError('"engine" (the TSQ servers above) or "system" (this host\'s disciplined clock)')
    return str(v)


def _time_bits(v: Any) -> str:
    if v in ("auto", 32, 64) and not isinstance(v, bool):
        return str(v)
    raise TypeError('"auto", 32 or 64')


Conv = Callable[[Any], Any]
# (table, key) -> (SyncConfig field, converter). Table "" is the top level.
SCHEMA: Dict[Tuple[str, str], Tuple[str, Conv]] = {
    ("", "servers"): ("servers", _servers),
    ("", "mode"): ("mode", _mode),
    ("", "minpoll"): ("minpoll", _int),
    ("", "maxpoll"): ("maxpoll", _int),
    ("", "control"): ("control_path", _str),
    ("", "drift_file"): ("drift_file", _str),
    ("trust", "ca"): ("ca", _str),
    ("trust", "pin"): ("pin", _str),
    ("trust", "insecure"): ("insecure", _bool),
    ("trust", "allow_legacy_alpn"): ("allow_legacy_alpn", _bool),
    ("trust", "require_signature"): ("require_signature", _bool),
    ("trust", "verify_key"): ("verify_key", _str),
    ("trust", "key_id"): ("key_id", _int),
    ("log", "dir"): ("log_dir", _str),
    ("log", "fsync_interval"): ("fsync_interval_s", _float),
    ("system_clock", "adjust"): ("adjust_system", _bool),
    ("system_clock", "makestep"): ("makestep", _float),
    ("system_clock", "makestep_limit"): ("makestep_limit", _int),
    ("system_clock", "panic"): ("panic", _float),
    ("system_clock", "dry_run"): ("dry_run", _bool),
    ("refclock", "sock"): ("refclock_sock", _str),
    ("refclock", "time_bits"): ("refclock_time_bits", _time_bits),
    ("metrics", "file"): ("metrics_file", _str),
    ("metrics", "port"): ("metrics_port", _int),
    ("bridge", "ports"): ("ports", _servers),
    ("bridge", "baud"): ("baud", _int),
    ("bridge", "link"): ("link", _str),
    ("bridge", "ping_interval"): ("ping_interval_s", _float),
    ("bridge", "single_ping"): ("single_ping", _bool),
    ("bridge", "reply_spin_ms"): ("reply_spin_ms", _float),
    ("bridge", "read_probe"): ("read_probe", _bool),
    ("bridge", "nmea"): ("nmea", _bool),
    ("bridge", "nmea_position"): ("nmea_position", _position),
    ("bridge", "source"): ("source", _source),
    ("bridge", "assume_bound_ns"): ("assume_bound_ns", _int),
}
TABLES = {t for t, _ in SCHEMA if t}


def config_from_mapping(doc: Mapping[str, Any], source: str = "config") -> Dict[str, Any]:
    """SyncConfig keyword arguments from a parsed TOML document."""
    out: Dict[str, Any] = {}
    for key, value in doc.items():
        if key in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table")
            items = [((key, k), v, f"{key}.{k}") for k, v in value.items()]
        else:
            items = [(("", key), value, key)]
        for where, v, name in items:
            entry = SCHEMA.get(where)
            if entry is None:
                raise ConfigError(f"{source}: unknown setting {name!r}")
            field, conv = entry
            try:
                out[field] = conv(v)
            except TypeError as exc:
                raise ConfigError(f"{source}: {name} must be {exc}") from None
    if "minpoll" in out and "maxpoll" in out and out["minpoll"] > out["maxpoll"]:
        raise ConfigError(f"{source}: minpoll {out['minpoll']} is above maxpoll {out['maxpoll']}")
    return out


def parse_config(text: str, source: str = "config") -> Dict[str, Any]:
    """SyncConfig keyword arguments from TOML text; ConfigError for anything wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config_from_mapping(doc, source)


DEFAULT_PATH = "/etc/tsq/tsq.toml"


def drop_in_dir(path: str) -> str:
    """The drop-in directory of a config file: /etc/tsq/tsq.toml -> /etc/tsq/tsq.d."""
    base = os.path.basename(path)
    stem = base[:-len(".toml")] if base.endswith(".toml") else base
    return os.path.join(os.path.dirname(path), f"{stem}.d")


def config_files(path: str) -> List[str]:
    """`path` and its drop-ins (`<stem>.d/*.toml`, in name order): later files override earlier ones,
    key by key (a list, such as `servers`, is replaced whole)."""
    files = [path]
    d = drop_in_dir(path)
    if os.path.isdir(d):
        files += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".toml"))
    return files


def _read(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_config(text, path)


def load_config(path: str) -> Dict[str, Any]:
    """SyncConfig keyword arguments from the TOML file at `path` and its drop-ins; ConfigError if
    any is unreadable or invalid (the message names the file and the key)."""
    out: Dict[str, Any] = {}
    for f in config_files(path):
        out.update(_read(f))
    if "minpoll" in out and "maxpoll" in out and out["minpoll"] > out["maxpoll"]:
        raise ConfigError(f"{path}: minpoll {out['minpoll']} is above maxpoll {out['maxpoll']}")
    return out

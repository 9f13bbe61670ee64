"""The TOML configuration: the documented example, every key, errors naming the key, totality."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tsq.gateway.config import ConfigError, load_config, parse_config
from tsq.gateway.settings import SyncConfig
from tsq.gateway.sync_cli import add_parser, config_from_args

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "tsq.toml")


def test_documented_example_loads() -> None:
    values = load_config(EXAMPLE)
    cfg = SyncConfig(**values)
    assert cfg.servers == ["time1.example.net:4433", "time2.example.net:4433", "time3.example.net"]
    assert (cfg.mode, cfg.minpoll, cfg.maxpoll) == ("auto", 0, 6)
    assert cfg.log_dir == "/var/log/tsq" and cfg.fsync_interval_s == 5.0
    assert not cfg.adjust_system and cfg.makestep == 1.0 and cfg.makestep_limit == 3
    assert cfg.panic == 1000.0 and cfg.refclock_sock is None and cfg.refclock_time_bits == "auto"


def test_every_key() -> None:
    text = """
servers = ["a:1"]
mode = "datagram"
minpoll = 1
maxpoll = 3
control = "/tmp/x.sock"
[trust]
ca = "ca.pem"
pin = "sha256/x"
insecure = true
[log]
dir = "logs"
fsync_interval = 1
[system_clock]
adjust = true
makestep = 0.5
makestep_limit = 1
panic = 0
dry_run = true
[refclock]
sock = "/run/chrony/tsq.sock"
time_bits = 32
[metrics]
file = "m.prom"
port = 9473
"""
    cfg = SyncConfig(**parse_config(text))
    assert cfg == SyncConfig(servers=["a:1"], mode="datagram", minpoll=1, maxpoll=3,
                             control_path="/tmp/x.sock",
                             ca="ca.pem", pin="sha256/x", insecure=True, log_dir="logs", fsync_interval_s=1.0,
                             adjust_system=True, makestep=0.5, makestep_limit=1, panic=0.0, dry_run=True,
                             refclock_sock="/run/chrony/tsq.sock", refclock_time_bits="32",
                             metrics_file="m.prom", metrics_port=9473)


@pytest.mark.parametrize("text, match", [
    ("serverz = []", "unknown setting 'serverz'"),
    ("[trust]\ncafile = 'x'", "unknown setting 'trust.cafile'"),
    ("servers = 'a'", "servers must be a list"),
    ("mode = 'udp'", "mode must be"),
    ("minpoll = 1.5", "minpoll must be an integer"),
    ("minpoll = true", "minpoll must be an integer"),
    ("minpoll = 7\nmaxpoll = 3", "above maxpoll"),
    ("[system_clock]\npanic = 'no'", "system_clock.panic must be a number"),
    ("[system_clock]\npanic = nan", "finite"),
    ("trust = 1", r"\[trust\] must be a table"),
    ("servers = [", "config:"),
    ("[refclock]\ntime_bits = 16", "time_bits must be"),
])
def test_errors_name_the_key(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config(text)


def test_unreadable_file(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(bad))


@given(st.text(max_size=200))
def test_parse_config_total(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text)


@given(st.dictionaries(st.sampled_from(["servers", "mode", "minpoll", "trust", "log", "x"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans(),
                                 st.lists(st.text(max_size=3), max_size=2),
                                 st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))))
def test_config_from_structures_total(doc: dict[str, Any]) -> None:
    from tsq.gateway.config import config_from_mapping

    with contextlib.suppress(ConfigError):
        config_from_mapping(doc)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["sync", *argv])


def test_flags_override_the_file(tmp_path: Any) -> None:
    cfg = config_from_args(_args("--config", EXAMPLE, "--server", "127.0.0.1:4433", "--maxpoll", "2",
                                 "--adjust-system", "--dry-run", "--makestep", "0.01"))
    assert cfg.servers == ["127.0.0.1:4433"] and cfg.maxpoll == 2 and cfg.minpoll == 0
    assert cfg.adjust_system and cfg.dry_run and cfg.makestep == 0.01 and cfg.log_dir == "/var/log/tsq"
    assert cfg.insecure is False and cfg.quiet is False
    with pytest.raises(ConfigError, match="no TSQ server"):
        config_from_args(_args("--log", str(tmp_path)))

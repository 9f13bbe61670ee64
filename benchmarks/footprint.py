"""The gateway's memory footprint (issue 15: RSS <= 40 MB with one server and one device).

Starts `tsq server` on loopback (the test PKI), a firmware host build on a pty, and `tsq gateway`
with that one server and that one device, each variant in turn; once the device is synchronised,
samples the gateway's /proc/PID/status and smaps_rollup once a second for `--duration` seconds and
prints the medians: VmRSS (what `ps` and systemd's MemoryCurrent-style readings start from), its
anonymous and file-backed parts (shared libraries: the file part is shared with every other Python
on the machine), PSS and the peak (VmHWM).

Variants (one run each, side by side):
- `default`      the gateway as `python -m tsq gateway` starts it (what the unit runs), trusting the
                 server by its SPKI pin, as a deployment does (`tsq pin`, README "Deploy");
- `ca`           the same trusting a CA file (`--ca`) instead: aioquic's chain check then imports
                 pyOpenSSL and service_identity at the first handshake (tsq/quic/_deferred_tls.py);
- `arena-2`      the default with MALLOC_ARENA_MAX=2 in its environment (glibc gives each thread an
                 arena of its own otherwise; the field-log writer, its compressor and the executor
                 are threads).
Then the import cost alone: the same interpreter importing the gateway's modules and nothing else.

    python3 benchmarks/footprint.py [--duration 20] [--variants default,ca,arena-2] [--python CMD]

`--python CMD` runs the gateway (and the import-only figures) with another installation, e.g. the
project installed by the README's deploy commands in a Debian 12 root, Raspberry Pi OS's Python:
`--python "chroot ROOT /opt/tsq/bin/python"`, with the host's /tmp, /dev and /proc bind-mounted in
ROOT (the gateway reads the test PKI in /tmp and opens the device's pty).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tsq.quic.trust import spki_pin_pem
from tsq.testing.certs import make_pki
from tsq.testing.daemon import ServerProcess, SyncProcess
from tsq.testing.firmware import SimulatedDevice, build_host_firmware

STARTUP_S = 180.0

# name: (environment added, trust: "pin" or "ca")
VARIANTS: Dict[str, Tuple[Dict[str, str], str]] = {
    "default": ({}, "pin"),
    "ca": ({}, "ca"),
    "arena-2": ({"MALLOC_ARENA_MAX": "2"}, "pin"),
}


def read_kb(pid: int) -> Dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM (status) and Pss (smaps_rollup), in kB."""
    out: Dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(rest.split()[0])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key == "Pss":
                    out["Pss"] = int(rest.split()[0])
    except OSError:
        pass
    return out


def run_variant(name: str, env_extra: Dict[str, str], trust: str, pki: object, binary: object,
                duration: float, python: List[str]) -> Dict[str, float]:
    ca: Optional[str] = pki.ca_cert if trust == "ca" else None  # type: ignore[attr-defined]
    with open(pki.server_cert, "rb") as f:  # type: ignore[attr-defined]
        pin = [] if ca else ["--pin", spki_pin_pem(f.read())]
    saved = {k: os.environ.get(k) for k in env_extra}
    os.environ.update(env_extra)          # SyncProcess passes the environment on
    try:
        # Generous start-up timeouts: under emulation (.ci/arm-lanes TSQ_ARM_FOOTPRINT=1) Python
        # takes tens of seconds to import what the server and the gateway need.
        with tempfile.TemporaryDirectory() as d, ServerProcess(pki, timeout=STARTUP_S) as server, \
                SimulatedDevice(d, device_id=0xF00D, drift_ppm=20, binary=binary) as dev, \
                SyncProcess([server.address], d, ca=ca, command="gateway",
                            extra=[dev.path, "--maxpoll", "2", *pin], python=python, timeout=STARTUP_S) as gw:
            t0 = time.monotonic()
            gw.wait_status(lambda s: bool(s.get("devices")) and s["devices"][0]["state"] == "synchronised",
                           STARTUP_S + 90)
            synced_s = time.monotonic() - t0
            samples: List[Dict[str, int]] = []
            end = time.monotonic() + duration
            while time.monotonic() < end:
                samples.append(read_kb(gw.proc.pid))
                time.sleep(1.0)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    med = {k: statistics.median(s[k] for s in samples) / 1024 for k in samples[0] if k != "VmHWM"}
    med["VmHWM"] = max(s["VmHWM"] for s in samples) / 1024
    med["synced_s"] = synced_s
    med["n"] = len(samples)
    print(f"  {name}: synchronised after {synced_s:.1f} s, {len(samples)} samples", flush=True)
    return med


BARE = "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
IMPORTS = ("import tsq.cli, tsq.gateway.app, tsq.gateway.runner, tsq.bridge.service; "
           "tsq.cli.build_parser('gateway'); " + BARE)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of samples per variant")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated, of: " + ", ".join(VARIANTS))
    ap.add_argument("--python", default="", help="the interpreter command to run the gateway with "
                    "(default: this one); see above for a Debian root")
    args = ap.parse_args()
    python = shlex.split(args.python) or [sys.executable]
    binary = build_host_firmware()
    results = {}
    with tempfile.TemporaryDirectory() as pd:
        pki = make_pki(pd)
        for name in args.variants.split(","):
            results[name] = run_variant(name, *VARIANTS[name], pki, binary, args.duration, python)
    bare = subprocess.run([*python, "-c", BARE], capture_output=True, text=True, check=True).stdout
    imports = subprocess.run([*python, "-c", IMPORTS], capture_output=True, text=True,
                             check=True, cwd="/").stdout
    version = subprocess.run([*python, "-c", "import sys; print(sys.executable, sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print(f"\ngateway, 1 server (loopback) + 1 device (firmware host build on a pty); "
          f"medians of 1 s samples, MB; {' '.join(python)}: {version}")
    print("| variant | VmRSS | anon | file | PSS | peak (VmHWM) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | **{r['VmRSS']:.1f}** | {r['RssAnon']:.1f} | {r['RssFile']:.1f} | "
              f"{r.get('Pss', float('nan')):.1f} | {r['VmHWM']:.1f} |")
    print(f"\nthe interpreter alone: {int(bare) / 1024:.1f} MB; after importing the gateway's modules: "
          f"{int(imports) / 1024:.1f} MB")
    print("target: VmRSS <= 40 MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

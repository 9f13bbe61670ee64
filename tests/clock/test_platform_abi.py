"""The other hand-built C layouts of tsq, checked against C compiled here: struct timex (tsq.clock;
read by tsq.gateway.systemmodel, written by tsq.outputs.sysclock) and chrony's struct sock_sample
(tsq.outputs.refclock).
They matter on 32-bit ARM, where `long` is 32-bit and time_t is 32-bit (Debian 12, Raspberry Pi OS
bookworm) or 64-bit (Debian 13's t64): the emulated armhf lanes of .ci/arm-lanes run these."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from tsq import clock
from tsq.outputs import refclock

TIMEX_FIELDS = [name for name, _type in clock.Timex._fields_ if not name.startswith("_")]

C_TIMEX = r"""
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/timex.h>
#define OFF(f) printf("offset_%s %zu\n", #f, offsetof(struct timex, f))
int main(int argc, char **argv) {
    printf("sizeof %zu\n", sizeof(struct timex));
    FIELDS
    if (argc > 1) {  /* a read: modes = 0 never changes the clock */
        struct timex t;
        memset(&t, 0, sizeof t);
        printf("ret %d\n", adjtimex(&t));
        printf("tick %ld\nconstant %ld\nprecision %ld\ntolerance %ld\ntai %d\n", (long)t.tick,
               (long)t.constant, (long)t.precision, (long)t.tolerance, t.tai);
    }
    return 0;
}
""".replace("FIELDS", " ".join(f"OFF({f});" for f in TIMEX_FIELDS))

C_SOCK_SAMPLE = r"""
#include <stddef.h>
#include <stdio.h>
#include <sys/time.h>
/* chrony's refclock_sock.c */
struct sock_sample { struct timeval tv; double offset; int pulse; int leap; int _pad; int magic; };
int main(void) {
    printf("time_bits %zu\n", 8 * sizeof(time_t));
    printf("sizeof %zu\n", sizeof(struct sock_sample));
    printf("offset_offset %zu\n", offsetof(struct sock_sample, offset));
    printf("offset_magic %zu\n", offsetof(struct sock_sample, magic));
    return 0;
}
"""

# The plain `adjtimex` symbol that ctypes finds is the legacy-time_t entry point on 32-bit glibc
# (a _TIME_BITS=64 build is redirected to __adjtimex64 by the headers): compile the layout that
# symbol takes by undoing a distribution's 64-bit-time_t default (Debian 13 armhf's gcc sets it).
LEGACY_TIME = ["-U_TIME_BITS", "-U_FILE_OFFSET_BITS"]


def _run_c(tmp: Path, source: str, flags: List[str], *args: str) -> Dict[str, int]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler (gcc/cc) to compile the reference layouts with")
    src, exe = tmp / "layout.c", tmp / "layout"
    src.write_text(source)
    subprocess.run([gcc, "-std=gnu99", *flags, "-o", str(exe), str(src)], check=True, timeout=300)
    out = subprocess.run([str(exe), *args], check=True, capture_output=True, text=True, timeout=60).stdout
    return {name: int(value) for name, value in (line.split() for line in out.splitlines())}


def _ctypes_layout(cls: type, names: List[str]) -> Dict[str, int]:
    layout = {"sizeof": ctypes.sizeof(cls)}
    layout.update({f"offset_{n}": getattr(cls, n).offset for n in names})
    return layout


def test_timex_layout_matches_the_symbol_it_is_passed_to(tmp_path: Path) -> None:
    truth = _run_c(tmp_path, C_TIMEX, LEGACY_TIME)
    assert _ctypes_layout(clock.Timex, TIMEX_FIELDS) == truth


def test_adjtimex_read_agrees_with_c(tmp_path: Path) -> None:
    """A read-only adjtimex (modes = 0) through tsq's ctypes layout sees the kernel's values where C
    sees them: a shifted field would read another field or padding. Only fields that no running
    daemon changes between the two reads are compared."""
    truth = _run_c(tmp_path, C_TIMEX, [], "read")
    fn = clock.adjtimex_function()
    assert fn is not None, "libc adjtimex not found through ctypes"
    tx = clock.Timex()
    tx.modes = 0
    assert fn(ctypes.byref(tx)) == truth["ret"]
    mine = {k: int(getattr(tx, k)) for k in ("tick", "constant", "precision", "tolerance", "tai")}
    assert mine == {k: truth[k] for k in mine}
    assert tx.tolerance > 0 and tx.tick > 0  # zeros everywhere would also "agree"


@pytest.mark.parametrize("flags", [[], LEGACY_TIME], ids=["default-time_t", "legacy-time_t"])
def test_sock_sample_layout_matches_chronyd_build(tmp_path: Path, flags: List[str]) -> None:
    """refclock's layout for a chronyd built with this C library's time_t (the distribution's default
    and, on 32-bit, the legacy one) is the C layout."""
    truth = _run_c(tmp_path, C_SOCK_SAMPLE, flags)
    bits = truth.pop("time_bits")
    cls = refclock._structure(bits)
    assert _ctypes_layout(cls, ["offset", "magic"]) == truth
    assert refclock.sample_size(bits) == truth["sizeof"]
    assert len(refclock.encode_sample(1_700_000_000_123_456_789, 0.0, time_bits=bits)) == truth["sizeof"]


def test_refclock_time_bits_on_lp64() -> None:
    if ctypes.sizeof(ctypes.c_long) != 8:
        pytest.skip("32-bit: the width follows the chronyd binary (detect_time_bits reads it)")
    assert refclock.detect_time_bits() == 64

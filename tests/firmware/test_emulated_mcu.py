"""The cross-built firmware on emulated MCUs (QEMU microbit: Cortex-M0; simavr: ATmega328P), with the
real bridge on the other end of the emulated UART's pty (conftest.py says how emulated time relates
to host time). Timing under emulation means little; these check function: the handshake, the
device's own UTC against the gateway's within the bound it was given, reset, garbage on the line,
and receive interrupts arriving while the main loop writes a frame.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, List

import pytest
import serial

from tsq.bridge import frames

pytestmark = pytest.mark.mcu_emulated

SYNC = 1
# The fixtures' types live in conftest.py (not importable as a module here): Emulator, BridgeThread.
Emulator = Any
Bridge = Callable[[str], Any]


def _sync(emu: Emulator, gw: Any) -> Any:
    gw.wait(lambda s: s.state == "synchronised", 90, "the bridge to call the device synchronised")
    return emu.wait_line(lambda x: x.state == SYNC, 30, "the device to report itself synchronised")


def test_handshake_and_device_utc_within_its_bound(emulator: Emulator, bridge: Bridge) -> None:
    with bridge(emulator.path) as gw:
        st = gw.wait(lambda s: s.device is not None, 30, "HELLO")
        assert st.device == f"0x{emulator.device_id:08x}" and st.firmware == "1.0.0"
        first = _sync(emulator, gw)
        # (The device repeats HELLO each second until it is first pinged; from now on it is quiet.)
        hello = gw.session("hello")
        assert hello.device_id == emulator.device_id and hello.tick_hz == emulator.tick_hz
        assert hello.firmware == "1.0.0" and hello.capabilities == 0
        settle = first.host_ns + 3 * 10**9  # a few more pings into the fit
        emulator.wait_line(lambda x: x.host_ns >= settle, 30, "settling")
        start = time.time_ns()
        emulator.wait_line(lambda x: x.host_ns >= start + 5 * 10**9, 30, "5 s of debug lines")
        lines = emulator.since(start)
        assert len(lines) >= 4, emulator.tail()
        emulator.check_within_bound(lines)
        # No frame dropped for a framing error (a drop is a counted receive overrun -- QEMU delivers
        # what piled up while it was stalled all at once -- or a refused TIMESCALE, which a bridge
        # fitting across a stall that cost the emulated core a SysTick wrap can send), the device
        # never restarted (one HELLO object all along), and its ticks only went forward: on the M0
        # that is SysTick's 24-bit counter extended across a wrap every 1.05 s. (Not the bridge's
        # `resets`: it also counts a PONG whose T2 precedes the previous PONG's T3, which a device
        # that stamps in its RX interrupt legitimately sends when a PING arrives before the
        # previous PONG went out.)
        def framing(x: Any) -> int:
            return int(x.bad - x.overruns - x.rejected)
        assert all(framing(x) == framing(lines[0]) for x in lines), lines[-1]
        assert gw.session("hello") is hello
        ticks = [x.tick for x in emulator.since(0)]
        assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
        a, b = lines[0], lines[-1]
        rate = (b.tick - a.tick) / ((b.host_ns - a.host_ns) / 1e9)
        assert abs(rate / emulator.tick_hz - 1) < 0.05, rate  # emulated ticks keep host time (5 %)
        # at most the frame the device was in the middle of sending when the bridge opened the port
        assert gw.status().bad_frames <= 1


def test_reset_and_restart_give_a_new_hello_and_resync(emulator: Emulator, bridge: Bridge) -> None:
    with bridge(emulator.path) as gw:
        before = _sync(emulator, gw)
        # A reset (QEMU: system_reset on its monitor; simavr: avr_reset): the pty stays open, the
        # MCU starts over and says HELLO unasked.
        hello = gw.session("hello")
        t_reset = time.time_ns()
        emulator.reset()
        after = emulator.wait_line(lambda x: x.host_ns > t_reset and x.tick < before.tick, 20,
                                   "restarted ticks")
        assert after.state != SYNC or after.ts_seq != before.ts_seq
        deadline = time.monotonic() + 20
        while gw.session("hello") is hello:  # the session replaces it on every HELLO it hears
            assert time.monotonic() < deadline, "the bridge did not see the new HELLO"
            time.sleep(0.1)
        t_back = time.time_ns()
        emulator.wait_line(lambda x: x.host_ns > t_back and x.state == SYNC, 60, "resynchronised after reset")
        # Power off and on: the emulator process ends, its pty vanishes, a new one comes up behind
        # the same path; the bridge reopens it and hears a HELLO again.
        hello = gw.session("hello")
        emulator.restart()
        deadline = time.monotonic() + 30
        while gw.session("hello") is hello:
            assert time.monotonic() < deadline, "the bridge did not see the HELLO after a restart"
            time.sleep(0.1)
        t_back = time.time_ns()
        emulator.wait_line(lambda x: x.host_ns > t_back and x.state == SYNC, 60,
                           "resynchronised after restart")
        start = time.time_ns()
        emulator.wait_line(lambda x: x.host_ns >= start + 3 * 10**9, 30, "3 s of lines")
        emulator.check_within_bound(emulator.since(start))


def test_garbage_on_the_line_is_dropped_and_counted(emulator: Emulator, bridge: Bridge) -> None:
    with bridge(emulator.path) as gw:
        synced = _sync(emulator, gw)
        # A second writer on the line (the pty's slave side, as the bridge has it open): random
        # bytes, ended by a delimiter so the last junk frame is judged too.
        fd = os.open(emulator.path, os.O_WRONLY | os.O_NOCTTY)
        try:
            os.write(fd, os.urandom(300) + b"\x00")
        finally:
            os.close(fd)
        t_garbage = time.time_ns()
        hit = emulator.wait_line(lambda x: x.host_ns > t_garbage and x.bad > synced.bad, 20,
                                 "the device to count garbage")
        # The time service goes on: fresh TIMESCALEs accepted, synchronised, within its bound.
        later = emulator.wait_line(
            lambda x: x.ts_seq != hit.ts_seq and x.state == SYNC and x.host_ns > hit.host_ns,
            30, "a TIMESCALE accepted after the garbage")
        start = time.time_ns()
        emulator.wait_line(lambda x: x.host_ns >= start + 3 * 10**9, 30, "3 s of lines")
        lines = emulator.since(start)
        emulator.check_within_bound(lines)
        assert lines[-1].bad >= later.bad > synced.bad


def test_rx_interrupts_while_the_main_loop_writes_status(emulator: Emulator) -> None:
    """We are the gateway here, keeping two PINGs in flight (a new one as soon as a PONG comes
    back: 48 bytes at most on their way, inside the device's 64-byte ring even where the emulated
    UART delivers them all at once, as QEMU's does) while the device answers each with a PONG that
    takes 2.1 ms to send at 115200 baud and sends a STATUS every second (the emulated images), until
    receive interrupts have landed in the middle of STATUS writes. Every frame the device sent must
    decode (nothing interleaved into a STATUS or a PONG), PINGs be answered once each, in order, with
    increasing T2, and a PING be lost only to a receive overrun the device counted."""
    with serial.Serial(emulator.path, 115200, timeout=0) as line:
        dec = frames.StreamDecoder()
        got: List[frames.Message] = []
        # First the handshake, as the bridge does: QEMU only starts reading a pty once it notices
        # the slave side open (it checks once a second); what we wrote before would arrive at once.
        deadline = time.monotonic() + 20
        while not any(isinstance(m, frames.Hello) for m in got):
            assert time.monotonic() < deadline, "no HELLO"
            line.write(frames.encode(frames.HelloRequest(0)))
            time.sleep(0.3)
            got += list(dec.feed(line.read(4096)))
        got = []
        bad0 = dec.bad_frames  # the frame in flight when we opened the port, if any
        start = emulator.wait_line(lambda x: True, 5, "a debug line")
        sent: List[int] = []
        outstanding: dict[int, float] = {}  # seq -> when sent; a PING unanswered for 0.5 s is lost
        deadline = time.monotonic() + 45
        while True:
            last = emulator.last()
            statuses = sum(isinstance(m, frames.Status) for m in got)
            if last is not None and last.rx_in_status >= 3 and statuses >= 5:
                break
            assert time.monotonic() < deadline, f"45 s: {len(got)} frames, last line {last}"
            now = time.monotonic()
            for seq in [q for q, t in outstanding.items() if now - t > 0.5]:
                del outstanding[seq]
            if len(outstanding) < 2:
                sent.append(len(sent) + 1)
                line.write(frames.encode(frames.Ping(sent[-1])))
                outstanding[sent[-1]] = now
            time.sleep(0.0005)
            new = list(dec.feed(line.read(4096)))
            for m in new:
                if isinstance(m, frames.Pong):
                    outstanding.pop(m.seq, None)
            got += new
        time.sleep(0.5)
        got += list(dec.feed(line.read(4096)))
    pongs = [m for m in got if isinstance(m, frames.Pong)]
    assert dec.bad_frames == bad0, f"{dec.bad_frames - bad0} broken frames from the device"
    seqs = [p.seq for p in pongs]
    assert all(a < b for a, b in zip(seqs, seqs[1:])) and set(seqs) <= set(sent), "answered once, in order"
    t2 = [p.t2_ticks for p in pongs]
    assert all(a < b for a, b in zip(t2, t2[1:])) and all(p.t3_ticks > p.t2_ticks for p in pongs)
    now_ns = time.time_ns()
    final = emulator.wait_line(lambda x: x.host_ns > now_ns, 5, "a fresh debug line")
    assert final.rx_in_status >= 3 and final.rx_in_tx > final.rx_in_status, final
    # Nothing lost but to receive overruns the device counted, no frame refused for any other
    # reason (no spliced frame got as far as its CRC), and few lost at all. (How many PINGs one
    # overrun takes is not fixed: when QEMU stalls, what we sent meanwhile arrives at once.)
    overruns = final.overruns - start.overruns
    missing = len(sent) - len(pongs)
    assert missing == 0 or overruns > 0, (len(sent), len(pongs), final)
    assert final.bad - start.bad == overruns, final
    assert missing <= 0.2 * len(sent), (len(sent), len(pongs), final)


@pytest.mark.parametrize("emulator", ["qemu-m0"], indirect=True)
def test_cli_server_engine_bridge_and_tsq_status(emulator: Emulator, served_epoch_s: int) -> None:
    """The whole chain through the command lines a user runs: `tsq server` (serving CLOCK_MONOTONIC
    near today: see conftest.py), `python -m tsq.bridge PORT --server ... --ca ... --single-ping
    --control SOCK` (the engine in the bridge's process), read back with `tsq status --json`. On
    QEMU only: its tick is the host's clock even when the host starves it of CPU, where simavr's
    stops (the in-process tests above cover simavr)."""
    from tsq.testing.certs import make_pki
    from tsq.testing.daemon import ServerProcess, subprocess_env

    with tempfile.TemporaryDirectory(prefix="tsq-cli-") as d, contextlib.ExitStack() as stack:
        pki = make_pki(d)
        # --user-stamps: each T2 is mapped onto CLOCK_MONOTONIC as it is read, not a kernel stamp
        # some µs old across which a stepped wall clock may have moved.
        server = stack.enter_context(ServerProcess(pki, clock_offset=float(served_epoch_s),
                                                   extra=["--clock", "monotonic", "--user-stamps"]))
        ctl = os.path.join(d, "control.sock")
        proc = subprocess.Popen([sys.executable, "-m", "tsq.bridge", emulator.path,
                                 "--server", server.address, "--ca", pki.ca_cert, "--control", ctl,
                                 "--ping-interval", "0.25",
                                 "--single-ping"],  # why: BridgeThread in conftest.py
                                env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        try:
            deadline = time.monotonic() + 60
            dev: dict[str, object] = {}
            while time.monotonic() < deadline:
                p = subprocess.run([sys.executable, "-m", "tsq", "status", "--json", "--control", ctl],
                                   capture_output=True, text=True, env=subprocess_env(), timeout=30)
                if p.returncode == 0:
                    devs = json.loads(p.stdout).get("devices") or []
                    dev = devs[0] if devs else {}
                    if dev.get("state") == "synchronised":
                        break
                time.sleep(0.5)
            assert dev.get("state") == "synchronised", dev
            assert dev["device"] == f"0x{emulator.device_id:08x}" and dev["firmware"] == "1.0.0"
            synced = emulator.wait_line(lambda x: x.state == SYNC, 30, "the device synchronised")
            start = synced.host_ns
            emulator.wait_line(lambda x: x.host_ns >= start + 3 * 10**9, 30, "3 s of lines")
            emulator.check_within_bound(emulator.since(start))
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err

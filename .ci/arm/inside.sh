#!/bin/sh
# Runs inside a lane's root, as `inside.sh install|user|vm` (see .ci/arm-lanes):
#   install  install tsq from /src with its Cython extension (pip; how depends on TSQ_LANE_INSTALL),
#            build the socket-timestamp probe
#   user     under qemu-user: the probe, then the platform-sensitive tests. Where the probe shows that
#            qemu-user cannot carry kernel socket timestamps, TSQ_NO_SOCKET_TIMESTAMPS holds its proof
#            and only the tests that need them skip, with that reason (tests/clock/test_udp.py)
#   vm       under qemu-system, a real Debian ARM kernel: the probe must pass, then the tests that
#            qemu-user could not run (and the ABI tests, now against a real ARM kernel)
set -eu
cd /src
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-dev}" TSQ_REQUIRE_FASTCLOCK=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=
SOCKET_TESTS="tests/clock/test_udp.py tests/clock/test_abi.py tests/clock/test_platform_abi.py"
USER_TESTS="tests/clock tests/wire tests/bridge/test_frames.py tests/sync"

pytest_here() {
    # -P: import the installed tsq, not the tree in the current directory
    # --timeout: emulation is 10-30x slower than the host, and the property tests sign and verify
    python3 -P -m pytest -p no:cacheprovider -q -rfEs --color=no --durations=5 --timeout=900 "$@"
}

check_backend() {
    python3 -P -c 'import sys, tsq.clock as c
print("tsq", c.__file__, "backend", c.BACKEND)
sys.exit(c.BACKEND != "cython" or c.__file__.startswith("/src/"))'
}

case "$1" in
install)
    # no debug info: the same code, a third less compile time under emulation
    export CFLAGS="${CFLAGS:-} -g0"
    pip="python3 -m pip install --break-system-packages"
    case "$TSQ_LANE_INSTALL" in
    pypi)  # the path of `pip install .` on a Pi: build isolation (Cython 3 from PyPI), deps from PyPI
        # --no-deps, then the gateway's runtime deps by name: numpy (a core dependency until issue 15
        # moves it to the report extra) has no armv7 wheel and would take an hour to build emulated
        $pip --no-deps .
        if [ "$(dpkg --print-architecture)" = armhf ]; then
            # the latest cryptography needs cffi>=2, which has no armv7 wheel (an emulated build of
            # it costs minutes); 45 is the newest with an armv7 wheel that takes Debian's cffi 1.15
            echo 'cryptography<46' > /tmp/constraints.txt
            export PIP_CONSTRAINT=/tmp/constraints.txt
        fi
        $pip 'aioquic>=1.2' 'cryptography>=42' 'pyserial>=3.5' ;;
    debian)  # everything from Debian's packages (cython3, python3-aioquic, ...): no PyPI at all
        $pip --no-deps --no-build-isolation . ;;
    *) echo "inside.sh: unknown TSQ_LANE_INSTALL=$TSQ_LANE_INSTALL"; exit 2 ;;
    esac
    python3 -P -c 'import aioquic, cryptography, serial; print("aioquic", aioquic.__version__, "cryptography", cryptography.__version__, "pyserial", serial.__version__)'
    check_backend
    gcc -std=gnu99 -O1 -o /lane/tstamp_probe .ci/arm/tstamp_probe.c
    ;;
user)
    check_backend
    /lane/tstamp_probe > /lane/probe-user.txt || true
    cat /lane/probe-user.txt
    # what tsq uses: the socket options and the error queue (rx-*/tx-*), not SIOCGSTAMP*
    fails=$(grep -E '^CHECK (rx|tx)-.* FAIL' /lane/probe-user.txt | awk '{print $2}' | tr '\n' ' ')
    if [ -n "$fails" ]; then
        why=$(grep -m1 -E '^CHECK (rx|tx)-.* FAIL' /lane/probe-user.txt | sed -E 's/^CHECK +[^ ]+ +FAIL +//')
        export TSQ_NO_SOCKET_TIMESTAMPS="${TSQ_EMULATOR:-qemu-user}: .ci/arm/tstamp_probe.c fails ${fails}(first: ${why}); these tests run under qemu-system instead"
        echo "probe: $TSQ_NO_SOCKET_TIMESTAMPS"
    else
        echo "probe: qemu-user carries kernel socket timestamps: no test skips for want of them"
    fi
    # not the slow simulations (minutes of simulated days each, no platform-specific code beyond
    # what the fast engine tests run): under emulation they outlast pytest's 300 s timeout
    pytest_here -m "not slow" $USER_TESTS
    ;;
vm)
    echo "kernel: $(uname -srm)"
    check_backend
    probe=0
    /lane/tstamp_probe || probe=$?
    tests=0
    pytest_here $SOCKET_TESTS || tests=$?
    echo "probe failures: $probe; pytest exit status: $tests"
    if [ "${TSQ_ARM_FOOTPRINT:-0}" = 1 ]; then
        # from /: the gateway it starts imports the installed tsq (with its extension), not /src's
        (cd / && python3 /src/benchmarks/footprint.py --duration 10 --variants default,ca) ||
            echo "footprint: the measurement failed (a figure, not a test: the lane's result stands)"
    fi
    [ "$probe" = 0 ] && [ "$tests" = 0 ]
    ;;
*)
    echo "usage: inside.sh install|user|vm"; exit 2 ;;
esac

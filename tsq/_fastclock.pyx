# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, binding=False
"""Cython clock backend of `tsq.clock`: direct clock_gettime, NTP stamping into buffers, PHC and PPS.

Structure layouts and ioctl numbers come from the system headers at build time, so the module is right
for the ABI it was compiled on (x86-64, aarch64, armhf with 32- or 64-bit time_t). The shared Python
types (ClockError, Correlation, PpsEvent, ...) and the timestamped-UDP helpers live in `tsq._pyclock`:
the kernel takes socket timestamps, so a C recvmsg would save CPU, not accuracy.
Import `tsq.clock`, not this module.
"""

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memset
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_CheckExact, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE

import errno as _errno
import os as _os

from tsq import _pyclock as _py
from tsq._pyclock import ClockError, Correlation, PpsEvent, PpsTimeout

cdef extern from "<errno.h>":
    int errno

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    ctypedef int clockid_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec* ts)
    int c_CLOCK_REALTIME "CLOCK_REALTIME"
    int c_CLOCK_MONOTONIC_RAW "CLOCK_MONOTONIC_RAW"
    int c_CLOCK_TAI "CLOCK_TAI"
    int c_CLOCK_BOOTTIME "CLOCK_BOOTTIME"

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<linux/ptp_clock.h>" nogil:
    int PTP_MAX_SAMPLES
    unsigned long PTP_CLOCK_GETCAPS
    unsigned long PTP_SYS_OFFSET
    unsigned long PTP_SYS_OFFSET_PRECISE
    unsigned long PTP_SYS_OFFSET_EXTENDED
    struct ptp_clock_time:
        int64_t sec
        uint32_t nsec
    struct ptp_clock_caps:
        int cross_timestamping
    struct ptp_sys_offset:
        unsigned int n_samples
        ptp_clock_time ts[51]
    struct ptp_sys_offset_extended:
        unsigned int n_samples
        ptp_clock_time ts[25][3]
    struct ptp_sys_offset_precise:
        ptp_clock_time device
        ptp_clock_time sys_realtime
        ptp_clock_time sys_monoraw

cdef extern from "<linux/pps.h>" nogil:
    unsigned long PPS_GETCAP
    unsigned long PPS_FETCH
    struct pps_ktime:
        int64_t sec
        int32_t nsec
        uint32_t flags
    struct pps_kinfo:
        uint32_t assert_sequence
        uint32_t clear_sequence
        pps_ktime assert_tu
        pps_ktime clear_tu
        int current_mode
    struct pps_fdata:
        pps_kinfo info
        pps_ktime timeout

cdef extern from "<sys/socket.h>" nogil:
    pass

cdef extern from "<linux/net_tstamp.h>" nogil:
    int SOF_TIMESTAMPING_TX_SOFTWARE
    int SOF_TIMESTAMPING_RX_SOFTWARE
    int SOF_TIMESTAMPING_SOFTWARE
    int SOF_TIMESTAMPING_OPT_ID
    int SOF_TIMESTAMPING_OPT_TSONLY

cdef extern from "<linux/errqueue.h>" nogil:
    int SO_EE_ORIGIN_TIMESTAMPING
    int SCM_TSTAMP_SND
    struct sock_extended_err:
        uint32_t ee_errno
    struct scm_timestamping:
        timespec ts[3]

cdef extern from *:
    """
    #include <asm/socket.h>
    #ifndef SO_TIMESTAMPNS_OLD
    #define SO_TIMESTAMPNS_OLD SO_TIMESTAMPNS
    #define SO_TIMESTAMPING_OLD SO_TIMESTAMPING
    #endif
    #ifndef SO_TIMESTAMPNS_NEW
    #define SO_TIMESTAMPNS_NEW -1
    #define SO_TIMESTAMPING_NEW -1
    #endif
    """
    int SO_TIMESTAMPNS_OLD
    int SO_TIMESTAMPING_OLD
    int SO_TIMESTAMPNS_NEW
    int SO_TIMESTAMPING_NEW

CLOCK_REALTIME = c_CLOCK_REALTIME
CLOCK_MONOTONIC_RAW = c_CLOCK_MONOTONIC_RAW
CLOCK_TAI = c_CLOCK_TAI
CLOCK_BOOTTIME = c_CLOCK_BOOTTIME
NTP_UNIX_OFFSET_S = 2208988800

cdef extern from *:
    """
    #define TSQ_NS ((int64_t)1000000000)
    #define TSQ_NTP_OFFSET ((int64_t)2208988800LL)
    #define TSQ_PIVOT_LIMIT ((int64_t)1 << 62)
    """
    const int64_t NS "TSQ_NS"
    const int64_t NTP_OFFSET "TSQ_NTP_OFFSET"
    # |pivot| beyond 2**62 ns (~146 years from 1970): the pure-Python path is used
    const int64_t PIVOT_LIMIT "TSQ_PIVOT_LIMIT"


# ------------------------------------------------------------------------------------------------
# clock reads

cdef inline int _gettime(clockid_t clk, int64_t* out) noexcept nogil:
    cdef timespec ts
    if clock_gettime(clk, &ts) != 0:
        return errno
    out[0] = <int64_t>ts.tv_sec * NS + ts.tv_nsec
    return 0


cdef int64_t _clock_or_raise(int clk) except? -1:
    cdef int64_t now = 0
    cdef int err = _gettime(<clockid_t>clk, &now)
    if err:
        raise _py.clock_error(err, f"clock id {clk}", "a readable POSIX clock")
    return now


def clock_ns(int clock_id):
    """clock_gettime(clock_id) as int ns; ClockError naming the clock if it cannot be read."""
    return _clock_or_raise(clock_id)


def raw_ns():
    """CLOCK_MONOTONIC_RAW in ns: the one timescale of every local stamp."""
    cdef int64_t now = 0
    _gettime(c_CLOCK_MONOTONIC_RAW, &now)
    return now


def realtime_ns():
    """CLOCK_REALTIME in ns (unix ns)."""
    cdef int64_t now = 0
    _gettime(c_CLOCK_REALTIME, &now)
    return now


def tai_ns():
    """CLOCK_TAI in ns."""
    cdef int64_t now = 0
    _gettime(c_CLOCK_TAI, &now)
    return now


# ------------------------------------------------------------------------------------------------
# NTP 64-bit timestamps: exactly the integer arithmetic of tsq._pyclock, in 64-bit pieces
# (no __int128, so the same code is right on 32-bit ARM)

cdef inline uint64_t _ntp_from_parts(int64_t sec, int64_t nsec) noexcept nogil:
    # nsec in [0, NS). frac may round up to 2**32: adding (not or-ing) carries it into the seconds.
    cdef uint64_t frac = ((<uint64_t>nsec << 32) + 500000000ULL) // <uint64_t>NS
    return ((<uint64_t>(sec + NTP_OFFSET)) << 32) + frac


cdef inline uint64_t _ntp_from_unix(int64_t unix_ns) noexcept nogil:
    cdef int64_t sec = unix_ns // NS  # cdivision: truncates, fixed below
    cdef int64_t rem = unix_ns - sec * NS
    if rem < 0:
        rem += NS
        sec -= 1
    return _ntp_from_parts(sec, rem)


cdef inline int64_t _unix_from_ntp(uint64_t ntp, int64_t pivot) noexcept nogil:
    # |pivot| <= 2**62. Pivot as ntp (ntp_s seconds + pfrac), unwrapped; pick the value congruent to
    # ntp mod 2**64 in [pivot - 2**63, pivot + 2**63).
    cdef int64_t ps = pivot // NS
    cdef int64_t pr = pivot - ps * NS
    if pr < 0:
        pr += NS
        ps -= 1
    cdef int64_t ntp_s = ps + NTP_OFFSET
    cdef uint64_t pfrac = ((<uint64_t>pr << 32) + 500000000ULL) // <uint64_t>NS
    cdef uint64_t p_lo = (<uint64_t>ntp_s << 32) + pfrac
    cdef int64_t delta = <int64_t>(ntp - p_lo)
    cdef uint64_t dl = (<uint64_t>delta) & 0xFFFFFFFFULL
    cdef int64_t dh = (delta - <int64_t>dl) // 4294967296LL  # exact: no rounding question
    cdef int64_t u_s = ntp_s + dh
    cdef uint64_t u_f = pfrac + dl
    if u_f >= 4294967296ULL:
        u_f -= 4294967296ULL
        u_s += 1
    return (u_s - NTP_OFFSET) * NS + <int64_t>((u_f * <uint64_t>NS + 2147483648ULL) >> 32)


cdef inline void _store_be64(unsigned char* p, uint64_t v) noexcept nogil:
    p[0] = <unsigned char>(v >> 56)
    p[1] = <unsigned char>(v >> 48)
    p[2] = <unsigned char>(v >> 40)
    p[3] = <unsigned char>(v >> 32)
    p[4] = <unsigned char>(v >> 24)
    p[5] = <unsigned char>(v >> 16)
    p[6] = <unsigned char>(v >> 8)
    p[7] = <unsigned char>v


cdef inline uint64_t _load_be64(const unsigned char* p) noexcept nogil:
    return ((<uint64_t>p[0] << 56) | (<uint64_t>p[1] << 48) | (<uint64_t>p[2] << 40)
            | (<uint64_t>p[3] << 32) | (<uint64_t>p[4] << 24) | (<uint64_t>p[5] << 16)
            | (<uint64_t>p[6] << 8) | <uint64_t>p[7])


def unix_ns_to_ntp64(unix_ns):
    """unix ns -> ntp64, rounded half-up to the nearest 2**-32 s, wrapped modulo 2**64 (NTP eras)."""
    cdef int64_t n
    try:
        n = unix_ns
    except OverflowError:
        return _py.unix_ns_to_ntp64(unix_ns)
    return _ntp_from_unix(n)


def ntp64_to_unix_ns(ntp64, pivot_unix_ns):
    """ntp64 -> unix ns in the era that puts it nearest the pivot (RFC 5905 era handling)."""
    cdef uint64_t x
    cdef int64_t p
    try:
        x = ntp64
    except OverflowError:
        raise ValueError(f"ntp64 value out of range [0, 2**64): {ntp64}") from None
    try:
        p = pivot_unix_ns
    except OverflowError:
        return _py.ntp64_to_unix_ns(ntp64, pivot_unix_ns)
    if p > PIVOT_LIMIT or p < -PIVOT_LIMIT:
        return _py.ntp64_to_unix_ns(ntp64, pivot_unix_ns)
    return _unix_from_ntp(x, p)


# Offsets are int64_t, not Py_ssize_t: on 32-bit ARM Py_ssize_t is 32 bits, so an offset like 2**40
# would raise OverflowError there but IndexError on 64-bit. As int64_t every platform does the same:
# IndexError for any offset outside the buffer, OverflowError only beyond a signed 64-bit integer.
cdef inline int _span_error(int64_t offset, Py_ssize_t size) except -1:
    raise IndexError(f"offset {offset} out of range for an 8-byte timestamp in a {size}-byte buffer")


cdef int _get_buffer(object buf, Py_buffer* view, int flags) except -1:
    try:
        PyObject_GetBuffer(buf, view, flags)
    except (BufferError, TypeError) as exc:
        what = "writable " if flags & PyBUF_WRITABLE else ""
        raise TypeError(f"expected a {what}C-contiguous bytes-like buffer, got {type(buf).__name__}: {exc}") from None
    return 0


def stamp_ntp64(object buf, int64_t offset, int clock_id=c_CLOCK_REALTIME, int64_t add_ns=0):
    """Read the clock, write ntp64(now + add_ns) at buf[offset:offset+8]; return the unix ns written."""
    cdef timespec ts
    cdef Py_buffer view
    cdef unsigned char* p
    cdef Py_ssize_t size
    cdef int64_t sec, nsec
    cdef bint have_view = False
    if PyByteArray_CheckExact(buf):
        size = PyByteArray_GET_SIZE(buf)
        p = <unsigned char*>PyByteArray_AS_STRING(buf)
    else:
        _get_buffer(buf, &view, PyBUF_WRITABLE)
        have_view = True
        size = view.len
        p = <unsigned char*>view.buf
    if offset < 0 or offset > size - 8:
        if have_view:
            PyBuffer_Release(&view)
        _span_error(offset, size)
    if clock_gettime(<clockid_t>clock_id, &ts) != 0:
        if have_view:
            PyBuffer_Release(&view)
        raise _py.clock_error(errno, f"clock id {clock_id}", "a readable POSIX clock")
    sec = ts.tv_sec
    nsec = ts.tv_nsec
    if add_ns != 0:
        nsec += add_ns
        sec += nsec // NS
        nsec -= (nsec // NS) * NS
        if nsec < 0:
            nsec += NS
            sec -= 1
    _store_be64(p + offset, _ntp_from_parts(sec, nsec))
    if have_view:
        PyBuffer_Release(&view)
    return sec * NS + nsec


def write_ntp64(object buf, int64_t offset, unix_ns):
    """Write ntp64(unix_ns) big-endian at buf[offset:offset+8]; other bytes untouched."""
    cdef uint64_t value = unix_ns_to_ntp64(unix_ns)
    cdef Py_buffer view
    _get_buffer(buf, &view, PyBUF_WRITABLE)
    try:
        if offset < 0 or offset > view.len - 8:
            _span_error(offset, view.len)
        _store_be64(<unsigned char*>view.buf + offset, value)
    finally:
        PyBuffer_Release(&view)


def read_ntp64(object buf, int64_t offset, pivot_unix_ns):
    """Read the big-endian ntp64 at buf[offset:offset+8] and return it as unix ns (era from pivot)."""
    cdef Py_buffer view
    cdef uint64_t value
    _get_buffer(buf, &view, PyBUF_SIMPLE)
    try:
        if offset < 0 or offset > view.len - 8:
            _span_error(offset, view.len)
        value = _load_be64(<const unsigned char*>view.buf + offset)
    finally:
        PyBuffer_Release(&view)
    return ntp64_to_unix_ns(value, pivot_unix_ns)


# ------------------------------------------------------------------------------------------------
# correlated reads

cdef int _correlate(clockid_t a, clockid_t b, int tries, int64_t* ref, int64_t* sys,
                    int64_t* width) noexcept nogil:
    cdef int64_t a1 = 0, b1 = 0, a2 = 0
    cdef int err
    cdef int i
    width[0] = -1
    for i in range(tries):
        err = _gettime(a, &a1)
        if err == 0:
            err = _gettime(b, &b1)
        if err == 0:
            err = _gettime(a, &a2)
        if err:
            return err
        if width[0] < 0 or a2 - a1 < width[0]:
            width[0] = a2 - a1
            ref[0] = a1 + (a2 - a1) // 2
            sys[0] = b1
    return 0


def correlate(int clock_a, int clock_b, int tries=5):
    """Read A, B, A `tries` times; keep the narrowest bracket (least likely to hold an interrupt)."""
    cdef int64_t ref = 0, sys = 0, width = 0
    cdef int err
    if tries < 1:
        raise ValueError(f"tries must be >= 1, got {tries}")
    err = _correlate(clock_a, clock_b, tries, &ref, &sys, &width)
    if err:
        raise _py.clock_error(err, f"clock ids {clock_a}/{clock_b}", "readable POSIX clocks")
    return Correlation(ref_ns=ref, sys_ns=sys, width_ns=width)


realtime_to_raw = _py.realtime_to_raw


cdef class RealtimeToRaw:
    """realtime -> raw ns through a cached correlation, refreshed when older than max_age_ns."""

    cdef readonly int64_t max_age_ns
    cdef int64_t _ref, _sys, _width

    def __init__(self, int64_t max_age_ns=100_000_000):
        self.max_age_ns = max_age_ns
        self._refresh()

    cdef int _refresh(self) except -1:
        cdef int err = _correlate(c_CLOCK_REALTIME, c_CLOCK_MONOTONIC_RAW, 5, &self._ref, &self._sys,
                                  &self._width)
        if err:
            raise _py.clock_error(err, "CLOCK_REALTIME/CLOCK_MONOTONIC_RAW", "readable POSIX clocks")
        return 0

    cdef int _fresh(self) except -1:
        cdef int64_t now = 0
        _gettime(c_CLOCK_MONOTONIC_RAW, &now)
        if now - self._sys > self.max_age_ns:
            self._refresh()
        return 0

    @property
    def correlation(self):
        """The correlation in use (refreshed first if stale)."""
        self._fresh()
        return Correlation(ref_ns=self._ref, sys_ns=self._sys, width_ns=self._width)

    def convert(self, int64_t realtime_ns):
        self._fresh()
        return realtime_ns - self._ref + self._sys


# ------------------------------------------------------------------------------------------------
# ioctl numbers and structure sizes, straight from the headers

def ioctl_numbers():
    """The ioctl request numbers this backend uses, as the C headers define them."""
    return {
        "PTP_CLOCK_GETCAPS": PTP_CLOCK_GETCAPS,
        "PTP_SYS_OFFSET": PTP_SYS_OFFSET,
        "PTP_SYS_OFFSET_PRECISE": PTP_SYS_OFFSET_PRECISE,
        "PTP_SYS_OFFSET_EXTENDED": PTP_SYS_OFFSET_EXTENDED,
        "PPS_GETCAP": PPS_GETCAP,
        "PPS_FETCH": PPS_FETCH,
    }


def struct_sizes():
    """sizeof() of the kernel structures, from the C headers."""
    return {
        "ptp_clock_time": sizeof(ptp_clock_time),
        "ptp_clock_caps": sizeof(ptp_clock_caps),
        "ptp_sys_offset": sizeof(ptp_sys_offset),
        "ptp_sys_offset_extended": sizeof(ptp_sys_offset_extended),
        "ptp_sys_offset_precise": sizeof(ptp_sys_offset_precise),
        "pps_ktime": sizeof(pps_ktime),
        "pps_kinfo": sizeof(pps_kinfo),
        "pps_fdata": sizeof(pps_fdata),
        "timespec": sizeof(timespec),
        "scm_timestamping": sizeof(scm_timestamping),
        "sock_extended_err": sizeof(sock_extended_err),
    }


def socket_constants():
    """The socket timestamping constants, from the C headers."""
    return {
        "SO_TIMESTAMPNS_OLD": SO_TIMESTAMPNS_OLD,
        "SO_TIMESTAMPING_OLD": SO_TIMESTAMPING_OLD,
        "SO_TIMESTAMPNS_NEW": SO_TIMESTAMPNS_NEW,
        "SO_TIMESTAMPING_NEW": SO_TIMESTAMPING_NEW,
        "SOF_TIMESTAMPING_TX_SOFTWARE": SOF_TIMESTAMPING_TX_SOFTWARE,
        "SOF_TIMESTAMPING_RX_SOFTWARE": SOF_TIMESTAMPING_RX_SOFTWARE,
        "SOF_TIMESTAMPING_SOFTWARE": SOF_TIMESTAMPING_SOFTWARE,
        "SOF_TIMESTAMPING_OPT_ID": SOF_TIMESTAMPING_OPT_ID,
        "SOF_TIMESTAMPING_OPT_TSONLY": SOF_TIMESTAMPING_OPT_TSONLY,
        "SO_EE_ORIGIN_TIMESTAMPING": SO_EE_ORIGIN_TIMESTAMPING,
        "SCM_TSTAMP_SND": SCM_TSTAMP_SND,
    }


# ------------------------------------------------------------------------------------------------
# PTP hardware clocks and PPS devices

cdef inline int64_t _ptp_ns(const ptp_clock_time* t) noexcept nogil:
    return t.sec * NS + t.nsec


cdef int _open_device(str path, str expected) except -1:
    try:
        return _os.open(path, _os.O_RDONLY | _os.O_CLOEXEC)
    except OSError as exc:
        raise _py.clock_error(exc.errno or _errno.ENODEV, path, expected) from exc


cdef class PhcClock:
    """A PTP hardware clock /dev/ptpN (read-only use: never adjusts it)."""

    cdef int _fd
    cdef readonly str path
    cdef readonly object clock_id
    cdef readonly bint cross_timestamping

    def __cinit__(self):
        self._fd = -1

    def __init__(self, str path):
        cdef ptp_clock_caps caps
        cdef int rc, err
        expected = "a PTP hardware clock character device /dev/ptpN from a PTP-capable NIC driver"
        self.path = path
        self._fd = _open_device(path, expected)
        memset(&caps, 0, sizeof(caps))
        rc = ioctl(self._fd, PTP_CLOCK_GETCAPS, &caps)
        if rc != 0:
            err = errno
            self.close()
            raise _py.clock_error(err, path, expected)
        self.cross_timestamping = caps.cross_timestamping != 0
        self.clock_id = ((~self._fd) << 3) | 3  # FD_TO_CLOCKID

    def read_ns(self):
        return _clock_or_raise(self.clock_id)

    def sys_offset(self, int samples=5):
        """PHC (ref) vs CLOCK_REALTIME (sys): PRECISE, else EXTENDED, else basic PTP_SYS_OFFSET."""
        cdef ptp_sys_offset_precise precise
        cdef ptp_sys_offset_extended extended
        cdef ptp_sys_offset basic
        cdef int i, rc, fd = self._fd
        samples = max(1, min(samples, PTP_MAX_SAMPLES))
        memset(&precise, 0, sizeof(precise))
        with nogil:
            rc = ioctl(fd, PTP_SYS_OFFSET_PRECISE, &precise)
        if rc == 0:
            return Correlation(_ptp_ns(&precise.device), _ptp_ns(&precise.sys_realtime), 0)
        memset(&extended, 0, sizeof(extended))
        extended.n_samples = samples
        with nogil:
            rc = ioctl(fd, PTP_SYS_OFFSET_EXTENDED, &extended)
        if rc == 0:
            return _py.best_extended_offset([
                (_ptp_ns(&extended.ts[i][0]), _ptp_ns(&extended.ts[i][1]), _ptp_ns(&extended.ts[i][2]))
                for i in range(samples)
            ])
        memset(&basic, 0, sizeof(basic))
        basic.n_samples = samples
        with nogil:
            rc = ioctl(fd, PTP_SYS_OFFSET, &basic)
        if rc != 0:
            raise _py.clock_error(errno, self.path, "PTP_SYS_OFFSET support")
        return _py.best_basic_offset([_ptp_ns(&basic.ts[i]) for i in range(2 * samples + 1)])

    def close(self):
        if self._fd >= 0:
            _os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        if self._fd >= 0:
            _os.close(self._fd)


cdef object _pps_ns(const pps_ktime* t):
    if t.sec == 0 and t.nsec == 0:
        return None
    return t.sec * NS + t.nsec


cdef class PpsDevice:
    """An RFC 2783 PPS source /dev/ppsN, read with the PPS_FETCH ioctl (GIL released while waiting)."""

    cdef int _fd
    cdef readonly str path
    cdef readonly int capabilities

    def __cinit__(self):
        self._fd = -1

    def __init__(self, str path):
        cdef int caps = 0
        cdef int err
        expected = "an RFC 2783 PPS character device /dev/ppsN (pps-gpio, pps-ldisc)"
        self.path = path
        self._fd = _open_device(path, expected)
        if ioctl(self._fd, PPS_GETCAP, &caps) != 0:
            err = errno
            self.close()
            raise _py.clock_error(err, path, expected)
        self.capabilities = caps

    def fetch(self, double timeout_s):
        """Wait up to timeout_s for the next edge; PpsTimeout (a ClockError) if none comes."""
        cdef pps_fdata data
        cdef int rc, err = 0, fd = self._fd
        if not (0.0 <= timeout_s <= 1e9):   # also NaN: casting it to an integer is undefined
            raise ValueError(f"timeout_s must be in [0, 1e9] seconds, got {timeout_s!r}")
        memset(&data, 0, sizeof(data))
        data.timeout.sec = <int64_t>timeout_s
        data.timeout.nsec = <int32_t>((timeout_s - <double>data.timeout.sec) * NS + 0.5)
        if data.timeout.nsec >= NS:
            data.timeout.nsec = NS - 1
        with nogil:
            rc = ioctl(fd, PPS_FETCH, &data)
            if rc != 0:
                err = errno
        if rc != 0:
            if err == _errno.ETIMEDOUT:
                raise PpsTimeout(err, f"{self.path}: no PPS edge within {timeout_s} s")
            raise _py.clock_error(err, self.path, "PPS_FETCH to succeed")
        return PpsEvent(
            assert_ns=_pps_ns(&data.info.assert_tu),
            assert_seq=data.info.assert_sequence,
            clear_ns=_pps_ns(&data.info.clear_tu),
            clear_seq=data.info.clear_sequence,
        )

    def close(self):
        if self._fd >= 0:
            _os.close(self._fd)
            self._fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        if self._fd >= 0:
            _os.close(self._fd)


# ------------------------------------------------------------------------------------------------
# stamped serial I/O: the stamp is taken in C next to the syscall, with the GIL released, so it
# never waits for another Python thread (a reader thread woken by data would otherwise stamp only
# once it got the GIL back: up to the 5 ms switch interval late).

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    short POLLIN

cdef extern from "<unistd.h>" nogil:
    ssize_t c_write "write"(int fd, const void* buf, size_t count)


def wait_readable_stamped(int fd, int wake_fd, int timeout_ms, int64_t spin_until_ns=0,
                          int64_t spin_from_ns=0):
    """poll() `fd` and `wake_fd` for input; (fd revents, wake_fd revents, raw ns at wake-up).

    From raw instant `spin_from_ns` (up to a millisecond sooner: poll's resolution) until
    `spin_until_ns` (0: not at all) it polls without sleeping, so the stamp is the arrival and not
    the arrival plus a wake-up; after that it sleeps for up to `timeout_ms`.
    OSError on a failed poll. `wake_fd` < 0 is ignored (as poll(2) does)."""
    cdef pollfd fds[2]
    cdef int rc = 0, err = 0
    cdef int64_t t = 0
    fds[0].fd = fd
    fds[0].events = POLLIN
    fds[0].revents = 0
    fds[1].fd = wake_fd
    fds[1].events = POLLIN
    fds[1].revents = 0
    with nogil:
        _gettime(c_CLOCK_MONOTONIC_RAW, &t)
        if spin_until_ns > t and spin_from_ns - t >= 1000000:
            rc = poll(fds, 2, <int>((spin_from_ns - t) // 1000000))
            _gettime(c_CLOCK_MONOTONIC_RAW, &t)
        while rc == 0 and t < spin_until_ns:
            rc = poll(fds, 2, 0)
            _gettime(c_CLOCK_MONOTONIC_RAW, &t)
        if rc == 0:
            rc = poll(fds, 2, timeout_ms)
            _gettime(c_CLOCK_MONOTONIC_RAW, &t)
        if rc < 0:
            err = errno
    if rc < 0:
        raise OSError(err, _os.strerror(err))
    return fds[0].revents, fds[1].revents, t


def write_stamped(int fd, object data):
    """write(fd, data) once; (bytes written, raw ns just before the syscall). OSError on failure
    (BlockingIOError when a non-blocking fd is full)."""
    # The buffer protocol, not a typed memoryview: the memoryview support code doubled the generated
    # C, and so the build time (minutes on an emulated or a small ARM board).
    cdef Py_buffer view
    cdef ssize_t n
    cdef int err = 0
    cdef int64_t t = 0
    _get_buffer(data, &view, PyBUF_SIMPLE)
    try:
        with nogil:
            _gettime(c_CLOCK_MONOTONIC_RAW, &t)
            n = c_write(fd, view.buf, <size_t>view.len)
            if n < 0:
                err = errno
    finally:
        PyBuffer_Release(&view)
    if n < 0:
        raise OSError(err, _os.strerror(err))
    return n, t


# ------------------------------------------------------------------------------------------------
# batched UDP: recvmmsg / sendmmsg with the kernel's software RX stamps, TX stamps from the error
# queue. One system call and no Python-level ancillary parsing per datagram; the stamps are the
# kernel's, exactly as recvmsg gives them (tsq._pyclock.recv_timestamped).

cdef extern from *:
    """
    #include <sys/socket.h>
    #include <sys/uio.h>
    #include <netinet/in.h>
    #include <arpa/inet.h>
    #include <linux/errqueue.h>
    #include <stdlib.h>
    #include <string.h>
    #include <errno.h>
    #define TSQ_CTRL 256

    static int64_t tsq_ts_ns(struct cmsghdr* c) {
        /* realtime ns of a SOL_SOCKET timestamp control message, or -1 */
        int64_t sec = 0, nsec = 0;
        if (c->cmsg_level != SOL_SOCKET) return -1;
        if (c->cmsg_type == SO_TIMESTAMPING_OLD || c->cmsg_type == SO_TIMESTAMPNS_OLD) {
            struct timespec t; memcpy(&t, CMSG_DATA(c), sizeof t);
            sec = t.tv_sec; nsec = t.tv_nsec;
        } else if (SO_TIMESTAMPING_NEW >= 0 &&
                   (c->cmsg_type == SO_TIMESTAMPING_NEW || c->cmsg_type == SO_TIMESTAMPNS_NEW)) {
            int64_t t[2]; memcpy(t, CMSG_DATA(c), sizeof t);
            sec = t[0]; nsec = t[1];
        } else {
            return -1;
        }
        if (sec == 0 && nsec == 0) return -1;
        return sec * (int64_t)1000000000 + nsec;
    }

    static int64_t tsq_msg_rx_ns(struct msghdr* h) {
        struct cmsghdr* c;
        int64_t ns;
        if (h->msg_flags & MSG_CTRUNC) return -1;
        for (c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
            ns = tsq_ts_ns(c);
            if (ns >= 0) return ns;
        }
        return -1;
    }

    typedef struct {
        int count, bufsize;
        struct mmsghdr* m;
        struct iovec* iov;
        struct sockaddr_storage* addr;
        char* ctrl;
        char* data;
    } tsq_rx;

    static int tsq_rx_open(tsq_rx* b, int count, int bufsize) {
        b->count = count; b->bufsize = bufsize;
        b->m = calloc(count, sizeof(struct mmsghdr));
        b->iov = calloc(count, sizeof(struct iovec));
        b->addr = calloc(count, sizeof(struct sockaddr_storage));
        b->ctrl = calloc(count, TSQ_CTRL);
        b->data = malloc((size_t)count * bufsize);
        if (!b->m || !b->iov || !b->addr || !b->ctrl || !b->data) return -1;
        for (int i = 0; i < count; i++) {
            b->iov[i].iov_base = b->data + (size_t)i * bufsize;
            b->iov[i].iov_len = bufsize;
            b->m[i].msg_hdr.msg_iov = &b->iov[i];
            b->m[i].msg_hdr.msg_iovlen = 1;
            b->m[i].msg_hdr.msg_name = &b->addr[i];
            b->m[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
            b->m[i].msg_hdr.msg_control = b->ctrl + (size_t)i * TSQ_CTRL;
            b->m[i].msg_hdr.msg_controllen = TSQ_CTRL;
        }
        return 0;
    }

    static void tsq_rx_close(tsq_rx* b) {
        free(b->m); free(b->iov); free(b->addr); free(b->ctrl); free(b->data);
    }

    static int tsq_rx_recv(int fd, tsq_rx* b) {
        return recvmmsg(fd, b->m, b->count, MSG_DONTWAIT, NULL);
    }

    /* (host, port) of message i into host[64]; returns family or -1 */
    static int tsq_rx_addr(tsq_rx* b, int i, char* host, int* port, unsigned int* flow, unsigned int* scope) {
        struct sockaddr_storage* s = &b->addr[i];
        *flow = 0; *scope = 0;
        if (s->ss_family == AF_INET) {
            struct sockaddr_in* a = (struct sockaddr_in*)s;
            if (!inet_ntop(AF_INET, &a->sin_addr, host, 64)) return -1;
            *port = ntohs(a->sin_port);
            return AF_INET;
        }
        if (s->ss_family == AF_INET6) {
            struct sockaddr_in6* a = (struct sockaddr_in6*)s;
            if (!inet_ntop(AF_INET6, &a->sin6_addr, host, 64)) return -1;
            *port = ntohs(a->sin6_port);
            *flow = ntohl(a->sin6_flowinfo);
            *scope = a->sin6_scope_id;
            return AF_INET6;
        }
        return -1;
    }

    static int tsq_sockaddr(int family, const char* host, int port, struct sockaddr_storage* s, socklen_t* len) {
        memset(s, 0, sizeof *s);
        if (family == AF_INET) {
            struct sockaddr_in* a = (struct sockaddr_in*)s;
            a->sin_family = AF_INET; a->sin_port = htons(port);
            if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return -1;
            *len = sizeof *a;
            return 0;
        }
        if (family == AF_INET6) {
            struct sockaddr_in6* a = (struct sockaddr_in6*)s;
            a->sin6_family = AF_INET6; a->sin6_port = htons(port);
            if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) return -1;
            *len = sizeof *a;
            return 0;
        }
        return -1;
    }

    /* one TX stamp from the error queue: 1 found, 0 a message without one, -1 empty/error */
    static int tsq_tx_one(int fd, uint32_t* key, int64_t* ns) {
        char ctrl[512], one[1];
        struct iovec iov = { one, 1 };
        struct msghdr h;
        struct cmsghdr* c;
        int have_key = 0;
        *ns = -1;
        memset(&h, 0, sizeof h);
        h.msg_iov = &iov; h.msg_iovlen = 1;
        h.msg_control = ctrl; h.msg_controllen = sizeof ctrl;
        if (recvmsg(fd, &h, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) return -1;
        for (c = CMSG_FIRSTHDR(&h); c != NULL; c = CMSG_NXTHDR(&h, c)) {
            int64_t t = tsq_ts_ns(c);
            if (t >= 0) { *ns = t; continue; }
            if ((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_RECVERR)) {
                struct sock_extended_err e; memcpy(&e, CMSG_DATA(c), sizeof e);
                if (e.ee_errno == ENOMSG && e.ee_origin == SO_EE_ORIGIN_TIMESTAMPING &&
                    e.ee_info == SCM_TSTAMP_SND) { *key = e.ee_data; have_key = 1; }
            }
        }
        return (have_key && *ns >= 0) ? 1 : 0;
    }
    """
    ctypedef struct tsq_rx:
        int count
    int tsq_rx_open(tsq_rx* b, int count, int bufsize) nogil
    void tsq_rx_close(tsq_rx* b) nogil
    int tsq_rx_recv(int fd, tsq_rx* b) nogil
    int tsq_rx_addr(tsq_rx* b, int i, char* host, int* port, unsigned int* flow, unsigned int* scope) nogil
    int64_t tsq_msg_rx_ns(void* h) nogil
    int tsq_tx_one(int fd, uint32_t* key, int64_t* ns) nogil
    int tsq_sockaddr(int family, const char* host, int port, void* s, unsigned int* length) nogil
    int c_AF_INET "AF_INET"
    int c_AF_INET6 "AF_INET6"
    int c_MSG_TRUNC "MSG_TRUNC"
    int c_MSG_DONTWAIT "MSG_DONTWAIT"
    int c_EAGAIN "EAGAIN"
    int c_EWOULDBLOCK "EWOULDBLOCK"
    int c_EINTR "EINTR"

cdef extern from "<sys/socket.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len
    struct msghdr:
        void* msg_name
        unsigned int msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct sockaddr_storage:
        unsigned short ss_family
    int sendmmsg(int fd, mmsghdr* msgvec, unsigned int vlen, int flags)

cdef extern from *:
    """
    static struct mmsghdr* tsq_rx_msg(tsq_rx* b, int i) { return &b->m[i]; }
    static char* tsq_rx_data(tsq_rx* b, int i) { return b->data + (size_t)i * b->bufsize; }
    """
    mmsghdr* tsq_rx_msg(tsq_rx* b, int i) nogil
    char* tsq_rx_data(tsq_rx* b, int i) nogil

from libc.stdlib cimport free, malloc
from cpython.bytes cimport PyBytes_FromStringAndSize

DEF _MAX_SEND = 64


def recv_batch(int fd, int max_count=32, int bufsize=2048):
    """Up to `max_count` datagrams from a non-blocking UDP socket in one recvmmsg: a list of
    (data, address, kernel RX realtime ns or None), [] when none is waiting. Datagrams longer than
    `bufsize` are dropped (a QUIC datagram is at most 1500 bytes on the paths TSQ serves).
    OSError for errors other than EAGAIN/EINTR."""
    cdef tsq_rx b
    cdef int n, i, err = 0, port = 0, fam
    cdef unsigned int flow = 0, scope = 0
    cdef char host[64]
    cdef int64_t ns
    cdef mmsghdr* m
    if max_count < 1:
        return []
    if tsq_rx_open(&b, max_count, bufsize) != 0:
        tsq_rx_close(&b)
        raise MemoryError()
    try:
        with nogil:
            n = tsq_rx_recv(fd, &b)
            if n < 0:
                err = errno
        if n < 0:
            if err == c_EAGAIN or err == c_EWOULDBLOCK or err == c_EINTR:
                return []
            raise OSError(err, _os.strerror(err))
        out = []
        for i in range(n):
            m = tsq_rx_msg(&b, i)
            if m.msg_hdr.msg_flags & c_MSG_TRUNC:
                continue
            fam = tsq_rx_addr(&b, i, host, &port, &flow, &scope)
            if fam == c_AF_INET:
                addr = (host.decode("ascii"), port)
            elif fam == c_AF_INET6:
                addr = (host.decode("ascii"), port, flow, scope)
            else:
                addr = ()
            ns = tsq_msg_rx_ns(&m.msg_hdr)
            out.append((PyBytes_FromStringAndSize(tsq_rx_data(&b, i), m.msg_len), addr,
                        ns if ns >= 0 else None))
        return out
    finally:
        tsq_rx_close(&b)


def send_batch(int fd, int family, list datagrams, object addr):
    """Send `datagrams` (bytes) to `addr` (host, port, ...) on a non-blocking UDP socket of
    `family` in one sendmmsg; returns how many the kernel took (fewer when its buffer is full).
    -1 when `addr` is not a numeric address of `family` (the caller falls back to sendto).
    OSError for errors other than EAGAIN/EINTR."""
    cdef sockaddr_storage sa
    cdef unsigned int salen = 0
    cdef mmsghdr msgs[_MAX_SEND]
    cdef iovec iov[_MAX_SEND]
    cdef int count = len(datagrams), i, n, err = 0
    cdef bytes host = str(addr[0]).encode("ascii", "replace")
    cdef bytes item
    if count == 0:
        return 0
    if count > _MAX_SEND:
        count = _MAX_SEND
    if tsq_sockaddr(family, host, int(addr[1]), &sa, &salen) != 0:
        return -1
    memset(msgs, 0, sizeof(msgs))
    for i in range(count):
        item = datagrams[i]
        iov[i].iov_base = <void*>PyBytes_AS_STRING(item)
        iov[i].iov_len = PyBytes_GET_SIZE(item)
        msgs[i].msg_hdr.msg_name = &sa
        msgs[i].msg_hdr.msg_namelen = salen
        msgs[i].msg_hdr.msg_iov = &iov[i]
        msgs[i].msg_hdr.msg_iovlen = 1
    with nogil:
        n = sendmmsg(fd, msgs, count, c_MSG_DONTWAIT)
        if n < 0:
            err = errno
    if n < 0:
        if err == c_EAGAIN or err == c_EWOULDBLOCK or err == c_EINTR:
            return 0
        raise OSError(err, _os.strerror(err))
    return n


def drain_tx_stamps(int fd):
    """Every software TX stamp waiting in the socket's error queue: a list of (OPT_ID key,
    realtime ns), as `read_tx_timestamps` gives them; never blocks."""
    cdef uint32_t key = 0
    cdef int64_t ns = 0
    cdef int rc
    out = []
    while True:
        with nogil:
            rc = tsq_tx_one(fd, &key, &ns)
        if rc < 0:
            return out
        if rc == 1:
            out.append((key, ns))

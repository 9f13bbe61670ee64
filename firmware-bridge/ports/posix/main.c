/* Host build of the device firmware: the portable core over a tty, with a simulated crystal.
 *
 *   tsqb-posix (--link PATH | --tty PATH) [--baud N] [--drift-ppm X] [--offset-ms X] [--wander X]
 *              [--device-id N] [--truth-log FILE] [--reset-after S] [--rx-spin-ms X]
 *
 * --link PATH: create a pseudo-terminal and point the symlink PATH at its slave side: the device
 *   "appears" there as a USB serial port would (the bridge opens PATH). SIGUSR2 unplugs and replugs
 *   it (a new pty, the link repointed), which is what a USB re-enumeration looks like.
 * --tty PATH: open an existing tty (a real UART, or one end of a socat pair); reopened after errors.
 * Ticks are CLOCK_MONOTONIC_RAW at 1 MHz scaled by (1 + drift + wander): the simulated crystal.
 * Floating point is used here, in the simulation only; the core (src/) has none.
 * The truth log gets one line a second: realtime_ns utc_ns error_ns bound_ns state — the device's
 * UTC against CLOCK_REALTIME, which this host build can read and a real device cannot.
 * SIGUSR1 or --reset-after: a device reset (ticks restart near 0, state lost, new HELLO).
 * --rx-spin-ms X: after each read, poll the tty without sleeping for X ms. An MCU stamps a frame in
 *   its RX interrupt within a microsecond of the byte; this process, asleep in poll(), stamps it
 *   only after the scheduler wakes it, which on an idle VM costs tens of microseconds (a halted
 *   vCPU) and shows up as a one-sided delay. X longer than the ping interval (benchmarks/bridge.py
 *   uses 2000) keeps it awake throughout, so T2 is the frame's arrival, as on the device being
 *   modelled. Default 0 (always sleep).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tsqb.h"
#include "tsqb_port.h"

#define TICK_HZ 1000000u

static volatile sig_atomic_t g_stop, g_reset, g_replug;
static int g_fd = -1;
static double g_drift_ppm, g_wander, g_freq_ppm;
static int64_t g_raw0;
static double g_tick_base;      /* ticks at g_seg_raw */
static int64_t g_seg_raw;       /* start of the current frequency segment */
static tsqb_device g_dev;

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t tsqb_port_ticks(void)
{
    int64_t raw = clock_ns(CLOCK_MONOTONIC_RAW);
    double dt = (double)(raw - g_seg_raw) * 1e-9;
    return (uint64_t)(g_tick_base + dt * TICK_HZ * (1.0 + g_freq_ppm * 1e-6));
}

void tsqb_port_write(const uint8_t *data, size_t n)
{
    while (n > 0 && g_fd >= 0) {
        ssize_t w = write(g_fd, data, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd p = {g_fd, POLLOUT, 0};
                poll(&p, 1, 10);
                continue;
            }
            return; /* unplugged: the frame is lost, as on a real line */
        }
        data += w;
        n -= (size_t)w;
    }
}

/* Random walk of the frequency, once a second: wander in ppb per sqrt(second). */
static void wander_step(void)
{
    int64_t raw = clock_ns(CLOCK_MONOTONIC_RAW);
    double u1 = (rand() + 1.0) / (RAND_MAX + 2.0), u2 = (rand() + 1.0) / (RAND_MAX + 2.0);
    double gauss = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    g_tick_base = (double)tsqb_port_ticks();
    g_seg_raw = raw;
    g_freq_ppm += g_wander * 1e-3 * gauss;
}

static void set_raw(int fd, unsigned baud)
{
    struct termios t;
    speed_t s = B115200;
    if (tcgetattr(fd, &t) != 0)
        return;
    cfmakeraw(&t);
    switch (baud) {
    case 9600: s = B9600; break;
    case 19200: s = B19200; break;
    case 38400: s = B38400; break;
    case 57600: s = B57600; break;
    case 230400: s = B230400; break;
    case 460800: s = B460800; break;
    case 921600: s = B921600; break;
    default: s = B115200; break;
    }
    cfsetispeed(&t, s);
    cfsetospeed(&t, s);
    tcsetattr(fd, TCSANOW, &t);
}

static int open_link(const char *link)
{
    char tmp[4096];
    int fd = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 || grantpt(fd) != 0 || unlockpt(fd) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s.new", link);
    unlink(tmp);
    if (symlink(ptsname(fd), tmp) != 0 || rename(tmp, link) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_reset = 1;
    else if (sig == SIGUSR2)
        g_replug = 1;
    else
        g_stop = 1;
}

static void device_reset(uint32_t id)
{
    static const uint8_t fw[3] = {1, 0, 0};
    g_tick_base = 1000.0; /* ticks restart near zero */
    g_seg_raw = clock_ns(CLOCK_MONOTONIC_RAW);
    g_dev.resets++;
    tsqb_device_init(&g_dev, id, TICK_HZ, fw, 0, tsqb_port_ticks());
}

int main(int argc, char **argv)
{
    const char *link = NULL, *tty = NULL, *truth = NULL;
    unsigned baud = 115200;
    double offset_ms = 0, reset_after = 0, rx_spin_ms = 0;
    int64_t spin_until = 0;
    uint32_t id = 0x00C0FFEEu;
    static const uint8_t fw[3] = {1, 0, 0};
    FILE *truth_f = NULL;
    int i, backoff_ms = 10;
    int64_t next_second, t_start;
    struct sigaction sa;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "tsqb-posix: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--link")) link = v;
        else if (!strcmp(a, "--tty")) tty = v;
        else if (!strcmp(a, "--baud")) baud = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--drift-ppm")) g_drift_ppm = atof(v);
        else if (!strcmp(a, "--offset-ms")) offset_ms = atof(v);
        else if (!strcmp(a, "--wander")) g_wander = atof(v);
        else if (!strcmp(a, "--device-id")) id = (uint32_t)strtoul(v, NULL, 0);
        else if (!strcmp(a, "--truth-log")) truth = v;
        else if (!strcmp(a, "--reset-after")) reset_after = atof(v);
        else if (!strcmp(a, "--rx-spin-ms")) rx_spin_ms = atof(v);
        else {
            fprintf(stderr, "tsqb-posix: unknown option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!link == !tty) {
        fprintf(stderr, "usage: tsqb-posix (--link PATH | --tty PATH) [--baud N] [--drift-ppm X] "
                        "[--offset-ms X] [--wander PPB] [--device-id N] [--truth-log FILE] [--reset-after S] [--rx-spin-ms X]\n");
        return 2;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR2, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)id);
    if (truth && !(truth_f = fopen(truth, "a"))) {
        perror(truth);
        return 1;
    }
    g_freq_ppm = g_drift_ppm;
    g_raw0 = g_seg_raw = clock_ns(CLOCK_MONOTONIC_RAW);
    g_tick_base = 1e6 + offset_ms * 1e3; /* an arbitrary origin, shifted by the initial offset */
    tsqb_device_init(&g_dev, id, TICK_HZ, fw, 0, tsqb_port_ticks());
    t_start = clock_ns(CLOCK_MONOTONIC);
    next_second = t_start + 1000000000;

    while (!g_stop) {
        struct pollfd p;
        uint8_t buf[TSQB_RING_SIZE]; /* poll() below empties the ring, so one read always fits */
        ssize_t n;
        int64_t now_mono;
        if (g_fd < 0) {
            g_fd = link ? open_link(link) : open(tty, O_RDWR | O_NOCTTY | O_NONBLOCK);
            if (g_fd < 0) {
                usleep((useconds_t)backoff_ms * 1000);
                backoff_ms = backoff_ms < 1000 ? backoff_ms * 2 : 1000;
                continue;
            }
            backoff_ms = 10;
            set_raw(g_fd, baud);
        }
        if (g_replug && link) {
            g_replug = 0;
            close(g_fd);
            unlink(link);
            g_fd = -1;
            usleep(20000);
            continue;
        }
        if (g_reset || (reset_after > 0 && clock_ns(CLOCK_MONOTONIC) - t_start > (int64_t)(reset_after * 1e9))) {
            g_reset = 0;
            reset_after = 0;
            device_reset(id);
        }
        p.fd = g_fd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, clock_ns(CLOCK_MONOTONIC) < spin_until ? 0 : 20) > 0) {
            if (p.revents & POLLIN) {
                n = read(g_fd, buf, sizeof buf);
                if (n > 0) {
                    uint64_t t = tsqb_port_ticks(); /* the delimiter's arrival: T2 */
                    for (i = 0; i < n; i++) /* as an RX interrupt would: append only */
                        tsqb_device_rx_byte(&g_dev, buf[i], t);
                    if (rx_spin_ms > 0)
                        spin_until = clock_ns(CLOCK_MONOTONIC) + (int64_t)(rx_spin_ms * 1e6);
                } else if (n < 0 && errno != EAGAIN && errno != EINTR && !link) {
                    close(g_fd);
                    g_fd = -1;
                }
            } else if (p.revents & (POLLHUP | POLLERR)) {
                if (link) {
                    usleep(10000); /* no one has the port open: like a cable with nothing on it */
                } else {
                    close(g_fd);
                    g_fd = -1;
                }
            }
        }
        tsqb_device_poll(&g_dev, tsqb_port_ticks());
        now_mono = clock_ns(CLOCK_MONOTONIC);
        if (now_mono >= next_second) {
            next_second += 1000000000;
            if (g_wander > 0)
                wander_step();
            if (truth_f) {
                int64_t utc = 0, rt0, rt1;
                uint32_t bound = 0;
                int state;
                rt0 = clock_ns(CLOCK_REALTIME);
                state = tsqb_device_utc_now(&g_dev, tsqb_port_ticks(), &utc, &bound);
                rt1 = clock_ns(CLOCK_REALTIME);
                if (tsqb_device_has_timescale(&g_dev))
                    fprintf(truth_f, "%lld %lld %lld %lu %d\n", (long long)((rt0 + rt1) / 2), (long long)utc,
                            (long long)(utc - (rt0 + rt1) / 2), (unsigned long)bound, state);
                else
                    fprintf(truth_f, "%lld - - - %d\n", (long long)((rt0 + rt1) / 2), state);
                fflush(truth_f);
            }
        }
    }
    if (g_fd >= 0)
        close(g_fd);
    if (link)
        unlink(link);
    if (truth_f)
        fclose(truth_f);
    (void)g_raw0;
    return 0;
}

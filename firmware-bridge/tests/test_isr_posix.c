/* The core under a real asynchronous interrupt, on the host: SIGALRM fires every 20 us and its
 * handler is the "RX ISR" -- it appends the next byte of a stream of PINGs and TIMESCALEs to the
 * ring (tsqb_device_rx_byte) and reads UTC (tsqb_device_utc_now) -- while the main loop polls
 * and answers. Checks: every frame the device wrote is whole (no interleaving), every PING not lost
 * to a full ring is answered once with its own seq, and a UTC read from the handler always comes
 * from one of the two timescales in flight, never a mixture (a torn TIMESCALE). The handler also
 * notes each byte it offers while the ring is full (lost, as a UART overrun loses it): a frame that
 * lost a byte is dropped, and so is the next one when the lost byte was the delimiter between them
 * (they arrive merged); every other PING must be answered, exactly. How many bytes are lost depends
 * on how fast the main loop runs beside a 20 us interrupt (sanitizers, a loaded machine), so only
 * the accounting is checked, not a share. */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "tsqb.h"
#include "tsqb_port.h"

#define NFRAMES 600
#define T_READ 5000000ull

static tsqb_device g_dev;
static uint8_t g_stream[NFRAMES * TSQB_MAX_WIRE];
static size_t g_stream_len;
static volatile size_t g_pos;
static volatile sig_atomic_t g_reads, g_torn, g_a, g_b;
static int64_t g_utc_a, g_utc_b;
static uint8_t g_out[NFRAMES * TSQB_MAX_WIRE * 2];
static volatile sig_atomic_t g_frame;        /* the input frame the next byte belongs to */
static volatile sig_atomic_t g_lost[NFRAMES + 1];
static int g_is_ping[NFRAMES];
static size_t g_out_len;

uint64_t tsqb_port_ticks(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void tsqb_port_write(const uint8_t *data, size_t n)
{
    size_t i;
    for (i = 0; i < n && g_out_len < sizeof g_out; i++) { /* byte by byte: a slow UART, interruptible */
        volatile int spin;
        for (spin = 0; spin < 200; spin++)
            ;
        g_out[g_out_len++] = data[i];
    }
}

static void on_alarm(int sig)
{
    int64_t utc;
    uint32_t bound;
    (void)sig;
    if (g_pos < g_stream_len) {
        uint8_t byte = g_stream[g_pos];
        if ((uint8_t)(g_dev.ring.head - g_dev.ring.tail) >= TSQB_RING_SIZE) { /* this byte will be lost */
            g_lost[g_frame] = 1;
            if (byte == 0)
                g_lost[g_frame + 1] = 1;
        }
        tsqb_device_rx_byte(&g_dev, byte, tsqb_port_ticks());
        g_pos = g_pos + 1;
        if (byte == 0)
            g_frame = g_frame + 1;
    }
    if (tsqb_device_utc_now(&g_dev, T_READ, &utc, &bound) != TSQB_UNSYNC || tsqb_device_has_timescale(&g_dev)) {
        g_reads = g_reads + 1;
        if (utc == g_utc_a)
            g_a = g_a + 1;
        else if (utc == g_utc_b)
            g_b = g_b + 1;
        else
            g_torn = g_torn + 1;
    }
}

int main(void)
{
    static const uint8_t fw[3] = {1, 0, 0};
    tsqb_msg m;
    tsqb_timescale a, b;
    struct sigaction sa;
    struct itimerval it;
    size_t i, start = 0;
    int k, pongs = 0, broken = 0, failures = 0, last_seq = -1, order_ok = 1, intact_pings = 0;
    uint64_t t0;

    tsqb_device_init(&g_dev, 1, 1000000u, fw, 0, tsqb_port_ticks());
    t0 = tsqb_port_ticks();
    /* two timescales that disagree in every field the UTC depends on */
    a.t0_ticks = t0;
    a.utc0_ns = 1800000000000000000ll;
    a.rate_q32 = 1000ull << 32;
    a.bound_ns = 1000;
    a.leap = 0;
    a.flags = TSQB_FLAG_SYNCHRONISED;
    a.valid_ms = 60000;
    b = a;
    b.t0_ticks = t0 + 1000;
    b.utc0_ns = 1800000000777000000ll;
    b.rate_q32 = (1000ull << 32) + (1ull << 31) + 12345;
    g_utc_a = tsqb_timescale_apply(&a, T_READ);
    g_utc_b = tsqb_timescale_apply(&b, T_READ);
    for (k = 0; k < NFRAMES; k++) {
        m.seq = (uint16_t)(k + 1);
        if (k % 3 == 2) {
            m.type = TSQB_TIMESCALE;
            m.u.timescale = (k / 3) % 2 ? b : a;
        } else {
            m.type = TSQB_PING;
            g_is_ping[k] = 1;
        }
        g_stream_len += tsqb_encode(&m, g_stream + g_stream_len);
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    it.it_interval.tv_sec = 0;
    it.it_interval.tv_usec = 20;
    it.it_value = it.it_interval;
    setitimer(ITIMER_REAL, &it, NULL);
    while (g_pos < g_stream_len)
        tsqb_device_poll(&g_dev, tsqb_port_ticks());
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);
    tsqb_device_poll(&g_dev, tsqb_port_ticks());

    for (i = 0; i < g_out_len; i++) {
        if (g_out[i] != 0)
            continue;
        if (i == start) /* an empty frame: the lone delimiter before the HELLO at boot */
            ;
        else if (tsqb_decode(g_out + start, i - start, &m) != TSQB_OK)
            broken++;
        else if (m.type == TSQB_PONG) {
            pongs++;
            if ((int)m.seq <= last_seq || m.seq % 3 == 0)
                order_ok = 0;
            last_seq = m.seq;
        }
        start = i + 1;
    }
#define EXPECT(c, ...)                                                                                         \
    do {                                                                                                       \
        if (!(c)) {                                                                                            \
            failures++;                                                                                        \
            printf("FAIL: " __VA_ARGS__);                                                                      \
            printf("\n");                                                                                      \
        }                                                                                                      \
    } while (0)
    EXPECT(broken == 0 && start == g_out_len, "%d broken frames on the wire", broken);
    EXPECT(order_ok, "PONGs out of order or for a TIMESCALE's seq");
    for (k = 0; k < NFRAMES; k++)
        intact_pings += g_is_ping[k] && !g_lost[k];
    EXPECT(pongs == intact_pings && pongs > 0, "%d pongs for %d PINGs that lost no byte (%u overruns)", pongs,
           intact_pings, g_dev.overruns);
    EXPECT(g_dev.bad_frames == g_dev.overruns, "%u bad frames, %u of them overruns", g_dev.bad_frames,
           g_dev.overruns);
    EXPECT(g_torn == 0, "%d torn UTC reads of %d", (int)g_torn, (int)g_reads);
    EXPECT(g_a > 0 && g_b > 0, "reads saw both timescales (%d, %d)", (int)g_a, (int)g_b);
    printf("isr stress: %d frames in, %d pongs, %u overruns, %u bad; %d UTC reads in the handler (%d a, %d b, %d "
           "torn)\n",
           NFRAMES, pongs, g_dev.overruns, g_dev.bad_frames, (int)g_reads, (int)g_a, (int)g_b, (int)g_torn);
    printf("%d passed, %d failed\n", 6 - failures, failures);
    return failures ? 1 : 0;
}

/* libFuzzer target: the device state machine driven by a script read from the input -- bytes
 * appended as by the RX interrupt (with their ticks), hardware overruns, main-loop polls, UTC reads
 * at any tick, and whole well-formed frames built from input fields (so that TIMESCALE checks and
 * the timescale arithmetic are reached past the CRC). Invariants, checked on every write the core
 * makes through the port: each is exactly one whole frame that decodes, of a type a device sends,
 * and the device's own seq counter advances by one per HELLO/STATUS. */
#include <stdlib.h>
#include <string.h>

#include "tsqb.h"
#include "tsqb_port.h"

static uint64_t g_tick;
static uint16_t g_seq_seen;
static int g_have_seq;

uint64_t tsqb_port_ticks(void) { return g_tick; }

void tsqb_port_write(const uint8_t *data, size_t n)
{
    tsqb_msg m;
    if (n == 1 && data[0] == 0)
        return; /* the lone delimiter before the HELLO at boot (PROTOCOL.md, "After a reset") */
    if (n < 2 || n > TSQB_MAX_WIRE || data[n - 1] != 0 || memchr(data, 0, n - 1) != NULL)
        abort(); /* not exactly one frame: two writes interleaved, or a broken encoder */
    if (tsqb_decode(data, n - 1, &m) != TSQB_OK)
        abort();
    if (m.type != TSQB_HELLO && m.type != TSQB_PONG && m.type != TSQB_STATUS)
        abort();
    if (m.type != TSQB_PONG) {
        if (g_have_seq && m.seq != (uint16_t)(g_seq_seen + 1u))
            abort();
        g_seq_seen = m.seq;
        g_have_seq = 1;
    }
}

typedef struct {
    const uint8_t *p;
    size_t n;
} cursor;

static uint64_t take(cursor *c, int bytes)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < bytes; i++) {
        v |= (uint64_t)(c->n ? *c->p : 0) << (8 * i);
        if (c->n) {
            c->p++;
            c->n--;
        }
    }
    return v;
}

static void feed(tsqb_device *d, const uint8_t *w, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        if ((uint8_t)(d->ring.head - d->ring.tail) == TSQB_RING_SIZE)
            tsqb_device_poll(d, g_tick);
        tsqb_device_rx_byte(d, w[i], g_tick);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tsqb_device d;
    static const uint8_t fw[3] = {1, 2, 3};
    cursor c = {data, size};
    uint32_t hz = (uint32_t)take(&c, 4);
    int steps = 0;
    g_tick = take(&c, 8);
    g_have_seq = 0;
    memset(&d, 0, sizeof d);
    tsqb_device_init(&d, 0x1234, hz, fw, 0, g_tick);
    while (c.n && steps++ < 4096) {
        uint8_t op = (uint8_t)take(&c, 1);
        switch (op & 7u) {
        case 0: /* a byte from the line */
        case 1:
            g_tick += take(&c, 1);
            if ((uint8_t)(d.ring.head - d.ring.tail) == TSQB_RING_SIZE && (op & 8u))
                tsqb_device_poll(&d, g_tick);
            tsqb_device_rx_byte(&d, (uint8_t)take(&c, 1), g_tick);
            break;
        case 2: /* the main loop runs, some time later */
            g_tick += take(&c, 1 + (op >> 6));
            tsqb_device_poll(&d, g_tick);
            break;
        case 3: { /* an application reads UTC at any tick */
            int64_t utc;
            uint32_t bound;
            (void)tsqb_device_utc_now(&d, (op & 8u) ? take(&c, 8) : g_tick, &utc, &bound);
            break;
        }
        case 4: /* the UART reports an overrun */
            tsqb_device_rx_gap(&d);
            break;
        case 5: { /* a well-formed TIMESCALE, optionally nudged towards plausible */
            tsqb_msg m;
            uint8_t w[TSQB_MAX_WIRE];
            m.type = TSQB_TIMESCALE;
            m.seq = (uint16_t)take(&c, 2);
            m.u.timescale.t0_ticks = (op & 8u) ? g_tick + take(&c, 2) : take(&c, 8);
            m.u.timescale.utc0_ns = (op & 16u) ? 1700000000000000000ll + (int64_t)take(&c, 6) : (int64_t)take(&c, 8);
            m.u.timescale.rate_q32 = (op & 32u) ? (1000000000ull << 32) / (hz ? hz : 1u) + take(&c, 3) - 0x800000u
                                                : take(&c, 8);
            m.u.timescale.bound_ns = (uint32_t)take(&c, 4);
            m.u.timescale.leap = (uint8_t)take(&c, 1);
            m.u.timescale.flags = (uint8_t)take(&c, 1);
            m.u.timescale.valid_ms = (uint32_t)take(&c, 4);
            feed(&d, w, tsqb_encode(&m, w));
            break;
        }
        case 6: { /* a well-formed PING or HELLO_REQUEST, or a device frame echoed back */
            tsqb_msg m;
            uint8_t w[TSQB_MAX_WIRE];
            static const uint8_t types[4] = {TSQB_PING, TSQB_HELLO_REQUEST, TSQB_PONG, TSQB_STATUS};
            memset(&m, 0, sizeof m);
            m.type = types[(op >> 3) & 3u];
            m.seq = (uint16_t)take(&c, 2);
            feed(&d, w, tsqb_encode(&m, w));
            break;
        }
        default: /* a reset: the port re-initialises (RX interrupt off, as the contract says) */
            d.resets++;
            g_have_seq = 0; /* a restarted device numbers its frames from 1 again */
            tsqb_device_init(&d, 0x1234, hz, fw, 0, g_tick);
            break;
        }
    }
    tsqb_device_poll(&d, g_tick);
    return 0;
}

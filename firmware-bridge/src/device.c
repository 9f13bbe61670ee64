/* The device side of the protocol. The RX interrupt only appends (byte, tick) to the ring
 * (tsqb_device_rx_byte); tsqb_device_poll, in the main loop, decodes, answers (PONG, HELLO),
 * applies TIMESCALE and sends HELLO/STATUS. See the concurrency contract in tsqb.h. */
#include "tsqb.h"
#include "tsqb_port.h"

/* The device's own allowance for its oscillator since t0: 1 ppm of the elapsed time. */
#define TSQB_GROWTH_PPM 1u
#define RING_MASK ((uint8_t)(TSQB_RING_SIZE - 1u))

/* Milliseconds in dt ticks, saturating (dt may be anything a caller passes). */
static uint64_t ticks_to_ms(const tsqb_device *d, uint64_t dt)
{
    uint64_t s = dt / d->tick_hz, r = dt % d->tick_hz;
    if (s > (UINT64_MAX - 1000u) / 1000u)
        return UINT64_MAX;
    return s * 1000u + (r * 1000u) / d->tick_hz; /* r < tick_hz < 2^32: r * 1000 fits */
}

static void send(tsqb_msg *m)
{
    uint8_t out[TSQB_MAX_WIRE];
    size_t n = tsqb_encode(m, out);
    tsqb_port_write(out, n); /* whole frames, main loop only: never interleaved */
}

static void send_hello(tsqb_device *d, uint64_t now)
{
    tsqb_msg m;
    m.type = TSQB_HELLO;
    m.seq = ++d->seq;
    m.u.hello.device_id = d->device_id;
    m.u.hello.fw[0] = d->fw[0];
    m.u.hello.fw[1] = d->fw[1];
    m.u.hello.fw[2] = d->fw[2];
    m.u.hello.proto = TSQB_VERSION;
    m.u.hello.tick_hz = d->tick_hz;
    m.u.hello.caps = d->caps;
    send(&m);
    d->last_hello_tick = now;
}

static void send_status(tsqb_device *d, uint64_t now)
{
    tsqb_msg m;
    int64_t utc;
    uint32_t bound = 0;
    m.type = TSQB_STATUS;
    m.seq = ++d->seq;
    m.u.status.state = (uint8_t)tsqb_device_utc_now(d, now, &utc, &bound);
    m.u.status.timescale_seq = tsqb_device_has_timescale(d) ? d->slot[d->ts_gen & 1u].seq : 0u;
    m.u.status.bound_ns = bound;
    m.u.status.bad_frames = d->bad_frames;
    m.u.status.resets = d->resets;
    m.u.status.overruns = d->overruns;
    send(&m);
    d->last_status_tick = now;
}

void tsqb_device_init(tsqb_device *d, uint32_t device_id, uint32_t tick_hz, const uint8_t fw[3], uint16_t caps,
                      uint64_t now_tick)
{
    uint16_t resets = d->resets;
    uint8_t *p = (uint8_t *)d;
    size_t i;
    for (i = 0; i < sizeof *d; i++)
        p[i] = 0;
    d->resets = resets;
    d->device_id = device_id;
    d->tick_hz = tick_hz ? tick_hz : 1u;
    d->fw[0] = fw[0];
    d->fw[1] = fw[1];
    d->fw[2] = fw[2];
    d->caps = caps;
    d->last_status_tick = now_tick;
    {
        /* A lone delimiter first: a frame the reset cut short ends here and is dropped alone,
         * instead of swallowing the HELLO (PROTOCOL.md, "Framing"). */
        static const uint8_t delimiter = 0;
        tsqb_port_write(&delimiter, 1);
    }
    send_hello(d, now_tick);
}

/* ---- the producer side: interrupt context ---- */

void tsqb_device_rx_byte(tsqb_device *d, uint8_t byte, uint64_t tick)
{
    tsqb_ring *r = &d->ring;
    uint8_t head = r->head, i, bit;
    if ((uint8_t)(head - r->tail) >= TSQB_RING_SIZE) {
        r->gap = 1; /* full: this byte is lost; the consumer learns it from the next entry */
        return;
    }
    i = (uint8_t)(head & RING_MASK);
    bit = (uint8_t)(1u << (i & 7u));
    r->byte[i] = byte;
    r->tick[i] = (uint32_t)tick;
    if (r->gap)
        r->gap_before[i >> 3] |= bit;
    else
        r->gap_before[i >> 3] &= (uint8_t)~bit;
    r->gap = 0;
    TSQB_BARRIER(); /* the entry is written before the index that publishes it */
    r->head = (uint8_t)(head + 1u);
}

void tsqb_device_rx_gap(tsqb_device *d) { d->ring.gap = 1; }

/* ---- the consumer side: main loop ---- */

/* The 64-bit tick of a 32-bit stamp within 2^31 ticks of now (either side). */
static uint64_t extend_tick(uint64_t now, uint32_t stamp)
{
    uint32_t diff = stamp - (uint32_t)now;
    return diff < 0x80000000u ? now + diff : now - ((uint32_t)0 - diff);
}

static void store_timescale(tsqb_device *d, const tsqb_msg *m, uint64_t t2)
{
    uint8_t next = (uint8_t)(d->ts_gen + 1u);
    tsqb_ts_slot *s;
    if (next == 0)
        next = 2; /* 0 means "none yet"; 2 keeps the slot alternating */
    s = &d->slot[next & 1u];
    s->ts = m->u.timescale;
    s->rx_tick = t2;
    s->seq = m->seq;
    TSQB_BARRIER(); /* the slot is whole before the generation that publishes it */
    d->ts_gen = next;
}

static void on_frame(tsqb_device *d, uint64_t t2)
{
    tsqb_msg m;
    int rc = tsqb_decode(d->rx, d->rx_len, &m);
    if (rc == TSQB_OK) {
        switch (m.type) {
        case TSQB_HELLO_REQUEST:
            send_hello(d, t2);
            break;
        case TSQB_PING:
            d->pinged = 1;
            m.type = TSQB_PONG; /* keeps the PING's seq */
            m.u.pong.t2_ticks = t2;
            m.u.pong.t3_ticks = tsqb_port_ticks(); /* T3: just before the first byte goes out */
            send(&m);
            break;
        case TSQB_TIMESCALE:
            rc = tsqb_timescale_check(&m.u.timescale, d->tick_hz, t2);
            if (rc == TSQB_OK)
                store_timescale(d, &m, t2);
            else
                d->rejected++;
            break;
        default:
            rc = TSQB_E_TYPE; /* a device frame echoed back, or a type meant for the gateway */
            break;
        }
    }
    d->last_error = (int8_t)rc;
    if (rc != TSQB_OK)
        d->bad_frames++;
}

static void consume(tsqb_device *d, uint8_t byte, uint64_t tick, int gap_before)
{
    if (gap_before)
        d->rx_overflow = 1; /* bytes of this frame were lost: drop it at its delimiter */
    if (byte != 0) {
        if (d->rx_len < sizeof d->rx)
            d->rx[d->rx_len++] = byte;
        else
            d->rx_overflow = 1;
        return;
    }
    if (d->rx_overflow) {
        d->overruns++;
        d->bad_frames++;
    } else if (d->rx_len > 0) {
        on_frame(d, tick); /* the delimiter's tick: T2 */
    }
    d->rx_len = 0;
    d->rx_overflow = 0;
}

void tsqb_device_poll(tsqb_device *d, uint64_t now)
{
    tsqb_ring *r = &d->ring;
    uint8_t tail = r->tail, budget = TSQB_RING_SIZE; /* a line flooded with bytes cannot hold us here */
    while (budget-- && tail != r->head) {
        uint8_t i = (uint8_t)(tail & RING_MASK), byte;
        uint32_t stamp;
        int gap;
        TSQB_BARRIER(); /* read the entry only after the index that published it */
        byte = r->byte[i];
        stamp = r->tick[i];
        gap = (r->gap_before[i >> 3] >> (i & 7u)) & 1u;
        TSQB_BARRIER(); /* copied out before the slot is handed back to the ISR */
        tail = (uint8_t)(tail + 1u);
        r->tail = tail;
        consume(d, byte, extend_tick(now, stamp), gap);
    }
    if (!tsqb_device_has_timescale(d) && !d->pinged && now - d->last_hello_tick >= d->tick_hz)
        send_hello(d, now);
    if (now - d->last_status_tick >= (uint64_t)TSQB_STATUS_INTERVAL_S * d->tick_hz)
        send_status(d, now);
}

int tsqb_device_has_timescale(const tsqb_device *d) { return d->ts_gen != 0; }

int tsqb_device_utc_now(const tsqb_device *d, uint64_t tick, int64_t *utc_ns, uint32_t *bound_ns)
{
    tsqb_ts_slot s;
    uint8_t gen;
    uint64_t since_t0, growth;
    /* Copy the current slot; if the main loop published another meanwhile (possible only for a
     * caller it can preempt, e.g. another RTOS task), copy again. */
    do {
        gen = d->ts_gen;
        if (gen == 0)
            return TSQB_UNSYNC;
        TSQB_BARRIER();
        s = d->slot[gen & 1u];
        TSQB_BARRIER();
    } while (gen != d->ts_gen);
    *utc_ns = tsqb_timescale_apply(&s.ts, tick);
    since_t0 = tick >= s.ts.t0_ticks ? tick - s.ts.t0_ticks : s.ts.t0_ticks - tick;
    growth = ticks_to_ms(d, since_t0) * TSQB_GROWTH_PPM; /* 1 ppm: 1 ns per ms */
    *bound_ns = growth >= 0xFFFFFFFFu - s.ts.bound_ns ? 0xFFFFFFFFu : s.ts.bound_ns + (uint32_t)growth;
    if (!(s.ts.flags & TSQB_FLAG_SYNCHRONISED))
        return TSQB_UNSYNC;
    if (tick > s.rx_tick && ticks_to_ms(d, tick - s.rx_tick) > s.ts.valid_ms)
        return TSQB_HOLDOVER;
    return TSQB_SYNC;
}

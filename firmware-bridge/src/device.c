/* The device side of the protocol: frames in byte by byte, PONGs out, TIMESCALE applied. */
#include "tsqb.h"
#include "tsqb_port.h"

/* The device's own allowance for its oscillator since t0: 1 ppm of the elapsed time. */
#define TSQB_GROWTH_PPM 1u

static uint64_t ticks_to_ms(const tsqb_device *d, uint64_t dt)
{
    return (dt / d->tick_hz) * 1000u + ((dt % d->tick_hz) * 1000u) / d->tick_hz;
}

static void send(tsqb_device *d, tsqb_msg *m)
{
    uint8_t out[TSQB_MAX_WIRE];
    size_t n = tsqb_encode(m, out);
    (void)d;
    tsqb_port_write(out, n);
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
    send(d, &m);
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
    m.u.status.timescale_seq = d->ts_seq;
    m.u.status.bound_ns = bound;
    m.u.status.bad_frames = d->bad_frames;
    m.u.status.resets = d->resets;
    m.u.status.overruns = d->overruns;
    send(d, &m);
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
    send_hello(d, now_tick);
}

static void on_frame(tsqb_device *d, uint64_t t2)
{
    tsqb_msg m;
    if (tsqb_decode(d->rx, d->rx_len, &m) != TSQB_OK) {
        d->bad_frames++;
        return;
    }
    switch (m.type) {
    case TSQB_HELLO_REQUEST:
        send_hello(d, t2);
        break;
    case TSQB_PING:
        d->pinged = 1;
        m.type = TSQB_PONG; /* keeps the PING's seq */
        m.u.pong.t2_ticks = t2;
        m.u.pong.t3_ticks = tsqb_port_ticks(); /* T3: just before the first byte goes out */
        send(d, &m);
        break;
    case TSQB_TIMESCALE:
        d->ts = m.u.timescale;
        d->ts_seq = m.seq;
        d->ts_rx_tick = t2;
        d->have_ts = 1;
        break;
    default:
        d->bad_frames++; /* a device frame echoed back, or a type meant for the gateway */
        break;
    }
}

void tsqb_device_rx_byte(tsqb_device *d, uint8_t byte, uint64_t tick)
{
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
        on_frame(d, tick);
    }
    d->rx_len = 0;
    d->rx_overflow = 0;
}

void tsqb_device_poll(tsqb_device *d, uint64_t now)
{
    if (!d->have_ts && !d->pinged && now - d->last_hello_tick >= d->tick_hz)
        send_hello(d, now);
    if (now - d->last_status_tick >= 10u * (uint64_t)d->tick_hz)
        send_status(d, now);
}

int tsqb_device_utc_now(const tsqb_device *d, uint64_t tick, int64_t *utc_ns, uint32_t *bound_ns)
{
    uint64_t since_t0, growth, bound;
    if (!d->have_ts)
        return TSQB_UNSYNC;
    *utc_ns = tsqb_timescale_apply(&d->ts, tick);
    since_t0 = tick >= d->ts.t0_ticks ? tick - d->ts.t0_ticks : d->ts.t0_ticks - tick;
    growth = ticks_to_ms(d, since_t0) * TSQB_GROWTH_PPM; /* 1 ppm: 1 ns per ms */
    bound = (uint64_t)d->ts.bound_ns + growth;
    *bound_ns = bound > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)bound;
    if (!(d->ts.flags & TSQB_FLAG_SYNCHRONISED))
        return TSQB_UNSYNC;
    if (ticks_to_ms(d, tick - d->ts_rx_tick) > d->ts.valid_ms)
        return TSQB_HOLDOVER;
    return TSQB_SYNC;
}

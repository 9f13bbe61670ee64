/* Message encode/decode: little-endian fields, version, CRC (PROTOCOL.md). */
#include "tsqb.h"

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | ((uint16_t)p[1] << 8)); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) | ((uint32_t)get16(p + 2) << 16); }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

static int body_size(uint8_t type)
{
    switch (type) {
    case TSQB_HELLO_REQUEST: return 0;
    case TSQB_HELLO: return 14;
    case TSQB_PING: return 16;
    case TSQB_PONG: return 16;
    case TSQB_TIMESCALE: return 34;
    case TSQB_STATUS: return 13;
    default: return -1;
    }
}

size_t tsqb_encode(const tsqb_msg *m, uint8_t *out)
{
    uint8_t raw[TSQB_MAX_RAW];
    uint8_t *b = raw + 4;
    int size = body_size(m->type);
    size_t n, i;
    if (size < 0)
        return 0;
    raw[0] = TSQB_VERSION;
    raw[1] = m->type;
    put16(raw + 2, m->seq);
    switch (m->type) {
    case TSQB_HELLO:
        put32(b, m->u.hello.device_id);
        b[4] = m->u.hello.fw[0];
        b[5] = m->u.hello.fw[1];
        b[6] = m->u.hello.fw[2];
        b[7] = m->u.hello.proto;
        put32(b + 8, m->u.hello.tick_hz);
        put16(b + 12, m->u.hello.caps);
        break;
    case TSQB_PING:
        for (i = 0; i < 16; i++)
            b[i] = 0;
        break;
    case TSQB_PONG:
        put64(b, m->u.pong.t2_ticks);
        put64(b + 8, m->u.pong.t3_ticks);
        break;
    case TSQB_TIMESCALE:
        put64(b, m->u.timescale.t0_ticks);
        put64(b + 8, (uint64_t)m->u.timescale.utc0_ns);
        put64(b + 16, m->u.timescale.rate_q32);
        put32(b + 24, m->u.timescale.bound_ns);
        b[28] = m->u.timescale.leap;
        b[29] = m->u.timescale.flags;
        put32(b + 30, m->u.timescale.valid_ms);
        break;
    case TSQB_STATUS:
        b[0] = m->u.status.state;
        put16(b + 1, m->u.status.timescale_seq);
        put32(b + 3, m->u.status.bound_ns);
        put16(b + 7, m->u.status.bad_frames);
        put16(b + 9, m->u.status.resets);
        put16(b + 11, m->u.status.overruns);
        break;
    default:
        break;
    }
    n = 4u + (size_t)size;
    put16(raw + n, tsqb_crc16(raw, n));
    n += 2;
    n = tsqb_cobs_encode(raw, n, out);
    out[n++] = 0;
    return n;
}

int tsqb_decode(const uint8_t *frame, size_t n, tsqb_msg *m)
{
    uint8_t raw[TSQB_MAX_RAW];
    const uint8_t *b = raw + 4;
    int len, size;
    if (n > TSQB_MAX_WIRE)
        return TSQB_E_LENGTH;
    len = tsqb_cobs_decode(frame, n, raw, sizeof raw);
    if (len < 0)
        return (n > TSQB_MAX_RAW) ? TSQB_E_LENGTH : TSQB_E_COBS;
    if (len < 6)
        return TSQB_E_LENGTH;
    if (get16(raw + len - 2) != tsqb_crc16(raw, (size_t)len - 2))
        return TSQB_E_CRC;
    if (raw[0] != TSQB_VERSION)
        return TSQB_E_VERSION;
    size = body_size(raw[1]);
    if (size < 0)
        return TSQB_E_TYPE;
    if (len - 6 != size)
        return TSQB_E_BODY;
    m->type = raw[1];
    m->seq = get16(raw + 2);
    switch (m->type) {
    case TSQB_HELLO:
        m->u.hello.device_id = get32(b);
        m->u.hello.fw[0] = b[4];
        m->u.hello.fw[1] = b[5];
        m->u.hello.fw[2] = b[6];
        m->u.hello.proto = b[7];
        m->u.hello.tick_hz = get32(b + 8);
        m->u.hello.caps = get16(b + 12);
        break;
    case TSQB_PONG:
        m->u.pong.t2_ticks = get64(b);
        m->u.pong.t3_ticks = get64(b + 8);
        break;
    case TSQB_TIMESCALE:
        m->u.timescale.t0_ticks = get64(b);
        m->u.timescale.utc0_ns = (int64_t)get64(b + 8);
        m->u.timescale.rate_q32 = get64(b + 16);
        m->u.timescale.bound_ns = get32(b + 24);
        m->u.timescale.leap = b[28];
        m->u.timescale.flags = b[29];
        m->u.timescale.valid_ms = get32(b + 30);
        break;
    case TSQB_STATUS:
        m->u.status.state = b[0];
        m->u.status.timescale_seq = get16(b + 1);
        m->u.status.bound_ns = get32(b + 3);
        m->u.status.bad_frames = get16(b + 7);
        m->u.status.resets = get16(b + 9);
        m->u.status.overruns = get16(b + 11);
        break;
    default:
        break;
    }
    return TSQB_OK;
}

/* Unit tests of the portable core on the host: vectors (both ways), COBS/CRC edge cases, the
 * timescale arithmetic against exact reference values at long uptimes, the device state machine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsqb.h"
#include "tsqb_port.h"

static int failures, checks;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        checks++;                                                                                  \
        if (!(cond)) {                                                                             \
            failures++;                                                                            \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

/* ---- a port for the tests: a fake tick source and a capture buffer ---- */
static uint64_t t_now;
static uint8_t out_buf[4096];
static size_t out_len;
static size_t writes;
/* An RX "interrupt" that fires in the middle of every write, as on a device whose UART receives
 * while the main loop busy-writes a frame: it appends isr_len bytes stamped isr_tick. */
static tsqb_device *isr_dev;
static const uint8_t *isr_bytes;
static size_t isr_len;
static uint64_t isr_tick;
uint64_t tsqb_port_ticks(void) { return t_now; }
void tsqb_port_write(const uint8_t *d, size_t n)
{
    size_t half = n / 2, i;
    writes++;
    if (out_len + n > sizeof out_buf)
        return;
    memcpy(out_buf + out_len, d, half);
    out_len += half;
    if (isr_dev) {
        for (i = 0; i < isr_len; i++)
            tsqb_device_rx_byte(isr_dev, isr_bytes[i], isr_tick);
        isr_dev = NULL;
    }
    memcpy(out_buf + out_len, d + half, n - half);
    out_len += n - half;
}

static size_t unhex(const char *s, uint8_t *out)
{
    size_t n = 0;
    while (s[0] && s[1]) {
        unsigned v;
        sscanf(s, "%2x", &v);
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static const char *field(const char *line, const char *key, char *val)
{
    char pat[64];
    const char *p;
    snprintf(pat, sizeof pat, " %s=", key);
    p = strstr(line, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    sscanf(p, "%63s", val);
    return val;
}

static unsigned long long num(const char *line, const char *key)
{
    char v[64];
    if (!field(line, key, v))
        return 0xDEADBEEFull;
    return strtoull(v, NULL, 10);
}

static int err_code(const char *name)
{
    static const struct {
        const char *name;
        int code;
    } codes[] = {{"OK", TSQB_OK},           {"E_COBS", TSQB_E_COBS},   {"E_LENGTH", TSQB_E_LENGTH},
                 {"E_CRC", TSQB_E_CRC},     {"E_VERSION", TSQB_E_VERSION}, {"E_TYPE", TSQB_E_TYPE},
                 {"E_BODY", TSQB_E_BODY},   {"E_RATE", TSQB_E_RATE},   {"E_BOUND", TSQB_E_BOUND},
                 {"E_UTC", TSQB_E_UTC},     {"E_LEAP", TSQB_E_LEAP},   {"E_T0", TSQB_E_T0},
                 {"E_VALID", TSQB_E_VALID}};
    size_t i;
    for (i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (!strcmp(codes[i].name, name))
            return codes[i].code;
    return 1; /* no such code: never equal to a result */
}

/* A TIMESCALE vector through a whole device: received at rx_tick, the device keeps or refuses it,
 * says why (last_error) and counts a refusal; a refused one leaves the previous timescale in force. */
static void check_timescale_in_device(const char *name, const uint8_t *wire, size_t n, uint32_t hz,
                                      uint64_t rx, int want);

static void test_vectors(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024], name[64], kind[16], hex[512];
    int nvalid = 0, nbad = 0, nchecked = 0;
    CHECK(f != NULL, "cannot open %s", path);
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        uint8_t wire[256], again[TSQB_MAX_WIRE];
        size_t n, n2;
        tsqb_msg m;
        int rc;
        if (line[0] == '#' || sscanf(line, "%63s %15s %511s", name, kind, hex) != 3)
            continue;
        n = unhex(hex, wire);
        rc = tsqb_decode(wire, n - 1, &m); /* without the delimiter */
        if (!strcmp(kind, "bad")) {
            char want[64] = "";
            nbad++;
            field(line, "err", want);
            CHECK(rc == err_code(want), "%s: decode gave %d, the vector says %s", name, rc, want);
            continue;
        }
        if (!strcmp(kind, "plausible") || !strcmp(kind, "implausible")) {
            char want[64] = "";
            uint32_t hz = (uint32_t)num(line, "tick_hz");
            uint64_t rx = num(line, "rx_tick");
            nchecked++;
            field(line, "err", want);
            CHECK(rc == TSQB_OK && m.type == TSQB_TIMESCALE, "%s: decodes", name);
            CHECK(tsqb_timescale_check(&m.u.timescale, hz, rx) == err_code(want), "%s: check gave %d, want %s",
                  name, tsqb_timescale_check(&m.u.timescale, hz, rx), want);
            CHECK((err_code(want) == TSQB_OK) == !strcmp(kind, "plausible"), "%s: kind and err agree", name);
            check_timescale_in_device(name, wire, n, hz, rx, err_code(want));
            continue;
        }
        nvalid++;
        CHECK(rc == TSQB_OK, "%s: decode failed %d", name, rc);
        if (rc != TSQB_OK)
            continue;
        CHECK(m.type == num(line, "type") && m.seq == num(line, "seq"), "%s: header", name);
        switch (m.type) {
        case TSQB_HELLO:
            CHECK(m.u.hello.device_id == num(line, "device_id") && m.u.hello.tick_hz == num(line, "tick_hz") &&
                      m.u.hello.caps == num(line, "caps") && m.u.hello.proto == num(line, "proto"),
                  "%s: hello fields", name);
            break;
        case TSQB_PONG:
            CHECK(m.u.pong.t2_ticks == num(line, "t2") && m.u.pong.t3_ticks == num(line, "t3"), "%s: pong", name);
            break;
        case TSQB_TIMESCALE: {
            char v[64];
            field(line, "utc0", v);
            CHECK(m.u.timescale.t0_ticks == num(line, "t0") && m.u.timescale.utc0_ns == strtoll(v, NULL, 10) &&
                      m.u.timescale.rate_q32 == num(line, "rate_q32") && m.u.timescale.bound_ns == num(line, "bound") &&
                      m.u.timescale.leap == num(line, "leap") && m.u.timescale.flags == num(line, "flags") &&
                      m.u.timescale.valid_ms == num(line, "valid_ms"),
                  "%s: timescale fields", name);
            break;
        }
        case TSQB_STATUS:
            CHECK(m.u.status.state == num(line, "state") && m.u.status.bound_ns == num(line, "bound") &&
                      m.u.status.timescale_seq == num(line, "timescale_seq") &&
                      m.u.status.bad_frames == num(line, "bad_frames"),
                  "%s: status fields", name);
            break;
        default:
            break;
        }
        n2 = tsqb_encode(&m, again);
        CHECK(n2 == n && memcmp(again, wire, n) == 0, "%s: re-encode differs", name);
    }
    fclose(f);
    CHECK(nvalid >= 7 && nbad >= 10 && nchecked >= 30, "vector counts %d valid %d bad %d checked", nvalid, nbad,
          nchecked);
}

static void test_crc_cobs(void)
{
    uint8_t in[600], enc[700], dec[700];
    size_t i, n;
    int len, run;
    CHECK(tsqb_crc16((const uint8_t *)"123456789", 9) == 0x29B1, "crc check value");
    CHECK(tsqb_crc16(NULL, 0) == 0xFFFF, "crc of nothing");
    for (run = 0; run < 600; run += 1) {
        for (i = 0; i < (size_t)run; i++)
            in[i] = (uint8_t)((i * 7 + (size_t)run) % 5 == 0 ? 0 : (i * 13 + 1) % 256 ? (i * 13 + 1) % 256 : 1);
        n = tsqb_cobs_encode(in, (size_t)run, enc);
        CHECK(n <= (size_t)run + 1 + (size_t)run / 254, "cobs overhead at %d", run);
        CHECK(memchr(enc, 0, n) == NULL, "zero in cobs output at %d", run);
        len = tsqb_cobs_decode(enc, n, dec, sizeof dec);
        CHECK(len == run && memcmp(in, dec, (size_t)run) == 0, "cobs round trip at %d", run);
    }
    /* 254 and 255 non-zero bytes: the 0xFF code path */
    for (i = 0; i < 255; i++)
        in[i] = (uint8_t)(i % 255 + 1);
    n = tsqb_cobs_encode(in, 254, enc);
    CHECK(enc[0] == 0xFF && n == 256 && enc[255] == 1, "254-byte run");
    len = tsqb_cobs_decode(enc, n, dec, sizeof dec);
    CHECK(len == 254, "254-byte run decodes");
    CHECK(tsqb_cobs_decode((const uint8_t *)"\x05\x01\x02", 3, dec, sizeof dec) < 0, "code past end");
    CHECK(tsqb_cobs_decode((const uint8_t *)"\x03\x01\x00", 3, dec, sizeof dec) < 0, "zero inside");
    CHECK(tsqb_cobs_decode((const uint8_t *)"\x03\x01\x02", 3, dec, 1) < 0, "capacity respected");
}

/* Exact floor(dt * rate / 2^32) by long multiplication in base 2^16, the reference for mulq32. */
static uint64_t ref_mulq32(uint64_t a, uint64_t b)
{
    uint32_t r[8] = {0};
    uint64_t carry;
    int i, j;
    for (i = 0; i < 4; i++) {
        carry = 0;
        for (j = 0; j < 4; j++) {
            uint64_t t = (uint64_t)((a >> (16 * i)) & 0xFFFF) * ((b >> (16 * j)) & 0xFFFF) + r[i + j] + carry;
            r[i + j] = (uint32_t)(t & 0xFFFF);
            carry = t >> 16;
        }
        r[i + 4] += (uint32_t)carry;
    }
    return (uint64_t)r[2] | ((uint64_t)r[3] << 16) | ((uint64_t)r[4] << 32) | ((uint64_t)r[5] << 48);
}

static void test_timescale(void)
{
    static const uint64_t ten_years_s = 10ull * 365 * 86400;
    static const uint32_t rates_hz[] = {250000u, 1000000u, 16000000u};
    static const double unused = 0; /* (no floats in the core; the test needs none either) */
    tsqb_timescale ts;
    size_t k;
    uint64_t seed = 88172645463325252ull;
    (void)unused;
    for (k = 0; k < 3; k++) {
        uint64_t hz = rates_hz[k];
        /* 50 ppm fast crystal: ns per tick = 1e9/hz * (1 - 50e-6), in Q32.32 */
        uint64_t rate = (uint64_t)(((1000000000ull << 16) / hz) << 16) / 1000000ull * 999950ull;
        uint64_t dt = ten_years_s * hz;
        ts.t0_ticks = 123456789ull;
        ts.utc0_ns = 1795000000000000000ll;
        ts.rate_q32 = rate;
        CHECK(tsqb_mulq32(dt, rate) == ref_mulq32(dt, rate), "mulq32 at 10 years, %lu Hz", (unsigned long)hz);
        CHECK(tsqb_timescale_apply(&ts, ts.t0_ticks + dt) == ts.utc0_ns + (int64_t)ref_mulq32(dt, rate),
              "apply forward, %lu Hz", (unsigned long)hz);
        CHECK(tsqb_timescale_apply(&ts, ts.t0_ticks) == ts.utc0_ns, "apply at t0");
        /* before t0: floor semantics */
        ts.rate_q32 = (1000ull << 32) + 1; /* just over 1000 ns per tick */
        CHECK(tsqb_timescale_apply(&ts, ts.t0_ticks - 1) == ts.utc0_ns - 1001, "floor before t0");
        CHECK(tsqb_timescale_apply(&ts, ts.t0_ticks + 1) == ts.utc0_ns + 1000, "floor after t0");
    }
    for (k = 0; k < 100000; k++) { /* random operands whose product fits: xorshift */
        uint64_t a, b;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        a = seed >> 12; /* < 2^52 ticks */
        b = (seed & 0xFFFFFFFFFFull) ; /* < 2^40: up to 256 ns per tick */
        CHECK(tsqb_mulq32(a, b) == ref_mulq32(a, b), "mulq32 random %llu %llu", (unsigned long long)a,
              (unsigned long long)b);
    }
}

/* The RX interrupt appends the bytes (stamped `tick`); the main loop polls afterwards, at t_now. */
static void feed(tsqb_device *d, const uint8_t *w, size_t n, uint64_t tick)
{
    size_t i;
    for (i = 0; i < n; i++) {
        tsqb_device_rx_byte(d, w[i], tick);
        if ((i + 1) % (TSQB_RING_SIZE / 2) == 0)
            tsqb_device_poll(d, t_now > tick ? t_now : tick);
    }
    tsqb_device_poll(d, t_now > tick ? t_now : tick);
}

static void test_device(void)
{
    static tsqb_device d; /* static: zeroed, as the core expects before the first init */
    static const uint8_t fw[3] = {1, 0, 0};
    uint8_t w[TSQB_MAX_WIRE];
    tsqb_msg m, r;
    size_t n;
    int64_t utc;
    uint32_t bound;
    t_now = 5000;
    out_len = 0;
    tsqb_device_init(&d, 0xABCD, 1000000u, fw, 0, t_now);
    CHECK(out_len > 2 && out_buf[0] == 0, "a lone delimiter before the HELLO at boot");
    CHECK(tsqb_decode(out_buf + 1, out_len - 2, &r) == TSQB_OK && r.type == TSQB_HELLO &&
              r.u.hello.device_id == 0xABCD && r.u.hello.tick_hz == 1000000u,
          "HELLO at boot");
    CHECK(tsqb_device_utc_now(&d, t_now, &utc, &bound) == TSQB_UNSYNC, "unsynchronised at boot");
    /* PING at tick 7000 -> PONG with t2 = 7000 (delimiter), t3 = port ticks, same seq, same length */
    m.type = TSQB_PING;
    m.seq = 77;
    n = tsqb_encode(&m, w);
    out_len = 0;
    t_now = 7100;
    feed(&d, w, n, 7000);
    CHECK(out_len == n, "PONG has the PING's length (%zu vs %zu)", out_len, n);
    CHECK(tsqb_decode(out_buf, out_len - 1, &r) == TSQB_OK && r.type == TSQB_PONG && r.seq == 77 &&
              r.u.pong.t2_ticks == 7000 && r.u.pong.t3_ticks == 7100,
          "PONG fields");
    /* garbage and a corrupted frame are dropped and counted; the next frame still works */
    out_len = 0;
    feed(&d, (const uint8_t *)"\x13\x37\x42\x00", 4, 7200);
    w[3] ^= 0x40;
    feed(&d, w, n, 7300);
    w[3] ^= 0x40;
    CHECK(out_len == 0 && d.bad_frames == 2, "bad frames counted (%u)", d.bad_frames);
    {
        uint8_t junk[200];
        memset(junk, 0x55, sizeof junk);
        feed(&d, junk, sizeof junk, 7400);
        feed(&d, (const uint8_t *)"\x00", 1, 7400);
        CHECK(d.overruns == 1, "overrun counted");
    }
    feed(&d, w, n, 8000);
    CHECK(out_len > 0, "resynchronised after garbage");
    /* once pinged, no more unsolicited HELLOs (the gateway would take one for a restart) */
    out_len = 0;
    tsqb_device_poll(&d, 3000000);
    CHECK(out_len == 0, "no HELLO after being pinged");
    /* TIMESCALE: utc = 1e18 at tick 10000, 1000 ns per tick, bound 5000, valid 2000 ms */
    m.type = TSQB_TIMESCALE;
    m.seq = 78;
    m.u.timescale.t0_ticks = 10000;
    m.u.timescale.utc0_ns = 1000000000000000000ll;
    m.u.timescale.rate_q32 = 1000ull << 32;
    m.u.timescale.bound_ns = 5000;
    m.u.timescale.leap = 0;
    m.u.timescale.flags = TSQB_FLAG_SYNCHRONISED;
    m.u.timescale.valid_ms = 2000;
    n = tsqb_encode(&m, w);
    feed(&d, w, n, 10000);
    CHECK(tsqb_device_utc_now(&d, 1010000, &utc, &bound) == TSQB_SYNC, "synchronised");
    CHECK(utc == 1000000000000000000ll + 1000000000ll, "utc one second later");
    CHECK(bound == 5000 + 1000, "bound grows 1 ppm (%lu)", (unsigned long)bound);
    CHECK(tsqb_device_utc_now(&d, 10000 + 3000000, &utc, &bound) == TSQB_HOLDOVER, "holdover after valid_ms");
    /* reset: init again keeps the reset count, loses the timescale */
    d.resets++;
    tsqb_device_init(&d, 0xABCD, 1000000u, fw, 0, 0);
    CHECK(d.resets == 1 && !tsqb_device_has_timescale(&d), "reset");
}

static void check_timescale_in_device(const char *name, const uint8_t *wire, size_t n, uint32_t hz,
                                      uint64_t rx, int want)
{
    static tsqb_device d;
    static const uint8_t fw[3] = {1, 0, 0};
    uint8_t w[TSQB_MAX_WIRE];
    tsqb_msg m;
    size_t k;
    uint16_t bad0, rej0;
    int64_t utc;
    uint32_t bound;
    t_now = rx;
    tsqb_device_init(&d, 1, hz, fw, 0, rx);
    m.type = TSQB_TIMESCALE;
    m.seq = 1;
    m.u.timescale.t0_ticks = rx;
    m.u.timescale.utc0_ns = 1700000000000000000ll;
    m.u.timescale.rate_q32 = (1000000000ull << 32) / hz;
    m.u.timescale.bound_ns = 1000;
    m.u.timescale.leap = 0;
    m.u.timescale.flags = TSQB_FLAG_SYNCHRONISED;
    m.u.timescale.valid_ms = 10000;
    k = tsqb_encode(&m, w);
    feed(&d, w, k, rx);
    CHECK(tsqb_device_has_timescale(&d) && d.last_error == TSQB_OK, "%s: the good timescale first", name);
    bad0 = d.bad_frames;
    rej0 = d.rejected;
    feed(&d, wire, n - 1, rx); /* the bytes before the delimiter, then the delimiter at rx */
    feed(&d, wire + n - 1, 1, rx);
    CHECK(d.last_error == want, "%s: device says %d", name, d.last_error);
    if (want == TSQB_OK) {
        CHECK(d.slot[d.ts_gen & 1].seq != 1 && d.bad_frames == bad0 && d.rejected == rej0, "%s: accepted", name);
    } else {
        CHECK(d.bad_frames == bad0 + 1 && d.rejected == rej0 + 1, "%s: refusal counted", name);
        CHECK(d.slot[d.ts_gen & 1].seq == 1 && tsqb_device_utc_now(&d, rx, &utc, &bound) == TSQB_SYNC &&
                  utc == 1700000000000000000ll,
              "%s: the previous timescale stays", name);
    }
}

/* Decode every frame in out_buf[0..out_len); returns how many, -1 if any is broken (interleaved).
 * *last: the last PONG (or the last frame when there is none). */
static int out_frames(tsqb_msg *last, int type_count[8])
{
    tsqb_msg m;
    int have_pong = 0;
    size_t start = 0, i;
    int count = 0;
    for (i = 0; i < out_len; i++) {
        if (out_buf[i] != 0)
            continue;
        if (tsqb_decode(out_buf + start, i - start, &m) != TSQB_OK)
            return -1;
        if (m.type == TSQB_PONG || !have_pong)
            *last = m;
        have_pong |= m.type == TSQB_PONG;
        if (type_count && m.type < 8)
            type_count[m.type]++;
        count++;
        start = i + 1;
    }
    return start == out_len ? count : -1;
}

static size_t ping(uint16_t seq, uint8_t *w)
{
    tsqb_msg m;
    m.type = TSQB_PING;
    m.seq = seq;
    return tsqb_encode(&m, w);
}

static void test_ring(void)
{
    static tsqb_device d;
    static const uint8_t fw[3] = {1, 0, 0};
    uint8_t w[TSQB_MAX_WIRE], w2[TSQB_MAX_WIRE];
    tsqb_msg r;
    size_t n, i;
    int k, types[8];
    uint64_t base;

    /* T2 is the tick the ISR stamped on the delimiter, not when the main loop got round to it */
    t_now = 100;
    tsqb_device_init(&d, 7, 1000000u, fw, 0, t_now);
    n = ping(11, w);
    for (i = 0; i < n; i++)
        tsqb_device_rx_byte(&d, w[i], 1000 + i);
    out_len = 0;
    t_now = 50000;
    tsqb_device_poll(&d, t_now);
    CHECK(out_frames(&r, NULL) == 1 && r.type == TSQB_PONG && r.u.pong.t2_ticks == 1000 + n - 1 &&
              r.u.pong.t3_ticks == 50000,
          "T2 = delimiter's ISR stamp (%llu)", (unsigned long long)r.u.pong.t2_ticks);

    /* 32-bit stamps extended against poll's now: across 2^32, and stamped just after now was read */
    base = 1ull << 32;
    for (i = 0; i < n; i++)
        tsqb_device_rx_byte(&d, w[i], base - n + i + 4);
    out_len = 0;
    tsqb_device_poll(&d, base + 1000);
    CHECK(out_frames(&r, NULL) >= 1 && r.u.pong.t2_ticks == base + 3, "T2 across 2^32 (%llu)",
          (unsigned long long)r.u.pong.t2_ticks);
    for (i = 0; i < n; i++)
        tsqb_device_rx_byte(&d, w[i], 5ull * base + 50);
    out_len = 0;
    tsqb_device_poll(&d, 5ull * base);
    CHECK(out_frames(&r, NULL) >= 1 && r.u.pong.t2_ticks == 5ull * base + 50, "T2 stamped after now");

    /* a full ring drops bytes; the frame they belonged to is dropped whole, and if its delimiter
     * was lost the next frame goes with it (never a spliced frame); then all is well again */
    t_now = 60000;
    tsqb_device_init(&d, 7, 1000000u, fw, 0, t_now);
    d.pinged = 1;
    for (k = 1; k <= 3; k++) { /* 3 x 24 bytes into 64 places: ping 3 loses its last 8 */
        n = ping((uint16_t)k, w);
        for (i = 0; i < n; i++)
            tsqb_device_rx_byte(&d, w[i], 61000);
    }
    CHECK(n == 24 && (uint8_t)(d.ring.head - d.ring.tail) == TSQB_RING_SIZE, "ring full");
    out_len = 0;
    tsqb_device_poll(&d, 62000);
    for (k = 4; k <= 5; k++) {
        n = ping((uint16_t)k, w);
        feed(&d, w, n, 63000);
    }
    memset(types, 0, sizeof types);
    CHECK(out_frames(&r, types) == 3 && types[TSQB_PONG] == 3 && r.seq == 5, "pongs 1, 2, 5 (%d)", types[TSQB_PONG]);
    CHECK(d.overruns == 1 && d.bad_frames == 1, "the broken frame counted once (%u %u)", d.overruns, d.bad_frames);

    /* the UART's own overrun flag: the frame in progress is dropped */
    n = ping(6, w);
    feed(&d, w, 10, 64000);
    tsqb_device_rx_gap(&d);
    feed(&d, w + 10, n - 10, 64000);
    CHECK(d.overruns == 2 && d.bad_frames == 2, "hardware overrun");

    /* many frames: the 8-bit indices wrap dozens of times */
    out_len = 0;
    for (k = 0; k < 200; k++) {
        n = ping((uint16_t)(100 + k), w);
        feed(&d, w, n, 70000 + (uint64_t)k);
        if (out_len > sizeof out_buf - 64) {
            CHECK(out_frames(&r, NULL) > 0 && r.seq == 100 + k, "wrap: pong %d", k);
            out_len = 0;
        }
    }
    CHECK(out_frames(&r, NULL) > 0 && r.seq == 299 && d.bad_frames == 2, "all 200 answered");

    /* bytes arriving while the main loop sends a PONG, then a STATUS: queued, answered next,
     * every frame on the wire whole */
    out_len = 0;
    n = ping(400, w);
    k = (int)ping(401, w2);
    isr_dev = &d;
    isr_bytes = w2;
    isr_len = (size_t)k;
    isr_tick = 80500;
    feed(&d, w, n, 80000);
    memset(types, 0, sizeof types);
    CHECK(out_frames(&r, types) == 2 && types[TSQB_PONG] == 2 && r.seq == 401 && r.u.pong.t2_ticks == 80500,
          "PING received during a PONG: answered, with its own T2");
    out_len = 0;
    n = ping(402, w);
    isr_dev = &d;
    isr_bytes = w;
    isr_len = n;
    isr_tick = 10u * 1000000u + 90000u;
    tsqb_device_poll(&d, 10u * 1000000u + 90000u); /* STATUS is due: the PING arrives while it is written */
    tsqb_device_poll(&d, 10u * 1000000u + 91000u); /* ... and is answered on the next pass */
    memset(types, 0, sizeof types);
    CHECK(out_frames(&r, types) == 2 && types[TSQB_STATUS] == 1 && types[TSQB_PONG] == 1 && r.seq == 402,
          "PING received during a STATUS: STATUS whole, PONG after it");
    CHECK(isr_dev == NULL, "the interrupt fired");
}

static void test_sequence_numbers(void)
{
    static tsqb_device d;
    static const uint8_t fw[3] = {1, 0, 0};
    uint8_t w[TSQB_MAX_WIRE];
    tsqb_msg m[8];
    size_t n, start = 0, i;
    int count = 0;
    t_now = 0;
    out_len = 0;
    tsqb_device_init(&d, 7, 1000u, fw, 0, 0); /* HELLO seq 1 */
    tsqb_device_poll(&d, 1000);               /* HELLO seq 2 (a second later, not yet pinged) */
    n = ping(900, w);
    feed(&d, w, n, 1500);                     /* PONG seq 900 */
    tsqb_device_poll(&d, 10000);              /* STATUS seq 3 */
    for (i = 0; i < out_len && count < 8; i++)
        if (out_buf[i] == 0 && i == start) {
            start = i + 1; /* an empty frame: the lone delimiter before the HELLO at boot */
        } else if (out_buf[i] == 0) {
            CHECK(tsqb_decode(out_buf + start, i - start, &m[count]) == TSQB_OK, "frame %d", count);
            count++;
            start = i + 1;
        }
    CHECK(count == 4 && m[0].type == TSQB_HELLO && m[0].seq == 1 && m[1].type == TSQB_HELLO && m[1].seq == 2 &&
              m[2].type == TSQB_PONG && m[2].seq == 900 && m[3].type == TSQB_STATUS && m[3].seq == 3,
          "one counter for the device's own frames, the PING's seq on its PONG");
}

static void test_saturation(void)
{
    static tsqb_device d;
    static const uint8_t fw[3] = {1, 0, 0};
    tsqb_timescale ts;
    int64_t utc;
    uint32_t bound;
    tsqb_msg m;
    uint8_t w[TSQB_MAX_WIRE];
    size_t n;
    CHECK(tsqb_mulq32(UINT64_MAX, UINT64_MAX) == UINT64_MAX, "mulq32 saturates");
    CHECK(tsqb_mulq32(1ull << 63, 1ull << 33) == UINT64_MAX, "mulq32 2^64 saturates");
    CHECK(tsqb_mulq32(1ull << 63, 1ull << 32) == 1ull << 63, "mulq32 2^63 exact");
    CHECK(tsqb_mulq32(UINT64_MAX, 1ull << 32) == UINT64_MAX, "mulq32 max * 1");
    CHECK(tsqb_mulq32(UINT64_MAX, (1ull << 32) - 1) == UINT64_MAX - (UINT64_MAX >> 32) - 1, "mulq32 near max");
    /* the libFuzzer findings: extreme utc0 and rate, far ticks -- now saturating, never overflowing */
    ts.t0_ticks = 0;
    ts.utc0_ns = INT64_MAX - 10;
    ts.rate_q32 = 1ull << 32; /* 1 ns per tick */
    CHECK(tsqb_timescale_apply(&ts, 10) == INT64_MAX, "exactly INT64_MAX");
    CHECK(tsqb_timescale_apply(&ts, 11) == INT64_MAX, "saturates at INT64_MAX");
    CHECK(tsqb_timescale_apply(&ts, UINT64_MAX) == INT64_MAX, "far future saturates");
    ts.t0_ticks = UINT64_MAX;
    ts.utc0_ns = INT64_MIN + 10;
    CHECK(tsqb_timescale_apply(&ts, UINT64_MAX - 10) == INT64_MIN, "exactly INT64_MIN");
    CHECK(tsqb_timescale_apply(&ts, 0) == INT64_MIN, "far past saturates");
    ts.rate_q32 = UINT64_MAX;
    ts.utc0_ns = -5;
    CHECK(tsqb_timescale_apply(&ts, UINT64_MAX) == -5 && tsqb_timescale_apply(&ts, 0) == INT64_MIN, "rate max");
    ts.t0_ticks = 0;
    ts.utc0_ns = INT64_MIN;
    CHECK(tsqb_timescale_apply(&ts, UINT64_MAX) == INT64_MAX, "min to max");
    /* an accepted timescale read at absurd ticks: the bound saturates, nothing wraps */
    t_now = 1000;
    tsqb_device_init(&d, 1, 4000000000u, fw, 0, t_now);
    m.type = TSQB_TIMESCALE;
    m.seq = 1;
    m.u.timescale.t0_ticks = 1000;
    m.u.timescale.utc0_ns = 1800000000000000000ll;
    m.u.timescale.rate_q32 = (1000000000ull << 32) / 4000000000u;
    m.u.timescale.bound_ns = 0xFFFFFFF0u;
    m.u.timescale.leap = 0;
    m.u.timescale.flags = 0;
    m.u.timescale.valid_ms = 1000;
    n = tsqb_encode(&m, w);
    feed(&d, w, n, 1000);
    CHECK(tsqb_device_has_timescale(&d), "4 GHz timescale accepted");
    CHECK(tsqb_device_utc_now(&d, UINT64_MAX, &utc, &bound) == TSQB_UNSYNC && bound == 0xFFFFFFFFu, "bound sat");
    CHECK(tsqb_device_utc_now(&d, 0, &utc, &bound) == TSQB_UNSYNC && utc < 1800000000000000000ll, "before t0");
}

int main(int argc, char **argv)
{
    test_crc_cobs();
    test_timescale();
    test_device();
    test_ring();
    test_sequence_numbers();
    test_saturation();
    test_vectors(argc > 1 ? argv[1] : "vectors/frames.txt");
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}

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
static uint8_t out_buf[1024];
static size_t out_len;
uint64_t tsqb_port_ticks(void) { return t_now; }
void tsqb_port_write(const uint8_t *d, size_t n)
{
    if (out_len + n <= sizeof out_buf) {
        memcpy(out_buf + out_len, d, n);
        out_len += n;
    }
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

static void test_vectors(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024], name[64], kind[16], hex[512];
    int nvalid = 0, nbad = 0;
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
            nbad++;
            CHECK(rc != TSQB_OK, "%s: bad vector accepted", name);
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
    CHECK(nvalid >= 7 && nbad >= 8, "vector counts %d valid %d bad", nvalid, nbad);
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

static void feed(tsqb_device *d, const uint8_t *w, size_t n, uint64_t tick)
{
    size_t i;
    for (i = 0; i < n; i++)
        tsqb_device_rx_byte(d, w[i], tick);
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
    CHECK(tsqb_decode(out_buf, out_len - 1, &r) == TSQB_OK && r.type == TSQB_HELLO &&
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
    CHECK(d.resets == 1 && !d.have_ts, "reset");
}

int main(int argc, char **argv)
{
    test_crc_cobs();
    test_timescale();
    test_device();
    test_vectors(argc > 1 ? argv[1] : "vectors/frames.txt");
    printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}

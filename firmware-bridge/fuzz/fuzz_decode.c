/* libFuzzer target: the frame decoder and the timescale arithmetic. Any input: no crash, no
 * sanitizer report; a frame that decodes re-encodes to a frame that decodes to the same message;
 * the timescale functions are total. `make fuzz` builds and runs it (Makefile). */
#include <stdlib.h>
#include <string.h>

#include "tsqb.h"

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsqb_msg m, again;
    uint8_t wire[TSQB_MAX_WIRE], wire2[TSQB_MAX_WIRE], raw[300];
    size_t n, n2;
    (void)tsqb_cobs_decode(data, size, raw, sizeof raw);
    (void)tsqb_crc16(data, size);
    if (tsqb_decode(data, size, &m) != TSQB_OK)
        return 0;
    n = tsqb_encode(&m, wire);
    if (n == 0 || n > TSQB_MAX_WIRE || wire[n - 1] != 0 || memchr(wire, 0, n - 1) != NULL)
        abort();
    if (tsqb_decode(wire, n - 1, &again) != TSQB_OK)
        abort();
    n2 = tsqb_encode(&again, wire2);
    if (n2 != n || memcmp(wire, wire2, n) != 0)
        abort();
    if (m.type == TSQB_TIMESCALE && size >= 12) {
        /* the tail of the input (inside the frame's bytes, so correlated with it) as tick and tick_hz */
        uint64_t tick = get64(data + size - 12);
        uint32_t hz = (uint32_t)(get64(data + size - 8) & 0xFFFFFFFFu);
        (void)tsqb_timescale_apply(&m.u.timescale, tick);
        (void)tsqb_timescale_apply(&m.u.timescale, ~tick);
        (void)tsqb_timescale_check(&m.u.timescale, hz, tick);
        (void)tsqb_mulq32(tick, m.u.timescale.rate_q32);
    }
    return 0;
}

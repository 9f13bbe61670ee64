/* The emulated ports' debug line (debug_line.h). */
#include "debug_line.h"

static size_t put_str(char *out, size_t at, const char *s)
{
    while (*s)
        out[at++] = *s++;
    return at;
}

static size_t put_u64(char *out, size_t at, uint64_t v)
{
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    while (n)
        out[at++] = digits[--n];
    return at;
}

static size_t put_i64(char *out, size_t at, int64_t v)
{
    if (v < 0) {
        out[at++] = '-';
        return put_u64(out, at, (uint64_t)(-(v + 1)) + 1u);
    }
    return put_u64(out, at, (uint64_t)v);
}

size_t tsqb_debug_line(const tsqb_device *d, uint64_t tick, uint16_t rx_in_tx, uint16_t rx_in_status, char *out)
{
    int64_t utc = 0;
    uint32_t bound = 0;
    int state = tsqb_device_utc_now(d, tick, &utc, &bound);
    int have = tsqb_device_has_timescale(d);
    size_t at = put_str(out, 0, "TSQB tick=");
    at = put_u64(out, at, tick);
    at = put_str(out, at, " state=");
    at = put_u64(out, at, (uint64_t)state);
    at = put_str(out, at, " utc=");
    at = have ? put_i64(out, at, utc) : put_str(out, at, "-");
    at = put_str(out, at, " bound=");
    at = have ? put_u64(out, at, bound) : put_str(out, at, "-");
    at = put_str(out, at, " ts_seq=");
    at = put_u64(out, at, have ? d->slot[d->ts_gen & 1u].seq : 0u);
    at = put_str(out, at, " bad=");
    at = put_u64(out, at, d->bad_frames);
    at = put_str(out, at, " overruns=");
    at = put_u64(out, at, d->overruns);
    at = put_str(out, at, " rejected=");
    at = put_u64(out, at, d->rejected);
    at = put_str(out, at, " err=");
    at = put_i64(out, at, d->last_error);
    at = put_str(out, at, " rx_in_tx=");
    at = put_u64(out, at, rx_in_tx);
    at = put_str(out, at, " rx_in_status=");
    at = put_u64(out, at, rx_in_status);
    out[at++] = '\n';
    return at;
}

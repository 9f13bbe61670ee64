/* UTC from ticks in integers: utc0 + floor((t - t0) * rate_q32 / 2^32), no 128-bit types, defined
 * for every input (saturating), and the plausibility checks a TIMESCALE must pass. */
#include "tsqb.h"

#define SIGN_BIT 0x8000000000000000ull
#define LOW32 0xFFFFFFFFull

uint64_t tsqb_mulq32(uint64_t a, uint64_t b)
{
    uint64_t ah = a >> 32, al = a & LOW32;
    uint64_t bh = b >> 32, bl = b & LOW32;
    uint64_t hh = ah * bh, sum, t;
    /* a*b/2^32 = ah*bh*2^32 + ah*bl + al*bh + al*bl/2^32; every term but the last is whole, so the
     * floor of the sum is the sum with the last term floored. Each partial product fits 64 bits;
     * the sum is checked for carries, so an oversized result saturates instead of wrapping. */
    if (hh >> 32)
        return UINT64_MAX;
    sum = hh << 32;
    t = sum + ah * bl;
    if (t < sum)
        return UINT64_MAX;
    sum = t + al * bh;
    if (sum < t)
        return UINT64_MAX;
    t = sum + ((al * bl) >> 32);
    return t < sum ? UINT64_MAX : t;
}

/* int64 <-> "offset binary" uint64 (INT64_MIN -> 0, INT64_MAX -> UINT64_MAX), order-preserving and
 * with no implementation-defined conversion either way. */
static uint64_t to_biased(int64_t v)
{
    return v >= 0 ? (uint64_t)v + SIGN_BIT : SIGN_BIT - 1u - (uint64_t)(-(v + 1));
}

static int64_t from_biased(uint64_t u)
{
    return u >= SIGN_BIT ? (int64_t)(u - SIGN_BIT) : -(int64_t)(SIGN_BIT - 1u - u) - 1;
}

int64_t tsqb_timescale_apply(const tsqb_timescale *ts, uint64_t ticks)
{
    uint64_t dt, q, base = to_biased(ts->utc0_ns);
    if (ticks >= ts->t0_ticks) {
        q = tsqb_mulq32(ticks - ts->t0_ticks, ts->rate_q32);
        return from_biased(q > UINT64_MAX - base ? UINT64_MAX : base + q);
    }
    /* Before t0: floor(-x) = -ceil(x); ceil adds one when the discarded fraction is not zero. */
    dt = ts->t0_ticks - ticks;
    q = tsqb_mulq32(dt, ts->rate_q32);
    if (q != UINT64_MAX && (((dt & LOW32) * (ts->rate_q32 & LOW32)) & LOW32))
        q += 1;
    return from_biased(q > base ? 0 : base - q);
}

int tsqb_timescale_check(const tsqb_timescale *ts, uint32_t tick_hz, uint64_t rx_tick)
{
    uint64_t hz = tick_hz ? tick_hz : 1u;
    uint64_t nominal = (1000000000ull << 32) / hz; /* < 2^62: 1e9 * 2^32 fits 64 bits */
    uint64_t tol = nominal / (1000000u / TSQB_RATE_TOL_PPM);
    uint64_t dist = ts->t0_ticks >= rx_tick ? ts->t0_ticks - rx_tick : rx_tick - ts->t0_ticks;
    if (ts->rate_q32 < nominal - tol || ts->rate_q32 > nominal + tol)
        return TSQB_E_RATE;
    if (ts->bound_ns == 0 || ((ts->flags & TSQB_FLAG_SYNCHRONISED) && ts->bound_ns > TSQB_SYNC_BOUND_MAX_NS))
        return TSQB_E_BOUND;
    if (ts->utc0_ns < TSQB_UTC_MIN_NS || ts->utc0_ns >= TSQB_UTC_MAX_NS)
        return TSQB_E_UTC;
    if (ts->leap > 3u)
        return TSQB_E_LEAP;
    if (dist > (uint64_t)TSQB_T0_WINDOW_S * hz)
        return TSQB_E_T0;
    if (ts->valid_ms > TSQB_VALID_MAX_MS)
        return TSQB_E_VALID;
    return TSQB_OK;
}

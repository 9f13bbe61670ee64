/* UTC from ticks in integers: utc0 + floor((t - t0) * rate_q32 / 2^32), no 128-bit types. */
#include "tsqb.h"

uint64_t tsqb_mulq32(uint64_t a, uint64_t b)
{
    uint64_t ah = a >> 32, al = a & 0xFFFFFFFFu;
    uint64_t bh = b >> 32, bl = b & 0xFFFFFFFFu;
    /* a*b/2^32 = ah*bh*2^32 + ah*bl + al*bh + al*bl/2^32; every term but the last is whole, so the
     * floor of the sum is the sum with the last term floored. */
    return ((ah * bh) << 32) + ah * bl + al * bh + ((al * bl) >> 32);
}

int64_t tsqb_timescale_apply(const tsqb_timescale *ts, uint64_t ticks)
{
    uint64_t dt, q;
    if (ticks >= ts->t0_ticks) {
        dt = ticks - ts->t0_ticks;
        return ts->utc0_ns + (int64_t)tsqb_mulq32(dt, ts->rate_q32);
    }
    /* Before t0: floor(-x) = -ceil(x); ceil adds one when the discarded fraction is not zero. */
    dt = ts->t0_ticks - ticks;
    q = tsqb_mulq32(dt, ts->rate_q32);
    if (((dt & 0xFFFFFFFFu) * (ts->rate_q32 & 0xFFFFFFFFu)) & 0xFFFFFFFFu)
        q += 1;
    return ts->utc0_ns - (int64_t)q;
}

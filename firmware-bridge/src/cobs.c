#include "tsqb.h"

size_t tsqb_cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t code_at = 0, o = 1, i;
    uint8_t code = 1;
    for (i = 0; i < n; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            if (++code == 0xFFu) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

int tsqb_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t i = 0, o = 0, k;
    while (i < n) {
        uint8_t code = in[i];
        if (code == 0 || i + code > n)
            return -1;
        for (k = 1; k < code; k++) {
            if (in[i + k] == 0 || o >= cap)
                return -1;
            out[o++] = in[i + k];
        }
        i += code;
        if (code != 0xFFu && i < n) {
            if (o >= cap)
                return -1;
            out[o++] = 0;
        }
    }
    return (int)o;
}

/* TSQ serial bridge protocol v1 (PROTOCOL.md): portable C99 device core.
 * No malloc, no floating point, no 128-bit integers: builds for AVR, Cortex-M and the host. */
#ifndef TSQB_H
#define TSQB_H

#include <stddef.h>
#include <stdint.h>

#define TSQB_VERSION 1u
#define TSQB_MAX_RAW 64u                 /* version..crc, before COBS */
#define TSQB_MAX_WIRE (TSQB_MAX_RAW + 2u) /* COBS adds 1 byte below 254, plus the 0x00 delimiter */

enum tsqb_type {
    TSQB_HELLO_REQUEST = 1,
    TSQB_HELLO = 2,
    TSQB_PING = 3,
    TSQB_PONG = 4,
    TSQB_TIMESCALE = 5,
    TSQB_STATUS = 6
};

enum tsqb_state { TSQB_UNSYNC = 0, TSQB_SYNC = 1, TSQB_HOLDOVER = 2, TSQB_BOOTING = 3 };

enum tsqb_err {
    TSQB_OK = 0,
    TSQB_E_COBS = -1,
    TSQB_E_LENGTH = -2,
    TSQB_E_CRC = -3,
    TSQB_E_VERSION = -4,
    TSQB_E_TYPE = -5,
    TSQB_E_BODY = -6
};

#define TSQB_CAP_NMEA 1u
#define TSQB_CAP_PPS 2u
#define TSQB_FLAG_SYNCHRONISED 1u

typedef struct {
    uint64_t t0_ticks;
    int64_t utc0_ns;
    uint64_t rate_q32; /* UTC ns per tick, unsigned Q32.32 */
    uint32_t bound_ns;
    uint8_t leap;
    uint8_t flags;
    uint32_t valid_ms;
} tsqb_timescale;

typedef struct {
    uint8_t type;
    uint16_t seq;
    union {
        struct {
            uint32_t device_id;
            uint8_t fw[3];
            uint8_t proto;
            uint32_t tick_hz;
            uint16_t caps;
        } hello;
        struct {
            uint64_t t2_ticks, t3_ticks;
        } pong;
        tsqb_timescale timescale;
        struct {
            uint8_t state;
            uint16_t timescale_seq;
            uint32_t bound_ns;
            uint16_t bad_frames, resets, overruns;
        } status;
    } u;
} tsqb_msg;

/* CRC-16/CCITT-FALSE; tsqb_crc16("123456789", 9) == 0x29B1. */
uint16_t tsqb_crc16(const uint8_t *data, size_t n);
/* COBS: encode writes n + 1 + n/254 bytes (no delimiter); decode returns the length or -1. */
size_t tsqb_cobs_encode(const uint8_t *in, size_t n, uint8_t *out);
int tsqb_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* A whole frame: encode writes COBS + 0x00 into out (>= TSQB_MAX_WIRE bytes) and returns its
 * length (0 for an unknown type); decode takes the bytes before the delimiter, returns TSQB_OK or a
 * negative tsqb_err. */
size_t tsqb_encode(const tsqb_msg *m, uint8_t *out);
int tsqb_decode(const uint8_t *frame, size_t n, tsqb_msg *m);

/* utc0 + floor((ticks - t0) * rate / 2^32), exact, for any 64-bit tick difference whose result fits. */
int64_t tsqb_timescale_apply(const tsqb_timescale *ts, uint64_t ticks);
/* floor(a * b / 2^32) for unsigned 64-bit a, b, without 128-bit types (result must fit 64 bits). */
uint64_t tsqb_mulq32(uint64_t a, uint64_t b);

/* The device: feed it received bytes; it answers through the port API (tsqb_port.h). */
typedef struct {
    uint32_t device_id;
    uint32_t tick_hz;
    uint8_t fw[3];
    uint16_t caps;
    uint8_t rx[TSQB_MAX_WIRE];
    uint8_t rx_len;
    uint8_t rx_overflow;
    uint16_t seq;
    tsqb_timescale ts;
    uint8_t have_ts;
    uint8_t pinged; /* a gateway has found us: stop announcing */
    uint16_t ts_seq;
    uint64_t ts_rx_tick;
    uint64_t last_hello_tick;
    uint64_t last_status_tick;
    uint16_t bad_frames, resets, overruns;
} tsqb_device;

void tsqb_device_init(tsqb_device *d, uint32_t device_id, uint32_t tick_hz, const uint8_t fw[3], uint16_t caps,
                      uint64_t now_tick);
/* A byte arrived; `tick` is when (for the delimiter of a PING this is T2). */
void tsqb_device_rx_byte(tsqb_device *d, uint8_t byte, uint64_t tick);
/* Call often (each main loop pass): HELLO once a second until pinged or given a timescale, STATUS
 * every 10 s. */
void tsqb_device_poll(tsqb_device *d, uint64_t now_tick);
/* The device's UTC now and its bound; returns the tsqb_state. */
int tsqb_device_utc_now(const tsqb_device *d, uint64_t tick, int64_t *utc_ns, uint32_t *bound_ns);

#endif

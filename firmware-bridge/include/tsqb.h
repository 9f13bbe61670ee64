/* TSQ serial bridge protocol v1 (PROTOCOL.md): portable C99 device core.
 * No malloc, no floating point, no 128-bit integers: builds for AVR, Cortex-M and the host.
 *
 * CONCURRENCY CONTRACT (PROTOCOL.md, "Interrupts and the main loop")
 * Two contexts: the UART RX interrupt (the "ISR") and the main loop (everything that is not an ISR;
 * on an RTOS, one task). The core takes no locks and never disables interrupts itself.
 *
 *   May be called from the RX ISR (and only from one ISR at a time):
 *     tsqb_device_rx_byte()   appends (byte, tick) to the receive ring; touches nothing else
 *     tsqb_device_rx_gap()    the UART lost bytes (hardware overrun): marks the ring
 *   May be called from any context, ISRs included:
 *     tsqb_device_utc_now()   reads the timescale through a generation counter (never a
 *                             half-written TIMESCALE); safe as long as the main loop cannot
 *                             preempt the caller (true on a single core; see PROTOCOL.md for RTOS)
 *     tsqb_crc16, tsqb_cobs_*, tsqb_encode, tsqb_decode, tsqb_timescale_*, tsqb_mulq32 (pure)
 *   Main loop only (never from an ISR, never from two contexts):
 *     tsqb_device_init()      with the RX interrupt disabled (it clears the ring)
 *     tsqb_device_poll()      drains the ring, decodes, answers, applies TIMESCALE, sends
 *                             HELLO/STATUS: every frame the device sends is written from here,
 *                             whole, so frames never interleave; `seq` is bumped only here
 *   The port (tsqb_port.h): tsqb_port_ticks() from both contexts; tsqb_port_write() is called by
 *   the core from the main loop only and may block.
 *
 * T2 is the tick the ISR stamped on the PING's final 0x00 delimiter (PROTOCOL.md: each leg is
 * "first byte out -> last byte in"), not the time poll() ran. The ring keeps the low 32 bits of
 * each tick; poll() extends them against its own now_tick, so poll() must run within 2^31 ticks
 * of a byte's arrival (44 s at 48 MHz, 35 min at 1 MHz) -- any working main loop does. */
#ifndef TSQB_H
#define TSQB_H

#include <stddef.h>
#include <stdint.h>

#define TSQB_VERSION 1u
#define TSQB_MAX_RAW 64u                 /* version..crc, before COBS */
#define TSQB_MAX_WIRE (TSQB_MAX_RAW + 2u) /* COBS adds 1 byte below 254, plus the 0x00 delimiter */

/* Receive ring entries (a power of two, 8..128: indices are free-running uint8_t). 64 holds what
 * arrives at 115200 baud while the main loop busy-writes a STATUS and a PONG back to back. */
#ifndef TSQB_RING_SIZE
#define TSQB_RING_SIZE 64u
#endif
#if (TSQB_RING_SIZE & (TSQB_RING_SIZE - 1u)) || TSQB_RING_SIZE < 8u || TSQB_RING_SIZE > 128u
#error "TSQB_RING_SIZE must be a power of two from 8 to 128"
#endif

/* Compiler barrier between the ring's data and index accesses (and the timescale's slots and
 * generation). A single-core MCU and its own interrupts see memory in program order, so this is
 * all they need (ARM AN321: no DMB between an ISR and thread code on one Cortex-M core); a port
 * for a multi-core or cached part defines TSQB_BARRIER() as a hardware fence before including. */
#ifndef TSQB_BARRIER
#if defined(__GNUC__) || defined(__clang__)
#define TSQB_BARRIER() __asm__ __volatile__("" ::: "memory")
#else
#error "define TSQB_BARRIER() for this compiler"
#endif
#endif

enum tsqb_type {
    TSQB_HELLO_REQUEST = 1,
    TSQB_HELLO = 2,
    TSQB_PING = 3,
    TSQB_PONG = 4,
    TSQB_TIMESCALE = 5,
    TSQB_STATUS = 6
};

enum tsqb_state { TSQB_UNSYNC = 0, TSQB_SYNC = 1, TSQB_HOLDOVER = 2, TSQB_BOOTING = 3 };

/* Why a frame was dropped: framing errors from tsqb_decode, then the TIMESCALE plausibility checks
 * of tsqb_timescale_check (PROTOCOL.md, "TIMESCALE plausibility"). */
enum tsqb_err {
    TSQB_OK = 0,
    TSQB_E_COBS = -1,
    TSQB_E_LENGTH = -2,
    TSQB_E_CRC = -3,
    TSQB_E_VERSION = -4,
    TSQB_E_TYPE = -5,
    TSQB_E_BODY = -6,
    TSQB_E_RATE = -7,  /* ns_per_tick more than 1000 ppm from the nominal 1e9 / tick_hz */
    TSQB_E_BOUND = -8, /* bound_ns 0, or above 1 s on a timescale flagged synchronised */
    TSQB_E_UTC = -9,   /* utc0_ns before 2000-01-01 or from 2200-01-01 on */
    TSQB_E_LEAP = -10, /* leap above 3 */
    TSQB_E_T0 = -11,   /* t0_ticks more than 60 s of ticks from the frame's arrival */
    TSQB_E_VALID = -12 /* valid_ms above one day */
};

#define TSQB_CAP_NMEA 1u
#define TSQB_CAP_PPS 2u
#define TSQB_FLAG_SYNCHRONISED 1u

/* How often the device sends STATUS unasked (the emulated images use 1 s, so their tests see many). */
#ifndef TSQB_STATUS_INTERVAL_S
#define TSQB_STATUS_INTERVAL_S 10u
#endif

/* The plausibility limits (PROTOCOL.md). */
#define TSQB_RATE_TOL_PPM 1000u
#define TSQB_SYNC_BOUND_MAX_NS 1000000000u
#define TSQB_UTC_MIN_NS 946684800000000000ll  /* 2000-01-01T00:00:00Z */
#define TSQB_UTC_MAX_NS 7258118400000000000ll /* 2200-01-01T00:00:00Z, exclusive */
#define TSQB_T0_WINDOW_S 60u
#define TSQB_VALID_MAX_MS 86400000u

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

/* utc0 + floor((ticks - t0) * rate / 2^32), exact whenever the result fits in int64; saturates at
 * INT64_MIN / INT64_MAX otherwise (defined for every input). */
int64_t tsqb_timescale_apply(const tsqb_timescale *ts, uint64_t ticks);
/* TSQB_OK, or the TSQB_E_* plausibility error of a TIMESCALE received at rx_tick by a device
 * whose nominal tick rate is tick_hz (> 0). */
int tsqb_timescale_check(const tsqb_timescale *ts, uint32_t tick_hz, uint64_t rx_tick);
/* floor(a * b / 2^32) for unsigned 64-bit a, b, without 128-bit types; UINT64_MAX when the result
 * does not fit 64 bits. */
uint64_t tsqb_mulq32(uint64_t a, uint64_t b);

/* Single-producer (ISR) / single-consumer (main loop) receive ring. head is written by the
 * producer only, tail by the consumer only; each is one byte, so every load and store of it is a
 * single instruction even on AVR. Producer: write entry, barrier, head++. Consumer: read head,
 * barrier, read entries, barrier, tail++. Empty: head == tail; full: head - tail == SIZE. */
typedef struct {
    volatile uint8_t head;
    volatile uint8_t tail;
    uint8_t gap;                             /* producer-private: bytes were lost since the last append */
    uint8_t byte[TSQB_RING_SIZE];
    uint8_t gap_before[TSQB_RING_SIZE / 8u]; /* bit set: bytes were lost just before this entry */
    uint32_t tick[TSQB_RING_SIZE];           /* low 32 bits of the tick the ISR stamped */
} tsqb_ring;

/* One TIMESCALE as the device keeps it. */
typedef struct {
    tsqb_timescale ts;
    uint64_t rx_tick; /* when it arrived (its delimiter's tick) */
    uint16_t seq;     /* its frame's seq (STATUS timescale_seq) */
} tsqb_ts_slot;

/* The device. Fields below `ring` belong to the main loop; `slot`/`ts_gen` are written by the main
 * loop and read by tsqb_device_utc_now from any context. */
typedef struct {
    tsqb_ring ring;
    uint32_t device_id;
    uint32_t tick_hz;
    uint8_t fw[3];
    uint16_t caps;
    uint8_t rx[TSQB_MAX_WIRE];
    uint8_t rx_len;
    uint8_t rx_overflow;
    uint16_t seq;
    tsqb_ts_slot slot[2];     /* double buffer: the writer fills slot[(ts_gen + 1) & 1] */
    volatile uint8_t ts_gen;  /* 0: no timescale yet; else slot[ts_gen & 1] is the current one */
    uint8_t pinged;           /* a gateway has found us: stop announcing */
    int8_t last_error;        /* the last frame's tsqb_err (TSQB_OK when it was accepted) */
    uint64_t last_hello_tick;
    uint64_t last_status_tick;
    uint16_t bad_frames, resets, overruns;
    uint16_t rejected;        /* TIMESCALEs refused by tsqb_timescale_check (also in bad_frames) */
} tsqb_device;

/* Main loop, RX interrupt disabled. Keeps `resets`, clears the rest, sends HELLO. */
void tsqb_device_init(tsqb_device *d, uint32_t device_id, uint32_t tick_hz, const uint8_t fw[3], uint16_t caps,
                      uint64_t now_tick);
/* ISR-safe: a byte arrived at `tick` (tsqb_port_ticks() read in the RX interrupt). Only appends to
 * the ring; a full ring drops the byte and breaks the frame it was in (counted by poll). */
void tsqb_device_rx_byte(tsqb_device *d, uint8_t byte, uint64_t tick);
/* ISR-safe: the UART itself lost bytes (overrun flag): the frame in progress is dropped. */
void tsqb_device_rx_gap(tsqb_device *d);
/* Main loop, often: decodes and answers what the ring holds (PONG, HELLO, TIMESCALE), then HELLO
 * once a second until pinged or given a timescale, STATUS every 10 s. now_tick: tsqb_port_ticks(). */
void tsqb_device_poll(tsqb_device *d, uint64_t now_tick);
/* Any context: the device's UTC at `tick` and its bound; returns the tsqb_state. utc_ns and
 * bound_ns are written only when a timescale is held. */
int tsqb_device_utc_now(const tsqb_device *d, uint64_t tick, int64_t *utc_ns, uint32_t *bound_ns);
/* Any context: 1 once a plausible TIMESCALE has been accepted. */
int tsqb_device_has_timescale(const tsqb_device *d);

#endif

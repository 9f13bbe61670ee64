/* Bare AVR (atmega328p) port: Timer1 at clk/64 (250 kHz at 16 MHz), overflow-extended to 64 bits;
 * USART0 at 115200 baud (U2X, UBRR 16), RX by interrupt. The RX interrupt only stamps the byte and
 * appends it to the core's ring (tsqb.h); the main loop decodes, answers and writes, busy-waiting
 * on UDRE -- so every frame goes out whole, and bytes arriving meanwhile wait in the ring.
 *
 * With -DTSQB_DEBUG_CONSOLE (the simavr build, `make emu`) the main loop also writes a debug line
 * once a second to GPIOR0, a general-purpose I/O register with no effect on the chip, which the
 * simavr harness (emu/simavr_uart.c) prints: see PROTOCOL.md, "Debug line". */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <stdint.h>

#include "tsqb.h"
#include "tsqb_port.h"

#define TICK_HZ (F_CPU / 64u)

static volatile uint32_t g_hi; /* Timer1 overflows (each 65536 ticks), bumped by its ISR */
static tsqb_device g_dev;
static volatile uint8_t g_in_write;         /* 1: writing a frame, 2: writing a STATUS */
static volatile uint16_t g_rx_during_write;  /* RX interrupts taken while a frame was being written */
static volatile uint16_t g_rx_during_status; /* ... while that frame was a STATUS */

ISR(TIMER1_OVF_vect) { g_hi = g_hi + 1u; }

uint64_t tsqb_port_ticks(void)
{
    uint8_t s = SREG;
    uint16_t lo;
    uint32_t hi;
    cli();
    lo = TCNT1;
    hi = g_hi;
    /* An overflow pending but not yet serviced: TOV1 is set. If it was set before TCNT1 was read,
     * lo is small (just wrapped): count it; if lo is large the overflow came after the read. */
    if ((TIFR1 & (1 << TOV1)) && lo < 0x8000u)
        hi++;
    SREG = s;
    return ((uint64_t)hi << 16) | lo;
}

void tsqb_port_write(const uint8_t *data, size_t n)
{
    size_t i;
    g_in_write = (n > 2 && data[2] == TSQB_STATUS) ? 2 : 1; /* COBS code, version, type */
    for (i = 0; i < n; i++) {
        while (!(UCSR0A & (1 << UDRE0)))
            ;
        UDR0 = data[i];
    }
    g_in_write = 0;
}

ISR(USART_RX_vect)
{
    uint8_t lost = UCSR0A & (1 << DOR0); /* read before UDR0: the data overrun flag */
    uint8_t byte = UDR0;
    if (lost)
        tsqb_device_rx_gap(&g_dev);
    tsqb_device_rx_byte(&g_dev, byte, tsqb_port_ticks());
    if (g_in_write)
        g_rx_during_write = g_rx_during_write + 1u;
    if (g_in_write == 2)
        g_rx_during_status = g_rx_during_status + 1u;
}

#ifdef TSQB_DEBUG_CONSOLE
#include "debug_line.h"

static void console_write(const char *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        GPIOR0 = (uint8_t)s[i];
}
#endif

int main(void)
{
    static const uint8_t fw[3] = {1, 0, 0};
#ifdef TSQB_DEBUG_CONSOLE
    uint64_t next_debug = TICK_HZ;
#endif
    TCCR1A = 0;
    TCCR1B = (1 << CS11) | (1 << CS10); /* clk/64 */
    TIMSK1 = 1 << TOIE1;
    UBRR0 = 16; /* 115200 baud at 16 MHz with U2X (117647 baud, +2.1 %) */
    UCSR0A = 1 << U2X0;
    UCSR0C = (1 << UCSZ01) | (1 << UCSZ00); /* 8N1 */
    UCSR0B = (1 << RXEN0) | (1 << TXEN0);
    tsqb_device_init(&g_dev, 0x00A5D001u, TICK_HZ, fw, 0, tsqb_port_ticks());
    UCSR0B |= 1 << RXCIE0; /* RX interrupt on only after init (the contract in tsqb.h) */
    sei();
    for (;;) {
        uint64_t now = tsqb_port_ticks();
        tsqb_device_poll(&g_dev, now);
#ifdef TSQB_DEBUG_CONSOLE
        if (now >= next_debug) {
            char line[TSQB_DEBUG_LINE_MAX];
            uint16_t rx_during_write, rx_during_status;
            uint8_t s = SREG;
            cli();
            rx_during_write = g_rx_during_write; /* 16 bits: read with interrupts off */
            rx_during_status = g_rx_during_status;
            SREG = s;
            next_debug = now + TICK_HZ;
            console_write(line, tsqb_debug_line(&g_dev, tsqb_port_ticks(), rx_during_write, rx_during_status, line));
        }
#endif
    }
}

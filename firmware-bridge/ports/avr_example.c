/* Bare AVR (atmega328p) build of the core for `make cross`: Timer1 at clk/64 (250 kHz at 16 MHz),
 * overflow-extended to 64 bits; the UART hooks are left to the application. */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <stdint.h>

#include "tsqb.h"
#include "tsqb_port.h"

static volatile uint64_t g_hi;
static tsqb_device g_dev;

ISR(TIMER1_OVF_vect) { g_hi += 65536u; }

uint64_t tsqb_port_ticks(void)
{
    uint8_t s = SREG;
    uint16_t lo;
    uint64_t hi;
    cli();
    lo = TCNT1;
    hi = g_hi;
    if ((TIFR1 & (1 << TOV1)) && lo < 0x8000u)
        hi += 65536u; /* overflow pending but not yet serviced */
    SREG = s;
    return hi + lo;
}

void tsqb_port_write(const uint8_t *data, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        while (!(UCSR0A & (1 << UDRE0)))
            ;
        UDR0 = data[i];
    }
}

ISR(USART_RX_vect) { tsqb_device_rx_byte(&g_dev, UDR0, tsqb_port_ticks()); }

int main(void)
{
    static const uint8_t fw[3] = {1, 0, 0};
    TCCR1B = (1 << CS11) | (1 << CS10); /* clk/64 */
    TIMSK1 = 1 << TOIE1;
    UBRR0 = 16; /* 115200 baud at 16 MHz, U2X */
    UCSR0A = 1 << U2X0;
    UCSR0B = (1 << RXEN0) | (1 << TXEN0) | (1 << RXCIE0);
    tsqb_device_init(&g_dev, 0x00A5D001u, 250000u, fw, 0, tsqb_port_ticks());
    sei();
    for (;;)
        tsqb_device_poll(&g_dev, tsqb_port_ticks());
}

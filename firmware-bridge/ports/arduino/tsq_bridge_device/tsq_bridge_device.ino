// TSQ bridge device for Arduino (AVR, e.g. Uno/Nano at 16 MHz). Copy ../../../include/*.h and
// ../../../src/*.c next to this sketch (the Arduino IDE compiles the sketch folder only).
//
// The UART is driven directly, not through Serial: T2 must be stamped in the RX interrupt, as the
// byte arrives, and HardwareSerial owns USART_RX_vect (using Serial anywhere in the sketch would
// pull it in and clash with the ISR below). The ISR only stamps and appends to the core's ring;
// loop() decodes and answers (the contract in tsqb.h).
// Ticks: micros() extended to 64 bits (4 us resolution on a 16 MHz AVR, tick_hz = 1 MHz nominal).
// Pins: D0 = RX (from the gateway's TX), D1 = TX (to the gateway's RX), 5 V logic; on an Uno the
// USB adapter (ATmega16U2) is already wired there. See PROTOCOL.md, "Wiring a device".
#include <avr/interrupt.h>
#include <avr/io.h>
extern "C" {
#include "tsqb.h"
#include "tsqb_port.h"
}

static tsqb_device dev;
static uint32_t last_us, hi;

extern "C" uint64_t tsqb_port_ticks(void) {
  uint8_t s = SREG;
  cli();
  uint32_t now = micros();  // safe with interrupts off: it looks at Timer0's pending overflow itself
  if (now < last_us) hi++;  // micros() wraps every 71.6 min; loop() reads far more often
  last_us = now;
  uint64_t t = ((uint64_t)hi << 32) | now;
  SREG = s;
  return t;
}

extern "C" void tsqb_port_write(const uint8_t *data, size_t n) {
  for (size_t i = 0; i < n; i++) {  // main loop only: frames go out whole
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = data[i];
  }
}

ISR(USART_RX_vect) {
  uint8_t lost = UCSR0A & (1 << DOR0);
  uint8_t byte = UDR0;
  if (lost) tsqb_device_rx_gap(&dev);
  tsqb_device_rx_byte(&dev, byte, tsqb_port_ticks());  // T2: stamped on arrival
}

void setup() {
  static const uint8_t fw[3] = {1, 0, 0};
  UBRR0 = 16;  // 115200 baud at 16 MHz with U2X
  UCSR0A = 1 << U2X0;
  UCSR0C = (1 << UCSZ01) | (1 << UCSZ00);  // 8N1
  UCSR0B = (1 << RXEN0) | (1 << TXEN0);
  tsqb_device_init(&dev, 0x00A5D001UL, 1000000UL, fw, 0, tsqb_port_ticks());
  UCSR0B |= 1 << RXCIE0;  // RX interrupt only after init
}

void loop() { tsqb_device_poll(&dev, tsqb_port_ticks()); }

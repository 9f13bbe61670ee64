// TSQ bridge device for Arduino (AVR, e.g. Uno/Nano at 16 MHz). Copy ../../../include/*.h and
// ../../../src/*.c next to this sketch (the Arduino IDE compiles the sketch folder only).
// Ticks: micros() extended to 64 bits (4 us resolution on a 16 MHz AVR, tick_hz = 1 MHz nominal).
extern "C" {
#include "tsqb.h"
#include "tsqb_port.h"
}

static tsqb_device dev;
static uint32_t last_us, hi;

extern "C" uint64_t tsqb_port_ticks(void) {
  uint8_t s = SREG;
  cli();
  uint32_t now = micros();
  if (now < last_us) hi++;
  last_us = now;
  uint64_t t = ((uint64_t)hi << 32) | now;
  SREG = s;
  return t;
}

extern "C" void tsqb_port_write(const uint8_t *data, size_t n) { Serial.write(data, n); }

void setup() {
  static const uint8_t fw[3] = {1, 0, 0};
  Serial.begin(115200);
  tsqb_device_init(&dev, 0x00A5D001UL, 1000000UL, fw, 0, tsqb_port_ticks());
}

void loop() {
  while (Serial.available() > 0) {
    uint64_t t = tsqb_port_ticks();
    tsqb_device_rx_byte(&dev, (uint8_t)Serial.read(), t);
  }
  tsqb_device_poll(&dev, tsqb_port_ticks());
}

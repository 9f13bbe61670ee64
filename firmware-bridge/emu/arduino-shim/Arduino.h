/* Just enough of the Arduino core's API for `make cross` to compile the sketch (not link it): the
 * sketch uses micros() and the AVR headers only. */
#ifndef ARDUINO_SHIM_H
#define ARDUINO_SHIM_H
#include <avr/interrupt.h>
#include <avr/io.h>
#include <stddef.h>
#include <stdint.h>
unsigned long micros(void);
void setup(void);
void loop(void);
#endif

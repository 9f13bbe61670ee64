/* What a port provides to the core: the tick counter and the UART. */
#ifndef TSQB_PORT_H
#define TSQB_PORT_H

#include <stddef.h>
#include <stdint.h>

/* Free-running 64-bit tick count at the tick_hz given to tsqb_device_init. May be called with
 * interrupts enabled; a 32-bit MCU extends its hardware counter inside (under a critical section). */
uint64_t tsqb_port_ticks(void);
/* Queue bytes for the UART; the first byte must go out promptly (T3 is stamped just before). */
void tsqb_port_write(const uint8_t *data, size_t n);

#endif

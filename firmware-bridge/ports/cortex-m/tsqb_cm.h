/* The generic Cortex-M port's entry points (port_cortexm.c). Contexts as in tsqb.h. */
#ifndef TSQB_CM_H
#define TSQB_CM_H

#include <stddef.h>
#include <stdint.h>

#include "tsqb.h"

/* Main loop, before enabling the UART RX interrupt: starts the tick counter, sends HELLO. */
void tsqb_cm_init(uint32_t device_id, uint32_t tick_hz);
/* From SysTick_Handler. */
void tsqb_cm_systick_isr(void);
/* From the UART RX interrupt: one received byte (stamped here), or the UART's overrun flag. */
void tsqb_cm_rx_isr(uint8_t byte);
void tsqb_cm_rx_overrun_isr(void);
/* Main loop, every pass. */
void tsqb_cm_poll(void);
/* Any context. */
int tsqb_cm_utc_now(int64_t *utc_ns, uint32_t *bound_ns);
const tsqb_device *tsqb_cm_device(void);
/* Provided by the application (weak no-op default): send bytes on the UART; main loop only. */
void tsqb_cm_uart_write(const uint8_t *data, size_t n);

#endif

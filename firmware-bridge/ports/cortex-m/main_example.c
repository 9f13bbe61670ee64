/* Minimal Cortex-M image for `make cross`: shows the port's entry points linked together. A real
 * application also routes SysTick_Handler to tsqb_cm_systick_isr() and its UART RX interrupt to
 * tsqb_cm_rx_isr() (see qemu_microbit.c for a complete one). */
#include <stdint.h>

#include "tsqb_cm.h"

int main(void)
{
    tsqb_cm_init(0x00C0FFEEu, 48000000u);
    for (;;)
        tsqb_cm_poll();
}

/* Minimal Cortex-M image for `make cross`: shows the port's entry points linked together. */
#include <stdint.h>

void tsqb_cm_init(uint32_t device_id, uint32_t tick_hz);
void tsqb_cm_poll(void);

int main(void)
{
    tsqb_cm_init(0x00C0FFEEu, 48000000u);
    for (;;)
        tsqb_cm_poll();
}

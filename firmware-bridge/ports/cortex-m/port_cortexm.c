/* Generic Cortex-M port: ticks from the DWT cycle counter (M3/M4/M7) or SysTick (M0/M0+), extended
 * to 64 bits; the UART is the application's (weak hooks). Call tsqb_cm_rx_byte() from the UART RX
 * interrupt and tsqb_device_poll() from the main loop. */
#include <stdint.h>

#include "tsqb.h"
#include "tsqb_port.h"

#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static uint32_t g_hi, g_last;
static tsqb_device g_dev;

static uint32_t irq_save(void)
{
    uint32_t primask;
    __asm volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    return primask;
}

static void irq_restore(uint32_t primask) { __asm volatile("msr primask, %0" ::"r"(primask) : "memory"); }

__attribute__((weak)) uint32_t tsqb_cm_counter(void)
{
#if defined(__ARM_ARCH_6M__)
    return 0xFFFFFFu - (SYST_CVR & 0xFFFFFFu); /* SysTick counts down; 24-bit: extend often */
#else
    return DWT_CYCCNT;
#endif
}

void tsqb_cm_init(uint32_t device_id, uint32_t tick_hz)
{
    static const uint8_t fw[3] = {1, 0, 0};
#if !defined(__ARM_ARCH_6M__)
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
#endif
    tsqb_device_init(&g_dev, device_id, tick_hz, fw, 0, tsqb_port_ticks());
}

uint64_t tsqb_port_ticks(void)
{
    uint32_t s = irq_save();
    uint32_t now = tsqb_cm_counter();
    uint64_t t;
    if (now < g_last)
        g_hi++; /* wrapped since the last read: call at least once per wrap period */
    g_last = now;
    t = ((uint64_t)g_hi << 32) | now;
    irq_restore(s);
    return t;
}

/* The application sends these bytes on its UART (blocking or into a TX queue). */
__attribute__((weak)) void tsqb_cm_uart_write(const uint8_t *data, size_t n)
{
    (void)data;
    (void)n;
}

void tsqb_port_write(const uint8_t *data, size_t n) { tsqb_cm_uart_write(data, n); }

void tsqb_cm_rx_byte(uint8_t byte) { tsqb_device_rx_byte(&g_dev, byte, tsqb_port_ticks()); }

void tsqb_cm_poll(void) { tsqb_device_poll(&g_dev, tsqb_port_ticks()); }

int tsqb_cm_utc_now(int64_t *utc_ns, uint32_t *bound_ns)
{
    return tsqb_device_utc_now(&g_dev, tsqb_port_ticks(), utc_ns, bound_ns);
}

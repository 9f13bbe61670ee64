/* Generic Cortex-M port. Ticks: SysTick (24-bit, every Cortex-M has it; the only choice on M0/M0+,
 * and under QEMU, which does not model the DWT) or the DWT cycle counter (32-bit, M3/M4/M7),
 * extended to 64 bits either way. The UART is the application's: its RX interrupt calls
 * tsqb_cm_rx_isr() (which only appends to the core's ring, see tsqb.h), its SysTick_Handler calls
 * tsqb_cm_systick_isr(), its main loop calls tsqb_cm_poll(), and it provides tsqb_cm_uart_write()
 * (called from the main loop only; may busy-wait). */
#include <stdint.h>

#include "tsqb.h"
#include "tsqb_cm.h"
#include "tsqb_port.h"

#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define ICSR_PENDSTSET (1u << 26)
#define SYST_ENABLE 1u
#define SYST_TICKINT 2u
#define SYST_CLKSOURCE 4u /* the processor clock: tick_hz = core clock */

#if defined(__ARM_ARCH_6M__) || defined(__ARM_ARCH_8M_BASE__) || defined(TSQB_CM_SYSTICK)
#define USE_SYSTICK 1
#else
#define USE_SYSTICK 0
#endif

static tsqb_device g_dev;
#if USE_SYSTICK
static volatile uint32_t g_wraps; /* SysTick periods (2^24 ticks) completed, bumped by its ISR */
#else
static uint32_t g_hi, g_last;     /* DWT: high word, and the last low word seen */
#endif

static uint32_t irq_save(void)
{
    uint32_t primask;
    __asm__ __volatile__("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    return primask;
}

static void irq_restore(uint32_t primask) { __asm__ __volatile__("msr primask, %0" ::"r"(primask) : "memory"); }

void tsqb_cm_init(uint32_t device_id, uint32_t tick_hz)
{
    static const uint8_t fw[3] = {1, 0, 0};
#if USE_SYSTICK
    SYST_CSR = 0;
    SYST_RVR = 0xFFFFFFu; /* the full 24 bits: one period is 2^24 ticks */
    SYST_CVR = 0;         /* any write clears the counter (and COUNTFLAG); it reloads on the next tick */
    g_wraps = 0;
    SYST_CSR = SYST_CLKSOURCE | SYST_TICKINT | SYST_ENABLE;
    while ((SYST_CVR & 0xFFFFFFu) == 0)
        ; /* one tick: until the first reload, a CVR of 0 would read as the end of period 0 */
#else
    DEMCR |= 1u << 24; /* TRCENA */
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
#endif
    tsqb_device_init(&g_dev, device_id, tick_hz, fw, 0, tsqb_port_ticks());
}

/* SysTick_Handler must call this (the SysTick exception's priority may be anything: the tick read
 * below copes with a pending, not yet serviced wrap). Interrupts must never stay masked for a whole
 * SysTick period (2^24 / tick_hz: 0.35 s at 48 MHz), or a wrap is lost. */
void tsqb_cm_systick_isr(void)
{
#if USE_SYSTICK
    g_wraps = g_wraps + 1u;
#else
    (void)tsqb_port_ticks(); /* keeps the DWT extension fed even if the main loop stalls */
#endif
}

uint64_t tsqb_port_ticks(void)
{
    uint32_t s = irq_save();
    uint64_t t;
#if USE_SYSTICK
    /* The counter runs down RVR..1, 0, then reloads; the exception is pended as it wraps. With
     * interrupts masked g_wraps cannot change, but a wrap can happen between reading the counter and
     * reading the pending bit: so if the bit is set, read the counter again -- that value is surely
     * after the wrap -- and count the unserviced period. Elapsed ticks in a period: 2^24 - CVR
     * (CVR 0 is the period's last tick, whether or not the wrap is pending yet). */
    uint32_t wraps = g_wraps, cvr = SYST_CVR & 0xFFFFFFu;
    if (SCB_ICSR & ICSR_PENDSTSET) {
        cvr = SYST_CVR & 0xFFFFFFu;
        wraps++;
        t = ((uint64_t)wraps << 24) + ((0x1000000u - cvr) & 0xFFFFFFu);
    } else {
        t = ((uint64_t)wraps << 24) + (0x1000000u - cvr);
    }
#else
    uint32_t now = DWT_CYCCNT;
    if (now < g_last)
        g_hi++; /* wrapped since the last read: read at least once per 2^32 cycles */
    g_last = now;
    t = ((uint64_t)g_hi << 32) | now;
#endif
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

void tsqb_cm_rx_isr(uint8_t byte) { tsqb_device_rx_byte(&g_dev, byte, tsqb_port_ticks()); }

void tsqb_cm_rx_overrun_isr(void) { tsqb_device_rx_gap(&g_dev); }

void tsqb_cm_poll(void) { tsqb_device_poll(&g_dev, tsqb_port_ticks()); }

int tsqb_cm_utc_now(int64_t *utc_ns, uint32_t *bound_ns)
{
    return tsqb_device_utc_now(&g_dev, tsqb_port_ticks(), utc_ns, bound_ns);
}

const tsqb_device *tsqb_cm_device(void) { return &g_dev; }

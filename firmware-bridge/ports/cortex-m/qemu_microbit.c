/* A complete Cortex-M0 image for QEMU's `microbit` machine (nRF51822: Cortex-M0 at 16 MHz, one
 * UART): vector table and startup, the nRF51 UART driver, SysTick as the tick source through the
 * generic port (port_cortexm.c), and a debug line once a second over ARM semihosting (PROTOCOL.md,
 * "Debug line"). `make emu` builds it; tests/firmware runs it under qemu-system-arm with the UART
 * on a pty and the real bridge on the other end.
 * Only for the emulator: real nRF51 silicon has no SysTick (this machine's model has one, as every
 * other Cortex-M0/M0+ part does), and a semihosting call without a debugger attached faults. */
#include <stdint.h>

#include "debug_line.h"
#include "tsqb_cm.h"
#include "tsqb_port.h"

#define TICK_HZ 16000000u

#define UART0 0x40002000u
#define REG(off) (*(volatile uint32_t *)(UART0 + (off)))
#define UART_STARTRX REG(0x000)
#define UART_STARTTX REG(0x008)
#define UART_RXDRDY REG(0x108)
#define UART_TXDRDY REG(0x11C)
#define UART_ERROR REG(0x124)
#define UART_INTENSET REG(0x304)
#define UART_ERRORSRC REG(0x480)
#define UART_ENABLE REG(0x500)
#define UART_PSELTXD REG(0x50C)
#define UART_PSELRXD REG(0x514)
#define UART_RXD REG(0x518)
#define UART_TXD REG(0x51C)
#define UART_BAUDRATE REG(0x524)
#define INTEN_RXDRDY (1u << 2)
#define INTEN_ERROR (1u << 9)
#define ERRORSRC_OVERRUN 1u
#define NVIC_ISER (*(volatile uint32_t *)0xE000E100u)
#define UART0_IRQN 2u

/* 10 bit times per byte at 115200 baud, in ticks. QEMU's UART model sends a byte at once; a real
 * UART takes this long, and so does this write, so the main loop spends as long writing a frame
 * (and receive interrupts land in the middle of it as often) as on hardware. */
#define BYTE_TICKS (TICK_HZ * 10u / 115200u)

static volatile uint8_t g_in_write; /* 1: writing a frame, 2: writing a STATUS */
static volatile uint16_t g_rx_during_write, g_rx_during_status;

void tsqb_cm_uart_write(const uint8_t *data, size_t n)
{
    size_t i;
    g_in_write = (n > 2 && data[2] == TSQB_STATUS) ? 2 : 1; /* COBS code, version, type */
    for (i = 0; i < n; i++) {
        uint64_t start = tsqb_port_ticks();
        UART_TXDRDY = 0;
        UART_TXD = data[i];
        while (!UART_TXDRDY || tsqb_port_ticks() - start < BYTE_TICKS)
            ;
    }
    g_in_write = 0;
}

void UART0_IRQHandler(void)
{
    if (UART_ERROR) {
        UART_ERROR = 0;
        if (UART_ERRORSRC & ERRORSRC_OVERRUN)
            tsqb_cm_rx_overrun_isr();
        UART_ERRORSRC = UART_ERRORSRC; /* write 1 to clear */
    }
    while (UART_RXDRDY) { /* clear the event before reading RXD, so a following byte sets it again */
        UART_RXDRDY = 0;
        tsqb_cm_rx_isr((uint8_t)UART_RXD);
        if (g_in_write)
            g_rx_during_write = (uint16_t)(g_rx_during_write + 1u);
        if (g_in_write == 2)
            g_rx_during_status = (uint16_t)(g_rx_during_status + 1u);
    }
}

void SysTick_Handler(void) { tsqb_cm_systick_isr(); }

static void semihost_write0(const char *s)
{
    register uint32_t r0 __asm__("r0") = 0x04u; /* SYS_WRITE0 */
    register const char *r1 __asm__("r1") = s;
    __asm__ __volatile__("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
}

int main(void)
{
    uint64_t next_debug = TICK_HZ;
    UART_ENABLE = 4;
    UART_PSELTXD = 24; /* the micro:bit's USB-serial pins (P0.24 TX, P0.25 RX) */
    UART_PSELRXD = 25;
    UART_BAUDRATE = 0x01D7E000u; /* 115200 */
    UART_STARTTX = 1;
    UART_STARTRX = 1;
    tsqb_cm_init(0x00B1CB17u, TICK_HZ);
    UART_INTENSET = INTEN_RXDRDY | INTEN_ERROR;
    NVIC_ISER = 1u << UART0_IRQN; /* RX interrupt on only after init (the contract in tsqb.h) */
    __asm__ __volatile__("cpsie i" ::: "memory");
    for (;;) {
        int64_t utc;
        uint32_t bound;
        tsqb_cm_poll();
        (void)tsqb_cm_utc_now(&utc, &bound); /* the application's own reads of UTC */
        if (tsqb_port_ticks() >= next_debug) {
            char line[TSQB_DEBUG_LINE_MAX + 1];
            size_t n;
            uint64_t now = tsqb_port_ticks();
            next_debug = now + TICK_HZ;
            n = tsqb_debug_line(tsqb_cm_device(), now, g_rx_during_write, g_rx_during_status, line);
            line[n] = 0;
            semihost_write0(line);
        }
    }
}

/* ---- startup: vector table, .data/.bss ---- */
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
void Reset_Handler(void);
static void Default_Handler(void)
{
    for (;;)
        ;
}

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata)
        *dst++ = *src++;
    for (dst = &_sbss; dst < &_ebss;)
        *dst++ = 0;
    (void)main();
    for (;;)
        ;
}

typedef void (*vector)(void);
__attribute__((section(".vectors"), used)) static const vector g_vectors[16 + 26] = {
    (vector)(uintptr_t)&_estack, Reset_Handler, Default_Handler, Default_Handler, /* NMI, HardFault */
    0, 0, 0, 0, 0, 0, 0, Default_Handler, /* SVCall */
    0, 0, Default_Handler, SysTick_Handler, /* PendSV, SysTick */
    Default_Handler, Default_Handler, UART0_IRQHandler, /* POWER_CLOCK, RADIO, UART0 ... */
};

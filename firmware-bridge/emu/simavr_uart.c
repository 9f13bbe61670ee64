/* simavr harness for the AVR firmware (ports/avr_example.c built with -DTSQB_DEBUG_CONSOLE):
 * an ATmega328P at 16 MHz whose USART0 is a pseudo-terminal (simavr's uart_pty part), paced to
 * real time, with the firmware's debug line (written to GPIOR0) printed on stdout.
 *
 *   simavr-uart FIRMWARE.elf --link PATH
 *
 * --link PATH: a symlink to the pty's slave side (the bridge opens PATH), as the posix host build's.
 * SIGUSR1: reset the MCU (avr_reset: registers, I/O and RAM start over; the pty stays open, as a
 * UART cable would). SIGTERM/SIGINT: stop.
 * Pacing: simavr runs instructions as fast as the host allows. Every 1024 instructions the harness
 * compares simulated time (cycles / 16 MHz) with CLOCK_MONOTONIC since start and sleeps while it is
 * ahead, so the MCU's clock runs at host speed on average. When the host is slower (or the process
 * is descheduled) simulated time falls behind; each debug line ends with simlag_ns=, how far behind
 * real time the simulation was when the line was written, simlag_min_ns= / simlag_max_ns= its range
 * since the previous line (the spread is the allowance the tests add: the bridge saw the MCU's
 * clock jitter by that much), host_rt_ns= and host_mono_ns=, CLOCK_REALTIME and CLOCK_MONOTONIC as the firmware
 * finished the line (taken here: no pipe or reader latency), and sim_ns=, simulated time since the MCU's reset at
 * that moment. (The pacing follows CLOCK_MONOTONIC; a VM's CLOCK_REALTIME may be stepped against it.) The firmware
 * computed utc= at tick= and took a while formatting the line (64-bit decimals on an 8-bit core:
 * milliseconds); tick= at 250 kHz is sim_ns / 4000 (Timer1 started a few µs after reset), so the
 * tests place utc= at host_mono_ns - (sim_ns - 4000 * tick) on the CLOCK_MONOTONIC timescale they serve. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "uart_pty.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_io.h"

#define GPIOR0_DATA_ADDR 0x3E

static volatile sig_atomic_t g_stop, g_reset;
static char g_line[512];
static size_t g_line_len;
static int64_t g_host0, g_lag, g_lag_min = INT64_MAX, g_lag_max = INT64_MIN; /* range since the last line */
static uint64_t g_cycle_at_reset; /* simulated time since the MCU's last reset counts from here */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_reset = 1;
    else
        g_stop = 1;
}

static void console_write(struct avr_t *avr, avr_io_addr_t addr, uint8_t v, void *param)
{
    (void)param;
    avr->data[addr] = v;
    if (v == '\n' || g_line_len >= sizeof g_line - 1) {
        g_line[g_line_len] = 0;
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        printf("%s simlag_ns=%lld simlag_min_ns=%lld simlag_max_ns=%lld host_rt_ns=%lld host_mono_ns=%lld "
               "sim_ns=%lld\n", g_line, (long long)g_lag, (long long)g_lag_min, (long long)g_lag_max,
               (long long)rt.tv_sec * 1000000000ll + rt.tv_nsec, (long long)mono_ns(),
               (long long)((avr->cycle - g_cycle_at_reset) * 1000000000ull / avr->frequency));
        fflush(stdout);
        g_lag_min = INT64_MAX;
        g_lag_max = INT64_MIN;
        g_line_len = 0;
    } else {
        g_line[g_line_len++] = (char)v;
    }
}

int main(int argc, char **argv)
{
    const char *elf = NULL, *link = NULL;
    elf_firmware_t fw;
    avr_t *avr;
    uart_pty_t pty;
    struct sigaction sa;
    uint64_t cycle0 = 0;
    int i, state = cpu_Running;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--link") && i + 1 < argc)
            link = argv[++i];
        else
            elf = argv[i];
    }
    if (!elf || !link) {
        fprintf(stderr, "usage: simavr-uart FIRMWARE.elf --link PATH\n");
        return 2;
    }
    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(elf, &fw) != 0) {
        fprintf(stderr, "simavr-uart: cannot read %s\n", elf);
        return 1;
    }
    avr = avr_make_mcu_by_name("atmega328p");
    if (!avr) {
        fprintf(stderr, "simavr-uart: simavr has no atmega328p\n");
        return 1;
    }
    avr_init(avr);
    avr->frequency = 16000000;
    avr_load_firmware(avr, &fw);
    avr->frequency = 16000000;
    avr_register_io_write(avr, GPIOR0_DATA_ADDR, console_write, NULL);
    uart_pty_init(avr, &pty);
    uart_pty_connect(&pty, '0');
    {
        /* Raw from the start, as a UART is: simavr leaves the pty in the kernel's default cooked
         * mode, which until the bridge opens it and sets raw would turn a 0x0D the MCU sends into
         * 0x0A and echo the MCU's own bytes back to it. (termios calls on the master act on the pty.) */
        struct termios t;
        if (tcgetattr(pty.port[0].s, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(pty.port[0].s, TCSANOW, &t);
        }
    }
    {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.new", link);
        unlink(tmp);
        if (symlink(pty.port[0].slavename, tmp) != 0 || rename(tmp, link) != 0) {
            perror(link);
            return 1;
        }
    }
    fprintf(stderr, "simavr-uart: atmega328p at %u Hz, uart0 on %s -> %s\n", avr->frequency, link,
            pty.port[0].slavename);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    g_host0 = mono_ns();
    while (!g_stop && state != cpu_Done && state != cpu_Crashed) {
        int64_t sim_ns, host_ns;
        for (i = 0; i < 1024; i++)
            state = avr_run(avr);
        if (g_reset) {
            g_reset = 0;
            avr_reset(avr);
            g_cycle_at_reset = avr->cycle;
            g_line_len = 0;
        }
        sim_ns = (int64_t)((avr->cycle - cycle0) * 1000000000ull / avr->frequency);
        host_ns = mono_ns() - g_host0;
        g_lag = host_ns - sim_ns;
        g_lag_min = g_lag < g_lag_min ? g_lag : g_lag_min;
        g_lag_max = g_lag > g_lag_max ? g_lag : g_lag_max;
        if (g_lag < -200000) { /* more than 0.2 ms ahead: wait for real time */
            struct timespec d = {0, (long)(-g_lag)};
            nanosleep(&d, NULL);
        }
        (void)cycle0;
    }
    /* No uart_pty_stop(): it joins a thread blocked in select() on the pty and can wait forever;
     * exiting closes everything. */
    unlink(link);
    fprintf(stderr, "simavr-uart: stopped (state %d)\n", state);
    return 0;
}

/* The debug line an emulated port prints once a second (PROTOCOL.md, "Debug line"):
 *   TSQB tick=<u64> state=<0..3> utc=<i64|-> bound=<u32|-> ts_seq=<u16> bad=<u16> overruns=<u16>
 *        rejected=<u16> err=<tsqb_err> rx_in_tx=<u16> rx_in_status=<u16>\n
 * utc and bound are the device's own, computed by tsqb_device_utc_now at `tick`, just before the line
 * is written; rx_in_tx / rx_in_status count RX interrupts the port took while the main loop was writing
 * any frame / a STATUS frame. Plain C99, no printf: it builds for AVR. */
#ifndef TSQB_DEBUG_LINE_H
#define TSQB_DEBUG_LINE_H

#include <stddef.h>
#include <stdint.h>

#include "tsqb.h"

#define TSQB_DEBUG_LINE_MAX 200

/* Writes the line (with its '\n', no NUL) into out (TSQB_DEBUG_LINE_MAX bytes); returns its length. */
size_t tsqb_debug_line(const tsqb_device *d, uint64_t tick, uint16_t rx_in_tx, uint16_t rx_in_status, char *out);

#endif

/* rtc/core.h — small loop utilities shared by every binary. */
#ifndef RTC_CORE_H
#define RTC_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "rtc/error.h"

/* The value of hex digit c (0-9, a-f, A-F), or -1. */
static inline int rtc_hex_digit(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Monotonic milliseconds (uv_hrtime based). */
uint64_t rtc_now_ms(void);
/* Wall clock milliseconds since the epoch. */
int64_t rtc_wall_ms(void);

/* Watch SIGTERM and SIGINT on the loop; the first one calls on_signal
 * (start draining), a second one exits the process at once with status 1.
 * Also ignores SIGPIPE. The watchers do not keep the loop alive (unref'd):
 * uv_run returns once everything else has closed after a drain. */
typedef struct rtc_signals rtc_signals;
typedef void (*rtc_signal_fn)(int signum, void *ud);
int rtc_signals_start(uv_loop_t *loop, rtc_signal_fn on_signal, void *ud, rtc_signals **out);
void rtc_signals_close(rtc_signals *s); /* freed from uv_close callbacks */

/* Read a whole file of at most max bytes into a malloc'd, NUL-terminated
 * buffer (*out, length *len; the caller frees it). 0, RTC_EIO (cannot open
 * or read: errno says why), RTC_ETOOBIG (larger than max), RTC_ENOMEM. */
int rtc_read_file(const char *path, size_t max, char **out, size_t *len);

#endif

/* rtc/utf8.h — UTF-8 validation (log and metrics writers, input checks).
 *
 * Log lines and the Prometheus exposition must be valid UTF-8 whatever bytes
 * a caller hands in (peer-supplied names, paths); invalid sequences are
 * replaced, never passed through. */
#ifndef RTC_UTF8_H
#define RTC_UTF8_H

#include <stdbool.h>
#include <stddef.h>

#include "rtc/buf.h"

/* Length of the valid UTF-8 sequence starting at s (1..4), or 0 when the
 * bytes at s do not start a valid, shortest-form, non-surrogate scalar. */
size_t rtc_utf8_seq_len(const unsigned char *s, size_t len);
bool rtc_utf8_valid(const char *s, size_t len);
/* Append s to out with each invalid byte replaced by U+FFFD. */
int rtc_utf8_sanitize(rtc_buf *out, const char *s, size_t len);

#endif

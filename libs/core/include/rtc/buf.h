/* rtc/buf.h — a growable byte buffer, the common currency of protocol code. */
#ifndef RTC_BUF_H
#define RTC_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct rtc_buf {
    uint8_t *data; /* owned; may be NULL when cap == 0 */
    size_t len;
    size_t cap;
} rtc_buf;

#define RTC_BUF_INIT                                                                               \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* Ensure room for `extra` more bytes. 0 or RTC_ENOMEM. */
int rtc_buf_reserve(rtc_buf *b, size_t extra);
int rtc_buf_append(rtc_buf *b, const void *data, size_t len);
int rtc_buf_append_str(rtc_buf *b, const char *s);
/* printf-style append. 0, RTC_ENOMEM or RTC_EINVAL (format error). */
int rtc_buf_printf(rtc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes (n <= len). */
void rtc_buf_consume(rtc_buf *b, size_t n);
void rtc_buf_reset(rtc_buf *b); /* len = 0, keeps memory */
void rtc_buf_free(rtc_buf *b);  /* frees memory, back to RTC_BUF_INIT */

#endif

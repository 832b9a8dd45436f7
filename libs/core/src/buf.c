/* buf.c — growable byte buffer.
 *
 * Growth is geometric (x2, from 64 bytes) so a sequence of appends costs
 * amortised O(1) per byte; every size computation is checked for overflow
 * because lengths often come from the network. */
#include "rtc/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/error.h"

#define BUF_MIN_CAP 64

int rtc_buf_reserve(rtc_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX - b->len)
        return RTC_ENOMEM;
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return RTC_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int rtc_buf_append(rtc_buf *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int rc = rtc_buf_reserve(b, len);
    if (rc < 0)
        return rc;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

int rtc_buf_append_str(rtc_buf *b, const char *s)
{
    return rtc_buf_append(b, s, strlen(s));
}

int rtc_buf_printf(rtc_buf *b, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    size_t avail = b->cap - b->len;
    /* First try in the spare room; vsnprintf tells how much it needed. */
    int n = vsnprintf(avail ? (char *)b->data + b->len : NULL, avail, fmt, ap);
    int rc = 0;
    if (n < 0) {
        rc = RTC_EINVAL;
        goto out;
    }
    if ((size_t)n >= avail) {
        rc = rtc_buf_reserve(b, (size_t)n + 1);
        if (rc < 0)
            goto out;
        n = vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap2);
        if (n < 0) {
            rc = RTC_EINVAL;
            goto out;
        }
    }
    b->len += (size_t)n; /* the NUL stays in the spare room, not counted */
out:
    va_end(ap2);
    va_end(ap);
    return rc;
}

void rtc_buf_consume(rtc_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void rtc_buf_reset(rtc_buf *b)
{
    b->len = 0;
}

void rtc_buf_free(rtc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

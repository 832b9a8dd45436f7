/* gRPC status names and grpc-message percent-encoding (PROTOCOL-HTTP2). */
#include <stdio.h>
#include <string.h>

#include "rtc/core.h"
#include "rtc/grpc.h"

static const char *const status_names[RTC_GRPC_STATUS_COUNT] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *rtc_grpc_status_name(int code)
{
    if (code < 0 || code >= RTC_GRPC_STATUS_COUNT)
        return NULL;
    return status_names[code];
}

int rtc_grpc_status_from_name(const char *name, int *code)
{
    if (!name)
        return RTC_EINVAL;
    for (int i = 0; i < RTC_GRPC_STATUS_COUNT; i++) {
        if (strcmp(name, status_names[i]) == 0) {
            *code = i;
            return 0;
        }
    }
    return RTC_EINVAL;
}

/* The spec: grpc-message is percent-encoded UTF-8; everything outside the
 * printable ASCII range, and '%' itself, is escaped. */
int rtc_grpc_message_encode(const char *msg, size_t len, rtc_buf *out)
{
    static const char hex[] = "0123456789ABCDEF";
    if (rtc_buf_reserve(out, len + 1) < 0)
        return RTC_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)msg[i];
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            if (rtc_buf_append(out, &ch, 1) < 0)
                return RTC_ENOMEM;
        } else {
            char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            if (rtc_buf_append(out, esc, 3) < 0)
                return RTC_ENOMEM;
        }
    }
    return 0;
}

int rtc_grpc_message_decode(const char *in, size_t len, rtc_buf *out)
{
    if (rtc_buf_reserve(out, len + 1) < 0)
        return RTC_ENOMEM;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '%' && i + 2 < len) {
            int hi = rtc_hex_digit((unsigned char)in[i + 1]),
                lo = rtc_hex_digit((unsigned char)in[i + 2]);
            if (hi >= 0 && lo >= 0) {
                ch = (unsigned char)(hi << 4 | lo);
                i += 2;
            }
        }
        if (rtc_buf_append(out, &ch, 1) < 0)
            return RTC_ENOMEM;
    }
    /* NUL-terminate without counting it. */
    if (rtc_buf_reserve(out, 1) < 0)
        return RTC_ENOMEM;
    out->data[out->len] = 0;
    return 0;
}

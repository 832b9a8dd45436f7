/* grpc-timeout: "TimeoutValue TimeoutUnit", at most 8 digits (PROTOCOL-HTTP2). */
#include <stdio.h>

#include "rtc/grpc.h"

#define TIMEOUT_MAX_MS UINT32_MAX

int rtc_grpc_timeout_parse(const char *s, size_t len, uint64_t *ms)
{
    if (!s || len < 2 || len > 9)
        return RTC_EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return RTC_EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    uint64_t out;
    switch (s[len - 1]) {
    case 'H':
        out = v * 3600000u;
        break;
    case 'M':
        out = v * 60000u;
        break;
    case 'S':
        out = v * 1000u;
        break;
    case 'm':
        out = v;
        break;
    case 'u': /* round up: a 1 µs deadline is still a deadline */
        out = (v + 999) / 1000;
        break;
    case 'n':
        out = (v + 999999) / 1000000;
        break;
    default:
        return RTC_EINVAL;
    }
    if (out == 0 && v != 0)
        out = 1;
    *ms = out > TIMEOUT_MAX_MS ? TIMEOUT_MAX_MS : out;
    return 0;
}

size_t rtc_grpc_timeout_format(uint64_t ms, char out[16])
{
    /* Largest unit that keeps the value within 8 digits without losing
     * precision when possible; otherwise round up in a coarser unit. */
    if (ms <= 99999999u)
        return (size_t)snprintf(out, 16, "%llum", (unsigned long long)ms);
    uint64_t s = (ms + 999) / 1000;
    if (s <= 99999999u)
        return (size_t)snprintf(out, 16, "%lluS", (unsigned long long)s);
    uint64_t m = (s + 59) / 60;
    if (m <= 99999999u)
        return (size_t)snprintf(out, 16, "%lluM", (unsigned long long)m);
    uint64_t h = (m + 59) / 60;
    if (h > 99999999u)
        h = 99999999u;
    return (size_t)snprintf(out, 16, "%lluH", (unsigned long long)h);
}

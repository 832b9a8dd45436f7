/* url.c — redis://[[user]:password@]host[:port][/db] into its parts.
 *
 * Deliberately strict: anything this parser does not understand (another
 * scheme, a query string, a user without a colon, a bad escape, a field
 * that would not fit) is RTC_EINVAL, because a half-understood URL would
 * connect somewhere else or authenticate as someone else. rediss:// (TLS)
 * is refused rather than silently downgraded. */
#include <arpa/inet.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "rtc/core.h"
#include "rtc/error.h"
#include "rtc/redis.h"

#define URL_DEFAULT_PORT 6379
#define URL_MAX_DB       1000000 /* far above any sane `databases` setting */

/* Percent-decode s[0..len) into out (cap bytes with the NUL). %00 is
 * refused: the result is a C string. */
static int pct_decode(const char *s, size_t len, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= len)
                return RTC_EINVAL;
            int hi = rtc_hex_digit((unsigned char)s[i + 1]),
                lo = rtc_hex_digit((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return RTC_EINVAL;
            c = (char)(hi << 4 | lo);
            if (c == 0)
                return RTC_EINVAL;
            i += 2;
        } else if ((unsigned char)c < 0x21 || c == 0x7f) {
            return RTC_EINVAL; /* spaces and controls must be escaped */
        }
        if (n + 1 >= cap)
            return RTC_EINVAL;
        out[n++] = c;
    }
    out[n] = 0;
    return 0;
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/* host[:port] or [v6]:port. */
static int parse_hostport(const char *s, size_t len, rtc_redis_url *out)
{
    const char *host = s, *port = NULL;
    size_t hlen = 0, plen = 0;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return RTC_EINVAL;
        host = s + 1;
        hlen = (size_t)(close - host);
        size_t rest = len - (size_t)(close + 1 - s);
        if (rest > 0) {
            if (close[1] != ':')
                return RTC_EINVAL;
            port = close + 2;
            plen = rest - 1;
        }
        if (hlen == 0 || hlen >= sizeof(out->host))
            return RTC_EINVAL;
        memcpy(out->host, host, hlen);
        out->host[hlen] = 0;
        struct in6_addr a6;
        if (inet_pton(AF_INET6, out->host, &a6) != 1)
            return RTC_EINVAL;
    } else {
        const char *colon = memchr(s, ':', len);
        hlen = colon ? (size_t)(colon - s) : len;
        if (colon) {
            port = colon + 1;
            plen = len - hlen - 1;
        }
        if (hlen == 0 || hlen >= sizeof(out->host))
            return RTC_EINVAL;
        for (size_t i = 0; i < hlen; i++)
            if (!host_char(host[i]))
                return RTC_EINVAL;
        memcpy(out->host, host, hlen);
        out->host[hlen] = 0;
    }
    out->port = URL_DEFAULT_PORT;
    if (port) {
        if (plen == 0 || plen > 5)
            return RTC_EINVAL;
        unsigned v = 0;
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9')
                return RTC_EINVAL;
            v = v * 10 + (unsigned)(port[i] - '0');
        }
        if (v == 0 || v > 65535)
            return RTC_EINVAL;
        out->port = (uint16_t)v;
    }
    return 0;
}

int rtc_redis_url_parse(const char *url, rtc_redis_url *out)
{
    static const char scheme[] = "redis://";
    if (!url || !out)
        return RTC_EINVAL;
    memset(out, 0, sizeof(*out));
    if (strncasecmp(url, scheme, sizeof(scheme) - 1) != 0)
        goto bad;
    const char *p = url + sizeof(scheme) - 1;
    /* The authority ends at the path; '/' inside a password must be %2F. */
    const char *slash = strchr(p, '/');
    size_t alen = slash ? (size_t)(slash - p) : strlen(p);
    if (memchr(p, '?', alen) || memchr(p, '#', alen))
        goto bad;

    /* The last '@' splits userinfo from the host, so a raw '@' in a
     * password still works; ':' in a user name has to be escaped. */
    const char *at = NULL;
    for (const char *q = p; q < p + alen; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            goto bad; /* "user@host": a user without a password cannot AUTH */
        if (pct_decode(p, (size_t)(colon - p), out->user, sizeof(out->user)) != 0 ||
            pct_decode(colon + 1, (size_t)(at - colon - 1), out->password, sizeof(out->password)) !=
                0)
            goto bad;
        alen -= (size_t)(at + 1 - p);
        p = at + 1;
    }
    if (parse_hostport(p, alen, out) != 0)
        goto bad;

    out->db = 0;
    if (slash) {
        const char *d = slash + 1;
        size_t dlen = strlen(d);
        if (dlen > 7)
            goto bad;
        long v = 0;
        for (size_t i = 0; i < dlen; i++) {
            if (d[i] < '0' || d[i] > '9')
                goto bad;
            v = v * 10 + (d[i] - '0');
        }
        if (v > URL_MAX_DB)
            goto bad;
        out->db = (int)v;
    }
    return 0;
bad:
    /* Leave no half-parsed password behind. */
    memset(out, 0, sizeof(*out));
    return RTC_EINVAL;
}

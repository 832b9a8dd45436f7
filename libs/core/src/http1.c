/* http1.c — strict HTTP/1.x request-head parser for the admin port.
 *
 * I/O-free and allocation-free so it can be fuzzed directly. It is strict on
 * purpose (RFC 9112): the admin port sits behind nothing, and every leniency
 * (bare LF, obs-fold, whitespace before the colon, a body the server would
 * not read) is a request-smuggling or desync vector somewhere. Clients that
 * talk to it are curl, Prometheus and kubelet, which are all well-behaved. */
#include <limits.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "rtc/admin.h"
#include "rtc/error.h"

struct head_state {
    int minor;       /* HTTP/1.<minor> */
    int hosts;       /* Host header count */
    bool conn_close; /* Connection: close */
    bool conn_ka;    /* Connection: keep-alive */
};

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 characters allowed in a request-target (no fragment). */
static bool is_uri_char(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    return c && strchr("-._~!$&'()*+,;=:@/?%", c) != NULL;
}

static int parse_target(const char *t, size_t n, rtc_http1_request *req)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)t[i];
        if (!is_uri_char(c))
            return RTC_EPROTO;
        if (c == '%' &&
            (i + 2 >= n || !is_hex((unsigned char)t[i + 1]) || !is_hex((unsigned char)t[i + 2])))
            return RTC_EPROTO;
    }
    const char *path = t;
    size_t plen;
    if (n == 1 && t[0] == '*') {
        plen = 1; /* asterisk-form (OPTIONS *) */
    } else if (t[0] == '/') {
        plen = n; /* origin-form */
    } else {
        /* absolute-form, which servers must accept (RFC 9112 §3.2.2) */
        size_t skip;
        if (n > 7 && strncasecmp(t, "http://", 7) == 0)
            skip = 7;
        else if (n > 8 && strncasecmp(t, "https://", 8) == 0)
            skip = 8;
        else
            return RTC_EPROTO;
        while (skip < n && t[skip] != '/' && t[skip] != '?')
            skip++;
        path = t + skip;
        plen = n - skip;
    }
    const char *q = memchr(path, '?', plen);
    if (q)
        plen = (size_t)(q - path);
    if (plen == 0) { /* "http://host" or "http://host?x" */
        path = "/";
        plen = 1;
    }
    if (plen >= sizeof(req->path))
        return RTC_ETOOBIG;
    memcpy(req->path, path, plen);
    req->path[plen] = '\0';
    return 0;
}

static int parse_request_line(const char *line, size_t n, rtc_http1_request *req,
                              struct head_state *st)
{
    size_t m = 0;
    while (m < n && is_tchar((unsigned char)line[m]))
        m++;
    if (m == 0 || m == n || line[m] != ' ' || m >= sizeof(req->method))
        return RTC_EPROTO;
    memcpy(req->method, line, m);
    req->method[m] = '\0';

    const char *target = line + m + 1;
    const char *sp = memchr(target, ' ', n - m - 1);
    if (!sp || sp == target)
        return RTC_EPROTO;
    const char *version = sp + 1;
    size_t vlen = n - (size_t)(version - line);
    if (vlen != 8 || memcmp(version, "HTTP/1.", 7) != 0 || (version[7] != '0' && version[7] != '1'))
        return RTC_EPROTO;
    st->minor = version[7] - '0';
    return parse_target(target, (size_t)(sp - target), req);
}

static bool name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

static int parse_header(const char *line, size_t n, struct head_state *st)
{
    size_t nl = 0;
    while (nl < n && is_tchar((unsigned char)line[nl]))
        nl++;
    /* Covers obs-fold (line starts with SP/HTAB), "Name : v" and no colon. */
    if (nl == 0 || nl == n || line[nl] != ':')
        return RTC_EPROTO;
    size_t vs = nl + 1, ve = n;
    while (vs < ve && (line[vs] == ' ' || line[vs] == '\t'))
        vs++;
    while (ve > vs && (line[ve - 1] == ' ' || line[ve - 1] == '\t'))
        ve--;
    for (size_t i = vs; i < ve; i++) {
        unsigned char c = (unsigned char)line[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) /* NUL, CR, other CTLs */
            return RTC_EPROTO;
    }
    const char *v = line + vs;
    size_t vl = ve - vs;

    if (name_is(line, nl, "transfer-encoding"))
        return RTC_EPROTO; /* no bodies here, and TE is the classic smuggling lever */
    if (name_is(line, nl, "content-length")) {
        if (vl == 0)
            return RTC_EPROTO;
        for (size_t i = 0; i < vl; i++)
            if (v[i] != '0') /* digits other than 0 mean a body; anything else is junk */
                return RTC_EPROTO;
        return 0;
    }
    if (name_is(line, nl, "host")) {
        if (++st->hosts > 1)
            return RTC_EPROTO;
        return 0;
    }
    if (name_is(line, nl, "connection")) {
        size_t i = 0;
        while (i < vl) {
            while (i < vl && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
                i++;
            size_t s = i;
            while (i < vl && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
                i++;
            if (name_is(v + s, i - s, "close"))
                st->conn_close = true;
            else if (name_is(v + s, i - s, "keep-alive"))
                st->conn_ka = true;
        }
    }
    return 0;
}

/* Reject garbage (a TLS ClientHello, a binary probe) before it fills the
 * buffer: the method must be a token followed by a space. */
static bool partial_line_bad(const char *line, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c == ' ')
            return i == 0;
        if (!is_tchar(c) && !(c == '\r' && i + 1 == n))
            return true;
    }
    return false;
}

int rtc_http1_parse_request(const char *buf, size_t len, size_t max_bytes, rtc_http1_request *req)
{
    struct head_state st = {0};
    bool have_request_line = false;
    size_t limit = len < max_bytes ? len : max_bytes;
    size_t pos = 0;

    memset(req, 0, sizeof(*req));
    if (limit > INT_MAX)
        limit = INT_MAX; /* the count is returned as int */
    /* A server should ignore empty lines before the request line
     * (RFC 9112 §2.2); some clients send a CRLF after a body. */
    while (pos + 1 < limit && buf[pos] == '\r' && buf[pos + 1] == '\n')
        pos += 2;

    for (;;) {
        const char *line = buf + pos;
        const char *lf = memchr(line, '\n', limit - pos);
        if (!lf) {
            if (!have_request_line && partial_line_bad(line, limit - pos))
                return RTC_EPROTO;
            return len >= max_bytes ? RTC_ETOOBIG : 0;
        }
        if (lf == line || lf[-1] != '\r')
            return RTC_EPROTO; /* bare LF */
        size_t n = (size_t)(lf - 1 - line);
        pos = (size_t)(lf + 1 - buf);
        int rc;
        if (!have_request_line) {
            rc = parse_request_line(line, n, req, &st);
            have_request_line = true;
        } else if (n == 0) {
            break;
        } else {
            rc = parse_header(line, n, &st);
        }
        if (rc < 0)
            return rc;
    }
    if (st.minor == 1 && st.hosts == 0)
        return RTC_EPROTO; /* RFC 9112 §3.2: a 1.1 request without Host gets 400 */
    req->keep_alive = !st.conn_close && (st.minor == 1 || st.conn_ka);
    req->header_bytes = pos;
    return (int)pos;
}

/* fuzz_http1.c — libFuzzer target for the admin port's request parser.
 *
 * Feeds the input as a stream of pipelined requests, the way admin.c does,
 * and checks the parser's promises: it never reads past len, never claims
 * more than it was given or than max_bytes, and fills a request that the
 * router can use (NUL-terminated method and path). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/admin.h"
#include "rtc/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const rtc_http1_request *req, int n, size_t len, size_t max)
{
    if ((size_t)n > len || (size_t)n > max || req->header_bytes != (size_t)n)
        abort();
    size_t ml = strnlen(req->method, sizeof(req->method));
    size_t pl = strnlen(req->path, sizeof(req->path));
    if (ml == 0 || ml == sizeof(req->method) || pl == 0 || pl == sizeof(req->path))
        abort();
    if (req->path[0] != '/' && req->path[0] != '*')
        abort();
    if (memchr(req->path, '?', pl))
        abort();
}

static void run(const char *buf, size_t size, size_t max)
{
    size_t off = 0;
    while (off < size) {
        rtc_http1_request req;
        int n = rtc_http1_parse_request(buf + off, size - off, max, &req);
        if (n == 0 || n == RTC_EPROTO || n == RTC_ETOOBIG)
            break;
        if (n < 0)
            abort(); /* no other error is documented */
        check_request(&req, n, size - off, max);
        off += (size_t)n;
    }
    /* Incremental delivery must agree with all-at-once: no prefix of a
     * complete head may already parse as complete. */
    rtc_http1_request full;
    int whole = rtc_http1_parse_request(buf, size, max, &full);
    for (int i = 0; i < whole; i++) {
        rtc_http1_request part;
        if (rtc_http1_parse_request(buf, (size_t)i, max, &part) > 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A heap copy of exactly `size` bytes lets ASan catch any over-read. */
    char *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    run(buf, size, 8192);            /* the admin port's limit */
    run(buf, size, (size % 64) * 4); /* small limits, including 0 */
    free(buf);
    return 0;
}

/* rtc/admin.h — the admin HTTP/1.1 listener of every process.
 *
 *   GET /healthz  200 "ok" while the process runs (liveness)
 *   GET /readyz   200 "ready" or 503 with the reason (readiness)
 *   GET /metrics  Prometheus text exposition of the registry
 *
 * Only GET and HEAD; small, bounded requests (8 KiB of headers, 5 s to
 * send them); keep-alive supported. Anything else gets a 4xx and the
 * connection closes. */
#ifndef RTC_ADMIN_H
#define RTC_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>
#include "rtc/metrics.h"

typedef struct rtc_admin rtc_admin;

/* Start listening on host:port on the loop. *out owned by caller (close it). */
int rtc_admin_start(uv_loop_t *loop, const char *host, uint16_t port, rtc_metrics *metrics,
                    rtc_admin **out);
/* Readiness: ready=false with a short reason ("draining", "redis down"). */
void rtc_admin_set_ready(rtc_admin *a, bool ready, const char *reason);
/* The bound port (useful with port 0). */
uint16_t rtc_admin_port(const rtc_admin *a);
/* Stop listening, close connections; the memory is freed from uv_close
 * callbacks, so run the loop afterwards. */
void rtc_admin_close(rtc_admin *a);

/* The request parser, I/O-free (fuzzed). */
typedef struct rtc_http1_request {
    char method[16];
    char path[1024]; /* without the query string */
    bool keep_alive; /* HTTP/1.1 default true; "Connection: close" → false */
    size_t header_bytes;
} rtc_http1_request;

/* Parse one request head from buf. Returns the number of bytes consumed
 * (> 0) when a whole head is there, 0 when more bytes are needed,
 * RTC_EPROTO on a malformed request, RTC_ETOOBIG past max_bytes.
 * Requests with a body (Content-Length > 0, Transfer-Encoding) are
 * RTC_EPROTO: the admin port takes none. */
int rtc_http1_parse_request(const char *buf, size_t len, size_t max_bytes, rtc_http1_request *req);

#endif

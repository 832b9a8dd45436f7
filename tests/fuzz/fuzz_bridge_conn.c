/* fuzz_bridge_conn: the bridge's JSON-RPC session (rtc/bridge_conn.h) over
 * the real descriptors of proto/, with a fake transport.
 *
 * The input is a script of steps separated by 0xFF bytes (never valid in
 * UTF-8 JSON text). A step starting with
 *   0xFE  delivers the rest as a response message to the newest live call;
 *   0xFD  closes the newest live call with status (next byte % 17);
 *   0xFC  gives the newest live call its response headers;
 *   0xFB  fires the oldest live timer;
 * anything else is a text frame from the browser. The fake transport keeps
 * the transport's promises (no callback after cancel; timers fire once), so
 * any crash, leak or sanitizer report is the conn's. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/bridge_conn.h"
#include "rtc/grpc.h"
#include "rtc_proto_fds.h"

#define MAX_CALLS 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fcall {
    rtc_bridge_upcall *up;
    bool live;
} fcall;

static fcall calls[MAX_CALLS];
static size_t ncalls;
static fcall timers[MAX_CALLS];
static size_t ntimers;

static rtc_pbjson *pj;
static rtc_bridge_routes *routes;
static rtc_bridge_env env;

static int f_send(void *ud, const char *text, size_t len)
{
    (void)ud;
    (void)text;
    (void)len;
    return 0;
}

static int f_call(void *ud, const rtc_bridge_route *r, const uint8_t *req, size_t len,
                  const char *bearer, bool wfr, uint64_t timeout_ms, rtc_bridge_upcall *up,
                  void **handle)
{
    (void)ud;
    (void)r;
    (void)req;
    (void)len;
    (void)bearer;
    (void)wfr;
    (void)timeout_ms;
    if (ncalls == MAX_CALLS)
        return RTC_EUNAVAIL;
    calls[ncalls] = (fcall){up, true};
    *handle = &calls[ncalls++];
    return 0;
}

static void f_cancel(void *ud, void *h)
{
    (void)ud;
    ((fcall *)h)->live = false;
}

static void *f_timer_start(void *ud, uint64_t ms, rtc_bridge_upcall *up)
{
    (void)ud;
    (void)ms;
    if (ntimers == MAX_CALLS)
        return NULL;
    timers[ntimers] = (fcall){up, true};
    return &timers[ntimers++];
}

static void f_timer_stop(void *ud, void *t)
{
    (void)ud;
    ((fcall *)t)->live = false;
}

static fcall *newest_call(void)
{
    for (size_t i = ncalls; i-- > 0;)
        if (calls[i].live)
            return &calls[i];
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!pj) {
        if (rtc_pbjson_new(rtc_proto_fds, rtc_proto_fds_len, rtc_proto_fds_services,
                           rtc_proto_fds_services_len, &pj, NULL, 0) < 0 ||
            rtc_bridge_routes_new(pj, "rtc.auth.v1.Auth=h:1;rtc.signaling.v1.Signaling=h:2,h:3",
                                  "rtc.signaling.v1.Signaling/*,rtc.auth.v1.Auth/DevLogin,"
                                  "rtc.auth.v1.Auth/GetIceServers",
                                  "rtc.auth.v1.Auth/DevLogin",
                                  "rtc.signaling.v1.Signaling/Subscribe=afterEventId:id", &routes,
                                  NULL, 0) < 0)
            abort();
        env.pj = pj;
        env.routes = routes;
        rtc_bridge_limits_init(&env.limits);
        env.limits.rate = 1000;
        env.limits.burst = 50;
        env.ops = (rtc_bridge_conn_ops){f_send, f_call, f_cancel, f_timer_start, f_timer_stop};
    }
    ncalls = ntimers = 0;
    rtc_bridge_conn *c = NULL;
    if (rtc_bridge_conn_new(&env, NULL, &c) < 0)
        return 0;
    uint64_t now = 1000;
    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != 0xFF)
            continue;
        const uint8_t *step = data + start;
        size_t n = i - start;
        start = i + 1;
        now += 7;
        fcall *fc = newest_call();
        if (n > 0 && step[0] == 0xFE) {
            if (fc && rtc_bridge_upcall_on_message(fc->up, step + 1, n - 1) != 0) {
                fc->live = false; /* the channel cancels, then reports CANCELLED */
                rtc_bridge_upcall_on_close(fc->up, RTC_GRPC_CANCELLED, "cancelled");
            }
        } else if (n > 0 && step[0] == 0xFD) {
            if (fc) {
                fc->live = false;
                rtc_bridge_upcall_on_close(fc->up, n > 1 ? step[1] % 17 : 14, "closed");
            }
        } else if (n > 0 && step[0] == 0xFC) {
            if (fc)
                rtc_bridge_upcall_on_headers(fc->up);
        } else if (n > 0 && step[0] == 0xFB) {
            for (size_t t = 0; t < ntimers; t++) {
                if (timers[t].live) {
                    timers[t].live = false;
                    rtc_bridge_upcall_on_timer(timers[t].up);
                    break;
                }
            }
        } else {
            rtc_bridge_conn_recv(c, (const char *)step, n, now);
        }
    }
    rtc_bridge_conn_free(c);
    return 0;
}

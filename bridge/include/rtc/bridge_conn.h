/* rtc/bridge_conn.h — one browser socket's JSON-RPC 2.0 session, I/O-free.
 *
 * The bridge's protocol logic (DESIGN.md §6) without sockets: text frames
 * go in through rtc_bridge_conn_recv; replies and notifications come out
 * through ops->send; gRPC calls go out through ops->call, and their
 * results come back through rtc_bridge_upcall_on_*. The lws server
 * (server.c) supplies real ops; tests and the fuzz target supply fakes.
 *
 *  - `method` is the gRPC method name ("rtc.signaling.v1.Signaling/Join"),
 *    `params` / `result` its proto3 JSON (rtc/pbjson.h).
 *  - Routing policy (rtc_bridge_routes): which methods are exposed at all,
 *    which need no token, which streams resume after an upstream failure.
 *  - Errors: -32700 parse, -32600 invalid request, -32601 unknown method,
 *    -32602 bad params; a gRPC failure gives code = its status number,
 *    message = grpc-message, data.status = its name.
 *  - Server streams answer {"subscription": id} at once, then "rpc.event"
 *    notifications and a last "rpc.end"; "rpc.cancel" ends one early.
 *  - Bridge-local methods: "session.authenticate" {"accessToken"} sets the
 *    bearer token forwarded on every later call; "rpc.cancel".
 *  - A resumable stream (a Subscribe) that fails UNAVAILABLE — its
 *    upstream died or drained — is re-opened, on whichever upstream the
 *    channel picks, with its cursor field set to the last id delivered:
 *    the browser sees neither a gap nor a duplicate. */
#ifndef RTC_BRIDGE_CONN_H
#define RTC_BRIDGE_CONN_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "rtc/metrics.h"
#include "rtc/pbjson.h"

/* JSON-RPC error codes of the JSON layer. */
enum {
    RTC_JSONRPC_PARSE_ERROR = -32700,
    RTC_JSONRPC_INVALID_REQUEST = -32600,
    RTC_JSONRPC_METHOD_NOT_FOUND = -32601,
    RTC_JSONRPC_INVALID_PARAMS = -32602,
};

/* ---- routing policy ---------------------------------------------------- */

typedef struct rtc_bridge_routes rtc_bridge_routes;

/* What the bridge knows about one exposed method. */
typedef struct rtc_bridge_route {
    const rtc_pbjson_method *method;
    int upstream;            /* index into the upstream list (rtc_bridge_routes_upstream) */
    bool is_public;          /* callable without a token */
    const char *resume_req;  /* resumable stream: request field (json name) set to the cursor */
    const char *resume_resp; /* … taken from this field of each response; NULL = not resumable */
    const ProtobufCFieldDescriptor *resume_resp_field; /* that field (a string) */
} rtc_bridge_route;

/* Build the policy from configuration text (the flags of rtc-bridge):
 *   upstreams  "Service=host:port[,host:port…][;Service=…]"
 *   expose     "Service/Method[,…]", or "Service/" + "*" for every method of
 *              a service (services ending in "Admin"
 *              are refused: admin RPCs never reach browsers)
 *   public     "Service/Method[,…]"  (must be exposed)
 *   resume     "Service/Method=reqField:respField[,…]" (server-streaming,
 *              both fields strings of the request / response)
 * Every exposed method needs an upstream for its service. RTC_EINVAL with
 * err saying which part is wrong; RTC_ENOMEM. */
int rtc_bridge_routes_new(const rtc_pbjson *pj, const char *upstreams, const char *expose,
                          const char *pub, const char *resume, rtc_bridge_routes **out, char *err,
                          size_t errlen);
void rtc_bridge_routes_free(rtc_bridge_routes *r);
/* The route of an exposed method, or NULL (unknown or not exposed). */
const rtc_bridge_route *rtc_bridge_routes_find(const rtc_bridge_routes *r, const char *name);
size_t rtc_bridge_routes_upstream_count(const rtc_bridge_routes *r);
/* Upstream i: its service name and "host:port,…" targets. */
void rtc_bridge_routes_upstream(const rtc_bridge_routes *r, size_t i, const char **service,
                                const char **targets);
size_t rtc_bridge_routes_count(const rtc_bridge_routes *r);
const rtc_bridge_route *rtc_bridge_routes_at(const rtc_bridge_routes *r, size_t i);

/* ---- a session ---------------------------------------------------------- */

typedef struct rtc_bridge_conn rtc_bridge_conn;
typedef struct rtc_bridge_upcall rtc_bridge_upcall; /* one upstream gRPC call */

typedef struct rtc_bridge_limits {
    unsigned max_depth;       /* JSON nesting (objects + arrays), default 32 */
    double rate;              /* requests per second (token bucket refill); 0 = no limit */
    double burst;             /* bucket size */
    unsigned max_calls;       /* unary calls in flight per socket */
    unsigned max_streams;     /* open subscriptions per socket */
    uint64_t call_timeout_ms; /* unary deadline sent upstream (0 = none) */
    uint64_t resume_for_ms;   /* how long a broken stream keeps trying to resume */
} rtc_bridge_limits;
void rtc_bridge_limits_init(rtc_bridge_limits *l);

typedef struct rtc_bridge_conn_ops {
    /* Queue one text frame for the browser. 0, or negative when the socket
     * cannot take it (the transport then closes it; the conn stops sending). */
    int (*send)(void *ud, const char *text, size_t len);
    /* Start an upstream call of route r with request bytes; bearer is the
     * token to forward (NULL for none). Results come back through
     * rtc_bridge_upcall_on_headers / _on_message / _on_close with `up`,
     * never before call returns. *handle is for cancel. 0 or negative (the
     * conn then fails the call UNAVAILABLE itself). */
    int (*call)(void *ud, const rtc_bridge_route *r, const uint8_t *req, size_t len,
                const char *bearer, bool wait_for_ready, uint64_t timeout_ms, rtc_bridge_upcall *up,
                void **handle);
    /* Cancel a started call: no rtc_bridge_upcall_on_* for it afterwards. */
    void (*cancel)(void *ud, void *handle);
    /* One-shot timer: rtc_bridge_upcall_on_timer(up) after ms, unless
     * stopped. Returns a handle or NULL. */
    void *(*timer_start)(void *ud, uint64_t ms, rtc_bridge_upcall *up);
    void (*timer_stop)(void *ud, void *timer);
} rtc_bridge_conn_ops;

/* Counters the conn updates (all may be NULL). */
typedef struct rtc_bridge_conn_metrics {
    rtc_metric_family *calls;    /* counter {method, code}: finished calls and streams */
    rtc_metric *requests;        /* JSON-RPC messages received */
    rtc_metric *bad_requests;    /* answered with a -326xx error */
    rtc_metric *rate_limited;    /* refused by the token bucket */
    rtc_metric *resumes;         /* streams re-opened after an upstream failure */
    rtc_metric *resume_failures; /* streams that gave up resuming */
    rtc_metric *events;          /* rpc.event notifications sent */
} rtc_bridge_conn_metrics;

typedef struct rtc_bridge_env {
    const rtc_pbjson *pj;
    const rtc_bridge_routes *routes;
    rtc_bridge_limits limits;
    rtc_bridge_conn_ops ops;
    rtc_bridge_conn_metrics metrics;
} rtc_bridge_env;

/* A session; env must outlive it. ud is passed to every op. */
int rtc_bridge_conn_new(const rtc_bridge_env *env, void *ud, rtc_bridge_conn **out);
/* Cancels every call and timer (through ops), then frees. */
void rtc_bridge_conn_free(rtc_bridge_conn *c);
/* The token from the upgrade URL (?access_token=); NULL clears it.
 * RTC_EINVAL when it cannot be a token (empty, > 8 KiB, not printable). */
int rtc_bridge_conn_set_token(rtc_bridge_conn *c, const char *token);
/* Draining: later requests get UNAVAILABLE; resumes stop. */
void rtc_bridge_conn_set_draining(rtc_bridge_conn *c);
/* Unary calls still in flight (the transport waits for 0 before closing
 * a draining socket). */
size_t rtc_bridge_conn_calls_in_flight(const rtc_bridge_conn *c);
/* One text frame from the browser. Always answers what deserves an answer
 * through ops->send. Returns 0, or negative when ops->send failed (the
 * transport is closing the socket). */
int rtc_bridge_conn_recv(rtc_bridge_conn *c, const char *text, size_t len, uint64_t now_ms);

/* ---- upstream results (from the transport's gRPC callbacks) ------------- */
void rtc_bridge_upcall_on_headers(rtc_bridge_upcall *up);
/* One response message. Returns nonzero when the call must be cancelled
 * (the message was invalid, or the socket is gone): the transport's
 * channel then cancels it and on_close follows, as always. */
int rtc_bridge_upcall_on_message(rtc_bridge_upcall *up, const uint8_t *data, size_t len);
/* Exactly once per started call, last (not after a cancel). */
void rtc_bridge_upcall_on_close(rtc_bridge_upcall *up, int status, const char *message);
void rtc_bridge_upcall_on_timer(rtc_bridge_upcall *up);

#endif

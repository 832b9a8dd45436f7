/* rtc/grpc.h — gRPC (protobuf over HTTP/2) on libuv + nghttp2 + protobuf-c.
 *
 * The wire protocol is gRPC's PROTOCOL-HTTP2, so grpcio, grpc-js, grpc-go
 * and grpcurl talk to the server, and the client talks to their servers.
 *
 *  - Pure protocol helpers (no I/O, fuzzed and unit tested): status names,
 *    grpc-message percent-encoding, grpc-timeout, message framing.
 *  - rtc_grpc_server: h2c (prior knowledge) server; unary and
 *    server-streaming handlers per method; grpc.health.v1.Health built in.
 *  - rtc_grpc_channel: client over one or more endpoints with reconnect,
 *    backoff, round robin and health-based failover.
 *
 * Everything runs on one uv loop and is single-threaded. */
#ifndef RTC_GRPC_H
#define RTC_GRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include <uv.h>
#include "rtc/buf.h"
#include "rtc/error.h"
#include "rtc/metrics.h"

/* ---- status codes ---------------------------------------------------- */

typedef enum {
    RTC_GRPC_OK = 0,
    RTC_GRPC_CANCELLED = 1,
    RTC_GRPC_UNKNOWN = 2,
    RTC_GRPC_INVALID_ARGUMENT = 3,
    RTC_GRPC_DEADLINE_EXCEEDED = 4,
    RTC_GRPC_NOT_FOUND = 5,
    RTC_GRPC_ALREADY_EXISTS = 6,
    RTC_GRPC_PERMISSION_DENIED = 7,
    RTC_GRPC_RESOURCE_EXHAUSTED = 8,
    RTC_GRPC_FAILED_PRECONDITION = 9,
    RTC_GRPC_ABORTED = 10,
    RTC_GRPC_OUT_OF_RANGE = 11,
    RTC_GRPC_UNIMPLEMENTED = 12,
    RTC_GRPC_INTERNAL = 13,
    RTC_GRPC_UNAVAILABLE = 14,
    RTC_GRPC_DATA_LOSS = 15,
    RTC_GRPC_UNAUTHENTICATED = 16,
} rtc_grpc_status;

#define RTC_GRPC_STATUS_COUNT 17

/* "NOT_FOUND" for 5; NULL outside 0..16. */
const char *rtc_grpc_status_name(int code);
/* Inverse of rtc_grpc_status_name. 0 or RTC_EINVAL. */
int rtc_grpc_status_from_name(const char *name, int *code);

/* ---- grpc-message percent-encoding ----------------------------------- */

/* Append the percent-encoding of msg[0..len) to out: bytes outside
 * 0x20..0x7E and '%' become %XX. 0 or RTC_ENOMEM. */
int rtc_grpc_message_encode(const char *msg, size_t len, rtc_buf *out);
/* Append the decoding to out, NUL-terminated (the NUL is not counted in
 * out->len). Malformed %-sequences are kept literally, as the spec asks.
 * 0 or RTC_ENOMEM. */
int rtc_grpc_message_decode(const char *in, size_t len, rtc_buf *out);

/* ---- grpc-timeout ---------------------------------------------------- */

/* Parse a grpc-timeout value: 1..8 ASCII digits then a unit H M S m u n.
 * The result is in milliseconds, rounded up (1n → 1 ms) and capped at
 * UINT32_MAX ms. 0 or RTC_EINVAL. */
int rtc_grpc_timeout_parse(const char *s, size_t len, uint64_t *ms);
/* Format ms as a grpc-timeout value ("250m", "100000S") into out. Returns
 * the length written. */
size_t rtc_grpc_timeout_format(uint64_t ms, char out[16]);

/* ---- message framing ------------------------------------------------- */

#define RTC_GRPC_FRAME_HEADER_LEN 5

/* 1-byte compressed flag + 4-byte big-endian length. */
void rtc_grpc_frame_header(uint8_t out[RTC_GRPC_FRAME_HEADER_LEN], bool compressed, uint32_t len);

/* Called once per whole message; data valid only during the call. Return
 * 0 to go on or a negative code to stop (feed returns it). */
typedef int (*rtc_grpc_message_fn)(void *ud, const uint8_t *data, size_t len, bool compressed);

/* Reassembles length-prefixed messages from arbitrary byte chunks (DATA
 * frames split them anywhere). Plain struct: embed it. */
typedef struct rtc_grpc_deframer {
    rtc_buf body;       /* partial message */
    size_t max_message; /* limit on one message's length */
    uint8_t hdr[RTC_GRPC_FRAME_HEADER_LEN];
    size_t hdr_len;    /* header bytes seen so far */
    uint32_t body_len; /* expected length once the header is complete */
} rtc_grpc_deframer;

void rtc_grpc_deframer_init(rtc_grpc_deframer *d, size_t max_message);
/* Feed bytes. Returns 0; RTC_ETOOBIG when a header announces a message
 * longer than max_message (before buffering it); RTC_EPROTO for a flag
 * byte other than 0 or 1; or the callback's negative return. After an
 * error the deframer must not be fed again. */
int rtc_grpc_deframer_feed(rtc_grpc_deframer *d, const uint8_t *data, size_t len,
                           rtc_grpc_message_fn fn, void *ud);
/* True when no partial message is buffered (a stream may end here). */
bool rtc_grpc_deframer_idle(const rtc_grpc_deframer *d);
void rtc_grpc_deframer_free(rtc_grpc_deframer *d);

/* ---- metadata -------------------------------------------------------- */

typedef struct rtc_grpc_metadata {
    const char *key; /* lower-case */
    const char *value;
} rtc_grpc_metadata;

/* ---- server ---------------------------------------------------------- */

typedef struct rtc_grpc_server rtc_grpc_server;
typedef struct rtc_grpc_call rtc_grpc_call;

typedef struct rtc_grpc_server_options {
    const char *name;                /* for logs and metric labels, e.g. "rtc-auth" */
    size_t max_recv_message;         /* default 1 MiB; beyond → RESOURCE_EXHAUSTED */
    size_t max_send_message;         /* default 4 MiB */
    uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS, default 1000 */
    uint32_t max_header_list;        /* SETTINGS_MAX_HEADER_LIST_SIZE, default 16 KiB */
    size_t max_conn_pending;         /* outbound bytes queued per connection, default 64 MiB */
    uint32_t max_connections;        /* default 10000; beyond, new ones are closed */
    uint64_t idle_timeout_ms;        /* close connections idle this long, default 0 = never */
} rtc_grpc_server_options;

void rtc_grpc_server_options_init(rtc_grpc_server_options *o);

typedef enum {
    RTC_GRPC_UNARY = 0,
    RTC_GRPC_SERVER_STREAMING = 1,
} rtc_grpc_method_kind;

/* Runs once the request message has arrived and decoded. The handler owns
 * the call until it completes it, exactly once, with rtc_grpc_call_reply()
 * (unary) or rtc_grpc_call_finish() (either kind) — now or later from the
 * loop. `req` stays valid until then. */
typedef void (*rtc_grpc_handler_fn)(rtc_grpc_call *call, const ProtobufCMessage *req, void *ud);

/* A server with the health service registered (overall status SERVING).
 * metrics may be NULL. */
int rtc_grpc_server_new(uv_loop_t *loop, const rtc_grpc_server_options *opts, rtc_metrics *metrics,
                        rtc_grpc_server **out);

/* Declare every method of svc; those without a handler answer
 * UNIMPLEMENTED. Also sets the service's health to SERVING. */
int rtc_grpc_server_add_service(rtc_grpc_server *s, const ProtobufCServiceDescriptor *svc);

/* Attach a handler to one method of a declared service. The kind is given
 * here because protoc-c descriptors carry no streaming flags.
 * RTC_ENOTFOUND for an unknown method. */
int rtc_grpc_server_handle(rtc_grpc_server *s, const ProtobufCServiceDescriptor *svc,
                           const char *method, rtc_grpc_method_kind kind, rtc_grpc_handler_fn fn,
                           void *ud);

/* Listen on host:port (port 0 = ephemeral; see rtc_grpc_server_port). */
int rtc_grpc_server_listen(rtc_grpc_server *s, const char *host, uint16_t port);
uint16_t rtc_grpc_server_port(const rtc_grpc_server *s);

/* Graceful stop: health goes NOT_SERVING, listeners close, every
 * connection gets GOAWAY; in-flight calls may finish until drain_ms, then
 * the rest are cancelled and connections closed. done(ud) runs when every
 * connection is gone. */
void rtc_grpc_server_shutdown(rtc_grpc_server *s, uint64_t drain_ms, void (*done)(void *ud),
                              void *ud);
/* Free after shutdown's done callback (or if never started). */
void rtc_grpc_server_free(rtc_grpc_server *s);

/* Health: set the status of a service ("" = the whole server).
 * 1 SERVING, 2 NOT_SERVING; watchers are told of changes. */
enum { RTC_GRPC_HEALTH_SERVING = 1, RTC_GRPC_HEALTH_NOT_SERVING = 2 };
int rtc_grpc_server_set_health(rtc_grpc_server *s, const char *service, int status);

/* ---- a call, as the handler sees it ---------------------------------- */

const char *rtc_grpc_call_path(const rtc_grpc_call *c); /* "/pkg.Svc/Method" */
const char *rtc_grpc_call_peer(const rtc_grpc_call *c); /* "127.0.0.1:40000" */
/* First value of a request metadata key (lower-case), or NULL. */
const char *rtc_grpc_call_metadata(const rtc_grpc_call *c, const char *key);
/* All request metadata (pseudo-headers and HTTP/2 hop headers excluded). */
size_t rtc_grpc_call_metadata_all(const rtc_grpc_call *c, const rtc_grpc_metadata **out);
/* Deadline as rtc_now_ms() time, 0 when the client set none. */
uint64_t rtc_grpc_call_deadline(const rtc_grpc_call *c);
bool rtc_grpc_call_cancelled(const rtc_grpc_call *c);

/* Runs at most once when the call is cancelled: client RST_STREAM,
 * deadline passed, connection lost, or shutdown's drain deadline. The call
 * stays valid; the handler must still complete it (the reply is then
 * dropped). Register it before going async. */
void rtc_grpc_call_on_cancel(rtc_grpc_call *c, void (*fn)(rtc_grpc_call *c, void *ud), void *ud);

/* Response metadata: headers before the first message, trailers before
 * finish. 0, RTC_EINVAL (bad key/value), RTC_ECLOSED (too late). */
int rtc_grpc_call_add_header(rtc_grpc_call *c, const char *key, const char *value);
int rtc_grpc_call_add_trailer(rtc_grpc_call *c, const char *key, const char *value);

/* Streaming: queue one response message. 0, RTC_ECLOSED (cancelled or
 * finished), RTC_ETOOBIG (beyond max_send_message), RTC_ENOMEM. */
int rtc_grpc_call_send(rtc_grpc_call *c, const ProtobufCMessage *msg);
/* Bytes queued for this call but not yet handed to the socket. */
size_t rtc_grpc_call_pending(const rtc_grpc_call *c);
/* Runs each time pending bytes drop to 0 after having been above 0
 * (backpressure for producers of long streams). */
void rtc_grpc_call_on_drain(rtc_grpc_call *c, void (*fn)(rtc_grpc_call *c, void *ud), void *ud);

/* Unary: send msg and finish with OK. Completes the call. */
int rtc_grpc_call_reply(rtc_grpc_call *c, const ProtobufCMessage *msg);
/* End the call with a status and optional message (percent-encoded on the
 * wire). Without any message sent before, a non-OK status goes out as
 * Trailers-Only. Completes the call; c is invalid afterwards. */
int rtc_grpc_call_finish(rtc_grpc_call *c, int status, const char *message);

/* ---- client ---------------------------------------------------------- */

typedef struct rtc_grpc_channel rtc_grpc_channel;
typedef struct rtc_grpc_client_call rtc_grpc_client_call;

typedef struct rtc_grpc_channel_options {
    const char *targets;         /* "host:port[,host:port…]" (required) */
    uint64_t connect_timeout_ms; /* default 5000 */
    uint64_t backoff_initial_ms; /* default 250; ×1.6 per failure, ±20 % jitter */
    uint64_t backoff_max_ms;     /* default 30000 */
    bool health_check;           /* watch grpc.health.v1 on each endpoint; route to SERVING only */
    const char *health_service;  /* service name for the health watch, default "" */
    size_t max_recv_message;     /* default 4 MiB */
    uint64_t keepalive_ms;       /* PING period on idle connections, default 0 = off */
} rtc_grpc_channel_options;

void rtc_grpc_channel_options_init(rtc_grpc_channel_options *o);

/* Starts connecting to every endpoint at once. metrics may be NULL. */
int rtc_grpc_channel_new(uv_loop_t *loop, const rtc_grpc_channel_options *opts,
                         rtc_metrics *metrics, rtc_grpc_channel **out);
/* True when at least one endpoint is connected (and SERVING, with health_check). */
bool rtc_grpc_channel_ready(const rtc_grpc_channel *ch);
/* Close every connection. Calls still open get on_close(CANCELLED) first.
 * Memory is freed from uv_close callbacks: keep running the loop. */
void rtc_grpc_channel_close(rtc_grpc_channel *ch);

typedef struct rtc_grpc_call_options {
    const rtc_grpc_metadata *metadata; /* request metadata, lower-case keys */
    size_t nmetadata;
    uint64_t timeout_ms; /* 0 = none; sent as grpc-timeout and enforced locally */
    bool wait_for_ready; /* queue while no endpoint is ready instead of UNAVAILABLE */
} rtc_grpc_call_options;

typedef struct rtc_grpc_call_callbacks {
    /* Initial response metadata (may be NULL). */
    void (*on_headers)(void *ud, const rtc_grpc_metadata *md, size_t n);
    /* Each response message; data valid during the call. Return nonzero to
     * cancel the call (on_close then runs with CANCELLED). */
    int (*on_message)(void *ud, const uint8_t *data, size_t len);
    /* Exactly once, last: status, decoded grpc-message ("" when none), trailers. */
    void (*on_close)(void *ud, int status, const char *message, const rtc_grpc_metadata *trailers,
                     size_t ntrailers);
} rtc_grpc_call_callbacks;

/* Start a call with one request message (unary or server-streaming: the
 * same on the wire). Callbacks never run before this returns. *out (may be
 * NULL) stays valid until on_close has run. */
int rtc_grpc_channel_call(rtc_grpc_channel *ch, const char *path, const uint8_t *req, size_t len,
                          const rtc_grpc_call_options *opts, const rtc_grpc_call_callbacks *cb,
                          void *ud, rtc_grpc_client_call **out);

/* Cancel: sends RST_STREAM(CANCEL). No callback of this call runs after
 * cancel returns; the handle is invalid. */
void rtc_grpc_client_call_cancel(rtc_grpc_client_call *c);
/* "host:port" of the endpoint carrying the call, or NULL while queued. */
const char *rtc_grpc_client_call_endpoint(const rtc_grpc_client_call *c);

/* protobuf-c convenience for unary calls. resp is NULL unless status is OK
 * and is freed after done returns. */
typedef void (*rtc_grpc_unary_done_fn)(void *ud, int status, const char *message,
                                       ProtobufCMessage *resp);
int rtc_grpc_channel_unary(rtc_grpc_channel *ch, const char *path, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc,
                           const rtc_grpc_call_options *opts, rtc_grpc_unary_done_fn done, void *ud,
                           rtc_grpc_client_call **out);

#endif

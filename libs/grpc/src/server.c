/* The gRPC server: h2c (prior knowledge) on libuv, HTTP/2 by nghttp2,
 * messages by protobuf-c.
 *
 * Shape of the code: a connection owns a uv_tcp_t and an nghttp2 session.
 * Bytes read go straight into nghttp2_session_mem_recv(); nghttp2 calls us
 * back per header and frame, and we build one rtc_grpc_call per request
 * stream. Once the request stream has ended (END_STREAM) and its single
 * message has decoded, the method's handler runs. Output is pulled from
 * nghttp2 with nghttp2_session_mem_send() into one write buffer per
 * connection.
 *
 * Lifetime of a call: the handler owns it from dispatch until it completes
 * it (reply/finish); the connection owns it until the HTTP/2 stream closes.
 * The memory goes when both have let go. Cancellation (RST_STREAM, deadline,
 * lost connection, shutdown) tells the handler through its cancel callback;
 * the handler still completes the call, and its output is then dropped.
 *
 * Output from handlers that run outside a read callback (timers, Redis
 * replies) marks the connection dirty; a uv_idle handle flushes every dirty
 * connection before the loop next blocks, so many replies made in one loop
 * iteration leave in one write. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rtc/core.h"
#include "rtc/grpc.h"
#include "rtc/log.h"
#include "h2out.h"
#include "list.h"

#define READ_BUF_SIZE        (64 * 1024)
#define WRITE_BATCH          (256 * 1024)
#define HANDSHAKE_TIMEOUT_MS 10000
#define CONN_WINDOW          (16 * 1024 * 1024)
#define MAX_METADATA         64
#define MAX_STATUS_MESSAGE   4096        /* grpc-message bytes before encoding */
#define CALL_POOL_MAX        256         /* finished calls kept for reuse */
#define CALL_POOL_BUF_MAX    (64 * 1024) /* larger buffers are not kept */

typedef struct conn conn;
typedef struct method method;

struct method {
    char *path; /* "/pkg.Svc/Method" */
    size_t path_len;
    const ProtobufCMessageDescriptor *input;
    rtc_grpc_method_kind kind;
    rtc_grpc_handler_fn fn;
    void *ud;
    rtc_metric *calls[RTC_GRPC_STATUS_COUNT]; /* by status, looked up lazily */
    rtc_metric *latency;
};

typedef struct health_entry {
    char *service;
    int status;
} health_entry;

typedef struct watcher {
    rtc_list node;
    rtc_grpc_call *call;
    char *service;
} watcher;

struct rtc_grpc_server {
    uv_loop_t *loop;
    rtc_grpc_server_options opts;
    char *name;
    method *methods;
    size_t nmethods, methods_cap;
    uv_tcp_t listeners[4];
    size_t nlisteners, listeners_open;
    uint16_t port;
    rtc_list conns;
    size_t nconns;
    rtc_list dirty; /* connections with output to flush */
    uv_idle_t flusher;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *h2opt;
    uint8_t *readbuf;
    bool readbuf_busy;

    health_entry *health;
    size_t nhealth;
    rtc_list watchers;
    rtc_list call_pool; /* recycled rtc_grpc_call, buffers kept */
    size_t npool;
    size_t ncalls; /* live calls; the server memory outlives them */

    bool shutting_down;
    uv_timer_t drain_timer;
    void (*done)(void *ud);
    void *done_ud;
    bool done_called;
    bool freed_pending; /* rtc_grpc_server_free waits for handles */
    int open_handles;   /* flusher + drain_timer + listeners */

    rtc_metrics *metrics;
    rtc_metric_family *m_calls, *m_latency;
    rtc_metric *m_conns, *m_streams, *m_conn_errors;
};

struct conn {
    rtc_list node;
    rtc_list dirty_node;
    uv_tcp_t tcp;
    rtc_grpc_server *srv;
    nghttp2_session *h2;
    rtc_list calls;
    rtc_list draining; /* calls whose on_drain is due (drain_node) */
    rtc_buf wbuf;
    uv_write_t wreq;
    bool writing;
    bool closing;
    bool got_settings;
    bool goaway_sent;
    uv_timer_t timer; /* handshake deadline, then idle checks */
    int open_handles; /* tcp + timer until both close callbacks ran */
    uint64_t last_active;
    size_t pending; /* queued response bytes of all calls */
    char peer[64];
};

enum call_state {
    CALL_HEADERS,    /* receiving request */
    CALL_DISPATCHED, /* handler owns it */
    CALL_COMPLETED,  /* handler finished; output draining */
};

struct rtc_grpc_call {
    rtc_list node;       /* in conn->calls */
    rtc_list drain_node; /* in conn->draining while drain_wanted */
    conn *conn;          /* NULL once the connection is gone */
    rtc_grpc_server *srv;
    int32_t stream_id;
    method *m;
    enum call_state state;
    bool stream_closed;
    bool cancelled;
    bool headers_sent;
    bool finished; /* status set, trailers to go after output */
    bool deferred; /* data provider is waiting for output */
    bool drain_wanted;
    bool timer_used;
    bool deadline_hit; /* DEADLINE_EXCEEDED already sent */
    int busy;          /* user callbacks running: no free */

    /* request */
    char method_hdr[8];
    char *path;
    const char *content_type;
    const char *encoding;
    const char *timeout_hdr;
    rtc_grpc_metadata md[MAX_METADATA];
    size_t nmd;
    size_t header_bytes;
    bool headers_too_big;
    bool too_many_md;
    rtc_buf strings; /* arena for header strings (offsets fixed up at end) */
    uint64_t deadline;
    uint64_t started;
    rtc_grpc_deframer deframer;
    rtc_buf req_bytes;
    int nmsgs;
    int early_status; /* set while receiving: reply with this error */
    char early_message[160];
    ProtobufCMessage *req;

    /* response */
    rtc_buf out;
    size_t out_off;
    size_t frame_off; /* start of the first frame not wholly sent (>= out_off when at a boundary) */
    rtc_buf resp_headers;  /* "key\0value\0" pairs */
    rtc_buf resp_trailers; /* same */
    int status;
    char *message;

    void (*cancel_fn)(rtc_grpc_call *, void *);
    void *cancel_ud;
    void (*drain_fn)(rtc_grpc_call *, void *);
    void *drain_ud;
    uv_timer_t timer;
};

static void conn_close(conn *c);
static void conn_flush(conn *c);
static void conn_mark_dirty(conn *c);
static void call_cancel(rtc_grpc_call *call, int status, const char *why);
static void call_maybe_free(rtc_grpc_call *call);
static void maybe_done(rtc_grpc_server *s);
static void health_register(rtc_grpc_server *s);
static void health_watchers_end(rtc_grpc_server *s);
static void flusher_cb(uv_idle_t *h);
static void conn_timer_cb(uv_timer_t *t);
static void conn_send_goaway(conn *c);
static void server_maybe_release(rtc_grpc_server *s);

/* ---- options ---------------------------------------------------------- */

void rtc_grpc_server_options_init(rtc_grpc_server_options *o)
{
    memset(o, 0, sizeof(*o));
    o->name = "rtc";
    o->max_recv_message = 1024 * 1024;
    o->max_send_message = 4 * 1024 * 1024;
    o->max_concurrent_streams = 1000;
    o->max_header_list = 16 * 1024;
    o->max_conn_pending = 64 * 1024 * 1024;
    o->max_connections = 10000;
    o->idle_timeout_ms = 0;
}

/* ---- metadata and status helpers --------------------------------------- */

static bool valid_md_key(const char *k)
{
    if (!k || !*k)
        return false;
    for (const char *p = k; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
              ch == '.'))
            return false;
    }
    /* Reserved by the protocol. */
    if (strncmp(k, "grpc-", 5) == 0 || strcmp(k, "content-type") == 0 || strcmp(k, "te") == 0)
        return false;
    return true;
}

static bool valid_md_value(const char *v)
{
    for (const char *p = v; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x20 || ch > 0x7e)
            return false;
    }
    return true;
}

static int kv_append(rtc_buf *b, const char *k, const char *v)
{
    if (!valid_md_key(k) || !v)
        return RTC_EINVAL;
    size_t klen = strlen(k);
    bool bin = klen > 4 && strcmp(k + klen - 4, "-bin") == 0;
    if (!bin && !valid_md_value(v))
        return RTC_EINVAL;
    if (rtc_buf_append(b, k, klen + 1) < 0 || rtc_buf_append(b, v, strlen(v) + 1) < 0)
        return RTC_ENOMEM;
    return 0;
}

static nghttp2_nv mknv(const char *name, const char *value)
{
    nghttp2_nv nv = {(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                     NGHTTP2_NV_FLAG_NONE};
    return nv;
}

/* Append "key\0value\0" pairs from b to nva. */
static size_t kv_to_nv(const rtc_buf *b, nghttp2_nv *nva, size_t max)
{
    size_t n = 0;
    size_t off = 0;
    while (off < b->len && n < max) {
        const char *k = (const char *)b->data + off;
        off += strlen(k) + 1;
        const char *v = (const char *)b->data + off;
        off += strlen(v) + 1;
        nva[n++] = mknv(k, v);
    }
    return n;
}

static const char *const status_text[RTC_GRPC_STATUS_COUNT] = {
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
};

/* ---- metrics ------------------------------------------------------------ */

static void count_call(rtc_grpc_call *call, int status)
{
    rtc_grpc_server *s = call->srv;
    if (!s->m_calls)
        return;
    method *m = call->m;
    const char *path = m ? m->path : "unknown";
    rtc_metric *c = m ? m->calls[status] : NULL;
    if (!c) {
        const char *vals[] = {path, rtc_grpc_status_name(status)};
        c = rtc_metric_child(s->m_calls, vals);
        if (m)
            m->calls[status] = c;
    }
    if (c)
        rtc_metric_inc(c, 1);
    if (m && call->started) {
        if (!m->latency) {
            const char *vals[] = {path};
            m->latency = rtc_metric_child(s->m_latency, vals);
        }
        if (m->latency)
            rtc_metric_observe(m->latency, (double)(rtc_now_ms() - call->started) / 1000.0);
    }
}

/* True when no message has been partly sent: out_off is a frame start. */
static bool call_at_boundary(rtc_grpc_call *call)
{
    while (call->frame_off < call->out_off) {
        const uint8_t *h = call->out.data + call->frame_off;
        uint32_t len = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
        call->frame_off += RTC_GRPC_FRAME_HEADER_LEN + len;
    }
    return call->frame_off == call->out_off;
}

/* ---- response output ---------------------------------------------------- */

static size_t call_pending(const rtc_grpc_call *call)
{
    return call->out.len - call->out_off;
}

static ssize_t data_read_cb(nghttp2_session *h2, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    rtc_grpc_call *call = source->ptr;
    conn *c = user_data;
    size_t avail = call_pending(call);
    size_t n = avail < length ? avail : length;
    if (n > 0) {
        memcpy(buf, call->out.data + call->out_off, n);
        call->out_off += n;
        c->pending -= n;
        if (call->out_off == call->out.len) {
            call->out_off = 0;
            call->out.len = 0;
            call->frame_off = 0;
            if (call->drain_fn && !call->drain_wanted) {
                call->drain_wanted = true;
                rtc_list_add(&c->draining, &call->drain_node);
            }
        }
    }
    if (call_pending(call) == 0 && call->finished) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        const char *status = status_text[call->status];
        nghttp2_nv nva[2 + MAX_METADATA];
        size_t nv = 0;
        nva[nv++] = mknv("grpc-status", status);
        if (call->message && *call->message)
            nva[nv++] = mknv("grpc-message", call->message);
        nv += kv_to_nv(&call->resp_trailers, nva + nv, MAX_METADATA);
        if (nghttp2_submit_trailer(h2, stream_id, nva, nv) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return (ssize_t)n;
    }
    if (n == 0) {
        call->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return (ssize_t)n;
}

static int submit_headers(rtc_grpc_call *call)
{
    nghttp2_nv nva[3 + MAX_METADATA];
    size_t n = 0;
    nva[n++] = mknv(":status", "200");
    nva[n++] = mknv("content-type", "application/grpc");
    nva[n++] = mknv("grpc-accept-encoding", "identity");
    n += kv_to_nv(&call->resp_headers, nva + n, MAX_METADATA);
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = data_read_cb};
    int rv = nghttp2_submit_response(call->conn->h2, call->stream_id, nva, n, &prd);
    if (rv != 0)
        return RTC_EIO;
    call->headers_sent = true;
    return 0;
}

/* Trailers-Only: one HEADERS frame with END_STREAM carrying the status. */
static void submit_trailers_only(rtc_grpc_call *call, const char *http_status)
{
    const char *status = status_text[call->status];
    nghttp2_nv nva[4 + 2 * MAX_METADATA];
    size_t n = 0;
    nva[n++] = mknv(":status", http_status);
    nva[n++] = mknv("content-type", "application/grpc");
    nva[n++] = mknv("grpc-status", status);
    if (call->message && *call->message)
        nva[n++] = mknv("grpc-message", call->message);
    n += kv_to_nv(&call->resp_headers, nva + n, MAX_METADATA);
    n += kv_to_nv(&call->resp_trailers, nva + n, MAX_METADATA);
    if (nghttp2_submit_response(call->conn->h2, call->stream_id, nva, n, NULL) == 0)
        call->headers_sent = true;
}

static int set_status(rtc_grpc_call *call, int status, const char *message)
{
    if (status < 0 || status >= RTC_GRPC_STATUS_COUNT)
        status = RTC_GRPC_UNKNOWN;
    call->status = status;
    free(call->message);
    call->message = NULL;
    if (message && *message) {
        rtc_buf enc = RTC_BUF_INIT;
        /* Keep the header block far below nghttp2's send limit. */
        size_t len = strnlen(message, MAX_STATUS_MESSAGE);
        if (rtc_grpc_message_encode(message, len, &enc) < 0 || rtc_buf_append(&enc, "", 1) < 0) {
            rtc_buf_free(&enc);
            return RTC_ENOMEM;
        }
        call->message = (char *)enc.data;
    }
    return 0;
}

/* Write the end of the call to the wire, if the stream is still there. */
static void emit_finish(rtc_grpc_call *call, const char *http_status)
{
    call->finished = true;
    conn *c = call->conn;
    if (!c || call->stream_closed || c->closing)
        return;
    if (!call->headers_sent) {
        submit_trailers_only(call, http_status);
    } else if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(c->h2, call->stream_id);
    }
    conn_mark_dirty(c);
}

/* ---- call lifetime ------------------------------------------------------- */

static void buf_keep_small(rtc_buf *b)
{
    if (b->cap > CALL_POOL_BUF_MAX)
        rtc_buf_free(b);
    else
        rtc_buf_reset(b);
}

/* The end of a call's memory. Most go back to the server's pool with
 * their buffers, so a steady stream of calls allocates next to nothing. */
static void call_free_mem(rtc_grpc_call *call)
{
    rtc_grpc_server *s = call->srv;
    if (call->req)
        protobuf_c_message_free_unpacked(call->req, NULL);
    free(call->path);
    free(call->message);
    s->ncalls--;
    if (s->freed_pending || s->npool >= CALL_POOL_MAX) {
        rtc_grpc_deframer_free(&call->deframer);
        rtc_buf_free(&call->req_bytes);
        rtc_buf_free(&call->strings);
        rtc_buf_free(&call->out);
        rtc_buf_free(&call->resp_headers);
        rtc_buf_free(&call->resp_trailers);
        free(call);
    } else {
        rtc_buf kept[6] = {call->deframer.body, call->req_bytes,    call->strings,
                           call->out,           call->resp_headers, call->resp_trailers};
        for (size_t i = 0; i < 6; i++)
            buf_keep_small(&kept[i]);
        memset(call, 0, sizeof(*call));
        call->deframer.body = kept[0];
        call->req_bytes = kept[1];
        call->strings = kept[2];
        call->out = kept[3];
        call->resp_headers = kept[4];
        call->resp_trailers = kept[5];
        rtc_list_add(&s->call_pool, &call->node);
        s->npool++;
    }
    server_maybe_release(s);
}

static void call_timer_closed(uv_handle_t *h)
{
    call_free_mem(h->data);
}

static void call_maybe_free(rtc_grpc_call *call)
{
    if (call->busy > 0 || !call->stream_closed)
        return;
    if (call->state == CALL_DISPATCHED)
        return; /* the handler still owns it */
    rtc_list_del(&call->node);
    rtc_list_del(&call->drain_node);
    if (call->timer_used) {
        call->timer_used = false;
        uv_close((uv_handle_t *)&call->timer, call_timer_closed);
    } else {
        call_free_mem(call);
    }
}

/* Tell the handler, once. */
static void call_cancel(rtc_grpc_call *call, int status, const char *why)
{
    if (call->cancelled)
        return;
    call->cancelled = true;
    if (call->timer_used)
        uv_timer_stop(&call->timer);
    if (call->state != CALL_DISPATCHED)
        return;
    rtc_debug("call cancelled", "method", call->path, "reason", why);
    if (call->cancel_fn) {
        call->busy++;
        call->cancel_fn(call, call->cancel_ud);
        call->busy--;
    }
    (void)status;
}

static void deadline_cb(uv_timer_t *t)
{
    rtc_grpc_call *call = t->data;
    if (call->cancelled || call->state == CALL_COMPLETED)
        return;
    /* libuv timers run on the loop's cached clock: never fire early. */
    uint64_t now = rtc_now_ms();
    if (now < call->deadline) {
        uv_timer_start(&call->timer, deadline_cb, call->deadline - now, 0);
        return;
    }
    conn *c = call->conn;
    call->busy++;
    call_cancel(call, RTC_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
    call->busy--;
    /* The client is told DEADLINE_EXCEEDED; the handler's reply, whenever it
     * comes, is dropped. */
    if (c && !call->stream_closed && !c->closing) {
        call->deadline_hit = true;
        set_status(call, RTC_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
        count_call(call, RTC_GRPC_DEADLINE_EXCEEDED);
        if (!call->headers_sent) {
            submit_trailers_only(call, "200");
        } else {
            /* Output already started. At a message boundary with flow-control
             * window left, drop what is queued and send the trailers; inside a
             * message or flow-blocked, reset the stream instead. */
            bool boundary = call_at_boundary(call);
            bool window = nghttp2_session_get_stream_remote_window_size(c->h2, call->stream_id) > 0;
            c->pending -= call_pending(call);
            call->out.len = call->out_off = call->frame_off = 0;
            call->finished = true;
            if (boundary && window) {
                if (call->deferred) {
                    call->deferred = false;
                    nghttp2_session_resume_data(c->h2, call->stream_id);
                }
            } else {
                nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->stream_id,
                                          NGHTTP2_CANCEL);
            }
        }
        conn_mark_dirty(c);
    }
    call_maybe_free(call);
}

static rtc_grpc_call *call_new(conn *c, int32_t stream_id)
{
    rtc_grpc_server *s = c->srv;
    rtc_grpc_call *call;
    if (!rtc_list_empty(&s->call_pool)) {
        call = rtc_container_of(s->call_pool.next, rtc_grpc_call, node);
        rtc_list_del(&call->node);
        s->npool--;
    } else if (!(call = calloc(1, sizeof(*call)))) {
        return NULL;
    }
    call->conn = c;
    call->srv = s;
    call->stream_id = stream_id;
    call->status = RTC_GRPC_OK;
    rtc_buf body = call->deframer.body;
    rtc_grpc_deframer_init(&call->deframer, s->opts.max_recv_message);
    call->deframer.body = body;
    rtc_list_add(&c->calls, &call->node);
    rtc_list_init(&call->drain_node);
    s->ncalls++;
    return call;
}

/* ---- dispatch ------------------------------------------------------------- */

static method *find_method(rtc_grpc_server *s, const char *path)
{
    size_t len = strlen(path);
    for (size_t i = 0; i < s->nmethods; i++) {
        if (s->methods[i].path_len == len && memcmp(s->methods[i].path, path, len) == 0)
            return &s->methods[i];
    }
    return NULL;
}

static void early_error(rtc_grpc_call *call, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void early_error(rtc_grpc_call *call, int status, const char *fmt, ...)
{
    if (call->early_status)
        return;
    call->early_status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->early_message, sizeof(call->early_message), fmt, ap);
    va_end(ap);
}

/* Request headers complete: validate them. Errors are answered at once,
 * before any request body is read. Returns true when the call goes on. */
static bool headers_done(rtc_grpc_call *call)
{
    rtc_grpc_server *s = call->srv;
    const char *http_status = "200";
    if (call->headers_too_big) {
        char lim[24];
        snprintf(lim, sizeof(lim), "%u", s->opts.max_header_list);
        early_error(call, RTC_GRPC_RESOURCE_EXHAUSTED, "request metadata larger than %s bytes",
                    lim);
    } else if (strcmp(call->method_hdr, "POST") != 0) {
        early_error(call, RTC_GRPC_UNIMPLEMENTED, "HTTP method %s not allowed; use POST",
                    call->method_hdr);
        http_status = "405";
    } else if (!call->path) {
        early_error(call, RTC_GRPC_INTERNAL, "missing :path");
    } else if (!call->content_type || strncmp(call->content_type, "application/grpc", 16) != 0 ||
               (call->content_type[16] != 0 && call->content_type[16] != '+' &&
                call->content_type[16] != ';')) {
        early_error(call, RTC_GRPC_INTERNAL, "invalid content-type '%s'; want application/grpc",
                    call->content_type ? call->content_type : "");
        http_status = "415";
    } else if (call->encoding && strcmp(call->encoding, "identity") != 0) {
        early_error(call, RTC_GRPC_UNIMPLEMENTED, "grpc-encoding '%s' not supported",
                    call->encoding);
    } else if (call->too_many_md) {
        early_error(call, RTC_GRPC_RESOURCE_EXHAUSTED, "too many metadata entries");
    } else {
        call->m = find_method(s, call->path);
        if (!call->m)
            early_error(call, RTC_GRPC_UNIMPLEMENTED, "unknown method %s", call->path);
        else if (!call->m->fn)
            early_error(call, RTC_GRPC_UNIMPLEMENTED, "method %s is not implemented", call->path);
    }
    if (!call->early_status && call->timeout_hdr) {
        uint64_t ms;
        if (rtc_grpc_timeout_parse(call->timeout_hdr, strlen(call->timeout_hdr), &ms) < 0)
            early_error(call, RTC_GRPC_INVALID_ARGUMENT, "malformed grpc-timeout '%s'",
                        call->timeout_hdr);
        else
            call->deadline = rtc_now_ms() + ms;
    }
    if (!call->early_status && s->shutting_down)
        early_error(call, RTC_GRPC_UNAVAILABLE, "server is shutting down");
    if (call->early_status) {
        set_status(call, call->early_status, call->early_message);
        count_call(call, call->early_status);
        call->state = CALL_COMPLETED;
        call->finished = true;
        submit_trailers_only(call, http_status);
        /* The rest of the request body is read and dropped. (An
         * RST_STREAM(NO_ERROR) here would save the bytes, but grpc-core
         * clients report it as INTERNAL instead of the status.) */
        return false;
    }
    call->started = rtc_now_ms();
    if (call->deadline) {
        uv_timer_init(s->loop, &call->timer);
        call->timer.data = call;
        call->timer_used = true;
        uint64_t now = rtc_now_ms();
        uv_timer_start(&call->timer, deadline_cb, call->deadline > now ? call->deadline - now : 0,
                       0);
    }
    return true;
}

static int on_request_message(void *ud, const uint8_t *data, size_t len, bool compressed)
{
    rtc_grpc_call *call = ud;
    if (compressed) {
        early_error(call, RTC_GRPC_INTERNAL,
                    "compressed message without a negotiated grpc-encoding");
        return RTC_EPROTO;
    }
    if (++call->nmsgs > 1) {
        early_error(call, RTC_GRPC_UNIMPLEMENTED,
                    "client streaming is not supported: more than one request message");
        return RTC_EPROTO;
    }
    if (rtc_buf_append(&call->req_bytes, data, len) < 0)
        return RTC_ENOMEM;
    return 0;
}

/* Request complete: answer a receive error, or decode and run the handler. */
static void request_done(rtc_grpc_call *call)
{
    if (call->state != CALL_HEADERS)
        return;
    if (call->cancelled) { /* deadline passed before the request ended */
        call->state = CALL_COMPLETED;
        return;
    }
    if (!call->early_status && call->nmsgs == 0)
        early_error(call, RTC_GRPC_UNIMPLEMENTED, "request stream ended without a message");
    if (!call->early_status && !rtc_grpc_deframer_idle(&call->deframer))
        early_error(call, RTC_GRPC_INTERNAL, "request stream ended inside a message");
    if (!call->early_status) {
        call->req = protobuf_c_message_unpack(call->m->input, NULL, call->req_bytes.len,
                                              call->req_bytes.len ? call->req_bytes.data
                                                                  : (const uint8_t *)"");
        if (!call->req)
            early_error(call, RTC_GRPC_INVALID_ARGUMENT, "request is not a valid %s",
                        call->m->input->name);
    }
    if (call->early_status) {
        set_status(call, call->early_status, call->early_message);
        count_call(call, call->early_status);
        call->state = CALL_COMPLETED;
        if (call->timer_used)
            uv_timer_stop(&call->timer);
        emit_finish(call, "200");
        return;
    }
    rtc_buf_free(&call->req_bytes);
    call->state = CALL_DISPATCHED;
    if (call->srv->m_streams)
        rtc_metric_inc(call->srv->m_streams, 1);
    call->busy++;
    call->m->fn(call, call->req, call->m->ud);
    call->busy--;
}

/* ---- nghttp2 callbacks ----------------------------------------------------- */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
    conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    rtc_grpc_call *call = call_new(c, frame->hd.stream_id);
    if (!call)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    call->stream_closed = false;
    nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, call);
    return 0;
}

static int on_header(nghttp2_session *h2, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    rtc_grpc_call *call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!call)
        return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0; /* request trailers: nothing to read in them */
    call->header_bytes += namelen + valuelen + 32;
    if (call->header_bytes > c->srv->opts.max_header_list) {
        call->headers_too_big = true;
        return 0;
    }
    if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        size_t n =
            valuelen < sizeof(call->method_hdr) - 1 ? valuelen : sizeof(call->method_hdr) - 1;
        memcpy(call->method_hdr, value, n);
        call->method_hdr[n] = 0;
        return 0;
    }
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        free(call->path);
        call->path = strndup((const char *)value, valuelen);
        return call->path ? 0 : NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    if (namelen > 0 && name[0] == ':')
        return 0; /* :scheme, :authority — nghttp2 validated them */
    if (call->nmd >= MAX_METADATA) {
        call->too_many_md = true;
        return 0;
    }
    /* Store as offsets into the arena; pointers are fixed once headers end
     * (the arena may move while it grows). */
    size_t koff = call->strings.len;
    if (rtc_buf_append(&call->strings, name, namelen) < 0 ||
        rtc_buf_append(&call->strings, "", 1) < 0 ||
        rtc_buf_append(&call->strings, value, valuelen) < 0 ||
        rtc_buf_append(&call->strings, "", 1) < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    call->md[call->nmd].key = (const char *)(uintptr_t)koff;
    call->md[call->nmd].value = (const char *)(uintptr_t)(koff + namelen + 1);
    call->nmd++;
    return 0;
}

static void fix_metadata(rtc_grpc_call *call)
{
    const char *base = (const char *)call->strings.data;
    size_t out = 0;
    for (size_t i = 0; i < call->nmd; i++) {
        const char *k = base + (uintptr_t)call->md[i].key;
        const char *v = base + (uintptr_t)call->md[i].value;
        if (strcmp(k, "content-type") == 0)
            call->content_type = v;
        else if (strcmp(k, "grpc-encoding") == 0)
            call->encoding = v;
        else if (strcmp(k, "grpc-timeout") == 0)
            call->timeout_hdr = v;
        if (strcmp(k, "content-type") == 0 || strcmp(k, "te") == 0 || strncmp(k, "grpc-", 5) == 0)
            continue; /* protocol headers, not application metadata */
        call->md[out].key = k;
        call->md[out].value = v;
        out++;
    }
    call->nmd = out;
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags, int32_t stream_id, const uint8_t *data,
                         size_t len, void *user_data)
{
    rtc_grpc_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!call || call->state != CALL_HEADERS || call->early_status)
        return 0;
    int rc = rtc_grpc_deframer_feed(&call->deframer, data, len, on_request_message, call);
    if (rc == RTC_ETOOBIG) {
        char lim[32];
        snprintf(lim, sizeof(lim), "%zu", call->srv->opts.max_recv_message);
        early_error(call, RTC_GRPC_RESOURCE_EXHAUSTED, "request message larger than max (%s bytes)",
                    lim);
    } else if (rc == RTC_EPROTO && !call->early_status) {
        early_error(call, RTC_GRPC_INTERNAL, "malformed message framing");
    } else if (rc < 0 && !call->early_status) {
        early_error(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (call->early_status) {
        /* Answer now; do not wait for (or buffer) the rest. */
        request_done(call);
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *frame, void *user_data)
{
    conn *c = user_data;
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK) &&
        !c->got_settings) {
        c->got_settings = true;
        uv_timer_stop(&c->timer);
        if (c->srv->opts.idle_timeout_ms)
            uv_timer_start(&c->timer, conn_timer_cb, c->srv->opts.idle_timeout_ms,
                           c->srv->opts.idle_timeout_ms);
        return 0;
    }
    rtc_grpc_call *call = NULL;
    if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA)
        call = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
    if (!call)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        fix_metadata(call);
        if (!headers_done(call))
            return 0;
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && call->state == CALL_HEADERS)
        request_done(call);
    return 0;
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    rtc_grpc_call *call = nghttp2_session_get_stream_user_data(h2, stream_id);
    if (!call)
        return 0;
    call->stream_closed = true;
    conn *c = call->conn;
    if (c)
        c->pending -= call_pending(call);
    call->out_off = call->out.len = call->frame_off = 0;
    if (call->state == CALL_DISPATCHED) {
        if (call->srv->m_streams)
            rtc_metric_inc(call->srv->m_streams, -1);
        call_cancel(call, RTC_GRPC_CANCELLED,
                    error_code == NGHTTP2_NO_ERROR ? "stream closed" : "client reset the stream");
    }
    call_maybe_free(call);
    return 0;
}

static int on_error(nghttp2_session *h2, int lib_error_code, const char *msg, size_t len,
                    void *user_data)
{
    conn *c = user_data;
    rtc_debug("http2 error", "peer", c->peer, "error", nghttp2_strerror(lib_error_code));
    return 0;
}

/* ---- connections ------------------------------------------------------------ */

static void conn_handles_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    rtc_grpc_server *s = c->srv;
    nghttp2_session_del(c->h2);
    rtc_buf_free(&c->wbuf);
    free(c);
    s->nconns--;
    if (s->m_conns)
        rtc_metric_set(s->m_conns, (double)s->nconns);
    maybe_done(s);
    server_maybe_release(s);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    rtc_debug("connection closed", "peer", c->peer);
    if (!rtc_list_empty(&c->dirty_node))
        rtc_list_del(&c->dirty_node);
    rtc_list_del(&c->node);
    /* Orphan the calls: their streams are gone. */
    while (!rtc_list_empty(&c->calls)) {
        rtc_grpc_call *call = rtc_container_of(c->calls.next, rtc_grpc_call, node);
        rtc_list_del(&call->node);
        rtc_list_init(&call->node);
        rtc_list_del(&call->drain_node);
        call->drain_wanted = false;
        call->conn = NULL;
        call->stream_closed = true;
        if (call->state == CALL_DISPATCHED && call->srv->m_streams)
            rtc_metric_inc(call->srv->m_streams, -1);
        call->busy++;
        call_cancel(call, RTC_GRPC_UNAVAILABLE, "connection closed");
        call->busy--;
        call_maybe_free(call);
    }
    c->open_handles = 2;
    uv_close((uv_handle_t *)&c->tcp, conn_handles_closed);
    uv_close((uv_handle_t *)&c->timer, conn_handles_closed);
}

static void on_write(uv_write_t *req, int status);

static void conn_mark_dirty(conn *c)
{
    if (c->closing || !rtc_list_empty(&c->dirty_node))
        return;
    rtc_list_add(&c->srv->dirty, &c->dirty_node);
    if (!uv_is_active((uv_handle_t *)&c->srv->flusher))
        uv_idle_start(&c->srv->flusher, flusher_cb);
}

/* Only the calls whose output just drained: walking every call here made a
 * pod's flush O(open streams) (73 % of its CPU with a bridge's 5,000
 * Subscribe streams on one connection). The due list is taken first, so a
 * callback that queues and drains again is run on a later flush. */
static void run_drain_callbacks(conn *c)
{
    if (rtc_list_empty(&c->draining))
        return;
    rtc_list due;
    rtc_list_init(&due);
    due.next = c->draining.next;
    due.prev = c->draining.prev;
    due.next->prev = &due;
    due.prev->next = &due;
    rtc_list_init(&c->draining);
    while (!rtc_list_empty(&due)) {
        rtc_grpc_call *call = rtc_container_of(due.next, rtc_grpc_call, drain_node);
        rtc_list_del(&call->drain_node);
        call->drain_wanted = false;
        if (call->state == CALL_DISPATCHED && !call->cancelled) {
            call->busy++;
            call->drain_fn(call, call->drain_ud);
            call->busy--;
            call_maybe_free(call);
        }
    }
}

static void conn_flush(conn *c)
{
    while (!c->closing && !c->writing) {
        rtc_buf_reset(&c->wbuf);
        int rv = rtc_h2_collect(c->h2, &c->wbuf, WRITE_BATCH);
        if (rv < 0) {
            rtc_warn("http2 send failed", "peer", c->peer, "error", nghttp2_strerror(rv));
            conn_close(c);
            return;
        }
        if (c->wbuf.len == 0) {
            if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
                conn_close(c);
            else
                run_drain_callbacks(c);
            return;
        }
        uv_buf_t b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == (int)c->wbuf.len)
            continue;
        if (n < 0 && n != UV_EAGAIN) {
            conn_close(c);
            return;
        }
        if (n > 0)
            rtc_buf_consume(&c->wbuf, (size_t)n);
        b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.len);
        c->writing = true;
        if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
            c->writing = false;
            conn_close(c);
            return;
        }
    }
}

static void on_write(uv_write_t *req, int status)
{
    conn *c = rtc_container_of(req, conn, wreq);
    c->writing = false;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    conn_flush(c);
}

static void flusher_cb(uv_idle_t *h)
{
    rtc_grpc_server *s = h->data;
    while (!rtc_list_empty(&s->dirty)) {
        conn *c = rtc_container_of(s->dirty.next, conn, dirty_node);
        rtc_list_del(&c->dirty_node);
        conn_flush(c);
    }
    uv_idle_stop(h);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    rtc_grpc_server *s = c->srv;
    /* One read buffer per server: reads are processed synchronously. */
    buf->base = (char *)s->readbuf;
    buf->len = READ_BUF_SIZE;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = stream->data;
    if (c->closing)
        return;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    c->last_active = rtc_now_ms();
    ssize_t rv = nghttp2_session_mem_recv(c->h2, (const uint8_t *)buf->base, (size_t)nread);
    if (rv < 0) {
        rtc_info("closing misbehaving connection", "peer", c->peer, "error",
                 nghttp2_strerror((int)rv));
        if (c->srv->m_conn_errors)
            rtc_metric_inc(c->srv->m_conn_errors, 1);
        /* Try to say why (GOAWAY), then close. */
        if (rv != NGHTTP2_ERR_BAD_CLIENT_MAGIC)
            nghttp2_session_terminate_session(c->h2, NGHTTP2_PROTOCOL_ERROR);
        conn_flush(c);
        if (!c->closing && !c->writing)
            conn_close(c);
        else if (!c->closing)
            uv_read_stop(stream);
        return;
    }
    conn_flush(c);
}

static void conn_timer_cb(uv_timer_t *t)
{
    conn *c = t->data;
    if (!c->got_settings) {
        rtc_info("closing connection: no HTTP/2 preface in time", "peer", c->peer);
        conn_close(c);
        return;
    }
    /* Idle: no call open and nothing read for a whole period. */
    if (rtc_list_empty(&c->calls) &&
        rtc_now_ms() - c->last_active >= c->srv->opts.idle_timeout_ms) {
        rtc_debug("closing idle connection", "peer", c->peer);
        conn_send_goaway(c);
    }
}

static void conn_send_goaway(conn *c)
{
    if (c->goaway_sent || c->closing)
        return;
    c->goaway_sent = true;
    nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    conn_flush(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    rtc_grpc_server *s = server->data;
    if (status < 0)
        return;
    conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->srv = s;
    rtc_list_init(&c->calls);
    rtc_list_init(&c->draining);
    rtc_list_init(&c->dirty_node);
    rtc_list_init(&c->node);
    uv_tcp_init(s->loop, &c->tcp);
    c->tcp.data = c;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    s->nconns++;
    rtc_list_add(&s->conns, &c->node);
    if (s->m_conns)
        rtc_metric_set(s->m_conns, (double)s->nconns);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
        nghttp2_session_server_new2(&c->h2, s->cbs, c, s->h2opt) != 0) {
        conn_close(c);
        return;
    }
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        char ip[48] = "?";
        int port = 0;
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
        snprintf(c->peer, sizeof(c->peer), "%s:%d", ip, port);
    }
    if (s->nconns > s->opts.max_connections || s->shutting_down) {
        rtc_warn("refusing connection", "peer", c->peer, "reason",
                 s->shutting_down ? "shutting down" : "connection limit");
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->opts.max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1024 * 1024},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, s->opts.max_header_list},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    c->last_active = rtc_now_ms();
    uv_timer_start(&c->timer, conn_timer_cb, HANDSHAKE_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
    conn_flush(c);
}

/* ---- server ------------------------------------------------------------------ */

static void handle_closed(uv_handle_t *h)
{
    rtc_grpc_server *s = h->data;
    s->open_handles--;
    if (h->type == UV_TCP)
        s->listeners_open--;
    maybe_done(s);
    server_maybe_release(s);
}

/* The memory goes when rtc_grpc_server_free was called and the last
 * handle, connection and call are gone (handlers may finish calls late). */
static void server_maybe_release(rtc_grpc_server *s)
{
    if (!s->freed_pending || s->open_handles > 0 || s->nconns > 0 || s->ncalls > 0)
        return;
    while (!rtc_list_empty(&s->call_pool)) {
        rtc_grpc_call *call = rtc_container_of(s->call_pool.next, rtc_grpc_call, node);
        rtc_list_del(&call->node);
        rtc_grpc_deframer_free(&call->deframer);
        rtc_buf_free(&call->req_bytes);
        rtc_buf_free(&call->strings);
        rtc_buf_free(&call->out);
        rtc_buf_free(&call->resp_headers);
        rtc_buf_free(&call->resp_trailers);
        free(call);
    }
    for (size_t i = 0; i < s->nmethods; i++)
        free(s->methods[i].path);
    free(s->methods);
    for (size_t i = 0; i < s->nhealth; i++)
        free(s->health[i].service);
    free(s->health);
    while (!rtc_list_empty(&s->watchers)) {
        watcher *w = rtc_container_of(s->watchers.next, watcher, node);
        rtc_list_del(&w->node);
        free(w->service);
        free(w);
    }
    if (s->cbs)
        nghttp2_session_callbacks_del(s->cbs);
    if (s->h2opt)
        nghttp2_option_del(s->h2opt);
    free(s->readbuf);
    free(s->name);
    free(s);
}

int rtc_grpc_server_new(uv_loop_t *loop, const rtc_grpc_server_options *opts, rtc_metrics *metrics,
                        rtc_grpc_server **out)
{
    rtc_grpc_server *s = calloc(1, sizeof(*s));
    if (!s)
        return RTC_ENOMEM;
    s->loop = loop;
    if (opts)
        s->opts = *opts;
    else
        rtc_grpc_server_options_init(&s->opts);
    rtc_grpc_server_options def;
    rtc_grpc_server_options_init(&def);
    if (!s->opts.max_recv_message)
        s->opts.max_recv_message = def.max_recv_message;
    if (!s->opts.max_send_message)
        s->opts.max_send_message = def.max_send_message;
    if (!s->opts.max_concurrent_streams)
        s->opts.max_concurrent_streams = def.max_concurrent_streams;
    if (!s->opts.max_header_list)
        s->opts.max_header_list = def.max_header_list;
    if (!s->opts.max_conn_pending)
        s->opts.max_conn_pending = def.max_conn_pending;
    if (!s->opts.max_connections)
        s->opts.max_connections = def.max_connections;
    s->name = strdup(s->opts.name ? s->opts.name : "rtc");
    s->opts.name = s->name;
    s->readbuf = malloc(READ_BUF_SIZE);
    rtc_list_init(&s->conns);
    rtc_list_init(&s->dirty);
    rtc_list_init(&s->watchers);
    rtc_list_init(&s->call_pool);
    if (!s->name || !s->readbuf)
        goto fail;

    if (nghttp2_session_callbacks_new(&s->cbs) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(s->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(s->cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(s->cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(s->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(s->cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(s->cbs, on_error);
    if (nghttp2_option_new(&s->h2opt) != 0)
        goto fail;
    nghttp2_option_set_max_send_header_block_length(s->h2opt, 64 * 1024);
    nghttp2_option_set_max_outbound_ack(s->h2opt, 1000);
    nghttp2_option_set_max_settings(s->h2opt, 32);
#ifdef RTC_HAVE_NGHTTP2_RESET_RATE_LIMIT
    /* Rapid reset (CVE-2023-44487): at most 1000 resets in a burst, then 33/s. */
    nghttp2_option_set_stream_reset_rate_limit(s->h2opt, 1000, 33);
#endif
#ifdef RTC_HAVE_NGHTTP2_MAX_CONTINUATIONS
    /* CONTINUATION flood (CVE-2024-27316). */
    nghttp2_option_set_max_continuations(s->h2opt, 8);
#endif

    uv_idle_init(loop, &s->flusher);
    s->flusher.data = s;
    s->open_handles++;
    uv_timer_init(loop, &s->drain_timer);
    s->drain_timer.data = s;
    s->open_handles++;

    s->metrics = metrics;
    if (metrics) {
        static const char *const call_labels[] = {"method", "code"};
        static const char *const method_label[] = {"method"};
        s->m_calls = rtc_metrics_family(metrics, RTC_METRIC_COUNTER, "rtc_grpc_server_calls_total",
                                        "gRPC calls handled, by method and status code.", 2,
                                        call_labels, NULL, 0);
        s->m_latency = rtc_metrics_family(
            metrics, RTC_METRIC_HISTOGRAM, "rtc_grpc_server_call_duration_seconds",
            "Time from request to status, by method.", 1, method_label, NULL, 0);
        s->m_conns =
            rtc_metrics_gauge(metrics, "rtc_grpc_server_connections", "Open HTTP/2 connections.");
        s->m_streams = rtc_metrics_gauge(metrics, "rtc_grpc_server_active_calls",
                                         "Calls whose handler is running (includes open streams).");
        s->m_conn_errors = rtc_metrics_counter(metrics, "rtc_grpc_server_protocol_errors_total",
                                               "Connections closed for HTTP/2 protocol errors.");
    }

    health_entry *h = calloc(1, sizeof(*h));
    if (!h)
        goto fail;
    h->service = strdup("");
    h->status = RTC_GRPC_HEALTH_SERVING;
    s->health = h;
    s->nhealth = 1;
    if (!h->service)
        goto fail;
    health_register(s);
    *out = s;
    return 0;
fail:
    rtc_grpc_server_free(s);
    return RTC_ENOMEM;
}

static int add_method(rtc_grpc_server *s, const ProtobufCServiceDescriptor *svc,
                      const ProtobufCMethodDescriptor *md)
{
    char path[512];
    int n = snprintf(path, sizeof(path), "/%s/%s", svc->name, md->name);
    if (n < 0 || (size_t)n >= sizeof(path))
        return RTC_EINVAL;
    if (find_method(s, path))
        return 0;
    if (s->nmethods == s->methods_cap) {
        size_t cap = s->methods_cap ? s->methods_cap * 2 : 16;
        method *nm = realloc(s->methods, cap * sizeof(*nm));
        if (!nm)
            return RTC_ENOMEM;
        s->methods = nm;
        s->methods_cap = cap;
    }
    method *m = &s->methods[s->nmethods];
    memset(m, 0, sizeof(*m));
    m->path = strdup(path);
    if (!m->path)
        return RTC_ENOMEM;
    m->path_len = (size_t)n;
    m->input = md->input;
    s->nmethods++;
    return 0;
}

int rtc_grpc_server_add_service(rtc_grpc_server *s, const ProtobufCServiceDescriptor *svc)
{
    for (unsigned i = 0; i < svc->n_methods; i++) {
        int rc = add_method(s, svc, &svc->methods[i]);
        if (rc < 0)
            return rc;
    }
    return rtc_grpc_server_set_health(s, svc->name, RTC_GRPC_HEALTH_SERVING);
}

int rtc_grpc_server_handle(rtc_grpc_server *s, const ProtobufCServiceDescriptor *svc,
                           const char *name, rtc_grpc_method_kind kind, rtc_grpc_handler_fn fn,
                           void *ud)
{
    char path[512];
    snprintf(path, sizeof(path), "/%s/%s", svc->name, name);
    method *m = find_method(s, path);
    if (!m)
        return RTC_ENOTFOUND;
    m->kind = kind;
    m->fn = fn;
    m->ud = ud;
    return 0;
}

int rtc_grpc_server_listen(rtc_grpc_server *s, const char *host, uint16_t port)
{
    if (s->nlisteners >= sizeof(s->listeners) / sizeof(s->listeners[0]))
        return RTC_ERANGE;
    struct sockaddr_storage ss;
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return RTC_EINVAL;
    uv_tcp_t *t = &s->listeners[s->nlisteners];
    uv_tcp_init(s->loop, t);
    t->data = s;
    s->open_handles++;
    s->listeners_open++;
    s->nlisteners++;
    int rc = uv_tcp_bind(t, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)t, 1024, on_connection);
    if (rc != 0) {
        rtc_error("cannot listen", "addr", host, "error", uv_strerror(rc));
        uv_close((uv_handle_t *)t, handle_closed);
        return RTC_EIO;
    }
    struct sockaddr_storage bound;
    int blen = sizeof(bound);
    if (uv_tcp_getsockname(t, (struct sockaddr *)&bound, &blen) == 0) {
        uint16_t p = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                                 : ntohs(((struct sockaddr_in *)&bound)->sin_port);
        if (!s->port)
            s->port = p;
    }
    return 0;
}

uint16_t rtc_grpc_server_port(const rtc_grpc_server *s)
{
    return s->port;
}

static void maybe_done(rtc_grpc_server *s)
{
    if (!s->shutting_down || s->done_called || s->nconns > 0 || s->listeners_open > 0)
        return;
    s->done_called = true;
    uv_timer_stop(&s->drain_timer);
    if (s->done)
        s->done(s->done_ud);
}

static void drain_deadline(uv_timer_t *t)
{
    rtc_grpc_server *s = t->data;
    if (s->nconns > 0)
        rtc_warn("drain deadline reached; closing remaining connections");
    while (!rtc_list_empty(&s->conns)) {
        conn *c = rtc_container_of(s->conns.next, conn, node);
        conn_close(c);
    }
}

void rtc_grpc_server_shutdown(rtc_grpc_server *s, uint64_t drain_ms, void (*done)(void *ud),
                              void *ud)
{
    if (s->shutting_down)
        return;
    s->done = done;
    s->done_ud = ud;
    for (size_t i = 0; i < s->nhealth; i++)
        rtc_grpc_server_set_health(s, s->health[i].service, RTC_GRPC_HEALTH_NOT_SERVING);
    s->shutting_down = true;
    health_watchers_end(s);
    for (size_t i = 0; i < s->nlisteners; i++) {
        if (!uv_is_closing((uv_handle_t *)&s->listeners[i]))
            uv_close((uv_handle_t *)&s->listeners[i], handle_closed);
    }
    rtc_list *l = s->conns.next;
    while (l != &s->conns) {
        conn *c = rtc_container_of(l, conn, node);
        l = l->next;
        conn_send_goaway(c);
    }
    uv_timer_start(&s->drain_timer, drain_deadline, drain_ms, 0);
    maybe_done(s);
}

void rtc_grpc_server_free(rtc_grpc_server *s)
{
    if (!s)
        return;
    s->freed_pending = true;
    s->done = NULL;
    while (!rtc_list_empty(&s->conns))
        conn_close(rtc_container_of(s->conns.next, conn, node));
    for (size_t i = 0; i < s->nlisteners; i++) {
        if (!uv_is_closing((uv_handle_t *)&s->listeners[i]))
            uv_close((uv_handle_t *)&s->listeners[i], handle_closed);
    }
    if (s->flusher.loop && !uv_is_closing((uv_handle_t *)&s->flusher))
        uv_close((uv_handle_t *)&s->flusher, handle_closed);
    if (s->drain_timer.loop && !uv_is_closing((uv_handle_t *)&s->drain_timer))
        uv_close((uv_handle_t *)&s->drain_timer, handle_closed);
    server_maybe_release(s);
}

/* ---- the call API ------------------------------------------------------------- */

const char *rtc_grpc_call_path(const rtc_grpc_call *c)
{
    return c->path;
}

const char *rtc_grpc_call_peer(const rtc_grpc_call *c)
{
    return c->conn ? c->conn->peer : "";
}

const char *rtc_grpc_call_metadata(const rtc_grpc_call *c, const char *key)
{
    for (size_t i = 0; i < c->nmd; i++) {
        if (strcmp(c->md[i].key, key) == 0)
            return c->md[i].value;
    }
    return NULL;
}

size_t rtc_grpc_call_metadata_all(const rtc_grpc_call *c, const rtc_grpc_metadata **out)
{
    *out = c->md;
    return c->nmd;
}

uint64_t rtc_grpc_call_deadline(const rtc_grpc_call *c)
{
    return c->deadline;
}

bool rtc_grpc_call_cancelled(const rtc_grpc_call *c)
{
    return c->cancelled;
}

void rtc_grpc_call_on_cancel(rtc_grpc_call *c, void (*fn)(rtc_grpc_call *, void *), void *ud)
{
    c->cancel_fn = fn;
    c->cancel_ud = ud;
}

void rtc_grpc_call_on_drain(rtc_grpc_call *c, void (*fn)(rtc_grpc_call *, void *), void *ud)
{
    c->drain_fn = fn;
    c->drain_ud = ud;
}

int rtc_grpc_call_add_header(rtc_grpc_call *c, const char *key, const char *value)
{
    if (c->headers_sent || c->state != CALL_DISPATCHED)
        return RTC_ECLOSED;
    return kv_append(&c->resp_headers, key, value);
}

int rtc_grpc_call_add_trailer(rtc_grpc_call *c, const char *key, const char *value)
{
    if (c->state != CALL_DISPATCHED)
        return RTC_ECLOSED;
    return kv_append(&c->resp_trailers, key, value);
}

size_t rtc_grpc_call_pending(const rtc_grpc_call *c)
{
    return call_pending(c);
}

int rtc_grpc_call_send(rtc_grpc_call *call, const ProtobufCMessage *msg)
{
    if (call->state != CALL_DISPATCHED || call->cancelled || !call->conn || call->stream_closed)
        return RTC_ECLOSED;
    conn *c = call->conn;
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > call->srv->opts.max_send_message || len > UINT32_MAX)
        return RTC_ETOOBIG;
    if (c->pending + len + RTC_GRPC_FRAME_HEADER_LEN > call->srv->opts.max_conn_pending) {
        /* A peer that does not read its streams: give up on this one. */
        rtc_warn("slow consumer: resetting stream", "peer", c->peer, "method", call->path);
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->stream_id,
                                  NGHTTP2_ENHANCE_YOUR_CALM);
        conn_mark_dirty(c);
        return RTC_ECLOSED;
    }
    /* Compact before growing when most of the buffer is already sent. */
    if (call->out_off > 0 && call->out_off >= call->out.len / 2) {
        call_at_boundary(call); /* moves frame_off to or past out_off */
        call->frame_off -= call->out_off;
        rtc_buf_consume(&call->out, call->out_off);
        call->out_off = 0;
    }
    if (rtc_buf_reserve(&call->out, RTC_GRPC_FRAME_HEADER_LEN + len) < 0)
        return RTC_ENOMEM;
    uint8_t *p = call->out.data + call->out.len;
    rtc_grpc_frame_header(p, false, (uint32_t)len);
    protobuf_c_message_pack(msg, p + RTC_GRPC_FRAME_HEADER_LEN);
    call->out.len += RTC_GRPC_FRAME_HEADER_LEN + len;
    c->pending += RTC_GRPC_FRAME_HEADER_LEN + len;
    if (!call->headers_sent) {
        if (submit_headers(call) < 0)
            return RTC_EIO;
    } else if (call->deferred) {
        call->deferred = false;
        nghttp2_session_resume_data(c->h2, call->stream_id);
    }
    conn_mark_dirty(c);
    return 0;
}

int rtc_grpc_call_finish(rtc_grpc_call *call, int status, const char *message)
{
    if (call->state != CALL_DISPATCHED)
        return RTC_ECLOSED;
    call->state = CALL_COMPLETED;
    if (call->srv->m_streams && !call->stream_closed)
        rtc_metric_inc(call->srv->m_streams, -1);
    if (call->timer_used)
        uv_timer_stop(&call->timer);
    int rc = 0;
    if (!call->deadline_hit) {
        if (!call->cancelled && call->conn) {
            rc = set_status(call, status, message);
            count_call(call, call->status);
            emit_finish(call, "200");
        } else {
            count_call(call, RTC_GRPC_CANCELLED);
        }
    }
    call_maybe_free(call);
    return rc;
}

int rtc_grpc_call_reply(rtc_grpc_call *call, const ProtobufCMessage *msg)
{
    int rc = rtc_grpc_call_send(call, msg);
    if (rc == RTC_ETOOBIG) {
        return rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED,
                                    "response message larger than the server's limit");
    }
    if (rc < 0 && rc != RTC_ECLOSED) {
        rtc_grpc_call_finish(call, RTC_GRPC_INTERNAL, "cannot send response");
        return rc;
    }
    return rtc_grpc_call_finish(call, RTC_GRPC_OK, NULL);
}

/* ---- grpc.health.v1.Health ------------------------------------------------------ */

static health_entry *health_find(rtc_grpc_server *s, const char *service)
{
    for (size_t i = 0; i < s->nhealth; i++) {
        if (strcmp(s->health[i].service, service) == 0)
            return &s->health[i];
    }
    return NULL;
}

static void health_send(rtc_grpc_call *call, int status)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    rtc_grpc_call_send(call, &resp.base);
}

int rtc_grpc_server_set_health(rtc_grpc_server *s, const char *service, int status)
{
    if (!service || (status != RTC_GRPC_HEALTH_SERVING && status != RTC_GRPC_HEALTH_NOT_SERVING))
        return RTC_EINVAL;
    if (s->shutting_down)
        return 0; /* stays NOT_SERVING */
    health_entry *h = health_find(s, service);
    if (!h) {
        health_entry *nh = realloc(s->health, (s->nhealth + 1) * sizeof(*nh));
        if (!nh)
            return RTC_ENOMEM;
        s->health = nh;
        h = &s->health[s->nhealth];
        h->service = strdup(service);
        if (!h->service)
            return RTC_ENOMEM;
        h->status = 0;
        s->nhealth++;
    }
    if (h->status == status)
        return 0;
    h->status = status;
    for (rtc_list *l = s->watchers.next; l != &s->watchers; l = l->next) {
        watcher *w = rtc_container_of(l, watcher, node);
        if (strcmp(w->service, service) == 0)
            health_send(w->call, status);
    }
    return 0;
}

static void health_check(rtc_grpc_call *call, const ProtobufCMessage *req, void *ud)
{
    rtc_grpc_server *s = ud;
    const Grpc__Health__V1__HealthCheckRequest *r =
        (const Grpc__Health__V1__HealthCheckRequest *)req;
    health_entry *h = health_find(s, r->service);
    if (!h) {
        rtc_grpc_call_finish(call, RTC_GRPC_NOT_FOUND, "unknown service");
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)h->status;
    rtc_grpc_call_reply(call, &resp.base);
}

static void watcher_cancel(rtc_grpc_call *call, void *ud)
{
    watcher *w = ud;
    rtc_list_del(&w->node);
    free(w->service);
    free(w);
    rtc_grpc_call_finish(call, RTC_GRPC_CANCELLED, NULL);
}

static void health_watch(rtc_grpc_call *call, const ProtobufCMessage *req, void *ud)
{
    rtc_grpc_server *s = ud;
    const Grpc__Health__V1__HealthCheckRequest *r =
        (const Grpc__Health__V1__HealthCheckRequest *)req;
    watcher *w = calloc(1, sizeof(*w));
    if (!w || !(w->service = strdup(r->service))) {
        free(w);
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->call = call;
    rtc_list_add(&s->watchers, &w->node);
    rtc_grpc_call_on_cancel(call, watcher_cancel, w);
    health_entry *h = health_find(s, r->service);
    health_send(call, h ? h->status
                        : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN);
}

/* On shutdown, after NOT_SERVING went out: end the watches so the drain is
 * not held up by streams that never end on their own. */
static void health_watchers_end(rtc_grpc_server *s)
{
    while (!rtc_list_empty(&s->watchers)) {
        watcher *w = rtc_container_of(s->watchers.next, watcher, node);
        rtc_list_del(&w->node);
        rtc_grpc_call *call = w->call;
        free(w->service);
        free(w);
        rtc_grpc_call_on_cancel(call, NULL, NULL);
        rtc_grpc_call_finish(call, RTC_GRPC_UNAVAILABLE, "server shutting down");
    }
}

static void health_register(rtc_grpc_server *s)
{
    const ProtobufCServiceDescriptor *svc = &grpc__health__v1__health__descriptor;
    rtc_grpc_server_add_service(s, svc);
    rtc_grpc_server_handle(s, svc, "Check", RTC_GRPC_UNARY, health_check, s);
    rtc_grpc_server_handle(s, svc, "Watch", RTC_GRPC_SERVER_STREAMING, health_watch, s);
}

/* gRPC client channel: h2c (prior knowledge) to one or more endpoints.
 *
 * A channel owns N endpoints ("host:port" from opts->targets). Each endpoint
 * keeps at most one current connection, re-established with exponential
 * backoff after a failure or a loss; a connection that got GOAWAY is
 * detached from its endpoint and left to drain its streams while a fresh
 * one is opened. Calls go round robin to READY endpoints (HTTP/2 SETTINGS
 * received and, with health_check, the last grpc.health.v1 Watch answer
 * SERVING). With nothing READY a call waits in a bounded queue while some
 * endpoint is still on its first attempt (or the call asked for
 * wait_for_ready), otherwise it fails UNAVAILABLE.
 *
 * Lifetimes. nghttp2 does no I/O: bytes read from the socket go to
 * nghttp2_session_mem_recv, and nghttp2_session_mem_send output is
 * collected into one write buffer per connection. User callbacks run from
 * inside nghttp2 callbacks, and user code may call back into the channel
 * (start, cancel, even close), so:
 *  - nothing is ever freed synchronously: a call is freed from the close
 *    callback of its timer, a connection from the close callbacks of its
 *    handles (which is also where its nghttp2 session is deleted), the
 *    channel when its reference count (one per live handle, request, call
 *    and connection, plus one while open) drops to zero;
 *  - a call stays allocated while nghttp2 may still hand its pointer back
 *    (stream_live: until on_stream_close or the session dies);
 *  - public entry points never re-enter nghttp2_session_mem_send: they mark
 *    the connection, and an idle handle (active only while there is such
 *    work, so the loop does not block meanwhile) flushes it and re-routes
 *    queued calls.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rtc/config.h"
#include "rtc/grpc.h"
#include "rtc/log.h"

#include "h2out.h"

#define CLIENT_USER_AGENT      "rtc-grpc/0.1"
#define CLIENT_MAX_ENDPOINTS   64
#define CLIENT_MAX_QUEUED      10000
#define CLIENT_STREAM_WINDOW   (1 << 20)  /* SETTINGS_INITIAL_WINDOW_SIZE */
#define CLIENT_CONN_WINDOW     (16 << 20) /* connection-level receive window */
#define CLIENT_MAX_HEADER_LIST (64 << 10) /* response headers + trailers per call */
#define CLIENT_WRITE_BATCH     (1 << 20)  /* bytes collected per uv_write */
#define CLIENT_READ_BUF        (64 << 10)
#define CLIENT_STOP            (-1000) /* deframer callback: the call is over */

typedef struct conn conn;
typedef struct endpoint endpoint;

typedef struct call_list {
    rtc_grpc_client_call *head, *tail;
    size_t n;
} call_list;

typedef struct md_list {
    rtc_grpc_metadata *v; /* keys and values individually malloc'd */
    size_t n, cap;
    size_t bytes;
} md_list;

enum { TIMER_DEADLINE = 0, TIMER_DEFERRED = 1 };

struct rtc_grpc_client_call {
    rtc_grpc_channel *ch;
    conn *conn;      /* while it owns an HTTP/2 stream */
    endpoint *ep;    /* endpoint carrying it, NULL while queued */
    call_list *list; /* channel queue or conn->calls */
    rtc_grpc_client_call *prev, *next;
    uv_timer_t timer; /* deadline, or the deferred on_close; its close frees the call */
    int timer_mode;

    char *path;
    uint8_t *req; /* framed request message */
    size_t req_len, req_off;
    md_list md;        /* request metadata (copied) */
    uint64_t deadline; /* uv_now() time, 0 = none */
    bool wait_for_ready;
    bool internal; /* health watch: no metrics */

    rtc_grpc_call_callbacks cb;
    void *ud;
    void (*release)(void *ud); /* internal: runs when the call is freed */

    int32_t stream_id;
    bool stream_live; /* nghttp2 may still return this pointer */
    bool done;        /* on_close delivered (or cancelled): no more callbacks */
    bool freeing;     /* uv_close on the timer requested */
    bool silent;      /* cancelled by the user: no on_close */
    bool not_sent;    /* nghttp2 refused to send our HEADERS: safe to retry */
    bool retried;
    bool remote_closed; /* END_STREAM received */

    int http_status;
    int grpc_status; /* -1 = not received */
    bool content_type_ok;
    rtc_buf grpc_message; /* raw (percent-encoded) */
    md_list headers, trailers;
    rtc_grpc_deframer deframer;

    int pending_status; /* TIMER_DEFERRED */
    rtc_buf pending_msg;
};

struct conn {
    rtc_grpc_channel *ch;
    endpoint *ep;
    conn *prev, *next; /* channel->conns */
    uv_tcp_t tcp;
    uv_timer_t keepalive;
    uv_connect_t creq;
    uv_write_t wreq;
    int handles; /* open uv handles; the conn is freed when 0 */
    nghttp2_session *h2;
    bool tcp_connected, h2_ready, goaway, dead;
    bool in_h2;      /* inside mem_recv / mem_send */
    bool writing;    /* wbuf handed to uv_write */
    bool want_flush; /* the idle handle should flush */
    bool ping_out, activity;
    rtc_buf wbuf;
    call_list calls;
    rtc_grpc_client_call *health; /* the Watch stream */
    uint8_t rbuf[CLIENT_READ_BUF];
};

enum { EP_IDLE, EP_RESOLVING, EP_CONNECTING, EP_HANDSHAKE, EP_CONNECTED };
enum { EP_TIMER_CONNECT, EP_TIMER_BACKOFF, EP_TIMER_HEALTH };
enum { HEALTH_UNKNOWN = 0, HEALTH_SERVING = 1, HEALTH_NOT_SERVING = 2 };

struct endpoint {
    rtc_grpc_channel *ch;
    char host[256];
    uint16_t port;
    char name[280]; /* "host:port", also the :authority */
    int state;
    /* TRANSIENT_FAILURE: the last attempt failed (or health is not
     * SERVING). While no endpoint is READY, calls wait if some endpoint is
     * connecting without having failed yet, and fail fast otherwise. */
    bool failing;
    unsigned fail_streak;
    uint64_t up_since; /* uv_now() when it became connected */
    unsigned attempt;  /* generation: stale resolver answers are ignored */
    uint64_t backoff_ms;
    uint64_t health_backoff_ms;
    uv_timer_t timer;
    int timer_mode;
    struct resolve_req *resolving;
    struct sockaddr_storage addrs[8]; /* this attempt's addresses, tried in order */
    size_t naddrs, addr_next;
    conn *conn; /* current connection (not the draining ones) */
    int health;
    char last_error[400];
};

typedef struct resolve_req {
    uv_getaddrinfo_t req;
    endpoint *ep;
    unsigned attempt;
} resolve_req;

struct rtc_grpc_channel {
    uv_loop_t *loop;
    rtc_grpc_channel_options opts;
    char *targets;
    char *health_service;
    endpoint *eps;
    size_t neps;
    size_t rr;
    conn *conns;
    call_list queue;
    uv_idle_t idle; /* runs deferred work (queue, flushes) before the loop blocks */
    bool idle_active;
    bool kick;
    bool closed;
    size_t refs;
    uint64_t rand;
    char last_error[400];
    rtc_metric_family *m_calls, *m_connects;
};

/* ---- small helpers ----------------------------------------------------- */

static void list_push(call_list *l, rtc_grpc_client_call *c)
{
    c->list = l;
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
    l->n++;
}

static void list_remove(rtc_grpc_client_call *c)
{
    call_list *l = c->list;
    if (!l)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    l->n--;
    c->list = NULL;
    c->prev = c->next = NULL;
}

static int md_add(md_list *l, const char *k, size_t kl, const char *v, size_t vl, size_t limit)
{
    if (limit && l->bytes + kl + vl + 32 > limit)
        return RTC_ETOOBIG;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        rtc_grpc_metadata *nv = realloc(l->v, cap * sizeof(*nv));
        if (!nv)
            return RTC_ENOMEM;
        l->v = nv;
        l->cap = cap;
    }
    char *kk = strndup(k, kl);
    char *vv = strndup(v, vl);
    if (!kk || !vv) {
        free(kk);
        free(vv);
        return RTC_ENOMEM;
    }
    l->v[l->n].key = kk;
    l->v[l->n].value = vv;
    l->n++;
    l->bytes += kl + vl + 32;
    return 0;
}

static void md_free(md_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free((char *)l->v[i].key);
        free((char *)l->v[i].value);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static uint64_t ch_random(rtc_grpc_channel *ch)
{
    /* xorshift64*: jitter only, no need for anything stronger. */
    uint64_t x = ch->rand;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    ch->rand = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* d ±20 %. */
static uint64_t jitter(rtc_grpc_channel *ch, uint64_t d)
{
    if (d == 0)
        return 0;
    double f = 0.8 + 0.4 * ((double)(ch_random(ch) >> 11) / (double)(1ULL << 53));
    return (uint64_t)((double)d * f);
}

static uint64_t backoff_next(const rtc_grpc_channel *ch, uint64_t d)
{
    double n = (double)d * 1.6;
    if (n > (double)ch->opts.backoff_max_ms)
        return ch->opts.backoff_max_ms;
    return (uint64_t)n;
}

static int http_to_grpc(int http)
{
    switch (http) {
    case 400:
        return RTC_GRPC_INTERNAL;
    case 401:
        return RTC_GRPC_UNAUTHENTICATED;
    case 403:
        return RTC_GRPC_PERMISSION_DENIED;
    case 404:
        return RTC_GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return RTC_GRPC_UNAVAILABLE;
    default:
        return RTC_GRPC_UNKNOWN;
    }
}

static int h2_error_to_grpc(uint32_t code)
{
    switch (code) {
    case NGHTTP2_REFUSED_STREAM:
        return RTC_GRPC_UNAVAILABLE;
    case NGHTTP2_CANCEL:
        return RTC_GRPC_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return RTC_GRPC_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
        return RTC_GRPC_PERMISSION_DENIED;
    default:
        return RTC_GRPC_INTERNAL;
    }
}

static void ch_unref(rtc_grpc_channel *ch);
static void ch_kick(rtc_grpc_channel *ch);
static void conn_schedule_flush(conn *c);
static void conn_flush(conn *c);
static void conn_fail(conn *c, int status, const char *why);
static void ep_connect(endpoint *ep);
static void conn_start_health(conn *c);
static void dispatch(rtc_grpc_client_call *call, bool sync);
static void ep_timer_cb(uv_timer_t *t);
static void ep_reconnect_after_up(endpoint *ep);
static void ep_down(endpoint *ep, const char *why);
static void ep_start_tcp(endpoint *ep, const struct sockaddr *addr);
static void health_retry_later(endpoint *ep, const char *why);

/* ---- calls ------------------------------------------------------------- */

static void call_closed_cb(uv_handle_t *h)
{
    rtc_grpc_client_call *call = h->data;
    rtc_grpc_channel *ch = call->ch;
    if (call->release)
        call->release(call->ud);
    free(call->path);
    free(call->req);
    md_free(&call->md);
    md_free(&call->headers);
    md_free(&call->trailers);
    rtc_buf_free(&call->grpc_message);
    rtc_buf_free(&call->pending_msg);
    rtc_grpc_deframer_free(&call->deframer);
    free(call);
    ch_unref(ch);
}

static void call_maybe_free(rtc_grpc_client_call *call)
{
    if (!call->done || call->stream_live || call->freeing)
        return;
    call->freeing = true;
    list_remove(call);
    uv_close((uv_handle_t *)&call->timer, call_closed_cb);
}

/* Forget everything received so far (before a transparent retry). */
static void call_reset_response(rtc_grpc_client_call *call)
{
    call->http_status = 0;
    call->grpc_status = -1;
    call->content_type_ok = false;
    call->remote_closed = false;
    call->not_sent = false;
    call->req_off = 0;
    call->stream_id = 0;
    rtc_buf_reset(&call->grpc_message);
    md_free(&call->headers);
    md_free(&call->trailers);
    rtc_grpc_deframer_free(&call->deframer);
    rtc_grpc_deframer_init(&call->deframer, call->ch->opts.max_recv_message);
}

/* The one way a call ends: stops the deadline, resets the stream if it is
 * still open, counts, and delivers on_close unless the user cancelled. */
static void call_complete(rtc_grpc_client_call *call, int status, const char *msg)
{
    if (call->done)
        return;
    rtc_grpc_channel *ch = call->ch;
    call->done = true;
    uv_timer_stop(&call->timer);
    if (call->list == &ch->queue)
        list_remove(call);
    conn *c = call->conn;
    if (c && call->stream_live && !c->dead && !call->remote_closed) {
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
        conn_schedule_flush(c);
    }
    if (!msg)
        msg = "";
    const char *code = rtc_grpc_status_name(status);
    if (!code)
        code = "UNKNOWN";
    if (!call->internal) {
        if (ch->m_calls) {
            const char *labels[2] = {call->path, code};
            rtc_metric *m = rtc_metric_child(ch->m_calls, labels);
            if (m)
                rtc_metric_inc(m, 1);
        }
        if (rtc_log_enabled(RTC_LOG_DEBUG))
            rtc_debug("grpc call done", "path", call->path, "status", code, "message", msg,
                      "endpoint", call->ep ? call->ep->name : "");
    }
    if (!call->silent && call->cb.on_close)
        call->cb.on_close(call->ud, status, msg, call->trailers.v, call->trailers.n);
    call_maybe_free(call);
}

static void call_timer_cb(uv_timer_t *t)
{
    rtc_grpc_client_call *call = t->data;
    if (call->timer_mode == TIMER_DEFERRED)
        call_complete(call, call->pending_status,
                      call->pending_msg.data ? (const char *)call->pending_msg.data : "");
    else
        call_complete(call, RTC_GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
}

/* Fail a call from the next loop iteration (on_close never runs inside
 * rtc_grpc_channel_call). */
static void call_defer_fail(rtc_grpc_client_call *call, int status, const char *msg)
{
    call->pending_status = status;
    rtc_buf_reset(&call->pending_msg);
    if (rtc_buf_append_str(&call->pending_msg, msg) == 0 &&
        rtc_buf_reserve(&call->pending_msg, 1) == 0)
        call->pending_msg.data[call->pending_msg.len] = 0;
    call->timer_mode = TIMER_DEFERRED;
    uv_timer_start(&call->timer, call_timer_cb, 0, 0);
}

static void call_fail(rtc_grpc_client_call *call, bool sync, int status, const char *msg)
{
    if (sync)
        call_defer_fail(call, status, msg);
    else
        call_complete(call, status, msg);
}

/* Delivers one response message to the user. */
static int call_on_message(void *ud, const uint8_t *data, size_t len, bool compressed)
{
    rtc_grpc_client_call *call = ud;
    if (call->done)
        return CLIENT_STOP;
    if (compressed) {
        call_complete(call, RTC_GRPC_INTERNAL, "compressed message without grpc-encoding");
        return CLIENT_STOP;
    }
    if (call->cb.on_message) {
        int r = call->cb.on_message(call->ud, data, len);
        if (call->done)
            return CLIENT_STOP;
        if (r != 0) {
            call_complete(call, RTC_GRPC_CANCELLED, "cancelled by the client");
            return CLIENT_STOP;
        }
    }
    return 0;
}

/* END_STREAM seen: trailers (or Trailers-Only) decide the status. */
static void call_end_of_stream(rtc_grpc_client_call *call)
{
    call->remote_closed = true;
    if (call->grpc_status >= 0) {
        if (call->grpc_status == RTC_GRPC_OK && !rtc_grpc_deframer_idle(&call->deframer)) {
            call_complete(call, RTC_GRPC_INTERNAL, "stream ended inside a message");
            return;
        }
        rtc_buf msg = RTC_BUF_INIT;
        const char *text = "";
        if (call->grpc_message.len > 0 &&
            rtc_grpc_message_decode((const char *)call->grpc_message.data, call->grpc_message.len,
                                    &msg) == 0)
            text = (const char *)msg.data;
        call_complete(call, call->grpc_status, text);
        rtc_buf_free(&msg);
        return;
    }
    char buf[64];
    if (call->http_status != 0 && call->http_status != 200) {
        snprintf(buf, sizeof(buf), "HTTP status %d", call->http_status);
        call_complete(call, http_to_grpc(call->http_status), buf);
        return;
    }
    call_complete(call, RTC_GRPC_INTERNAL, "stream ended without grpc-status");
}

static int parse_grpc_status(const uint8_t *v, size_t len)
{
    if (len == 0 || len > 3)
        return RTC_GRPC_UNKNOWN;
    int n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return RTC_GRPC_UNKNOWN;
        n = n * 10 + (v[i] - '0');
    }
    return n < RTC_GRPC_STATUS_COUNT ? n : RTC_GRPC_UNKNOWN;
}

/* ---- nghttp2 callbacks ------------------------------------------------- */

static ssize_t req_read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    rtc_grpc_client_call *call = src->ptr;
    size_t n = call->req_len - call->req_off;
    if (n > length)
        n = length;
    memcpy(buf, call->req + call->req_off, n);
    call->req_off += n;
    if (call->req_off == call->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header_cb(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    conn *c = ud;
    if (c->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    rtc_grpc_client_call *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!call || call->done)
        return 0;
    bool response = frame->headers.cat == NGHTTP2_HCAT_RESPONSE;
    bool trailers = !response || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM);
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            st = st * 10 + (value[i] >= '0' && value[i] <= '9' ? value[i] - '0' : 0);
        if (response)
            call->http_status = st;
        return 0;
    }
    if (namelen > 0 && name[0] == ':')
        return 0;
    if (namelen == 12 && memcmp(name, "content-type", 12) == 0 && response) {
        call->content_type_ok = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                                (valuelen == 16 || value[16] == '+' || value[16] == ';');
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        call->grpc_status = parse_grpc_status(value, valuelen);
        return 0;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        rtc_buf_reset(&call->grpc_message);
        if (valuelen > CLIENT_MAX_HEADER_LIST ||
            rtc_buf_append(&call->grpc_message, value, valuelen) < 0)
            call_complete(call, RTC_GRPC_RESOURCE_EXHAUSTED, "grpc-message too large");
        return 0;
    }
    /* Bounded like SETTINGS_MAX_HEADER_LIST_SIZE: a misbehaving server
     * cannot grow a call without limit. call_complete resets the stream. */
    if (call->headers.bytes + call->trailers.bytes + namelen + valuelen + 32 >
            CLIENT_MAX_HEADER_LIST ||
        md_add(trailers ? &call->trailers : &call->headers, (const char *)name, namelen,
               (const char *)value, valuelen, 0) < 0)
        call_complete(call, RTC_GRPC_RESOURCE_EXHAUSTED, "response metadata too large");
    return 0;
}

static void conn_on_settings(conn *c)
{
    if (c->h2_ready)
        return;
    c->h2_ready = true;
    endpoint *ep = c->ep;
    rtc_grpc_channel *ch = c->ch;
    if (ep->conn != c)
        return;
    ep->state = EP_CONNECTED;
    ep->backoff_ms = ch->opts.backoff_initial_ms;
    ep->health_backoff_ms = ch->opts.backoff_initial_ms;
    ep->fail_streak = 0;
    ep->failing = false; /* with health_check: connecting until Watch answers */
    ep->up_since = uv_now(ch->loop);
    uv_timer_stop(&ep->timer);
    if (ch->m_connects) {
        const char *labels[2] = {ep->name, "ok"};
        rtc_metric *m = rtc_metric_child(ch->m_connects, labels);
        if (m)
            rtc_metric_inc(m, 1);
    }
    rtc_info("grpc client connected", "endpoint", ep->name);
    if (ch->opts.health_check) {
        ep->health = HEALTH_UNKNOWN;
        conn_start_health(c);
    }
    ch_kick(ch);
}

static void conn_on_goaway(conn *c, const nghttp2_goaway *g)
{
    if (c->goaway)
        return;
    c->goaway = true;
    endpoint *ep = c->ep;
    rtc_grpc_channel *ch = c->ch;
    if (c->health) {
        rtc_grpc_client_call *h = c->health;
        c->health = NULL;
        h->silent = true;
        call_complete(h, RTC_GRPC_CANCELLED, "goaway");
    }
    if (ep->conn != c)
        return;
    char code[32];
    snprintf(code, sizeof(code), "%" PRIu32, g->error_code);
    rtc_info("grpc client goaway", "endpoint", ep->name, "error_code", code);
    ep->conn = NULL;
    if (ep->state != EP_CONNECTED) {
        /* Refused before the handshake completed: a failed attempt. */
        ep_down(ep, "GOAWAY during the HTTP/2 handshake");
        return;
    }
    ep->state = EP_IDLE;
    ep->health = HEALTH_UNKNOWN;
    if (!ch->closed)
        ep_reconnect_after_up(ep);
    ch_kick(ch);
}

static int on_frame_recv_cb(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    conn *c = ud;
    if (c->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    switch (frame->hd.type) {
    case NGHTTP2_SETTINGS:
        if (!(frame->hd.flags & NGHTTP2_FLAG_ACK))
            conn_on_settings(c);
        return 0;
    case NGHTTP2_GOAWAY:
        conn_on_goaway(c, &frame->goaway);
        return 0;
    case NGHTTP2_PING:
        if (frame->hd.flags & NGHTTP2_FLAG_ACK)
            c->ping_out = false;
        return 0;
    case NGHTTP2_HEADERS:
    case NGHTTP2_DATA:
        break;
    default:
        return 0;
    }
    rtc_grpc_client_call *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!call || call->done)
        return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_RESPONSE && !end) {
        if (call->http_status != 200) {
            char buf[64];
            snprintf(buf, sizeof(buf), "HTTP status %d", call->http_status);
            call_complete(call, http_to_grpc(call->http_status), buf);
        } else if (!call->content_type_ok) {
            call_complete(call, RTC_GRPC_UNKNOWN, "response content-type is not application/grpc");
        } else if (call->cb.on_headers) {
            call->cb.on_headers(call->ud, call->headers.v, call->headers.n);
        }
        return 0;
    }
    if (end)
        call_end_of_stream(call);
    return 0;
}

static int on_data_chunk_cb(nghttp2_session *s, uint8_t flags, int32_t stream_id,
                            const uint8_t *data, size_t len, void *ud)
{
    conn *c = ud;
    if (c->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    c->activity = true;
    rtc_grpc_client_call *call = nghttp2_session_get_stream_user_data(s, stream_id);
    if (!call || call->done)
        return 0;
    int rc = rtc_grpc_deframer_feed(&call->deframer, data, len, call_on_message, call);
    if (rc == 0 || rc == CLIENT_STOP)
        return 0;
    char buf[128];
    if (rc == RTC_ETOOBIG) {
        snprintf(buf, sizeof(buf), "received message larger than max (%" PRIu32 " vs. %zu)",
                 call->deframer.body_len, call->deframer.max_message);
        call_complete(call, RTC_GRPC_RESOURCE_EXHAUSTED, buf);
    } else if (rc == RTC_EPROTO) {
        call_complete(call, RTC_GRPC_INTERNAL, "malformed message frame");
    } else {
        call_complete(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    }
    return 0;
}

static int on_stream_close_cb(nghttp2_session *s, int32_t stream_id, uint32_t error_code, void *ud)
{
    conn *c = ud;
    if (c->dead) /* conn_fail already ended every call on it */
        return 0;
    rtc_grpc_client_call *call = nghttp2_session_get_stream_user_data(s, stream_id);
    if (!call || !call->stream_live)
        return 0;
    call->stream_live = false;
    list_remove(call);
    call->conn = NULL;
    if (c->health == call)
        c->health = NULL;
    if (call->done) {
        call_maybe_free(call);
        return 0;
    }
    if (call->not_sent && !call->retried && !call->internal && !call->ch->closed) {
        /* Our HEADERS never left (GOAWAY raced us): the server saw nothing,
         * so send it elsewhere once. */
        call->retried = true;
        call->ep = NULL;
        call_reset_response(call);
        list_push(&call->ch->queue, call);
        ch_kick(call->ch);
        return 0;
    }
    char buf[96];
    if (error_code == NGHTTP2_NO_ERROR)
        snprintf(buf, sizeof(buf), "stream closed without grpc-status");
    else
        snprintf(buf, sizeof(buf), "stream reset: %s", nghttp2_http2_strerror(error_code));
    call_complete(call,
                  error_code == NGHTTP2_NO_ERROR ? RTC_GRPC_INTERNAL : h2_error_to_grpc(error_code),
                  buf);
    return 0;
}

static int on_frame_not_send_cb(nghttp2_session *s, const nghttp2_frame *frame, int err, void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    rtc_grpc_client_call *call = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (call && err == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED)
        call->not_sent = true; /* on_stream_close(REFUSED_STREAM) follows */
    return 0;
}

static int on_error_cb(nghttp2_session *s, int lib_error_code, const char *msg, size_t len,
                       void *ud)
{
    conn *c = ud;
    rtc_debug("grpc client http2 error", "endpoint", c->ep->name, "error", msg);
    return 0;
}

/* ---- connections ------------------------------------------------------- */

static void conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->handles > 0)
        return;
    rtc_grpc_channel *ch = c->ch;
    if (c->prev)
        c->prev->next = c->next;
    else
        ch->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->h2)
        nghttp2_session_del(c->h2);
    rtc_buf_free(&c->wbuf);
    free(c);
    ch_unref(ch);
}

static void conn_schedule_flush(conn *c)
{
    if (c->dead || c->want_flush)
        return;
    c->want_flush = true;
    ch_kick(c->ch); /* starts the idle handle */
}

static void conn_write_cb(uv_write_t *req, int status)
{
    conn *c = req->data;
    c->writing = false;
    rtc_buf_reset(&c->wbuf);
    if (c->dead)
        return;
    if (status < 0) {
        conn_fail(c, RTC_GRPC_UNAVAILABLE, uv_strerror(status));
        return;
    }
    conn_flush(c);
}

/* Move what nghttp2 wants to send into one write. Never called from
 * inside nghttp2 (in_h2 guards it). */
static void conn_flush(conn *c)
{
    if (c->dead || c->writing || c->in_h2 || !c->h2)
        return;
    c->in_h2 = true;
    int err = rtc_h2_collect(c->h2, &c->wbuf, CLIENT_WRITE_BATCH);
    c->in_h2 = false;
    if (c->dead)
        return;
    if (err < 0) {
        conn_fail(c, RTC_GRPC_UNAVAILABLE, nghttp2_strerror(err));
        return;
    }
    if (c->wbuf.len > 0) {
        uv_buf_t b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.len);
        c->wreq.data = c;
        int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, conn_write_cb);
        if (rc < 0) {
            rtc_buf_reset(&c->wbuf);
            conn_fail(c, RTC_GRPC_UNAVAILABLE, uv_strerror(rc));
            return;
        }
        c->writing = true;
        return;
    }
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2))
        conn_fail(c, RTC_GRPC_UNAVAILABLE, "connection finished");
}

static void conn_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    *buf = uv_buf_init((char *)c->rbuf, sizeof(c->rbuf));
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (c->dead)
        return;
    if (nread < 0) {
        conn_fail(c, RTC_GRPC_UNAVAILABLE,
                  nread == UV_EOF ? "connection closed by peer" : uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    c->activity = true;
    c->in_h2 = true;
    ssize_t rv = nghttp2_session_mem_recv(c->h2, (const uint8_t *)buf->base, (size_t)nread);
    c->in_h2 = false;
    if (c->dead)
        return;
    if (rv < 0) {
        conn_fail(c, RTC_GRPC_UNAVAILABLE, nghttp2_strerror((int)rv));
        return;
    }
    conn_flush(c);
}

static void keepalive_cb(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->dead || !c->h2_ready)
        return;
    if (c->ping_out) {
        conn_fail(c, RTC_GRPC_UNAVAILABLE, "keepalive ping timed out");
        return;
    }
    if (!c->activity) {
        if (nghttp2_submit_ping(c->h2, NGHTTP2_FLAG_NONE, NULL) == 0) {
            c->ping_out = true;
            conn_schedule_flush(c);
        }
    }
    c->activity = false;
}

/* Best effort: tell the server we are leaving. The socket closes right
 * after, so only what fits in the kernel buffer now goes out. */
static void conn_send_goaway_now(conn *c)
{
    if (!c->h2 || !c->tcp_connected || c->in_h2 || c->writing)
        return;
    if (nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR) != 0)
        return;
    rtc_buf out = RTC_BUF_INIT;
    c->in_h2 = true;
    (void)rtc_h2_collect(c->h2, &out, SIZE_MAX); /* send what was collected, error or not */
    c->in_h2 = false;
    if (out.len > 0) {
        uv_buf_t b = uv_buf_init((char *)out.data, (unsigned)out.len);
        (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    }
    rtc_buf_free(&out);
}

/* The connection is over (error, peer gone, drained, or channel closing):
 * every call still on it ends with `status`, the socket closes, and the
 * endpoint, if this was its connection, goes to backoff. */
static void conn_fail(conn *c, int status, const char *why)
{
    if (c->dead)
        return;
    bool graceful = status == RTC_GRPC_CANCELLED;
    c->dead = true;
    c->want_flush = false;
    endpoint *ep = c->ep;
    rtc_grpc_channel *ch = c->ch;
    if (ep->conn == c) {
        ep->conn = NULL;
        if (!ch->closed && ep->state == EP_CONNECTING && ep->addr_next < ep->naddrs)
            ep_start_tcp(ep, (const struct sockaddr *)&ep->addrs[ep->addr_next++]);
        else
            ep_down(ep, why);
    }
    c->health = NULL;
    char msg[200];
    snprintf(msg, sizeof(msg), "%s: %s", graceful ? "channel closed" : "connection lost", why);
    rtc_grpc_client_call *call;
    while ((call = c->calls.head) != NULL) {
        list_remove(call);
        call->conn = NULL;
        call->stream_live = false; /* the session dies with the connection */
        if (!call->done)
            call_complete(call, status, msg);
        else
            call_maybe_free(call);
    }
    if (graceful)
        conn_send_goaway_now(c);
    if (c->tcp_connected)
        uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->keepalive);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    uv_close((uv_handle_t *)&c->keepalive, conn_handle_closed);
    ch_kick(ch);
}

static nghttp2_session *conn_new_session(conn *c)
{
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    nghttp2_session *h2 = NULL;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        goto out;
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close_cb);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send_cb);
    nghttp2_session_callbacks_set_error_callback2(cbs, on_error_cb);
    if (nghttp2_option_new(&opt) != 0)
        goto out;
    nghttp2_option_set_max_reserved_remote_streams(opt, 0);
    if (nghttp2_session_client_new2(&h2, cbs, c, opt) != 0) {
        h2 = NULL;
        goto out;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, CLIENT_STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, CLIENT_MAX_HEADER_LIST},
    };
    if (nghttp2_submit_settings(h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(h2, NGHTTP2_FLAG_NONE, 0, CLIENT_CONN_WINDOW) != 0) {
        nghttp2_session_del(h2);
        h2 = NULL;
    }
out:
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    return h2;
}

static void conn_connect_cb(uv_connect_t *req, int status)
{
    conn *c = req->data;
    if (c->dead)
        return;
    if (status < 0) {
        conn_fail(c, RTC_GRPC_UNAVAILABLE, uv_strerror(status));
        return;
    }
    c->tcp_connected = true;
    if (c->ep->conn == c)
        c->ep->state = EP_HANDSHAKE;
    uv_tcp_nodelay(&c->tcp, 1);
    c->h2 = conn_new_session(c);
    if (!c->h2) {
        conn_fail(c, RTC_GRPC_UNAVAILABLE, "cannot create HTTP/2 session");
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&c->tcp, conn_alloc_cb, conn_read_cb);
    if (rc < 0) {
        conn_fail(c, RTC_GRPC_UNAVAILABLE, uv_strerror(rc));
        return;
    }
    if (c->ch->opts.keepalive_ms > 0)
        uv_timer_start(&c->keepalive, keepalive_cb, c->ch->opts.keepalive_ms,
                       c->ch->opts.keepalive_ms);
    conn_flush(c);
}

/* Open the HTTP/2 stream for a call on c. 0 or a negative nghttp2 error. */
static int conn_start_call(conn *c, rtc_grpc_client_call *call)
{
    rtc_grpc_channel *ch = c->ch;
    endpoint *ep = c->ep;
    char tmo[16];
    size_t ntmo = 0;
    if (call->deadline) {
        uint64_t now = uv_now(ch->loop);
        ntmo = rtc_grpc_timeout_format(call->deadline > now ? call->deadline - now : 1, tmo);
    }
    size_t n = 0, max = 8 + call->md.n;
    nghttp2_nv *nv = calloc(max, sizeof(*nv));
    if (!nv)
        return NGHTTP2_ERR_NOMEM;
#define NV(k, v, vl)                                                                               \
    do {                                                                                           \
        nv[n].name = (uint8_t *)(k);                                                               \
        nv[n].namelen = strlen(k);                                                                 \
        nv[n].value = (uint8_t *)(v);                                                              \
        nv[n].valuelen = (vl);                                                                     \
        nv[n].flags = NGHTTP2_NV_FLAG_NONE;                                                        \
        n++;                                                                                       \
    } while (0)
    NV(":method", "POST", 4);
    NV(":scheme", "http", 4);
    NV(":path", call->path, strlen(call->path));
    NV(":authority", ep->name, strlen(ep->name));
    NV("te", "trailers", 8);
    NV("content-type", "application/grpc", 16);
    NV("user-agent", CLIENT_USER_AGENT, strlen(CLIENT_USER_AGENT));
    if (ntmo)
        NV("grpc-timeout", tmo, ntmo);
    for (size_t i = 0; i < call->md.n; i++)
        NV(call->md.v[i].key, call->md.v[i].value, strlen(call->md.v[i].value));
#undef NV
    nghttp2_data_provider prd = {.source.ptr = call, .read_callback = req_read_cb};
    int32_t id = nghttp2_submit_request(c->h2, NULL, nv, n, &prd, call);
    free(nv);
    if (id < 0)
        return id;
    call->stream_id = id;
    call->conn = c;
    call->ep = ep;
    call->stream_live = true;
    list_push(&c->calls, call);
    conn_schedule_flush(c);
    return 0;
}

/* ---- health watch ------------------------------------------------------ */

static int health_on_message(void *ud, const uint8_t *data, size_t len)
{
    conn *c = ud;
    endpoint *ep = c->ep;
    rtc_grpc_channel *ch = c->ch;
    if (c->dead || c->goaway || ep->conn != c)
        return 0;
    Grpc__Health__V1__HealthCheckResponse *r =
        grpc__health__v1__health_check_response__unpack(NULL, len, data);
    int st = HEALTH_NOT_SERVING;
    if (r) {
        if (r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
            st = HEALTH_SERVING;
        grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    }
    if (st != ep->health)
        rtc_info("grpc endpoint health", "endpoint", ep->name, "status",
                 st == HEALTH_SERVING ? "SERVING" : "NOT_SERVING");
    ep->health = st;
    ep->failing = st != HEALTH_SERVING;
    if (ep->failing)
        snprintf(ch->last_error, sizeof(ch->last_error), "%s: health NOT_SERVING", ep->name);
    ep->health_backoff_ms = ch->opts.backoff_initial_ms;
    ch_kick(ch);
    return 0;
}

/* The Watch could not run: not routable until a later Watch says SERVING. */
static void health_retry_later(endpoint *ep, const char *why)
{
    rtc_grpc_channel *ch = ep->ch;
    ep->health = HEALTH_UNKNOWN;
    ep->failing = true;
    snprintf(ch->last_error, sizeof(ch->last_error), "%s: health watch failed: %s", ep->name, why);
    ep->timer_mode = EP_TIMER_HEALTH;
    uv_timer_start(&ep->timer, ep_timer_cb, jitter(ch, ep->health_backoff_ms), 0);
    ep->health_backoff_ms = backoff_next(ch, ep->health_backoff_ms);
}

static void health_on_close(void *ud, int status, const char *message,
                            const rtc_grpc_metadata *trailers, size_t ntrailers)
{
    conn *c = ud;
    endpoint *ep = c->ep;
    rtc_grpc_channel *ch = c->ch;
    c->health = NULL;
    if (c->dead || c->goaway || ep->conn != c || ch->closed)
        return;
    if (status == RTC_GRPC_UNIMPLEMENTED) {
        /* No health service there: the connection is all we can know. */
        rtc_info("grpc endpoint health", "endpoint", ep->name, "status", "SERVING", "note",
                 "health service unimplemented");
        ep->health = HEALTH_SERVING;
        ep->failing = false;
    } else {
        rtc_info("grpc endpoint health watch ended", "endpoint", ep->name, "status",
                 rtc_grpc_status_name(status), "message", message);
        health_retry_later(ep, message);
    }
    ch_kick(ch);
}

static rtc_grpc_client_call *call_new(rtc_grpc_channel *ch, const char *path, const uint8_t *req,
                                      size_t len);

static void conn_start_health(conn *c)
{
    rtc_grpc_channel *ch = c->ch;
    Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    hreq.service = ch->health_service;
    uint8_t buf[512];
    size_t len = grpc__health__v1__health_check_request__get_packed_size(&hreq);
    if (len > sizeof(buf))
        return;
    grpc__health__v1__health_check_request__pack(&hreq, buf);
    rtc_grpc_client_call *call = call_new(ch, "/grpc.health.v1.Health/Watch", buf, len);
    if (!call)
        return;
    call->internal = true;
    call->cb.on_message = health_on_message;
    call->cb.on_close = health_on_close;
    call->ud = c;
    if (conn_start_call(c, call) != 0) {
        call->silent = true;
        call_complete(call, RTC_GRPC_INTERNAL, "cannot start health watch");
        health_retry_later(c->ep, "cannot start health watch");
        return;
    }
    c->health = call;
}

/* ---- endpoints --------------------------------------------------------- */

static bool ep_ready(const endpoint *ep)
{
    const conn *c = ep->conn;
    if (!c || !c->h2_ready || c->goaway || c->dead)
        return false;
    return !ep->ch->opts.health_check || ep->health == HEALTH_SERVING;
}

static void ep_backoff(endpoint *ep)
{
    rtc_grpc_channel *ch = ep->ch;
    uint64_t d = jitter(ch, ep->backoff_ms);
    ep->backoff_ms = backoff_next(ch, ep->backoff_ms);
    ep->timer_mode = EP_TIMER_BACKOFF;
    uv_timer_start(&ep->timer, ep_timer_cb, d, 0);
}

/* The endpoint's connection went away (GOAWAY or loss) after having been
 * up: reconnect at once and let calls wait meanwhile — unless it lived
 * shorter than one initial backoff, which is flapping and backs off like a
 * failure. */
static void ep_reconnect_after_up(endpoint *ep)
{
    rtc_grpc_channel *ch = ep->ch;
    uv_timer_stop(&ep->timer);
    if (uv_now(ch->loop) - ep->up_since >= ch->opts.backoff_initial_ms) {
        ep->failing = false;
        ep->timer_mode = EP_TIMER_BACKOFF;
        uv_timer_start(&ep->timer, ep_timer_cb, 0, 0);
    } else {
        ep->failing = true;
        ep_backoff(ep);
    }
}

/* A connect attempt failed or an established connection was lost. */
static void ep_down(endpoint *ep, const char *why)
{
    rtc_grpc_channel *ch = ep->ch;
    bool was_up = ep->state == EP_CONNECTED;
    ep->state = EP_IDLE;
    ep->health = HEALTH_UNKNOWN;
    if (ch->closed)
        return;
    snprintf(ep->last_error, sizeof(ep->last_error), "%s: %s", ep->name, why);
    snprintf(ch->last_error, sizeof(ch->last_error), "%s", ep->last_error);
    uv_timer_stop(&ep->timer);
    if (was_up) {
        rtc_info("grpc client disconnected", "endpoint", ep->name, "reason", why);
        ep_reconnect_after_up(ep);
    } else {
        ep->failing = true;
        if (ch->m_connects) {
            const char *labels[2] = {ep->name, "error"};
            rtc_metric *m = rtc_metric_child(ch->m_connects, labels);
            if (m)
                rtc_metric_inc(m, 1);
        }
        if (ep->fail_streak++ == 0)
            rtc_info("grpc client connect failed", "endpoint", ep->name, "reason", why);
        else
            rtc_debug("grpc client connect failed", "endpoint", ep->name, "reason", why);
        ep_backoff(ep);
    }
    ch_kick(ch);
}

static void ep_start_tcp(endpoint *ep, const struct sockaddr *addr)
{
    rtc_grpc_channel *ch = ep->ch;
    conn *c = calloc(1, sizeof(*c));
    if (!c) {
        ep_down(ep, "out of memory");
        return;
    }
    c->ch = ch;
    c->ep = ep;
    if (uv_tcp_init(ch->loop, &c->tcp) != 0) {
        free(c);
        ep_down(ep, "cannot create socket");
        return;
    }
    uv_timer_init(ch->loop, &c->keepalive);
    c->tcp.data = c;
    c->keepalive.data = c;
    c->creq.data = c;
    c->handles = 2;
    ch->refs++;
    c->next = ch->conns;
    if (ch->conns)
        ch->conns->prev = c;
    ch->conns = c;
    ep->conn = c;
    ep->state = EP_CONNECTING;
    int rc = uv_tcp_connect(&c->creq, &c->tcp, addr, conn_connect_cb);
    if (rc < 0)
        conn_fail(c, RTC_GRPC_UNAVAILABLE, uv_strerror(rc));
}

static void ep_resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    resolve_req *r = (resolve_req *)req;
    endpoint *ep = r->ep;
    rtc_grpc_channel *ch = ep->ch;
    bool current =
        !ch->closed && ep->resolving == r && r->attempt == ep->attempt && ep->state == EP_RESOLVING;
    if (ep->resolving == r)
        ep->resolving = NULL;
    free(r);
    if (current) {
        ep->naddrs = ep->addr_next = 0;
        for (struct addrinfo *a = status == 0 ? ai : NULL; a && ep->naddrs < 8; a = a->ai_next) {
            if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
                a->ai_addrlen <= sizeof(ep->addrs[0]))
                memcpy(&ep->addrs[ep->naddrs++], a->ai_addr, a->ai_addrlen);
        }
        if (status < 0)
            ep_down(ep, uv_strerror(status));
        else if (ep->naddrs == 0)
            ep_down(ep, "no address");
        else
            ep_start_tcp(ep, (const struct sockaddr *)&ep->addrs[ep->addr_next++]);
    }
    if (ai)
        uv_freeaddrinfo(ai);
    ch_unref(ch);
}

static void ep_connect(endpoint *ep)
{
    rtc_grpc_channel *ch = ep->ch;
    ep->attempt++;
    ep->state = EP_RESOLVING;
    ep->timer_mode = EP_TIMER_CONNECT;
    uv_timer_start(&ep->timer, ep_timer_cb, ch->opts.connect_timeout_ms, 0);
    /* Literal addresses need no resolver round trip through the pool. */
    struct sockaddr_storage *ss = &ep->addrs[0];
    if (uv_ip4_addr(ep->host, ep->port, (struct sockaddr_in *)ss) == 0 ||
        uv_ip6_addr(ep->host, ep->port, (struct sockaddr_in6 *)ss) == 0) {
        ep->naddrs = ep->addr_next = 1;
        ep_start_tcp(ep, (const struct sockaddr *)ss);
        return;
    }
    resolve_req *r = calloc(1, sizeof(*r));
    if (!r) {
        ep_down(ep, "out of memory");
        return;
    }
    r->ep = ep;
    r->attempt = ep->attempt;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)ep->port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(ch->loop, &r->req, ep_resolved_cb, ep->host, port, &hints);
    if (rc < 0) {
        free(r);
        ep_down(ep, uv_strerror(rc));
        return;
    }
    ch->refs++;
    ep->resolving = r;
}

static void ep_timer_cb(uv_timer_t *t)
{
    endpoint *ep = t->data;
    rtc_grpc_channel *ch = ep->ch;
    if (ch->closed)
        return;
    switch (ep->timer_mode) {
    case EP_TIMER_CONNECT:
        if (ep->state == EP_RESOLVING) {
            if (ep->resolving) {
                uv_cancel((uv_req_t *)&ep->resolving->req);
                ep->resolving = NULL;
            }
            ep_down(ep, "resolve timed out");
        } else if (ep->conn && ep->state != EP_CONNECTED) {
            ep->addr_next = ep->naddrs; /* the budget covers every address */
            conn_fail(ep->conn, RTC_GRPC_UNAVAILABLE, "connect timed out");
        }
        break;
    case EP_TIMER_BACKOFF:
        if (ep->state == EP_IDLE && !ep->conn)
            ep_connect(ep);
        break;
    case EP_TIMER_HEALTH:
        if (ep->conn && ep->conn->h2_ready && !ep->conn->goaway && !ep->conn->dead &&
            !ep->conn->health)
            conn_start_health(ep->conn);
        break;
    }
}

/* ---- dispatch and deferred work ---------------------------------------- */

static endpoint *pick_ready(rtc_grpc_channel *ch)
{
    for (size_t i = 0; i < ch->neps; i++) {
        size_t k = (ch->rr + i) % ch->neps;
        if (ep_ready(&ch->eps[k])) {
            ch->rr = (k + 1) % ch->neps;
            return &ch->eps[k];
        }
    }
    return NULL;
}

/* Some endpoint is on its way to READY without having failed: worth
 * waiting for (gRPC's CONNECTING, as opposed to TRANSIENT_FAILURE). */
static bool any_connecting(const rtc_grpc_channel *ch)
{
    for (size_t i = 0; i < ch->neps; i++)
        if (!ch->eps[i].failing && !ep_ready(&ch->eps[i]))
            return true;
    return false;
}

/* Route a call: start it on a READY endpoint, queue it, or fail it (sync:
 * we are inside rtc_grpc_channel_call, so the failure is deferred). */
static void dispatch(rtc_grpc_client_call *call, bool sync)
{
    rtc_grpc_channel *ch = call->ch;
    if (ch->closed) {
        call_fail(call, sync, RTC_GRPC_CANCELLED, "channel closed");
        return;
    }
    for (size_t tries = 0; tries < ch->neps; tries++) {
        endpoint *ep = pick_ready(ch);
        if (!ep)
            break;
        int rc = conn_start_call(ep->conn, call);
        if (rc == 0)
            return;
        if (rc != NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
            call_fail(call, sync, RTC_GRPC_INTERNAL, nghttp2_strerror(rc));
            return;
        }
        /* Stream ids exhausted: let this connection drain, open another. */
        nghttp2_goaway g = {.error_code = NGHTTP2_NO_ERROR};
        conn_on_goaway(ep->conn, &g);
    }
    if (call->wait_for_ready || any_connecting(ch)) {
        if (ch->queue.n >= CLIENT_MAX_QUEUED) {
            call_fail(call, sync, RTC_GRPC_RESOURCE_EXHAUSTED, "too many calls waiting");
            return;
        }
        call->ep = NULL;
        list_push(&ch->queue, call);
        return;
    }
    char msg[450];
    snprintf(msg, sizeof(msg), "no ready endpoint: %s",
             ch->last_error[0] ? ch->last_error : "none");
    call_fail(call, sync, RTC_GRPC_UNAVAILABLE, msg);
}

static void process_queue(rtc_grpc_channel *ch)
{
    call_list tmp = ch->queue;
    memset(&ch->queue, 0, sizeof(ch->queue));
    for (rtc_grpc_client_call *c = tmp.head; c; c = c->next)
        c->list = &tmp;
    rtc_grpc_client_call *call;
    while ((call = tmp.head) != NULL) {
        list_remove(call);
        dispatch(call, false);
    }
}

static void idle_cb(uv_idle_t *h)
{
    rtc_grpc_channel *ch = h->data;
    if (ch->kick) {
        ch->kick = false;
        if (ch->queue.n > 0)
            process_queue(ch);
    }
    for (conn *c = ch->conns; c; c = c->next) {
        if (c->want_flush) {
            c->want_flush = false;
            conn_flush(c);
        }
    }
    /* Work added meanwhile keeps the handle active: the next iteration
     * polls without blocking and comes back here. */
    bool more = ch->kick;
    for (conn *c = ch->conns; c && !more; c = c->next)
        more = c->want_flush;
    if (!more && ch->idle_active) {
        uv_idle_stop(&ch->idle);
        ch->idle_active = false;
    }
}

static void ch_kick(rtc_grpc_channel *ch)
{
    ch->kick = true;
    if (!ch->idle_active && !ch->closed) {
        uv_idle_start(&ch->idle, idle_cb);
        ch->idle_active = true;
    }
}

/* ---- channel ----------------------------------------------------------- */

static void ch_unref(rtc_grpc_channel *ch)
{
    if (--ch->refs > 0)
        return;
    free(ch->eps);
    free(ch->targets);
    free(ch->health_service);
    free(ch);
}

static void ch_handle_closed(uv_handle_t *h)
{
    ch_unref(h->data);
}

static void ep_handle_closed(uv_handle_t *h)
{
    endpoint *ep = h->data;
    ch_unref(ep->ch);
}

void rtc_grpc_channel_options_init(rtc_grpc_channel_options *o)
{
    memset(o, 0, sizeof(*o));
    o->connect_timeout_ms = 5000;
    o->backoff_initial_ms = 250;
    o->backoff_max_ms = 30000;
    o->health_service = "";
    o->max_recv_message = 4u << 20;
}

static int parse_targets(rtc_grpc_channel *ch, const char *targets)
{
    size_t n = 1;
    for (const char *p = targets; *p; p++)
        n += *p == ',';
    if (n > CLIENT_MAX_ENDPOINTS)
        return RTC_EINVAL;
    ch->eps = calloc(n, sizeof(*ch->eps));
    if (!ch->eps)
        return RTC_ENOMEM;
    const char *p = targets;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0 || len >= 300)
            return RTC_EINVAL;
        char tok[300];
        memcpy(tok, p, len);
        tok[len] = 0;
        rtc_hostport hp;
        if (rtc_parse_hostport(tok, &hp) != 0 || hp.port == 0)
            return RTC_EINVAL;
        endpoint *ep = &ch->eps[ch->neps++];
        ep->ch = ch;
        snprintf(ep->host, sizeof(ep->host), "%s", hp.host);
        ep->port = hp.port;
        rtc_hostport_format(&hp, ep->name, sizeof(ep->name));
        if (!end)
            break;
        p = end + 1;
    }
    return ch->neps > 0 ? 0 : RTC_EINVAL;
}

int rtc_grpc_channel_new(uv_loop_t *loop, const rtc_grpc_channel_options *opts,
                         rtc_metrics *metrics, rtc_grpc_channel **out)
{
    int rc = RTC_EINVAL;
    rtc_grpc_channel *ch = NULL;
    if (!loop || !opts || !out || !opts->targets || !opts->targets[0])
        return RTC_EINVAL;
    ch = calloc(1, sizeof(*ch));
    if (!ch)
        return RTC_ENOMEM;
    ch->loop = loop;
    ch->opts = *opts;
    rtc_grpc_channel_options def;
    rtc_grpc_channel_options_init(&def);
    if (!ch->opts.connect_timeout_ms)
        ch->opts.connect_timeout_ms = def.connect_timeout_ms;
    if (!ch->opts.backoff_initial_ms)
        ch->opts.backoff_initial_ms = def.backoff_initial_ms;
    if (!ch->opts.backoff_max_ms)
        ch->opts.backoff_max_ms = def.backoff_max_ms;
    if (ch->opts.backoff_max_ms < ch->opts.backoff_initial_ms)
        ch->opts.backoff_max_ms = ch->opts.backoff_initial_ms;
    if (!ch->opts.max_recv_message)
        ch->opts.max_recv_message = def.max_recv_message;
    ch->targets = strdup(opts->targets);
    ch->health_service = strdup(opts->health_service ? opts->health_service : "");
    if (!ch->targets || !ch->health_service) {
        rc = RTC_ENOMEM;
        goto fail;
    }
    ch->opts.targets = ch->targets;
    ch->opts.health_service = ch->health_service;
    rc = parse_targets(ch, opts->targets);
    if (rc != 0)
        goto fail;
    ch->rand = uv_hrtime() ^ (uint64_t)(uintptr_t)ch ^ 0x9E3779B97F4A7C15ULL;
    if (ch->rand == 0)
        ch->rand = 1;
    snprintf(ch->last_error, sizeof(ch->last_error), "connecting");
    if (metrics) {
        static const char *const call_labels[] = {"method", "code"};
        static const char *const conn_labels[] = {"endpoint", "result"};
        ch->m_calls =
            rtc_metrics_family(metrics, RTC_METRIC_COUNTER, "rtc_grpc_client_calls_total",
                               "gRPC client calls by method and status.", 2, call_labels, NULL, 0);
        ch->m_connects = rtc_metrics_family(
            metrics, RTC_METRIC_COUNTER, "rtc_grpc_client_connects_total",
            "gRPC client connection attempts by result.", 2, conn_labels, NULL, 0);
    }
    /* From here on the channel lives until its references drop. */
    ch->refs = 1;
    uv_idle_init(loop, &ch->idle);
    ch->idle.data = ch;
    ch->refs++;
    for (size_t i = 0; i < ch->neps; i++) {
        endpoint *ep = &ch->eps[i];
        ep->backoff_ms = ch->opts.backoff_initial_ms;
        ep->health_backoff_ms = ch->opts.backoff_initial_ms;
        uv_timer_init(loop, &ep->timer);
        ep->timer.data = ep;
        ch->refs++;
    }
    for (size_t i = 0; i < ch->neps; i++)
        ep_connect(&ch->eps[i]);
    *out = ch;
    return 0;
fail:
    free(ch->eps);
    free(ch->targets);
    free(ch->health_service);
    free(ch);
    return rc;
}

bool rtc_grpc_channel_ready(const rtc_grpc_channel *ch)
{
    if (!ch || ch->closed)
        return false;
    for (size_t i = 0; i < ch->neps; i++)
        if (ep_ready(&ch->eps[i]))
            return true;
    return false;
}

void rtc_grpc_channel_close(rtc_grpc_channel *ch)
{
    if (!ch || ch->closed)
        return;
    ch->closed = true;
    rtc_grpc_client_call *call;
    while ((call = ch->queue.head) != NULL)
        call_complete(call, RTC_GRPC_CANCELLED, "channel closed");
    for (conn *c = ch->conns; c; c = c->next)
        conn_fail(c, RTC_GRPC_CANCELLED, "closed by the application");
    for (size_t i = 0; i < ch->neps; i++) {
        endpoint *ep = &ch->eps[i];
        if (ep->resolving) {
            uv_cancel((uv_req_t *)&ep->resolving->req);
            ep->resolving = NULL;
        }
        uv_close((uv_handle_t *)&ep->timer, ep_handle_closed);
    }
    rtc_info("grpc channel closed", "targets", ch->targets);
    ch->idle_active = false;
    uv_close((uv_handle_t *)&ch->idle, ch_handle_closed);
    ch_unref(ch);
}

/* ---- calls: public API ------------------------------------------------- */

static bool valid_md_key(const char *k)
{
    /* Set by the channel itself, or hop-by-hop (forbidden in HTTP/2). */
    static const char *const reserved[] = {
        "te",   "content-type",      "grpc-timeout", "user-agent", "connection",
        "host", "transfer-encoding", "upgrade",      "keep-alive", "proxy-connection"};
    if (!k || !k[0])
        return false;
    for (const char *p = k; *p; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
              ch == '.'))
            return false;
    }
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (strcmp(k, reserved[i]) == 0)
            return false;
    return true;
}

static bool valid_md_value(const char *v)
{
    if (!v)
        return false;
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            return false;
    return true;
}

static rtc_grpc_client_call *call_new(rtc_grpc_channel *ch, const char *path, const uint8_t *req,
                                      size_t len)
{
    rtc_grpc_client_call *call = calloc(1, sizeof(*call));
    if (!call)
        return NULL;
    call->ch = ch;
    call->grpc_status = -1;
    call->path = strdup(path);
    call->req_len = RTC_GRPC_FRAME_HEADER_LEN + len;
    call->req = malloc(call->req_len);
    if (!call->path || !call->req) {
        free(call->path);
        free(call->req);
        free(call);
        return NULL;
    }
    rtc_grpc_frame_header(call->req, false, (uint32_t)len);
    if (len)
        memcpy(call->req + RTC_GRPC_FRAME_HEADER_LEN, req, len);
    rtc_grpc_deframer_init(&call->deframer, ch->opts.max_recv_message);
    uv_timer_init(ch->loop, &call->timer);
    call->timer.data = call;
    ch->refs++;
    return call;
}

int rtc_grpc_channel_call(rtc_grpc_channel *ch, const char *path, const uint8_t *req, size_t len,
                          const rtc_grpc_call_options *opts, const rtc_grpc_call_callbacks *cb,
                          void *ud, rtc_grpc_client_call **out)
{
    if (out)
        *out = NULL;
    if (!ch || !path || path[0] != '/' || !cb || !cb->on_close || (len && !req) || len > UINT32_MAX)
        return RTC_EINVAL;
    if (ch->closed)
        return RTC_ECLOSED;
    if (opts) {
        for (size_t i = 0; i < opts->nmetadata; i++)
            if (!valid_md_key(opts->metadata[i].key) || !valid_md_value(opts->metadata[i].value))
                return RTC_EINVAL;
    }
    rtc_grpc_client_call *call = call_new(ch, path, req, len);
    if (!call)
        return RTC_ENOMEM;
    call->cb = *cb;
    call->ud = ud;
    if (opts) {
        for (size_t i = 0; i < opts->nmetadata; i++) {
            const rtc_grpc_metadata *m = &opts->metadata[i];
            if (md_add(&call->md, m->key, strlen(m->key), m->value, strlen(m->value), 0) < 0) {
                call->done = call->silent = true;
                call_maybe_free(call);
                return RTC_ENOMEM;
            }
        }
        call->wait_for_ready = opts->wait_for_ready;
        if (opts->timeout_ms) {
            uv_update_time(ch->loop);
            call->deadline = uv_now(ch->loop) + opts->timeout_ms;
            call->timer_mode = TIMER_DEADLINE;
            uv_timer_start(&call->timer, call_timer_cb, opts->timeout_ms, 0);
        }
    }
    dispatch(call, true);
    if (out)
        *out = call;
    return 0;
}

void rtc_grpc_client_call_cancel(rtc_grpc_client_call *c)
{
    if (!c || c->done)
        return;
    c->silent = true;
    call_complete(c, RTC_GRPC_CANCELLED, "cancelled");
}

const char *rtc_grpc_client_call_endpoint(const rtc_grpc_client_call *c)
{
    return c && c->ep ? c->ep->name : NULL;
}

/* ---- unary protobuf-c convenience -------------------------------------- */

typedef struct unary_ctx {
    rtc_grpc_unary_done_fn done;
    void *ud;
    const ProtobufCMessageDescriptor *desc;
    rtc_buf resp;
    size_t nmsg;
} unary_ctx;

static int unary_on_message(void *ud, const uint8_t *data, size_t len)
{
    unary_ctx *u = ud;
    if (u->nmsg++ == 0 && rtc_buf_append(&u->resp, data, len) < 0)
        return 1;
    return 0;
}

static void unary_on_close(void *ud, int status, const char *message,
                           const rtc_grpc_metadata *trailers, size_t ntrailers)
{
    unary_ctx *u = ud;
    ProtobufCMessage *resp = NULL;
    char buf[96];
    if (status == RTC_GRPC_OK) {
        if (u->nmsg != 1) {
            snprintf(buf, sizeof(buf), "unary call got %zu response messages", u->nmsg);
            status = RTC_GRPC_INTERNAL;
            message = buf;
        } else {
            static const uint8_t empty[1];
            resp = protobuf_c_message_unpack(u->desc, NULL, u->resp.len,
                                             u->resp.len ? u->resp.data : empty);
            if (!resp) {
                status = RTC_GRPC_INTERNAL;
                message = "cannot parse the response message";
            }
        }
    }
    u->done(u->ud, status, message, resp);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
}

static void unary_release(void *ud)
{
    unary_ctx *u = ud;
    rtc_buf_free(&u->resp);
    free(u);
}

int rtc_grpc_channel_unary(rtc_grpc_channel *ch, const char *path, const ProtobufCMessage *req,
                           const ProtobufCMessageDescriptor *resp_desc,
                           const rtc_grpc_call_options *opts, rtc_grpc_unary_done_fn done, void *ud,
                           rtc_grpc_client_call **out)
{
    int rc;
    uint8_t *buf = NULL;
    unary_ctx *u = NULL;
    if (out)
        *out = NULL;
    if (!ch || !req || !resp_desc || !done)
        return RTC_EINVAL;
    size_t len = protobuf_c_message_get_packed_size(req);
    buf = malloc(len ? len : 1);
    u = calloc(1, sizeof(*u));
    if (!buf || !u) {
        rc = RTC_ENOMEM;
        goto out;
    }
    protobuf_c_message_pack(req, buf);
    u->done = done;
    u->ud = ud;
    u->desc = resp_desc;
    rtc_grpc_call_callbacks cb = {.on_message = unary_on_message, .on_close = unary_on_close};
    rtc_grpc_client_call *call = NULL;
    rc = rtc_grpc_channel_call(ch, path, buf, len, opts, &cb, u, &call);
    if (rc == 0) {
        call->release = unary_release;
        u = NULL; /* owned by the call now */
        if (out)
            *out = call;
    }
out:
    free(buf);
    free(u);
    return rc;
}

/* rtc-bridge's transport: libwebsockets on the process's libuv loop.
 *
 * One vhost on --listen serves
 *   GET /ws       WebSocket upgrade, subprotocol rtc.v1.jsonrpc, checked
 *                 before the upgrade (path, subprotocol, Origin allowlist →
 *                 403, socket limit and draining → 503);
 *   GET /healthz, /readyz, /metrics   the probes, as on the admin port.
 * Each socket (ws_sess) carries one rtc_bridge_conn and implements its ops:
 * a bounded send queue (over --send-queue the socket is dropped: a client
 * that does not read must not hold memory or slow the others), gRPC calls
 * on the route's upstream channel with the bearer token, and uv timers.
 * Frames are reassembled up to --max-message (close 1009 beyond); binary
 * frames get 1003; lws validates UTF-8 (1007); no extensions are offered,
 * so no permessage-deflate.
 *
 * Ping and idle hang-up are done here, not by lws's validity timers: lws
 * 4.1 keeps every timer in one sorted list and re-inserts a socket's on
 * each frame, O(sockets) per message (79 % of the bridge's CPU while
 * 20,000 sessions connected). Instead ws_idle_sweep(), from the bridge's
 * tick, walks the sockets: a ping after --ping-interval of silence, a
 * hang-up after --idle-timeout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libwebsockets.h>

#include "bridge_int.h"

#define SUBPROTOCOL   "rtc.v1.jsonrpc"
#define RX_CHUNK      4096
#define MAX_HTTP_BODY (4 << 20)
/* LWS_WRITE_CLOSE: in lws 4.1.6's enum lws_write_protocol but left out of
 * its public header ("handled by lws_close_reason()"). */
#define WRITE_CLOSE ((enum lws_write_protocol)4)

typedef struct out_msg {
    struct out_msg *next;
    size_t len;
    unsigned char data[]; /* LWS_PRE bytes of headroom, then the text */
} out_msg;

struct ws_sess {
    bridge *b;
    struct lws *wsi;
    ws_sess *prev, *next;
    rtc_bridge_conn *conn;
    rtc_buf rx; /* the message being reassembled */
    out_msg *qhead, *qtail;
    size_t queued;    /* bytes in the queue */
    bool closing;     /* close frame requested: stop reading and sending */
    bool ping_due;    /* a ping waits for the socket to take it */
    bool pinged;      /* pinged since the last frame from the peer */
    bool kill;        /* to be dropped without a close frame by the next sweep */
    uint64_t last_rx; /* rtc_now_ms() of the last frame from the peer (pongs too) */
    int close_code;
    const char *close_reason;
};

/* Per-request state of the plain HTTP endpoints. */
typedef struct http_pss {
    rtc_buf body;
    size_t sent;
} http_pss;

static bridge *bridge_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

void ws_count_close(bridge *b, const char *reason)
{
    if (b->m_closes)
        rtc_metric_inc(rtc_metric_child(b->m_closes, (const char *[]){reason}), 1);
}

/* ---- plain HTTP ------------------------------------------------------------ */

static int http_respond(struct lws *wsi, http_pss *h, unsigned status, const char *ctype)
{
    unsigned char buf[LWS_PRE + 512], *start = &buf[LWS_PRE], *p = start,
                                      *end = &buf[sizeof(buf) - 1];
    if (lws_add_http_common_headers(wsi, status, ctype, h->body.len, &p, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int http_text(struct lws *wsi, http_pss *h, unsigned status, const char *text)
{
    rtc_buf_reset(&h->body);
    if (rtc_buf_append_str(&h->body, text) < 0)
        return 1;
    return http_respond(wsi, h, status, "text/plain; charset=utf-8");
}

static int http_request(struct lws *wsi, http_pss *h, const char *path)
{
    bridge *b = bridge_of(wsi);
    if (strcmp(path, "/healthz") == 0)
        return http_text(wsi, h, 200, "ok\n");
    if (strcmp(path, "/readyz") == 0) {
        if (b->ready && !b->draining)
            return http_text(wsi, h, 200, "ready\n");
        char t[200];
        snprintf(t, sizeof(t), "not ready: %s\n", b->draining ? "draining" : b->ready_reason);
        return http_text(wsi, h, 503, t);
    }
    if (strcmp(path, "/metrics") == 0) {
        rtc_buf_reset(&h->body);
        if (rtc_metrics_render(b->metrics, &h->body) < 0)
            return 1;
        return http_respond(wsi, h, 200, "text/plain; version=0.0.4; charset=utf-8");
    }
    if (strcmp(path, "/ws") == 0)
        return http_text(wsi, h, 426, "WebSocket upgrade required (subprotocol " SUBPROTOCOL ")\n");
    return http_text(wsi, h, 404, "not found\n");
}

static int http_writeable(struct lws *wsi, http_pss *h)
{
    size_t left = h->body.len - h->sent;
    size_t n = left > 16384 ? 16384 : left;
    unsigned char *tmp = malloc(LWS_PRE + n + 1);
    if (!tmp)
        return -1;
    memcpy(tmp + LWS_PRE, h->body.data + h->sent, n);
    bool last = n == left;
    int w = lws_write(wsi, tmp + LWS_PRE, n, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP);
    free(tmp);
    if (w < (int)n)
        return -1;
    h->sent += n;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Refuse an upgrade with status and a one-line reason. */
static int refuse(struct lws *wsi, unsigned status, const char *why)
{
    bridge *b = bridge_of(wsi);
    if (b->m_upgrades_refused)
        rtc_metric_inc(b->m_upgrades_refused, 1);
    rtc_debug("upgrade refused", "why", why);
    lws_return_http_status(wsi, status, why);
    return 1;
}

static bool has_subprotocol(struct lws *wsi)
{
    char list[256];
    if (lws_hdr_copy(wsi, list, sizeof(list), WSI_TOKEN_PROTOCOL) <= 0)
        return false;
    for (char *save = NULL, *t = strtok_r(list, ", ", &save); t; t = strtok_r(NULL, ", ", &save))
        if (strcmp(t, SUBPROTOCOL) == 0)
            return true;
    return false;
}

static int confirm_upgrade(struct lws *wsi)
{
    bridge *b = bridge_of(wsi);
    char path[256], origin[512];
    if (lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) <= 0 || strcmp(path, "/ws") != 0)
        return refuse(wsi, 404, "not found: WebSockets are served on /ws");
    int olen = lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN);
    if (olen < 0 || !bridge_origin_allowed(b, olen > 0 ? origin : NULL))
        return refuse(wsi, 403, "origin not allowed");
    if (!has_subprotocol(wsi))
        return refuse(wsi, 400, "the subprotocol " SUBPROTOCOL " is required");
    if (b->draining)
        return refuse(wsi, 503, "shutting down: connect to another bridge");
    if ((int64_t)b->nsessions >= b->cfg.max_sockets)
        return refuse(wsi, 503, "too many sockets on this bridge");
    return 0;
}

static int cb_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    http_pss *h = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        memset(h, 0, sizeof(*h));
        return http_request(wsi, h, in ? (const char *)in : "/");
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return h ? http_writeable(wsi, h) : -1;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return confirm_upgrade(wsi);
    case LWS_CALLBACK_HTTP_BODY:
        return -1; /* no endpoint takes a body */
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (h) {
            rtc_buf_free(&h->body);
            h->sent = 0;
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

/* ---- WebSocket sessions --------------------------------------------------------- */

/* Close with a code: a close frame when the socket still writes, and a
 * hard kill shortly after for a peer that does not read. */
static void sess_close(ws_sess *s, int code, const char *reason)
{
    if (s->closing)
        return;
    s->closing = true;
    s->close_code = code;
    s->close_reason = reason;
    ws_count_close(s->b, reason);
    lws_callback_on_writable(s->wsi);
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, 2);
}

static int op_send(void *ud, const char *text, size_t len)
{
    ws_sess *s = ud;
    if (s->closing)
        return RTC_ECLOSED;
    /* One message of any size may wait alone (a fast reader with a big
     * event); beyond that the queue is bounded. */
    if (s->queued > 0 && s->queued + len > s->b->cfg.send_queue) {
        char q[24];
        snprintf(q, sizeof(q), "%zu", s->queued);
        rtc_warn("slow consumer: dropping the socket", "queued_bytes", q);
        /* Its peer does not read: a close frame would not get through.
         * The next sweep drops it (lws's own timeouts set from here waited
         * for the socket's next event: up to 30 s on an idle bridge). */
        s->closing = true;
        s->kill = true;
        ws_count_close(s->b, "send queue full");
        return RTC_ETOOBIG;
    }
    if (!s->qhead && !lws_send_pipe_choked(s->wsi)) {
        /* Nothing waits and the socket takes data: write now. Asking for a
         * writeable callback costs two epoll_ctl calls per message under
         * libuv (10 % of the bridge's CPU in bench/relay). A partial write
         * is kept by lws, which then reports the socket choked. */
        unsigned char stack[LWS_PRE + 4096];
        unsigned char *buf = len <= 4096 ? stack : malloc(LWS_PRE + len);
        if (!buf)
            return RTC_ENOMEM;
        memcpy(buf + LWS_PRE, text, len);
        int w = lws_write(s->wsi, buf + LWS_PRE, len, LWS_WRITE_TEXT);
        if (buf != stack)
            free(buf);
        if (w < 0) {
            s->closing = true;
            s->kill = true;
            ws_count_close(s->b, "write failed");
            return RTC_EIO;
        }
        return 0;
    }
    out_msg *m = malloc(sizeof(*m) + LWS_PRE + len);
    if (!m)
        return RTC_ENOMEM;
    m->next = NULL;
    m->len = len;
    memcpy(m->data + LWS_PRE, text, len);
    if (s->qtail)
        s->qtail->next = m;
    else
        s->qhead = m;
    s->qtail = m;
    s->queued += len;
    lws_callback_on_writable(s->wsi);
    return 0;
}

static void on_headers(void *ud, const rtc_grpc_metadata *md, size_t n)
{
    (void)md;
    (void)n;
    rtc_bridge_upcall_on_headers(ud);
}

static int on_message(void *ud, const uint8_t *data, size_t len)
{
    return rtc_bridge_upcall_on_message(ud, data, len);
}

static void on_close(void *ud, int status, const char *message, const rtc_grpc_metadata *t,
                     size_t nt)
{
    (void)t;
    (void)nt;
    rtc_bridge_upcall_on_close(ud, status, message);
}

static int op_call(void *ud, const rtc_bridge_route *r, const uint8_t *req, size_t len,
                   const char *bearer, bool wait_for_ready, uint64_t timeout_ms,
                   rtc_bridge_upcall *up, void **handle)
{
    ws_sess *s = ud;
    rtc_grpc_channel *ch = bridge_channel(s->b, r->upstream);
    if (!ch)
        return RTC_EUNAVAIL;
    char path[300];
    snprintf(path, sizeof(path), "/%s", r->method->name);
    rtc_buf auth = RTC_BUF_INIT;
    rtc_grpc_metadata md[1];
    rtc_grpc_call_options o = {.timeout_ms = timeout_ms, .wait_for_ready = wait_for_ready};
    if (bearer) {
        /* appends, not printf: vsnprintf of a ~400-byte token was 1.4 % of
         * a bridge under load */
        if (rtc_buf_append(&auth, "Bearer ", 7) < 0 ||
            rtc_buf_append(&auth, bearer, strlen(bearer) + 1) < 0) {
            rtc_buf_free(&auth);
            return RTC_ENOMEM;
        }
        md[0] = (rtc_grpc_metadata){"authorization", (const char *)auth.data};
        o.metadata = md;
        o.nmetadata = 1;
    }
    static const rtc_grpc_call_callbacks cb = {on_headers, on_message, on_close};
    rtc_grpc_client_call *call = NULL;
    int rc = rtc_grpc_channel_call(ch, path, req, len, &o, &cb, up, &call);
    rtc_buf_free(&auth);
    *handle = call;
    return rc;
}

static void op_cancel(void *ud, void *handle)
{
    (void)ud;
    rtc_grpc_client_call_cancel(handle);
}

typedef struct ws_timer {
    uv_timer_t t;
    rtc_bridge_upcall *up;
} ws_timer;

static void timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void timer_fired(uv_timer_t *t)
{
    ws_timer *wt = t->data;
    rtc_bridge_upcall *up = wt->up;
    uv_close((uv_handle_t *)&wt->t, timer_closed);
    rtc_bridge_upcall_on_timer(up);
}

static void *op_timer_start(void *ud, uint64_t ms, rtc_bridge_upcall *up)
{
    ws_sess *s = ud;
    ws_timer *wt = calloc(1, sizeof(*wt));
    if (!wt)
        return NULL;
    wt->up = up;
    uv_timer_init(s->b->loop, &wt->t);
    wt->t.data = wt;
    uv_timer_start(&wt->t, timer_fired, ms, 0);
    return wt;
}

static void op_timer_stop(void *ud, void *timer)
{
    (void)ud;
    ws_timer *wt = timer;
    uv_timer_stop(&wt->t);
    uv_close((uv_handle_t *)&wt->t, timer_closed);
}

const rtc_bridge_conn_ops ws_conn_ops = {
    .send = op_send,
    .call = op_call,
    .cancel = op_cancel,
    .timer_start = op_timer_start,
    .timer_stop = op_timer_stop,
};

static int sess_open(struct lws *wsi, ws_sess *s)
{
    bridge *b = bridge_of(wsi);
    memset(s, 0, sizeof(*s));
    s->b = b;
    s->wsi = wsi;
    s->last_rx = rtc_now_ms();
    if (rtc_bridge_conn_new(&b->env, s, &s->conn) < 0)
        return -1;
    s->next = b->sessions;
    if (b->sessions)
        b->sessions->prev = s;
    b->sessions = s;
    b->nsessions++;
    if (b->m_sockets)
        rtc_metric_set(b->m_sockets, (double)b->nsessions);
    char token[8200];
    const char *tv = lws_get_urlarg_by_name(wsi, "access_token=", token, sizeof(token));
    if (tv) {
        if (rtc_bridge_conn_set_token(s->conn, tv) < 0) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                             (unsigned char *)"invalid access_token", 20);
            ws_count_close(b, "invalid access_token");
            s->closing = true;
            return -1;
        }
    }
    return 0;
}

static void sess_closed(ws_sess *s)
{
    bridge *b = s->b;
    if (!b)
        return;
    rtc_bridge_conn_free(s->conn);
    s->conn = NULL;
    rtc_buf_free(&s->rx);
    for (out_msg *m = s->qhead, *n; m; m = n) {
        n = m->next;
        free(m);
    }
    s->qhead = s->qtail = NULL;
    if (s->prev)
        s->prev->next = s->next;
    else
        b->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    b->nsessions--;
    if (b->m_sockets)
        rtc_metric_set(b->m_sockets, (double)b->nsessions);
    s->b = NULL;
}

static int sess_receive(struct lws *wsi, ws_sess *s, const void *in, size_t len)
{
    s->last_rx = rtc_now_ms();
    s->pinged = false;
    if (s->closing)
        return 0;
    if (lws_frame_is_binary(wsi)) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                         (unsigned char *)"binary frames are not supported", 31);
        ws_count_close(s->b, "binary frame");
        return -1;
    }
    if (s->rx.len + len > s->b->cfg.max_message) {
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                         (unsigned char *)"message too big", 15);
        ws_count_close(s->b, "message too big");
        return -1;
    }
    if (rtc_buf_append(&s->rx, in, len) < 0)
        return -1;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0)
        return 0;
    int rc = rtc_bridge_conn_recv(s->conn, (const char *)s->rx.data, s->rx.len, rtc_now_ms());
    rtc_buf_reset(&s->rx);
    if (s->rx.cap > 65536) /* do not keep a big message's buffer for the socket's life */
        rtc_buf_free(&s->rx);
    return rc < 0 && !s->closing ? -1 : 0;
}

/* A ping with a payload: lws 4.1 passes pongs with an empty payload to no
 * callback, and the pong is what tells a quiet peer from a dead one. */
static int write_ping(struct lws *wsi)
{
    unsigned char buf[LWS_PRE + 4];
    memcpy(buf + LWS_PRE, "rtc", 3);
    return lws_write(wsi, buf + LWS_PRE, 3, LWS_WRITE_PING) < 0 ? -1 : 0;
}

/* A ping now when the socket takes it, else from the writeable callback. */
static int send_ping(ws_sess *s)
{
    if (s->qhead || lws_send_pipe_choked(s->wsi)) {
        s->ping_due = true;
        lws_callback_on_writable(s->wsi);
        return 0;
    }
    s->ping_due = false;
    return write_ping(s->wsi);
}

void ws_idle_sweep(bridge *b, uint64_t now)
{
    for (ws_sess *s = b->sessions, *next; s; s = next) {
        next = s->next; /* a synchronous kill unlinks s */
        uint64_t quiet = now - s->last_rx;
        if (!s->closing && quiet >= b->cfg.idle_timeout) {
            /* Nothing came, not even a pong: the peer or the path is gone,
             * and a close frame would not get through either. */
            s->closing = s->kill = true;
            ws_count_close(b, "idle timeout");
        } else if (!s->closing && quiet >= b->cfg.ping_interval && !s->pinged) {
            s->pinged = true;
            if (send_ping(s) < 0) {
                s->closing = s->kill = true;
                ws_count_close(b, "write failed");
            }
        }
        /* From the loop's timer no socket is being serviced: lws may close
         * it here and now. */
        if (s->kill)
            lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_SYNC);
    }
}

static int sess_writeable(struct lws *wsi, ws_sess *s)
{
    if (s->ping_due && !s->closing) {
        s->ping_due = false;
        if (write_ping(wsi) < 0)
            return -1;
        if (s->qhead)
            lws_callback_on_writable(wsi);
        return 0;
    }
    if (s->closing && !s->qhead) {
        const char *r = s->close_reason ? s->close_reason : "";
        /* The close frame is written here: lws 4.1.6 does not send the
         * lws_close_reason() payload when a writeable callback returns -1
         * (it shuts the socket: browsers saw 1006, not 1001). */
        unsigned char cb[LWS_PRE + 125];
        size_t n = strlen(r) > 123 ? 123 : strlen(r);
        cb[LWS_PRE] = (unsigned char)(s->close_code >> 8);
        cb[LWS_PRE + 1] = (unsigned char)(s->close_code & 0xff);
        memcpy(cb + LWS_PRE + 2, r, n);
        lws_write(wsi, cb + LWS_PRE, n + 2, WRITE_CLOSE);
        return -1;
    }
    out_msg *m = s->qhead;
    if (!m)
        return 0;
    s->qhead = m->next;
    if (!s->qhead)
        s->qtail = NULL;
    s->queued -= m->len;
    int w = lws_write(wsi, m->data + LWS_PRE, m->len, LWS_WRITE_TEXT);
    free(m);
    if (w < 0)
        return -1;
    if (s->qhead || s->closing)
        lws_callback_on_writable(wsi);
    return 0;
}

static int cb_ws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                 size_t len)
{
    ws_sess *s = user;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        return sess_open(wsi, s);
    case LWS_CALLBACK_RECEIVE:
        return sess_receive(wsi, s, in, len);
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return sess_writeable(wsi, s);
    case LWS_CALLBACK_RECEIVE_PONG:
        s->last_rx = rtc_now_ms();
        s->pinged = false;
        return 0;
    case LWS_CALLBACK_CLOSED:
        if (s && s->b && !s->closing)
            ws_count_close(s->b, "peer closed");
        if (s)
            sess_closed(s);
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    {"http", cb_http, sizeof(http_pss), 0, 0, NULL, 0},
    {SUBPROTOCOL, cb_ws, sizeof(ws_sess), RX_CHUNK, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log(int level, const char *line)
{
    char msg[512];
    snprintf(msg, sizeof(msg), "%s", line);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    if (level & LLL_ERR)
        rtc_error("libwebsockets", "detail", msg);
    else if (level & LLL_WARN)
        rtc_warn("libwebsockets", "detail", msg);
    else
        rtc_debug("libwebsockets", "detail", msg);
}

int ws_start(bridge *b)
{
    lws_set_log_level(LLL_ERR | LLL_WARN | (b->cfg.log_level <= RTC_LOG_DEBUG ? LLL_NOTICE : 0),
                      lws_log);
    /* Zeros: no lws validity timers (see the top of this file). */
    static const lws_retry_bo_t retry = {.secs_since_valid_ping = 0, .secs_since_valid_hangup = 0};
    void *loops[1] = {b->loop};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = b->cfg.listen.port;
    info.iface = b->cfg.listen.host;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8 |
                   LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND |
                   LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
    if (!strchr(b->cfg.listen.host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.foreign_loops = loops;
    info.pcontext = &b->lws;
    info.user = b;
    info.retry_and_idle_policy = &retry;
    info.timeout_secs = (unsigned)(b->cfg.header_timeout / 1000 ? b->cfg.header_timeout / 1000 : 1);
    info.timeout_secs_ah_idle = info.timeout_secs;
    info.max_http_header_data = 8192;
    info.server_string = "rtc-bridge";
    /* No fd_limit_per_thread: below RLIMIT_NOFILE it makes lws 4.1 find the
     * wsi of every ready fd by a linear scan (32 % of the CPU with 5,000
     * sockets). --max-sockets is enforced before the upgrade instead. */
    b->lws = lws_create_context(&info);
    if (!b->lws)
        return RTC_EIO;
    /* With a foreign loop, lws 4.1.6 returns a context even when the
     * listener could not bind (address in use): it only logs "Failed to
     * create default vhost". */
    b->vhost = lws_get_vhost_by_name(b->lws, "default");
    int port = b->vhost ? lws_get_vhost_listen_port(b->vhost) : -1;
    if (port <= 0)
        return RTC_EIO;
    b->port = (uint16_t)port;
    return 0;
}

bool ws_drain_step(bridge *b, bool force)
{
    for (ws_sess *s = b->sessions; s; s = s->next) {
        rtc_bridge_conn_set_draining(s->conn);
        if (force || rtc_bridge_conn_calls_in_flight(s->conn) == 0)
            sess_close(s, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
    }
    return b->nsessions == 0;
}

void ws_stop(bridge *b)
{
    /* With a foreign loop, the destroy finishes from the loop. A context
     * whose listener failed is left alone: destroying it unloads lws's
     * libuv plugin while handles it made still wait for their close
     * callbacks (a crash in uv_run). The process is exiting anyway. */
    if (b->lws && b->vhost)
        lws_context_destroy(b->lws);
}

/* ws_client.c — see ws_client.h. */
#include "ws_client.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <wslay/wslay.h>

#include "rtc/buf.h"

#define WS_GUID       "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define MAX_HANDSHAKE 8192

enum { WS_CONNECTING, WS_HANDSHAKE, WS_OPEN, WS_DEAD };

struct wsc {
    uv_tcp_t tcp;
    uv_connect_t creq;
    wslay_event_context_ptr ctx;
    const wsc_callbacks *cb;
    void *ud;
    int state;
    bool in_recv;         /* inside wslay_event_recv: sends wait until it returns */
    char accept[32];      /* the Sec-WebSocket-Accept the server must send */
    char subprotocol[64]; /* "" when none was asked for */
    rtc_buf hs;           /* the handshake answer so far */
    rtc_buf out;          /* what wslay produced in one wslay_event_send */
    bool close_wanted;    /* wsc_close: after the queued messages */
    uint16_t close_code;
    char close_reason[64];
    const uint8_t *in; /* the read chunk wslay is consuming */
    size_t inlen;
    uint64_t mask_state; /* xorshift for the frame masks */
};

typedef struct wreq {
    uv_write_t req;
    uint8_t data[];
} wreq;

static uint8_t g_rbuf[65536]; /* one loop, and each read is consumed at once */

static void closed_cb(uv_handle_t *h)
{
    wsc *w = h->data;
    if (w->ctx)
        wslay_event_context_free(w->ctx);
    rtc_buf_free(&w->hs);
    rtc_buf_free(&w->out);
    free(w);
}

static void finish(wsc *w, const char *why)
{
    if (w->state == WS_DEAD)
        return;
    w->state = WS_DEAD;
    uv_read_stop((uv_stream_t *)&w->tcp);
    uv_close((uv_handle_t *)&w->tcp, closed_cb);
    if (w->cb->on_closed)
        w->cb->on_closed(w->ud, why);
}

void wsc_abort(wsc *w)
{
    if (!w || w->state == WS_DEAD)
        return;
    w->state = WS_DEAD;
    uv_read_stop((uv_stream_t *)&w->tcp);
    uv_close((uv_handle_t *)&w->tcp, closed_cb);
}

static void write_cb(uv_write_t *req, int status)
{
    (void)status; /* a failed write shows up as a read error or EOF */
    free(req);
}

/* Everything goes out in order: what uv_try_write does not take now is
 * queued with uv_write, and uv_try_write refuses while anything is queued. */
static int put(wsc *w, const uint8_t *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&w->tcp, &b, 1);
    if (n == (int)len)
        return 0;
    if (n < 0 && n != UV_EAGAIN)
        return n;
    size_t done = n > 0 ? (size_t)n : 0;
    wreq *r = malloc(sizeof(*r) + len - done);
    if (!r)
        return UV_ENOMEM;
    memcpy(r->data, data + done, len - done);
    b = uv_buf_init((char *)r->data, (unsigned)(len - done));
    int rc = uv_write(&r->req, (uv_stream_t *)&w->tcp, &b, 1, write_cb);
    if (rc < 0)
        free(r);
    return rc;
}

static ssize_t recv_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    (void)flags;
    wsc *w = ud;
    if (w->inlen == 0 || w->state == WS_DEAD) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    size_t n = len < w->inlen ? len : w->inlen;
    memcpy(buf, w->in, n);
    w->in += n;
    w->inlen -= n;
    return (ssize_t)n;
}

/* Everything wslay produces in one wslay_event_send (a frame's header and
 * its masked payload come in pieces, the payload in 4 KiB chunks; several
 * queued messages follow each other) is gathered and written by flush()
 * as one piece: one send() and, with TCP_NODELAY, as few segments as the
 * bytes need, instead of one per piece. */
static ssize_t send_cb(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *ud)
{
    (void)flags;
    wsc *w = ud;
    if (w->state == WS_DEAD || rtc_buf_append(&w->out, data, len) < 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static int genmask_cb(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    (void)ctx;
    wsc *w = ud;
    for (size_t i = 0; i < len; i++) {
        uint64_t x = w->mask_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w->mask_state = x;
        buf[i] = (uint8_t)x;
    }
    return 0;
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *ud)
{
    (void)ctx;
    wsc *w = ud;
    if (w->state != WS_OPEN)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        if (w->cb->on_text)
            w->cb->on_text(w->ud, (const char *)arg->msg, arg->msg_length);
    } else if (arg->opcode == WSLAY_BINARY_FRAME) {
        finish(w, "a binary frame");
    }
    /* ping: wslay queues the pong; close: handled after the read */
}

static const struct wslay_event_callbacks wslay_cbs = {
    .recv_callback = recv_cb,
    .send_callback = send_cb,
    .genmask_callback = genmask_cb,
    .on_msg_recv_callback = on_msg,
};

/* Runs wslay's pending output and writes it; then, when wsc_close asked for
 * it, the close frame — only now, after the messages queued before it
 * (wslay sends control frames ahead of data and nothing after a close). */
static void flush(wsc *w)
{
    if (w->state == WS_DEAD || w->in_recv)
        return;
    for (int pass = 0; pass < 2; pass++) {
        if (wslay_event_want_write(w->ctx) && wslay_event_send(w->ctx) != 0) {
            finish(w, "write failed");
            return;
        }
        if (w->out.len) {
            int rc = put(w, w->out.data, w->out.len);
            rtc_buf_reset(&w->out);
            if (rc < 0) {
                finish(w, "write failed");
                return;
            }
        }
        if (pass > 0 || !w->close_wanted || wslay_event_get_close_sent(w->ctx))
            break;
        w->close_wanted = false;
        wslay_event_queue_close(w->ctx, w->close_code, (const uint8_t *)w->close_reason,
                                strlen(w->close_reason));
    }
    if (wslay_event_get_close_received(w->ctx) && !wslay_event_want_write(w->ctx)) {
        char why[96];
        uint16_t code = wslay_event_get_status_code_received(w->ctx);
        snprintf(why, sizeof(why), "closed by the server (%u)", (unsigned)code);
        finish(w, why);
    }
}

static void feed(wsc *w, const uint8_t *data, size_t len)
{
    w->in = data;
    w->inlen = len;
    w->in_recv = true;
    int rc = wslay_event_recv(w->ctx);
    w->in_recv = false;
    w->in = NULL;
    w->inlen = 0;
    if (w->state == WS_DEAD)
        return;
    if (rc != 0) {
        finish(w, "malformed frames from the server");
        return;
    }
    flush(w);
}

/* The value of header `name` in the answer's header block, or NULL. */
static const char *header(const char *head, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, name, nl) == 0 && h[nl] == ':') {
            const char *v = h + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = strstr(v, "\r\n");
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *len = (size_t)(e - v);
            return v;
        }
    }
    return NULL;
}

static void handshake(wsc *w, const uint8_t *data, size_t len)
{
    if (rtc_buf_append(&w->hs, data, len) < 0 || rtc_buf_append(&w->hs, "", 1) < 0) {
        finish(w, "out of memory");
        return;
    }
    w->hs.len--; /* keep the NUL out of the count */
    const char *head = (const char *)w->hs.data;
    const char *end = strstr(head, "\r\n\r\n");
    if (!end) {
        if (w->hs.len > MAX_HANDSHAKE)
            finish(w, "handshake: answer too long");
        return;
    }
    char why[160];
    if (strncmp(head, "HTTP/1.1 101 ", 13) != 0) {
        snprintf(why, sizeof(why), "handshake: %.40s", head);
        why[strcspn(why, "\r")] = '\0';
        finish(w, why);
        return;
    }
    size_t alen = 0, plen = 0;
    const char *acc = header(head, "Sec-WebSocket-Accept", &alen);
    if (!acc || alen != strlen(w->accept) || memcmp(acc, w->accept, alen) != 0) {
        finish(w, "handshake: wrong or missing Sec-WebSocket-Accept");
        return;
    }
    const char *proto = header(head, "Sec-WebSocket-Protocol", &plen);
    if (w->subprotocol[0] &&
        (!proto || plen != strlen(w->subprotocol) || memcmp(proto, w->subprotocol, plen) != 0)) {
        finish(w, "handshake: the server did not accept the subprotocol");
        return;
    }
    size_t used = (size_t)(end + 4 - head);
    size_t rest = w->hs.len - used;
    w->state = WS_OPEN;
    if (w->cb->on_open)
        w->cb->on_open(w->ud);
    if (w->state == WS_OPEN && rest > 0)
        feed(w, w->hs.data + used, rest);
    rtc_buf_free(&w->hs);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init((char *)g_rbuf, sizeof(g_rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    wsc *w = s->data;
    if (w->state == WS_DEAD)
        return;
    if (n < 0) {
        char why[96];
        if (n == UV_EOF)
            snprintf(why, sizeof(why), "%s",
                     w->state == WS_HANDSHAKE ? "handshake: the server hung up"
                                              : "the server closed the connection");
        else
            snprintf(why, sizeof(why), "read: %s", uv_strerror((int)n));
        finish(w, why);
        return;
    }
    if (n == 0)
        return;
    if (w->state == WS_HANDSHAKE)
        handshake(w, (const uint8_t *)buf->base, (size_t)n);
    else
        feed(w, (const uint8_t *)buf->base, (size_t)n);
}

static void b64(const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static void connect_cb(uv_connect_t *req, int status)
{
    wsc *w = req->data;
    if (w->state == WS_DEAD)
        return;
    if (status < 0) {
        char why[96];
        snprintf(why, sizeof(why), "connection failed: %s", uv_strerror(status));
        finish(w, why);
        return;
    }
    w->state = WS_HANDSHAKE;
    uv_read_start((uv_stream_t *)&w->tcp, alloc_cb, read_cb);
    char *req_text = (char *)w->hs.data; /* built by wsc_connect */
    size_t len = w->hs.len;
    int rc = put(w, (const uint8_t *)req_text, len);
    rtc_buf_reset(&w->hs);
    if (rc < 0)
        finish(w, "cannot send the handshake");
}

static int resolve(const char *host, uint16_t port, struct sockaddr_storage *out)
{
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0 ||
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
        return 0;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
    char p[8];
    snprintf(p, sizeof(p), "%u", (unsigned)port);
    if (getaddrinfo(host, p, &hints, &ai) != 0 || !ai)
        return UV_EAI_NONAME;
    memcpy(out, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    return 0;
}

int wsc_connect(uv_loop_t *loop, const char *host, uint16_t port, const char *src, const char *path,
                const char *subprotocol, const wsc_callbacks *cb, void *ud, wsc **out)
{
    *out = NULL;
    struct sockaddr_storage to, from;
    int rc = resolve(host, port, &to);
    if (rc < 0)
        return rc;
    if (src && uv_ip4_addr(src, 0, (struct sockaddr_in *)&from) != 0 &&
        uv_ip6_addr(src, 0, (struct sockaddr_in6 *)&from) != 0)
        return UV_EINVAL;
    wsc *w = calloc(1, sizeof(*w));
    if (!w)
        return UV_ENOMEM;
    w->cb = cb;
    w->ud = ud;
    w->state = WS_CONNECTING;
    snprintf(w->subprotocol, sizeof(w->subprotocol), "%s", subprotocol ? subprotocol : "");
    uint8_t key[16];
    if (RAND_bytes(key, sizeof(key)) != 1 ||
        RAND_bytes((uint8_t *)&w->mask_state, sizeof(w->mask_state)) != 1) {
        free(w);
        return UV_EIO;
    }
    w->mask_state |= 1; /* xorshift must not start at 0 */
    char key64[32];
    b64(key, sizeof(key), key64);
    char cat[64];
    int cl = snprintf(cat, sizeof(cat), "%s%s", key64, WS_GUID);
    uint8_t sha[EVP_MAX_MD_SIZE];
    unsigned shalen = 0;
    if (EVP_Digest(cat, (size_t)cl, sha, &shalen, EVP_sha1(), NULL) != 1) {
        free(w);
        return UV_EIO;
    }
    b64(sha, shalen, w->accept);
    /* The request waits in hs until the TCP connection is up. */
    if (rtc_buf_printf(&w->hs,
                       "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n",
                       path, host, (unsigned)port, key64) < 0 ||
        (subprotocol &&
         rtc_buf_printf(&w->hs, "Sec-WebSocket-Protocol: %s\r\n", subprotocol) < 0) ||
        rtc_buf_append(&w->hs, "\r\n", 2) < 0 ||
        wslay_event_context_client_init(&w->ctx, &wslay_cbs, w) != 0) {
        rtc_buf_free(&w->hs);
        free(w);
        return UV_ENOMEM;
    }
    if ((rc = uv_tcp_init(loop, &w->tcp)) < 0) {
        wslay_event_context_free(w->ctx);
        rtc_buf_free(&w->hs);
        free(w);
        return rc;
    }
    w->tcp.data = w;
    w->creq.data = w;
    uv_tcp_nodelay(&w->tcp, 1);
    if ((src && (rc = uv_tcp_bind(&w->tcp, (struct sockaddr *)&from, 0)) < 0) ||
        (rc = uv_tcp_connect(&w->creq, &w->tcp, (struct sockaddr *)&to, connect_cb)) < 0) {
        w->state = WS_DEAD;
        uv_close((uv_handle_t *)&w->tcp, closed_cb);
        return rc;
    }
    *out = w;
    return 0;
}

int wsc_send_text(wsc *w, const char *text, size_t len)
{
    if (!w || w->state != WS_OPEN || wslay_event_get_close_sent(w->ctx))
        return -1;
    struct wslay_event_msg m = {WSLAY_TEXT_FRAME, (const uint8_t *)text, len};
    if (w->close_wanted || wslay_event_queue_msg(w->ctx, &m) != 0)
        return -1;
    flush(w);
    return w->state == WS_DEAD ? -1 : 0;
}

void wsc_close(wsc *w, uint16_t code, const char *reason)
{
    if (!w || w->state == WS_DEAD)
        return;
    if (w->state != WS_OPEN) {
        finish(w, "closed before the handshake finished");
        return;
    }
    if (!w->close_wanted && !wslay_event_get_close_sent(w->ctx)) {
        w->close_wanted = true;
        w->close_code = code;
        snprintf(w->close_reason, sizeof(w->close_reason), "%s", reason ? reason : "");
    }
    flush(w);
}

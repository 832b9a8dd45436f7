/* admin.c — the admin HTTP/1.1 listener: /healthz, /readyz, /metrics.
 *
 * Requests are parsed by rtc_http1_parse_request (http1.c); this file only
 * moves bytes. Pipelined requests are answered in order because libuv keeps
 * writes on a stream in order; a client that pipelines without reading is
 * paused (reads stop) once a megabyte of answers is queued. A connection
 * that must end (bad request, Connection: close) gets its answer, then a
 * FIN (uv_shutdown), and is closed once the peer closes or a short linger
 * expires: closing at once with unread input makes the kernel send a RST,
 * which can destroy the answer before the client reads it.
 *
 * Every object is freed from uv_close callbacks, never inside a callback
 * of the handle being closed. */
#include "rtc/admin.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rtc/buf.h"
#include "rtc/error.h"
#include "rtc/log.h"

#define ADMIN_MAX_HEAD_BYTES    8192
#define ADMIN_HEADER_TIMEOUT_MS 5000  /* to send a whole request head */
#define ADMIN_IDLE_TIMEOUT_MS   60000 /* keep-alive with no request in progress */
#define ADMIN_LINGER_MS         2000  /* after our FIN, wait this long for the peer's */
#define ADMIN_MAX_CONNS         256
#define ADMIN_WRITE_HIGH_WATER  (1u << 20)
#define ADMIN_READ_CHUNK        16384
#define ADMIN_BACKLOG           128

typedef struct conn conn;

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    rtc_admin *admin;
    conn *prev, *next;
    rtc_buf in;
    int open_handles;
    size_t writes_pending;
    bool closing;   /* uv_close called */
    bool finishing; /* last answer queued; no more requests are read */
    bool lingering; /* FIN sent, draining input until the peer closes */
    bool peer_eof;  /* the peer half-closed; answer what it asked, then close */
    bool reading;
};

struct rtc_admin {
    uv_loop_t *loop;
    uv_tcp_t listener;
    rtc_metrics *metrics;
    rtc_metric_family *requests; /* rtc_admin_requests_total{path,code} */
    conn *conns;
    size_t nconns; /* allocated, including those being closed */
    uint16_t port;
    bool ready;
    bool closing;
    bool listener_closed;
    char reason[128];
};

typedef struct write_req {
    uv_write_t req;
    conn *c;
    rtc_buf data;
} write_req;

static void conn_close(conn *c);
static void conn_process(conn *c);
static int conn_read_start(conn *c);

static void admin_maybe_free(rtc_admin *a)
{
    if (a->closing && a->listener_closed && a->nconns == 0)
        free(a);
}

static void on_listener_closed(uv_handle_t *h)
{
    rtc_admin *a = h->data;
    a->listener_closed = true;
    admin_maybe_free(a);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    rtc_admin *a = c->admin;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->nconns--;
    rtc_buf_free(&c->in);
    free(c);
    admin_maybe_free(a);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
}

static void on_timer(uv_timer_t *t);

static void arm_timer(conn *c, uint64_t ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static const char *status_text(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    default:
        return "Unknown";
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    if (status < 0)
        conn_close(req->handle->data); /* no-op when already closing */
}

static void on_write(uv_write_t *req, int status)
{
    write_req *wr = (write_req *)req;
    conn *c = wr->c;
    rtc_buf_free(&wr->data);
    free(wr);
    c->writes_pending--;
    if (c->closing)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->finishing) {
        if (c->writes_pending == 0 && c->peer_eof) {
            conn_close(c); /* all input was read: closing cannot cause a RST */
            return;
        }
        if (c->writes_pending == 0 && !c->lingering) {
            /* All answers are out: send FIN, then drain until the peer closes. */
            if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) < 0 ||
                (!c->reading && conn_read_start(c) < 0)) {
                conn_close(c);
                return;
            }
            c->lingering = true;
            arm_timer(c, ADMIN_LINGER_MS);
        }
        return;
    }
    if (!c->reading && c->tcp.write_queue_size < ADMIN_WRITE_HIGH_WATER / 2)
        conn_process(c); /* the client caught up: answer what is buffered, read again */
}

/* Queue one response. close: this is the last one on the connection. */
static void respond(conn *c, int code, const char *extra, const char *ctype, const char *body,
                    size_t blen, bool head_only, bool close)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);

    write_req *wr = calloc(1, sizeof(*wr));
    if (!wr)
        goto fail;
    wr->c = c;
    if (rtc_buf_printf(&wr->data,
                       "HTTP/1.1 %d %s\r\n"
                       "Date: %s\r\n"
                       "Content-Type: %s\r\n"
                       "Content-Length: %zu\r\n"
                       "Cache-Control: no-store\r\n"
                       "%s"
                       "Connection: %s\r\n"
                       "\r\n",
                       code, status_text(code), date, ctype, blen, extra ? extra : "",
                       close ? "close" : "keep-alive") < 0)
        goto fail;
    if (!head_only && rtc_buf_append(&wr->data, body, blen) < 0)
        goto fail;
    uv_buf_t b = uv_buf_init((char *)wr->data.data, (unsigned)wr->data.len);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0)
        goto fail;
    c->writes_pending++;
    if (close) {
        c->finishing = true;
        arm_timer(c, ADMIN_HEADER_TIMEOUT_MS); /* deadline for the client to take it */
    }
    return;
fail:
    if (wr)
        rtc_buf_free(&wr->data);
    free(wr);
    conn_close(c);
}

static void respond_text(conn *c, int code, const char *body, bool head_only, bool close)
{
    respond(c, code, NULL, "text/plain; charset=utf-8", body, strlen(body), head_only, close);
}

static void count_request(rtc_admin *a, const char *path, int code)
{
    if (!a->requests)
        return;
    char codes[8];
    snprintf(codes, sizeof(codes), "%d", code);
    const char *values[2] = {path, codes};
    rtc_metric_inc(rtc_metric_child(a->requests, values), 1);
}

static void handle_request(conn *c, const rtc_http1_request *req)
{
    rtc_admin *a = c->admin;
    bool head = strcmp(req->method, "HEAD") == 0;
    bool close = !req->keep_alive;
    const char *route = NULL;
    int code;

    if (strcmp(req->path, "/healthz") == 0 || strcmp(req->path, "/readyz") == 0 ||
        strcmp(req->path, "/metrics") == 0)
        route = req->path;
    if (!route) {
        code = 404;
        respond_text(c, code, "not found\n", head, close);
        count_request(a, "other", code);
        return;
    }
    if (!head && strcmp(req->method, "GET") != 0) {
        code = 405;
        respond(c, code, "Allow: GET, HEAD\r\n", "text/plain; charset=utf-8",
                "method not allowed\n", strlen("method not allowed\n"), false, close);
        count_request(a, route, code);
        return;
    }
    if (strcmp(route, "/healthz") == 0) {
        code = 200;
        respond_text(c, code, "ok\n", head, close);
    } else if (strcmp(route, "/readyz") == 0) {
        if (a->ready) {
            code = 200;
            respond_text(c, code, "ready\n", head, close);
        } else {
            char body[sizeof(a->reason) + 16];
            snprintf(body, sizeof(body), a->reason[0] ? "not ready: %s\n" : "not ready\n",
                     a->reason);
            code = 503;
            respond_text(c, code, body, head, close);
        }
    } else {
        /* Count before rendering so the scrape includes itself. */
        count_request(a, route, 200);
        rtc_buf body = RTC_BUF_INIT;
        if (a->metrics && rtc_metrics_render(a->metrics, &body) < 0) {
            rtc_buf_free(&body);
            respond_text(c, 500, "out of memory\n", head, close);
            return;
        }
        respond(c, 200, NULL, "text/plain; version=0.0.4; charset=utf-8",
                body.data ? (const char *)body.data : "", body.len, head, close);
        rtc_buf_free(&body);
        return;
    }
    count_request(a, route, code);
}

/* Answer every complete request in the input buffer, in order. */
static void conn_process(conn *c)
{
    size_t off = 0;
    bool answered = false;

    while (!c->finishing && !c->closing && off < c->in.len) {
        if (c->tcp.write_queue_size >= ADMIN_WRITE_HIGH_WATER)
            break; /* backpressure: resume from on_write */
        rtc_http1_request req;
        int n = rtc_http1_parse_request((const char *)c->in.data + off, c->in.len - off,
                                        ADMIN_MAX_HEAD_BYTES, &req);
        if (n == 0)
            break;
        if (n < 0) {
            if (n == RTC_ETOOBIG)
                respond_text(c, 431, "request header too large\n", false, true);
            else
                respond_text(c, 400, "bad request\n", false, true);
            count_request(c->admin, "other", n == RTC_ETOOBIG ? 431 : 400);
            break;
        }
        off += (size_t)n;
        answered = true;
        handle_request(c, &req);
    }
    if (c->closing)
        return;
    if (c->finishing) {
        rtc_buf_reset(&c->in);
        return;
    }
    rtc_buf_consume(&c->in, off);

    bool paused = c->tcp.write_queue_size >= ADMIN_WRITE_HIGH_WATER;
    if (paused && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    } else if (!paused && !c->reading && conn_read_start(c) < 0) {
        conn_close(c);
        return;
    }
    /* A new request starts now: it gets a fresh header deadline; with
     * nothing pending the connection is idle. */
    if (answered)
        arm_timer(c, c->in.len ? ADMIN_HEADER_TIMEOUT_MS : ADMIN_IDLE_TIMEOUT_MS);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = h->data;
    (void)suggested;
    if (rtc_buf_reserve(&c->in, ADMIN_READ_CHUNK) < 0) {
        *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init((char *)c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    (void)buf;
    if (nread == UV_EOF && !c->lingering && c->writes_pending > 0) {
        /* "send request; shutdown(SHUT_WR)" clients: finish the answers first. */
        c->peer_eof = c->finishing = true;
        uv_read_stop(s);
        c->reading = false;
        arm_timer(c, ADMIN_HEADER_TIMEOUT_MS);
        return;
    }
    if (nread < 0) {
        conn_close(c); /* EOF, reset or ENOBUFS */
        return;
    }
    if (nread == 0 || c->finishing)
        return; /* after the last answer, input is read and dropped */
    bool was_idle = c->in.len == 0;
    c->in.len += (size_t)nread;
    if (was_idle)
        arm_timer(c, ADMIN_HEADER_TIMEOUT_MS);
    conn_process(c);
}

static void on_timer(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->finishing || c->in.len == 0) {
        conn_close(c); /* linger over, answer not taken, or idle keep-alive */
        return;
    }
    /* A request head that did not arrive in time. */
    respond_text(c, 408, "request timeout\n", false, true);
    count_request(c->admin, "other", 408);
}

static void on_connection(uv_stream_t *server, int status)
{
    rtc_admin *a = server->data;
    if (status < 0 || a->closing)
        return;
    conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->admin = a;
    if (uv_tcp_init(a->loop, &c->tcp) < 0) {
        free(c);
        return;
    }
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    a->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 || a->nconns > ADMIN_MAX_CONNS) {
        conn_close(c); /* over the cap: accept and drop, so the backlog drains */
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    arm_timer(c, ADMIN_HEADER_TIMEOUT_MS);
    if (conn_read_start(c) < 0)
        conn_close(c);
}

static int conn_read_start(conn *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
        return RTC_EIO;
    c->reading = true;
    return 0;
}

/* Resolve host (a literal, or a name resolved once at startup, before the
 * loop runs, so a blocking lookup is acceptable here). */
static int resolve(uv_loop_t *loop, const char *host, uint16_t port, struct sockaddr_storage *ss,
                   socklen_t *sslen)
{
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) {
        *sslen = sizeof(struct sockaddr_in);
        return 0;
    }
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) {
        *sslen = sizeof(struct sockaddr_in6);
        return 0;
    }
    uv_getaddrinfo_t req;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    if (uv_getaddrinfo(loop, &req, NULL, host, NULL, &hints) < 0 || !req.addrinfo)
        return RTC_EINVAL;
    memcpy(ss, req.addrinfo->ai_addr, req.addrinfo->ai_addrlen);
    *sslen = req.addrinfo->ai_addrlen;
    uv_freeaddrinfo(req.addrinfo);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        return RTC_EINVAL;
    return 0;
}

int rtc_admin_start(uv_loop_t *loop, const char *host, uint16_t port, rtc_metrics *metrics,
                    rtc_admin **out)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    rtc_admin *a = NULL;
    int fd = -1, one = 1, rc;

    *out = NULL;
    if (!loop || !host || !host[0])
        return RTC_EINVAL;
    if ((rc = resolve(loop, host, port, &ss, &sslen)) < 0)
        return rc;

    /* Bind and listen on a plain socket first: failures (EADDRINUSE) then
     * leave no libuv handle behind that would need the loop to be freed. */
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, ADMIN_BACKLOG) < 0) {
        rc = RTC_EIO;
        goto fail;
    }
    a = calloc(1, sizeof(*a));
    if (!a) {
        rc = RTC_ENOMEM;
        goto fail;
    }
    a->loop = loop;
    a->metrics = metrics;
    a->ready = true;
    if (metrics) {
        static const char *const labels[] = {"path", "code"};
        a->requests =
            rtc_metrics_family(metrics, RTC_METRIC_COUNTER, "rtc_admin_requests_total",
                               "Admin HTTP requests by path and status code.", 2, labels, NULL, 0);
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
        rc = RTC_EIO;
        goto fail;
    }
    a->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    if (uv_tcp_init(loop, &a->listener) < 0) {
        rc = RTC_EIO;
        goto fail;
    }
    a->listener.data = a;
    if (uv_tcp_open(&a->listener, fd) < 0 ||
        uv_listen((uv_stream_t *)&a->listener, ADMIN_BACKLOG, on_connection) < 0) {
        /* The handle exists now: it can only be freed through uv_close. */
        a->closing = true;
        uv_close((uv_handle_t *)&a->listener, on_listener_closed);
        return RTC_EIO;
    }
    *out = a;
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    free(a);
    return rc;
}

void rtc_admin_set_ready(rtc_admin *a, bool ready, const char *reason)
{
    if (!a)
        return;
    a->ready = ready;
    size_t n = 0;
    /* The reason goes into a response body: keep it to one printable line. */
    for (const char *p = reason ? reason : ""; *p && n + 1 < sizeof(a->reason); p++)
        a->reason[n++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? ' ' : *p;
    a->reason[n] = '\0';
}

uint16_t rtc_admin_port(const rtc_admin *a)
{
    return a ? a->port : 0;
}

void rtc_admin_close(rtc_admin *a)
{
    if (!a || a->closing)
        return;
    a->closing = true;
    uv_close((uv_handle_t *)&a->listener, on_listener_closed);
    for (conn *c = a->conns; c; c = c->next)
        conn_close(c);
}

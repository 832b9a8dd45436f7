/* test_admin.c — the admin HTTP server on a real loopback socket.
 *
 * The server runs on a private uv loop that the test pumps with
 * UV_RUN_NOWAIT while a plain non-blocking socket plays the client, so
 * everything happens on one thread and in a deterministic order. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>
#include <uv.h>

#include "rtc/admin.h"
#include "rtc/buf.h"
#include "rtc/core.h"
#include "rtc/error.h"
#include "rtc/metrics.h"

struct fixture {
    uv_loop_t loop;
    rtc_metrics *metrics;
    rtc_admin *admin;
    uint16_t port;
};

struct response {
    int status;
    char head[2048];
    char body[65536 * 4];
    size_t body_len;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || uv_loop_init(&f->loop) != 0)
        return -1;
    f->metrics = rtc_metrics_new();
    if (!f->metrics || rtc_admin_start(&f->loop, "127.0.0.1", 0, f->metrics, &f->admin) != 0)
        return -1;
    f->port = rtc_admin_port(f->admin);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    rtc_admin_close(f->admin);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* runs the uv_close callbacks that free */
    int rc = uv_loop_close(&f->loop);
    rtc_metrics_free(f->metrics);
    free(f);
    return rc == 0 ? 0 : -1; /* a leftover handle would be a leak */
}

static void pump(struct fixture *f)
{
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

static int client_connect_rcvbuf(uint16_t port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0) /* before connect, so the advertised window stays small */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* The kernel completes the handshake from the backlog; no accept needed yet. */
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static int client_connect(uint16_t port)
{
    return client_connect_rcvbuf(port, 0);
}

static void client_send(struct fixture *f, int fd, const char *data, size_t len)
{
    uint64_t deadline = rtc_now_ms() + 5000;
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            pump(f);
            assert_true(rtc_now_ms() < deadline);
        } else {
            fail_msg("send: %s", strerror(errno));
        }
    }
}

static void client_send_str(struct fixture *f, int fd, const char *s)
{
    client_send(f, fd, s, strlen(s));
}

/* Read what is there; 1 = got bytes, 0 = nothing yet, -1 = EOF or reset. */
static int client_recv(int fd, rtc_buf *in)
{
    char tmp[16384];
    ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
    if (n > 0) {
        assert_int_equal(rtc_buf_append(in, tmp, (size_t)n), 0);
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return -1;
}

/* One whole response at the front of `in`: its length, or 0 if incomplete. */
static size_t parse_response(rtc_buf *in, bool head_only, struct response *r)
{
    const char *s = (const char *)in->data;
    const char *end = in->len ? memmem(s, in->len, "\r\n\r\n", 4) : NULL;
    if (!end)
        return 0;
    size_t hlen = (size_t)(end - s) + 4;
    assert_true(hlen < sizeof(r->head));
    memcpy(r->head, s, hlen);
    r->head[hlen] = '\0';
    assert_int_equal(sscanf(r->head, "HTTP/1.1 %d ", &r->status), 1);
    const char *cl = strstr(r->head, "\r\nContent-Length: ");
    assert_non_null(cl); /* on every response */
    size_t blen = strtoul(cl + 18, NULL, 10);
    r->body_len = head_only ? 0 : blen;
    if (in->len < hlen + r->body_len)
        return 0;
    assert_true(r->body_len < sizeof(r->body));
    memcpy(r->body, s + hlen, r->body_len);
    r->body[r->body_len] = '\0';
    return hlen + r->body_len;
}

static void read_response(struct fixture *f, int fd, rtc_buf *in, bool head_only,
                          struct response *r)
{
    uint64_t deadline = rtc_now_ms() + 10000; /* > the server's 5 s header timeout */
    for (;;) {
        size_t n = parse_response(in, head_only, r);
        if (n) {
            rtc_buf_consume(in, n);
            return;
        }
        pump(f);
        int rc = client_recv(fd, in);
        if (rc < 0)
            fail_msg("connection closed before a whole response (%zu bytes)", in->len);
        if (rc == 0) {
            assert_true(rtc_now_ms() < deadline);
            usleep(500);
        }
    }
}

/* The server must close the connection (after the answers in `in`). */
static void wait_closed(struct fixture *f, int fd, rtc_buf *in, int timeout_ms)
{
    uint64_t deadline = rtc_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        pump(f);
        int rc = client_recv(fd, in);
        if (rc < 0)
            return;
        if (rc == 0) {
            if (rtc_now_ms() > deadline)
                fail_msg("server did not close the connection");
            usleep(500);
        }
    }
}

static void roundtrip(struct fixture *f, const char *req, bool head_only, struct response *r)
{
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send_str(f, fd, req);
    read_response(f, fd, &in, head_only, r);
    assert_int_equal(in.len, 0); /* nothing extra */
    close(fd);
    rtc_buf_free(&in);
}

static struct response R; /* large: keep it off the stack */

static void test_healthz(void **state)
{
    struct fixture *f = *state;
    roundtrip(f, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_int_equal(R.status, 200);
    assert_string_equal(R.body, "ok\n");
    assert_non_null(strstr(R.head, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
    assert_non_null(strstr(R.head, "\r\nContent-Length: 3\r\n"));
    assert_non_null(strstr(R.head, "\r\nConnection: keep-alive\r\n"));
    assert_non_null(strstr(R.head, "\r\nDate: "));
}

static void test_readyz(void **state)
{
    struct fixture *f = *state;
    roundtrip(f, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_int_equal(R.status, 200);
    assert_string_equal(R.body, "ready\n");
    rtc_admin_set_ready(f->admin, false, "draining");
    roundtrip(f, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_int_equal(R.status, 503);
    assert_string_equal(R.body, "not ready: draining\n");
    rtc_admin_set_ready(f->admin, false, "redis\r\ndown");
    roundtrip(f, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_string_equal(R.body, "not ready: redis  down\n"); /* one line, always */
    rtc_admin_set_ready(f->admin, true, NULL);
    roundtrip(f, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_int_equal(R.status, 200);
}

static void test_metrics(void **state)
{
    struct fixture *f = *state;
    rtc_metric_inc(rtc_metrics_counter(f->metrics, "rtc_test_total", "Test."), 5);
    roundtrip(f, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_int_equal(R.status, 200);
    assert_non_null(
        strstr(R.head, "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    assert_non_null(strstr(R.body, "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(R.body, "\nrtc_test_total 5\n"));
    assert_non_null(strstr(R.body, "rtc_admin_requests_total{path=\"/metrics\",code=\"200\"} 1\n"));
    assert_int_equal(strlen(R.body), R.body_len);
}

static void test_head(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send_str(f, fd, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(f, fd, &in, true, &R);
    assert_int_equal(R.status, 200);
    assert_non_null(strstr(R.head, "\r\nContent-Length: 3\r\n")); /* the GET length */
    /* No body followed: the next response starts right away on the same connection. */
    client_send_str(f, fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(f, fd, &in, false, &R);
    assert_string_equal(R.body, "ok\n");
    close(fd);
    rtc_buf_free(&in);
}

static void test_not_found(void **state)
{
    struct fixture *f = *state;
    roundtrip(f, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_int_equal(R.status, 404);
    roundtrip(f, "GET /healthz/ HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_int_equal(R.status, 404);
}

static void test_method_not_allowed(void **state)
{
    struct fixture *f = *state;
    roundtrip(f, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", false, &R);
    assert_int_equal(R.status, 405);
    assert_non_null(strstr(R.head, "\r\nAllow: GET, HEAD\r\n"));
    roundtrip(f, "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", false, &R);
    assert_int_equal(R.status, 405);
}

static void test_malformed_400_and_close(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send_str(f, fd, "GET / HTTP/1.1\nHost: x\n\n");
    read_response(f, fd, &in, false, &R);
    assert_int_equal(R.status, 400);
    assert_non_null(strstr(R.head, "\r\nConnection: close\r\n"));
    wait_closed(f, fd, &in, 5000);
    assert_int_equal(in.len, 0);
    close(fd);
    rtc_buf_free(&in);
}

static void test_body_rejected(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    /* The answer must survive the unread body (FIN + linger, not RST). */
    client_send_str(f, fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd");
    read_response(f, fd, &in, false, &R);
    assert_int_equal(R.status, 400);
    wait_closed(f, fd, &in, 5000);
    close(fd);
    rtc_buf_free(&in);
}

static void test_too_big_431(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    char big[10000];
    int n = snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', sizeof(big) - (size_t)n);
    int fd = client_connect(f->port);
    client_send(f, fd, big, sizeof(big));
    read_response(f, fd, &in, false, &R);
    assert_int_equal(R.status, 431);
    wait_closed(f, fd, &in, 5000);
    close(fd);
    rtc_buf_free(&in);
}

static void test_keep_alive_two_requests(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send_str(f, fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(f, fd, &in, false, &R);
    assert_string_equal(R.body, "ok\n");
    client_send_str(f, fd, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(f, fd, &in, false, &R);
    assert_string_equal(R.body, "ready\n");
    close(fd);
    rtc_buf_free(&in);
}

static void test_pipelined(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send_str(f, fd,
                    "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                    "HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); /* after close: ignored */
    read_response(f, fd, &in, false, &R);
    assert_int_equal(R.status, 200);
    assert_string_equal(R.body, "ok\n");
    read_response(f, fd, &in, false, &R);
    assert_int_equal(R.status, 404);
    read_response(f, fd, &in, true, &R);
    assert_int_equal(R.status, 200);
    read_response(f, fd, &in, false, &R);
    assert_string_equal(R.body, "ready\n");
    assert_non_null(strstr(R.head, "\r\nConnection: close\r\n"));
    wait_closed(f, fd, &in, 5000);
    assert_int_equal(in.len, 0);
    close(fd);
    rtc_buf_free(&in);
}

static void test_many_pipelined(void **state)
{
    struct fixture *f = *state;
    const char *one = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t n = 3000, len = strlen(one);
    char *all = malloc(n * len);
    assert_non_null(all);
    for (size_t i = 0; i < n; i++)
        memcpy(all + i * len, one, len);
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send(f, fd, all, n * len);
    for (size_t i = 0; i < n; i++) {
        read_response(f, fd, &in, false, &R);
        assert_int_equal(R.status, 200);
    }
    close(fd);
    rtc_buf_free(&in);
    free(all);
}

static void test_half_close_gets_answers(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send_str(f, fd,
                    "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    shutdown(fd, SHUT_WR); /* like `printf ... | nc` */
    read_response(f, fd, &in, false, &R);
    assert_string_equal(R.body, "ok\n");
    read_response(f, fd, &in, false, &R);
    assert_string_equal(R.body, "ready\n");
    wait_closed(f, fd, &in, 5000);
    close(fd);
    rtc_buf_free(&in);
}

static void test_backpressure(void **state)
{
    /* A client that pipelines scrapes without reading: the server must stop
     * reading (bounded memory) and still answer everything, in order. */
    struct fixture *f = *state;
    const char *labels[] = {"i"};
    rtc_metric_family *fam = rtc_metrics_family(f->metrics, RTC_METRIC_GAUGE, "rtc_filler",
                                                "Filler.", 1, labels, NULL, 0);
    for (int i = 0; i < 200; i++) {
        char v[32];
        snprintf(v, sizeof(v), "value-%d", i);
        const char *vals[] = {v};
        rtc_metric_set(rtc_metric_child(fam, vals), i);
    }
    const char *one = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t n = 600, len = strlen(one);
    char *all = malloc(n * len);
    assert_non_null(all);
    for (size_t i = 0; i < n; i++)
        memcpy(all + i * len, one, len);
    int fd = client_connect_rcvbuf(f->port, 4096);
    client_send(f, fd, all, n * len);
    for (int k = 0; k < 200; k++) { /* let the server run ahead while we do not read */
        pump(f);
        usleep(100);
    }
    rtc_buf in = RTC_BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        read_response(f, fd, &in, false, &R);
        assert_int_equal(R.status, 200);
        assert_non_null(strstr(R.body, "rtc_filler{i=\"value-199\"} 199\n"));
    }
    close(fd);
    rtc_buf_free(&in);
    free(all);
}

static void test_split_request(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    const char *parts[] = {"GE", "T /hea", "lthz HTTP/1.1\r", "\nHost: x\r\n", "\r", "\n"};
    for (size_t i = 0; i < 6; i++) {
        client_send_str(f, fd, parts[i]);
        for (int k = 0; k < 5; k++)
            pump(f);
    }
    read_response(f, fd, &in, false, &R);
    assert_string_equal(R.body, "ok\n");
    close(fd);
    rtc_buf_free(&in);
}

static void test_http10_closes(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send_str(f, fd, "GET /healthz HTTP/1.0\r\n\r\n");
    read_response(f, fd, &in, false, &R);
    assert_int_equal(R.status, 200);
    assert_non_null(strstr(R.head, "\r\nConnection: close\r\n"));
    wait_closed(f, fd, &in, 5000);
    close(fd);
    rtc_buf_free(&in);
}

static void test_header_timeout(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    client_send_str(f, fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); /* never finished */
    uint64_t t0 = rtc_now_ms();
    read_response(f, fd, &in, false, &R);
    assert_int_equal(R.status, 408);
    assert_true(rtc_now_ms() - t0 >= 4500);
    wait_closed(f, fd, &in, 5000);
    close(fd);
    rtc_buf_free(&in);
}

static void test_connection_cap(void **state)
{
    struct fixture *f = *state;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < 800)
        skip();
    enum { N = 256 + 8 };
    int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = client_connect(f->port);
        pump(f); /* accept in connection order */
    }
    for (int k = 0; k < 50; k++) {
        pump(f);
        usleep(200);
    }
    int closed = 0;
    rtc_buf in = RTC_BUF_INIT;
    for (int i = 0; i < N; i++) {
        if (client_recv(fds[i], &in) < 0)
            closed++;
    }
    assert_int_equal(closed, 8);
    assert_int_equal(in.len, 0);
    /* The first connections still work. */
    client_send_str(f, fds[0], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(f, fds[0], &in, false, &R);
    assert_int_equal(R.status, 200);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    rtc_buf_free(&in);
}

static void test_close_with_open_connections(void **state)
{
    struct fixture *f = *state;
    rtc_buf in = RTC_BUF_INIT;
    int fd = client_connect(f->port);
    int fd2 = client_connect(f->port);
    client_send_str(f, fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    read_response(f, fd, &in, false, &R);
    client_send_str(f, fd2, "GET /heal"); /* half a request in flight */
    for (int k = 0; k < 10; k++)
        pump(f);
    rtc_admin_close(f->admin);
    f->admin = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_alive(&f->loop), 0);
    wait_closed(f, fd, &in, 1000);
    wait_closed(f, fd2, &in, 1000);
    close(fd);
    close(fd2);
    rtc_buf_free(&in);
}

static void test_start_errors(void **state)
{
    struct fixture *f = *state;
    rtc_admin *a = NULL;
    /* The fixture's port is taken. */
    assert_int_equal(rtc_admin_start(&f->loop, "127.0.0.1", f->port, NULL, &a), RTC_EIO);
    assert_null(a);
    assert_int_equal(rtc_admin_start(&f->loop, "", 0, NULL, &a), RTC_EINVAL);
    assert_int_equal(rtc_admin_start(&f->loop, "no such host.invalid", 0, NULL, &a), RTC_EINVAL);
    /* IPv6 loopback, no metrics registry: /metrics still answers (empty). */
    if (rtc_admin_start(&f->loop, "::1", 0, NULL, &a) == 0) {
        assert_true(rtc_admin_port(a) > 0);
        rtc_admin_close(a);
    }
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_healthz),
        T(test_readyz),
        T(test_metrics),
        T(test_head),
        T(test_not_found),
        T(test_method_not_allowed),
        T(test_malformed_400_and_close),
        T(test_body_rejected),
        T(test_too_big_431),
        T(test_keep_alive_two_requests),
        T(test_pipelined),
        T(test_many_pipelined),
        T(test_half_close_gets_answers),
        T(test_backpressure),
        T(test_split_request),
        T(test_http10_closes),
        T(test_connection_cap),
        T(test_close_with_open_connections),
        T(test_start_errors),
        T(test_header_timeout),
    };
    return cmocka_run_group_tests_name("admin", tests, NULL, NULL);
}

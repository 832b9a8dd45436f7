/* interop.client_vs_grpcio: rtc's gRPC client (rtc_grpc_channel) against a
 * server nobody here wrote — Debian's python3-grpcio, running
 * tests/interop/grpcio_server.py (see its docstring for the methods; the
 * messages are raw bytes, so the tests send and check bytes directly).
 *
 * Servers are real processes on 127.0.0.1 with ephemeral ports; each test
 * runs its own uv loop until the condition it waits for holds (bounded by a
 * generous deadline, never a sleep), then closes the channel and requires
 * the loop to end with every handle closed.
 *
 * Environment: RTC_GRPCIO_SERVER (path of grpcio_server.py, required),
 * RTC_INTEROP_PYTHON (default /usr/bin/python3), RTC_LOG_LEVEL (default warn). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rtc/grpc.h"
#include "rtc/log.h"
#include "rtc/metrics.h"

#define WAIT_MS 20000 /* generous bound for anything that should be quick */

/* ---- python servers ---------------------------------------------------- */

typedef struct server {
    pid_t pid;
    uint16_t port;
    char name[16];
    char target[32]; /* "127.0.0.1:port" */
} server;

static const char *g_python;
static const char *g_script;

static int server_start_ex(server *s, const char *name, uint16_t port, bool health, int max_age_ms)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    char portstr[8], agestr[16];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    snprintf(agestr, sizeof(agestr), "%d", max_age_ms);
    const char *argv[12] = {g_python, g_script, "--name", name, "--port", portstr};
    size_t argc = 6;
    if (!health)
        argv[argc++] = "--no-health";
    if (max_age_ms > 0) {
        argv[argc++] = "--max-age-ms";
        argv[argc++] = agestr;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(g_python, (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    s->pid = pid;
    snprintf(s->name, sizeof(s->name), "%s", name);
    char line[32] = {0};
    size_t n = 0;
    while (n < sizeof(line) - 1) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int r = poll(&p, 1, WAIT_MS);
        if (r <= 0)
            break;
        ssize_t k = read(fds[0], line + n, 1);
        if (k <= 0)
            break;
        if (line[n] == '\n')
            break;
        n++;
    }
    close(fds[0]);
    int p = atoi(line);
    if (p <= 0 || p > 65535) {
        fprintf(stderr, "grpcio server %s did not start (got '%s')\n", name, line);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        s->pid = 0;
        return -1;
    }
    s->port = (uint16_t)p;
    snprintf(s->target, sizeof(s->target), "127.0.0.1:%u", (unsigned)s->port);
    return 0;
}

static int server_start(server *s, const char *name, uint16_t port, bool health)
{
    return server_start_ex(s, name, port, health, 0);
}

static void server_kill(server *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static server g_a, g_b; /* shared by most tests; health SERVING */

/* ---- loop helpers ------------------------------------------------------ */

typedef struct env {
    uv_loop_t loop;
    uv_timer_t guard; /* wakes the loop so deadlines are checked */
    rtc_grpc_channel *ch[3];
    rtc_metrics *metrics;
} env;

static void guard_cb(uv_timer_t *t)
{
    (void)t;
}

typedef bool (*cond_fn)(void *arg);

static bool run_until(env *e, cond_fn cond, void *arg, uint64_t timeout_ms)
{
    uv_update_time(&e->loop);
    uint64_t deadline = uv_now(&e->loop) + timeout_ms;
    while (!cond(arg)) {
        uv_update_time(&e->loop);
        if (uv_now(&e->loop) >= deadline)
            return false;
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    return true;
}

static bool ready_cond(void *arg)
{
    return rtc_grpc_channel_ready(arg);
}

static bool not_ready_cond(void *arg)
{
    return !rtc_grpc_channel_ready(arg);
}

static int env_setup(void **state)
{
    env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    uv_timer_init(&e->loop, &e->guard);
    uv_timer_start(&e->guard, guard_cb, 25, 25);
    *state = e;
    return 0;
}

/* Set while a test's channels are closed in teardown: after a failed
 * assertion, calls may still point at results in the test's dead stack
 * frame, so the callbacks must not touch them. */
static bool g_teardown;

static int env_teardown(void **state)
{
    env *e = *state;
    g_teardown = true;
    for (size_t i = 0; i < 3; i++)
        if (e->ch[i])
            rtc_grpc_channel_close(e->ch[i]);
    uv_close((uv_handle_t *)&e->guard, NULL);
    /* Everything the channels own is freed from close callbacks: the loop
     * must run dry, and uv_loop_close proves no handle was left behind. */
    uv_run(&e->loop, UV_RUN_DEFAULT);
    g_teardown = false;
    int rc = uv_loop_close(&e->loop);
    if (e->metrics)
        rtc_metrics_free(e->metrics);
    free(e);
    assert_int_equal(rc, 0);
    return 0;
}

static rtc_grpc_channel *channel(env *e, size_t slot, const char *targets, bool health)
{
    rtc_grpc_channel_options o;
    rtc_grpc_channel_options_init(&o);
    o.targets = targets;
    o.health_check = health;
    o.backoff_initial_ms = 100;
    o.backoff_max_ms = 1000;
    rtc_grpc_channel *ch = NULL;
    assert_int_equal(rtc_grpc_channel_new(&e->loop, &o, e->metrics, &ch), 0);
    e->ch[slot] = ch;
    return ch;
}

/* ---- call results ------------------------------------------------------ */

typedef struct result {
    int ncloses;
    int status;
    char message[512];
    size_t nmsgs;
    size_t bytes;
    bool order_ok;  /* Stream: message i starts with u32 i */
    uint8_t *first; /* copy of the first message */
    size_t first_len;
    bool got_headers;
    char h_server[32];
    char t_server[32], t_echo[128], t_ua[128], t_deadline[32];
    /* cancel-from-inside: cancel after this many messages */
    size_t cancel_after;
    rtc_grpc_client_call *call;
    bool cancelled;
    int after_cancel; /* callbacks seen after cancel: must stay 0 */
    bool closed_sync; /* on_close ran inside rtc_grpc_channel_call */
    bool in_start;
} result;

static void copy_md(const rtc_grpc_metadata *md, size_t n, const char *key, char *out, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(md[i].key, key) == 0)
            snprintf(out, len, "%s", md[i].value);
}

static void r_headers(void *ud, const rtc_grpc_metadata *md, size_t n)
{
    if (g_teardown)
        return;
    result *r = ud;
    if (r->cancelled)
        r->after_cancel++;
    r->got_headers = true;
    copy_md(md, n, "x-server", r->h_server, sizeof(r->h_server));
}

static int r_message(void *ud, const uint8_t *data, size_t len)
{
    if (g_teardown)
        return 0;
    result *r = ud;
    if (r->cancelled)
        r->after_cancel++;
    if (r->nmsgs == 0) {
        r->order_ok = true;
        r->first = malloc(len ? len : 1);
        memcpy(r->first, data, len);
        r->first_len = len;
    }
    if (len >= 4) {
        uint32_t idx =
            (uint32_t)data[0] << 24 | (uint32_t)data[1] << 16 | (uint32_t)data[2] << 8 | data[3];
        if (idx != r->nmsgs)
            r->order_ok = false;
    }
    r->nmsgs++;
    r->bytes += len;
    if (r->cancel_after && r->nmsgs == r->cancel_after) {
        r->cancelled = true;
        rtc_grpc_client_call_cancel(r->call); /* from inside its own callback */
    }
    return 0;
}

static void r_close(void *ud, int status, const char *message, const rtc_grpc_metadata *tr,
                    size_t n)
{
    if (g_teardown)
        return;
    result *r = ud;
    if (r->cancelled)
        r->after_cancel++;
    if (r->in_start)
        r->closed_sync = true;
    r->ncloses++;
    r->status = status;
    snprintf(r->message, sizeof(r->message), "%s", message);
    copy_md(tr, n, "x-server", r->t_server, sizeof(r->t_server));
    copy_md(tr, n, "x-echo", r->t_echo, sizeof(r->t_echo));
    copy_md(tr, n, "x-user-agent", r->t_ua, sizeof(r->t_ua));
    copy_md(tr, n, "x-deadline-ms", r->t_deadline, sizeof(r->t_deadline));
}

static const rtc_grpc_call_callbacks r_cb = {r_headers, r_message, r_close};

static void result_free(result *r)
{
    free(r->first);
    r->first = NULL;
}

static bool closed_cond(void *arg)
{
    return ((result *)arg)->ncloses > 0;
}

static void start(env *e, rtc_grpc_channel *ch, const char *path, const void *req, size_t len,
                  const rtc_grpc_call_options *o, result *r)
{
    result_free(r);
    memset(r, 0, sizeof(*r));
    r->in_start = true;
    assert_int_equal(rtc_grpc_channel_call(ch, path, req, len, o, &r_cb, r, &r->call), 0);
    r->in_start = false;
    assert_false(r->closed_sync);
    (void)e;
}

/* Start a call and run the loop until it closes. Returns the status. */
static int call_sync(env *e, rtc_grpc_channel *ch, const char *path, const void *req, size_t len,
                     const rtc_grpc_call_options *o, result *r)
{
    start(e, ch, path, req, len, o, r);
    assert_true(run_until(e, closed_cond, r, WAIT_MS));
    assert_int_equal(r->ncloses, 1);
    return r->status;
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const rtc_grpc_call_options wfr = {.wait_for_ready = true, .timeout_ms = WAIT_MS};

/* Whoami over ch; the server name into out. Returns the status. */
static int whoami(env *e, rtc_grpc_channel *ch, char *out, size_t outlen)
{
    result r = {0};
    int st = call_sync(e, ch, "/rtc.test.v1.Test/Whoami", NULL, 0, NULL, &r);
    out[0] = 0;
    if (st == RTC_GRPC_OK)
        snprintf(out, outlen, "%.*s", (int)r.first_len, r.first ? (char *)r.first : "");
    result_free(&r);
    return st;
}

static void stats(env *e, rtc_grpc_channel *ch, uint32_t *stream_cancelled,
                  uint32_t *sleep_cancelled)
{
    result r = {0};
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Stats", NULL, 0, &wfr, &r), RTC_GRPC_OK);
    assert_int_equal(r.first_len, 8);
    *stream_cancelled = rd32(r.first);
    *sleep_cancelled = rd32(r.first + 4);
    result_free(&r);
}

static void set_health(env *e, rtc_grpc_channel *ctl, int status)
{
    uint8_t req[1] = {(uint8_t)status};
    result r = {0};
    assert_int_equal(call_sync(e, ctl, "/rtc.test.v1.Test/SetHealth", req, 1, &wfr, &r),
                     RTC_GRPC_OK);
    result_free(&r);
}

/* Until both names answered Whoami (calls one after another). */
static void wait_both_seen(env *e, rtc_grpc_channel *ch, const char *a, const char *b)
{
    bool seen_a = false, seen_b = false;
    uv_update_time(&e->loop);
    uint64_t deadline = uv_now(&e->loop) + WAIT_MS;
    while (!(seen_a && seen_b) && uv_now(&e->loop) < deadline) {
        char name[32];
        if (whoami(e, ch, name, sizeof(name)) == RTC_GRPC_OK) {
            seen_a = seen_a || strcmp(name, a) == 0;
            seen_b = seen_b || strcmp(name, b) == 0;
        }
        uv_update_time(&e->loop);
    }
    assert_true(seen_a);
    assert_true(seen_b);
}

/* Sequential calls until `streak` in a row succeed on `name`. Returns the
 * number of calls that did not (failures or other servers) before that. */
static int wait_streak(env *e, rtc_grpc_channel *ch, const char *name, int streak)
{
    int run = 0, other = 0;
    uv_update_time(&e->loop);
    uint64_t deadline = uv_now(&e->loop) + WAIT_MS;
    while (run < streak) {
        assert_true(uv_now(&e->loop) < deadline);
        char got[32];
        int st = whoami(e, ch, got, sizeof(got));
        if (st == RTC_GRPC_OK && strcmp(got, name) == 0) {
            run++;
        } else {
            other += run + 1;
            run = 0;
        }
        uv_update_time(&e->loop);
    }
    return other;
}

/* ---- tests ------------------------------------------------------------- */

/* Unary echo, small and 1 MiB, initial metadata, endpoint reporting; and
 * on_close never runs inside rtc_grpc_channel_call. */
static void test_unary_echo(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    result r = {0};
    /* Issued before the connection exists: queued, not failed. */
    start(e, ch, "/rtc.test.v1.Test/Echo", "hello", 5, NULL, &r);
    assert_null(rtc_grpc_client_call_endpoint(r.call));
    assert_true(run_until(e, closed_cond, &r, WAIT_MS));
    assert_int_equal(r.status, RTC_GRPC_OK);
    assert_int_equal(r.nmsgs, 1);
    assert_memory_equal(r.first, "hello", 5);
    assert_true(r.got_headers);
    assert_string_equal(r.h_server, "A");
    assert_string_equal(r.t_server, "A");
    assert_true(rtc_grpc_channel_ready(ch));

    /* Once READY the call is on its endpoint right away. */
    start(e, ch, "/rtc.test.v1.Test/Echo", "x", 1, NULL, &r);
    assert_string_equal(rtc_grpc_client_call_endpoint(r.call), g_a.target);
    assert_true(run_until(e, closed_cond, &r, WAIT_MS));
    assert_int_equal(r.status, RTC_GRPC_OK);

    size_t big = 1u << 20;
    uint8_t *buf = malloc(big);
    for (size_t i = 0; i < big; i++)
        buf[i] = (uint8_t)(i * 7 + (i >> 10));
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Echo", buf, big, NULL, &r), RTC_GRPC_OK);
    assert_int_equal(r.first_len, big);
    assert_memory_equal(r.first, buf, big);
    free(buf);

    /* Empty message. */
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Echo", NULL, 0, NULL, &r), RTC_GRPC_OK);
    assert_int_equal(r.nmsgs, 1);
    assert_int_equal(r.first_len, 0);
    result_free(&r);
}

/* Request metadata reaches the server (echoed back as trailers), as do
 * user-agent and grpc-timeout. */
static void test_metadata(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    rtc_grpc_metadata md[] = {{"x-echo", "hello metadata"}, {"x-other", "1"}};
    rtc_grpc_call_options o = {.metadata = md, .nmetadata = 2, .timeout_ms = 10000};
    result r = {0};
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Echo", "m", 1, &o, &r), RTC_GRPC_OK);
    assert_string_equal(r.t_echo, "hello metadata");
    assert_non_null(strstr(r.t_ua, "rtc-grpc/0.1"));
    int left = atoi(r.t_deadline);
    assert_true(left > 0 && left <= 10000);
    /* Invalid keys are refused up front. */
    rtc_grpc_metadata bad[] = {{"X-Upper", "v"}};
    rtc_grpc_call_options ob = {.metadata = bad, .nmetadata = 1};
    assert_int_equal(
        rtc_grpc_channel_call(ch, "/rtc.test.v1.Test/Echo", NULL, 0, &ob, &r_cb, &r, NULL),
        RTC_EINVAL);
    result_free(&r);
}

/* Server streaming: 10,000 messages in order, then one 200 KB message
 * spanning many DATA frames. */
static void test_server_stream(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    uint8_t req[8];
    be32(req, 10000);
    be32(req + 4, 16);
    result r = {0};
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Stream", req, 8, &wfr, &r), RTC_GRPC_OK);
    assert_int_equal(r.nmsgs, 10000);
    assert_int_equal(r.bytes, 10000 * 16);
    assert_true(r.order_ok);

    be32(req, 1);
    be32(req + 4, 200000);
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Stream", req, 8, &wfr, &r), RTC_GRPC_OK);
    assert_int_equal(r.nmsgs, 1);
    assert_int_equal(r.first_len, 200000);
    assert_int_equal(rd32(r.first), 0);
    assert_int_equal(r.first[199999], 'x');
    result_free(&r);
}

/* A status with a message in UTF-8 and '%' comes back decoded. */
static void test_error_status(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    const char *msg = "nicht gefunden: 100% sicher \xc3\xbc\xc3\xb1\xc3\xaf \xe2\x9c\x93 %41";
    uint8_t req[128];
    req[0] = RTC_GRPC_NOT_FOUND;
    memcpy(req + 1, msg, strlen(msg));
    result r = {0};
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Fail", req, 1 + strlen(msg), &wfr, &r),
                     RTC_GRPC_NOT_FOUND);
    assert_string_equal(r.message, msg);
    assert_int_equal(r.nmsgs, 0);
    req[0] = RTC_GRPC_PERMISSION_DENIED;
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Fail", req, 1, &wfr, &r),
                     RTC_GRPC_PERMISSION_DENIED);
    assert_string_equal(r.message, "");
    result_free(&r);
}

static void test_unknown_method(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    result r = {0};
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Nope", "x", 1, &wfr, &r),
                     RTC_GRPC_UNIMPLEMENTED);
    assert_int_equal(call_sync(e, ch, "/no.such.v1.Service/Method", NULL, 0, &wfr, &r),
                     RTC_GRPC_UNIMPLEMENTED);
    result_free(&r);
}

static bool server_saw(env *e, rtc_grpc_channel *ch, bool stream, uint32_t before)
{
    uv_update_time(&e->loop);
    uint64_t deadline = uv_now(&e->loop) + WAIT_MS;
    while (uv_now(&e->loop) < deadline) {
        uint32_t sc, slc;
        stats(e, ch, &sc, &slc);
        if ((stream ? sc : slc) > before)
            return true;
        uv_update_time(&e->loop);
    }
    return false;
}

/* The local deadline fires (DEADLINE_EXCEEDED, promptly) and the server's
 * handler sees its call end. */
static void test_deadline(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    assert_true(run_until(e, ready_cond, ch, WAIT_MS));
    uint32_t sc, slc;
    stats(e, ch, &sc, &slc);
    uint8_t req[4];
    be32(req, 30000);
    rtc_grpc_call_options o = {.timeout_ms = 300};
    result r = {0};
    uv_update_time(&e->loop);
    uint64_t t0 = uv_now(&e->loop);
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Sleep", req, 4, &o, &r),
                     RTC_GRPC_DEADLINE_EXCEEDED);
    uv_update_time(&e->loop);
    uint64_t took = uv_now(&e->loop) - t0;
    assert_true(took >= 250 && took < 3000);
    assert_true(server_saw(e, ch, false, slc));
    /* A short sleep within its deadline still answers. */
    be32(req, 10);
    o.timeout_ms = 10000;
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Sleep", req, 4, &o, &r), RTC_GRPC_OK);
    assert_memory_equal(r.first, "slept", 5);
    result_free(&r);
}

static bool fifty_cond(void *arg)
{
    return ((result *)arg)->nmsgs >= 50;
}

/* Cancel a long stream from inside on_message and from outside: no
 * callback afterwards, and the server's handler sees the cancellation. */
static void test_cancel_mid_stream(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    assert_true(run_until(e, ready_cond, ch, WAIT_MS));
    uint32_t sc, slc;
    stats(e, ch, &sc, &slc);
    uint8_t req[8];
    be32(req, 10000000);
    be32(req + 4, 64);

    result r = {0};
    start(e, ch, "/rtc.test.v1.Test/Stream", req, 8, NULL, &r);
    r.cancel_after = 100;
    assert_true(server_saw(e, ch, true, sc));
    assert_true(r.cancelled);
    assert_int_equal(r.nmsgs, 100);
    assert_int_equal(r.ncloses, 0);
    assert_int_equal(r.after_cancel, 0);

    stats(e, ch, &sc, &slc);
    result r2 = {0};
    start(e, ch, "/rtc.test.v1.Test/Stream", req, 8, NULL, &r2);
    assert_true(run_until(e, fifty_cond, &r2, WAIT_MS));
    rtc_grpc_client_call_cancel(r2.call); /* from outside any callback */
    r2.cancelled = true;
    size_t seen = r2.nmsgs;
    assert_true(server_saw(e, ch, true, sc));
    assert_int_equal(r2.nmsgs, seen);
    assert_int_equal(r2.after_cancel, 0);
    assert_int_equal(r2.ncloses, 0);

    result_free(&r);
    result_free(&r2);
}

static int stop_at_3(void *ud, const uint8_t *data, size_t len)
{
    result *r = ud;
    r_message(ud, data, len);
    return r->nmsgs == 3;
}

static void test_on_message_stop(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    uint8_t req[8];
    be32(req, 1000000);
    be32(req + 4, 8);
    rtc_grpc_call_callbacks cb = {r_headers, stop_at_3, r_close};
    result r = {0};
    assert_int_equal(
        rtc_grpc_channel_call(ch, "/rtc.test.v1.Test/Stream", req, 8, &wfr, &cb, &r, NULL), 0);
    assert_true(run_until(e, closed_cond, &r, WAIT_MS));
    assert_int_equal(r.status, RTC_GRPC_CANCELLED);
    assert_int_equal(r.nmsgs, 3);
    result_free(&r);
}

/* A response above max_recv_message fails RESOURCE_EXHAUSTED; the
 * connection stays usable. */
static void test_max_recv(void **state)
{
    env *e = *state;
    rtc_grpc_channel_options o;
    rtc_grpc_channel_options_init(&o);
    o.targets = g_a.target;
    o.max_recv_message = 1024;
    assert_int_equal(rtc_grpc_channel_new(&e->loop, &o, NULL, &e->ch[0]), 0);
    uint8_t buf[4096] = {0};
    result r = {0};
    assert_int_equal(call_sync(e, e->ch[0], "/rtc.test.v1.Test/Echo", buf, sizeof(buf), &wfr, &r),
                     RTC_GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(call_sync(e, e->ch[0], "/rtc.test.v1.Test/Echo", buf, 1000, &wfr, &r),
                     RTC_GRPC_OK);
    result_free(&r);
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t len = sizeof(sa);
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Nothing listens: UNAVAILABLE quickly, naming the cause; wait_for_ready
 * waits until its deadline. */
static void test_dead_port(void **state)
{
    env *e = *state;
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%u", (unsigned)free_port());
    rtc_grpc_channel *ch = channel(e, 0, target, false);
    result r = {0};
    uv_update_time(&e->loop);
    uint64_t t0 = uv_now(&e->loop);
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Echo", "x", 1, NULL, &r),
                     RTC_GRPC_UNAVAILABLE);
    assert_non_null(strstr(r.message, "no ready endpoint"));
    assert_non_null(strstr(r.message, "refused"));
    /* After the first attempt, failure is immediate (but still deferred). */
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Echo", "x", 1, NULL, &r),
                     RTC_GRPC_UNAVAILABLE);
    uv_update_time(&e->loop);
    assert_true(uv_now(&e->loop) - t0 < 3000);
    assert_false(rtc_grpc_channel_ready(ch));
    rtc_grpc_call_options o = {.wait_for_ready = true, .timeout_ms = 300};
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Echo", "x", 1, &o, &r),
                     RTC_GRPC_DEADLINE_EXCEEDED);
    result_free(&r);
}

static double metric(rtc_metrics *m, const char *family, const char *a, const char *b)
{
    static const char *const labels[] = {"endpoint", "result"};
    rtc_metric_family *f =
        rtc_metrics_family(m, RTC_METRIC_COUNTER, family, "x", 2, labels, NULL, 0);
    assert_non_null(f);
    const char *values[2] = {a, b};
    return rtc_metric_value(rtc_metric_child(f, values));
}

/* The server dies and comes back on the same port: the channel notices,
 * fails fast meanwhile, reconnects with backoff, and a wait_for_ready call
 * issued during the outage completes. */
static void test_reconnect(void **state)
{
    env *e = *state;
    server c = {0};
    assert_int_equal(server_start(&c, "C", 0, true), 0);
    e->metrics = rtc_metrics_new();
    rtc_grpc_channel *ch = channel(e, 0, c.target, false);
    char name[32];
    result r = {0};
    assert_int_equal(call_sync(e, ch, "/rtc.test.v1.Test/Whoami", NULL, 0, &wfr, &r), RTC_GRPC_OK);
    server_kill(&c);
    assert_true(run_until(e, not_ready_cond, ch, WAIT_MS));
    assert_int_equal(whoami(e, ch, name, sizeof(name)), RTC_GRPC_UNAVAILABLE);

    result w = {0};
    start(e, ch, "/rtc.test.v1.Test/Whoami", NULL, 0, &wfr, &w);
    uint16_t port = 0;
    sscanf(c.target, "127.0.0.1:%hu", &port);
    /* Let a few attempts fail first so backoff is exercised. */
    assert_true(run_until(e, closed_cond, &w, 600) == false);
    assert_int_equal(server_start(&c, "C", port, true), 0);
    assert_true(run_until(e, closed_cond, &w, WAIT_MS));
    assert_int_equal(w.status, RTC_GRPC_OK);
    assert_memory_equal(w.first, "C", 1);
    assert_true(metric(e->metrics, "rtc_grpc_client_connects_total", c.target, "ok") >= 2);
    assert_true(metric(e->metrics, "rtc_grpc_client_connects_total", c.target, "error") >= 1);
    server_kill(&c);
    result_free(&r);
    result_free(&w);
}

/* Two endpoints: calls alternate between them. */
static void test_round_robin(void **state)
{
    env *e = *state;
    char targets[80];
    snprintf(targets, sizeof(targets), "%s,%s", g_a.target, g_b.target);
    rtc_grpc_channel *ch = channel(e, 0, targets, false);
    wait_both_seen(e, ch, "A", "B");
    result r[10];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 10; i++)
        start(e, ch, "/rtc.test.v1.Test/Whoami", NULL, 0, NULL, &r[i]);
    int na = 0, nb = 0;
    for (int i = 0; i < 10; i++) {
        assert_true(run_until(e, closed_cond, &r[i], WAIT_MS));
        assert_int_equal(r[i].status, RTC_GRPC_OK);
        na += r[i].first[0] == 'A';
        nb += r[i].first[0] == 'B';
        result_free(&r[i]);
    }
    assert_int_equal(na, 5);
    assert_int_equal(nb, 5);
}

/* health_check: an endpoint whose Watch says NOT_SERVING gets no calls;
 * SERVING again brings it back. */
static void test_health_failover(void **state)
{
    env *e = *state;
    char targets[80];
    snprintf(targets, sizeof(targets), "%s,%s", g_a.target, g_b.target);
    rtc_grpc_channel *ch = channel(e, 0, targets, true);
    rtc_grpc_channel *ctl = channel(e, 1, g_a.target, false); /* reaches A directly */
    wait_both_seen(e, ch, "A", "B");
    set_health(e, ctl, RTC_GRPC_HEALTH_NOT_SERVING);
    wait_streak(e, ch, "B", 10);
    /* Stays away from A for good, not by chance. */
    for (int i = 0; i < 10; i++) {
        char name[32];
        assert_int_equal(whoami(e, ch, name, sizeof(name)), RTC_GRPC_OK);
        assert_string_equal(name, "B");
    }
    set_health(e, ctl, RTC_GRPC_HEALTH_SERVING);
    wait_both_seen(e, ch, "A", "B");
}

/* A server without the health service: Watch is UNIMPLEMENTED, which
 * counts as SERVING. */
static void test_health_unimplemented(void **state)
{
    env *e = *state;
    server d = {0};
    assert_int_equal(server_start(&d, "D", 0, false), 0);
    rtc_grpc_channel *ch = channel(e, 0, d.target, true);
    char name[32];
    assert_true(run_until(e, ready_cond, ch, WAIT_MS));
    assert_int_equal(whoami(e, ch, name, sizeof(name)), RTC_GRPC_OK);
    assert_string_equal(name, "D");
    server_kill(&d);
}

/* One of two endpoints is killed: calls go to the other. */
static void test_endpoint_killed(void **state)
{
    env *e = *state;
    server c = {0}, d = {0};
    assert_int_equal(server_start(&c, "C", 0, true), 0);
    assert_int_equal(server_start(&d, "D", 0, true), 0);
    char targets[80];
    snprintf(targets, sizeof(targets), "%s,%s", c.target, d.target);
    rtc_grpc_channel *ch = channel(e, 0, targets, true);
    wait_both_seen(e, ch, "C", "D");
    server_kill(&c);
    int misses = wait_streak(e, ch, "D", 20);
    assert_true(misses <= 2); /* at most the call in flight when C died */
    server_kill(&d);
}

/* rtc_grpc_channel_unary: protobuf-c in and out (grpc.health.v1 Check). */
static void unary_done(void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    if (g_teardown)
        return;
    int *out = ud;
    out[0] = status;
    out[1] = resp ? (int)((Grpc__Health__V1__HealthCheckResponse *)resp)->status : -1;
    out[2] = 1;
}

static bool unary_cond(void *arg)
{
    return ((int *)arg)[2] != 0;
}

static void test_unary_protobuf(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "";
    int out[3] = {0};
    assert_int_equal(rtc_grpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                            &grpc__health__v1__health_check_response__descriptor,
                                            &wfr, unary_done, out, NULL),
                     0);
    assert_true(run_until(e, unary_cond, out, WAIT_MS));
    assert_int_equal(out[0], RTC_GRPC_OK);
    assert_int_equal(out[1], GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    req.service = "no.such.Service";
    memset(out, 0, sizeof(out));
    assert_int_equal(rtc_grpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                            &grpc__health__v1__health_check_response__descriptor,
                                            &wfr, unary_done, out, NULL),
                     0);
    assert_true(run_until(e, unary_cond, out, WAIT_MS));
    assert_int_equal(out[0], RTC_GRPC_NOT_FOUND);
    assert_int_equal(out[1], -1);

    /* A cancelled unary call never calls done and leaks nothing. */
    rtc_grpc_client_call *call = NULL;
    memset(out, 0, sizeof(out));
    assert_int_equal(rtc_grpc_channel_unary(ch, "/grpc.health.v1.Health/Check", &req.base,
                                            &grpc__health__v1__health_check_response__descriptor,
                                            &wfr, unary_done, out, &call),
                     0);
    rtc_grpc_client_call_cancel(call);
    assert_false(run_until(e, unary_cond, out, 300));
}

/* Closing the channel ends open and queued calls with CANCELLED, once. */
static void test_close_with_open_calls(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    char dead[32];
    snprintf(dead, sizeof(dead), "127.0.0.1:%u", (unsigned)free_port());
    rtc_grpc_channel *ch2 = channel(e, 1, dead, false);
    assert_true(run_until(e, ready_cond, ch, WAIT_MS));
    uint8_t req[4];
    be32(req, 30000);
    result open = {0}, queued = {0};
    start(e, ch, "/rtc.test.v1.Test/Sleep", req, 4, NULL, &open);
    start(e, ch2, "/rtc.test.v1.Test/Echo", "x", 1, &wfr, &queued);
    assert_false(run_until(e, closed_cond, &open, 200));
    rtc_grpc_channel_close(ch);
    rtc_grpc_channel_close(ch2);
    e->ch[0] = e->ch[1] = NULL;
    assert_int_equal(open.ncloses, 1);
    assert_int_equal(open.status, RTC_GRPC_CANCELLED);
    assert_int_equal(queued.ncloses, 1);
    assert_int_equal(queued.status, RTC_GRPC_CANCELLED);
    /* Until the loop runs again the handle is still valid: new calls are
     * refused. */
    assert_int_equal(
        rtc_grpc_channel_call(ch, "/rtc.test.v1.Test/Echo", NULL, 0, NULL, &r_cb, &open, NULL),
        RTC_ECLOSED);
    result_free(&open);
    result_free(&queued);
}

/* Host names go through the (asynchronous) resolver; a name that does not
 * resolve fails UNAVAILABLE within the connect timeout. */
static void test_resolve(void **state)
{
    env *e = *state;
    char target[48];
    snprintf(target, sizeof(target), "localhost:%u", (unsigned)g_a.port);
    rtc_grpc_channel *ch = channel(e, 0, target, false);
    char name[32];
    assert_true(run_until(e, ready_cond, ch, WAIT_MS));
    assert_int_equal(whoami(e, ch, name, sizeof(name)), RTC_GRPC_OK);
    assert_string_equal(name, "A");

    rtc_grpc_channel_options o;
    rtc_grpc_channel_options_init(&o);
    o.targets = "no-such-host.invalid:50051";
    o.connect_timeout_ms = 2000;
    assert_int_equal(rtc_grpc_channel_new(&e->loop, &o, NULL, &e->ch[1]), 0);
    result r = {0};
    assert_int_equal(call_sync(e, e->ch[1], "/rtc.test.v1.Test/Whoami", NULL, 0, NULL, &r),
                     RTC_GRPC_UNAVAILABLE);
    assert_non_null(strstr(r.message, "no-such-host.invalid"));
    result_free(&r);

    /* Bad targets are refused by rtc_grpc_channel_new. */
    rtc_grpc_channel *bad = NULL;
    o.targets = "127.0.0.1";
    assert_int_equal(rtc_grpc_channel_new(&e->loop, &o, NULL, &bad), RTC_EINVAL);
    o.targets = "127.0.0.1:1,,127.0.0.1:2";
    assert_int_equal(rtc_grpc_channel_new(&e->loop, &o, NULL, &bad), RTC_EINVAL);
    assert_null(bad);
}

/* Graceful server shutdown (SIGTERM: GOAWAY, then grpcio cancels what is
 * in flight): new calls go to the other endpoint right away, the calls in
 * flight end (on the other endpoint, normally). */
static void test_goaway_drain(void **state)
{
    env *e = *state;
    server c = {0}, d = {0};
    assert_int_equal(server_start(&c, "C", 0, true), 0);
    assert_int_equal(server_start(&d, "D", 0, true), 0);
    char targets[80];
    snprintf(targets, sizeof(targets), "%s,%s", c.target, d.target);
    rtc_grpc_channel *ch = channel(e, 0, targets, false);
    wait_both_seen(e, ch, "C", "D");
    uint8_t req[4];
    be32(req, 700);
    result s[2];
    memset(s, 0, sizeof(s));
    start(e, ch, "/rtc.test.v1.Test/Sleep", req, 4, &wfr, &s[0]);
    start(e, ch, "/rtc.test.v1.Test/Sleep", req, 4, &wfr, &s[1]);
    const char *e0 = rtc_grpc_client_call_endpoint(s[0].call);
    const char *e1 = rtc_grpc_client_call_endpoint(s[1].call);
    assert_non_null(e0);
    assert_non_null(e1);
    assert_string_not_equal(e0, e1);
    kill(c.pid, SIGTERM); /* grpcio: GOAWAY, 1 s grace for calls in flight */
    int misses = wait_streak(e, ch, "D", 10);
    assert_true(misses <= 2);
    for (int i = 0; i < 2; i++) {
        assert_true(run_until(e, closed_cond, &s[i], WAIT_MS));
        if (strcmp(i ? e1 : e0, d.target) == 0) {
            assert_int_equal(s[i].status, RTC_GRPC_OK);
            assert_memory_equal(s[i].first, "slept", 5);
        }
        result_free(&s[i]);
    }
    server_kill(&c);
    server_kill(&d);
}

/* The server GOAWAYs every connection after ~300 ms
 * (grpc.max_connection_age_ms): calls in flight finish on the old
 * connection, new ones wait for (or use) the next one, none fails. */
static void test_goaway_max_age(void **state)
{
    env *e = *state;
    server c = {0};
    assert_int_equal(server_start_ex(&c, "E", 0, true, 300), 0);
    e->metrics = rtc_metrics_new();
    rtc_grpc_channel *ch = channel(e, 0, c.target, false);
    uint8_t req[4];
    be32(req, 120);
    result r[4];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 4; i++)
        start(e, ch, "/rtc.test.v1.Test/Sleep", req, 4, NULL, &r[i]);
    int ok = 0, failed = 0;
    uv_update_time(&e->loop);
    uint64_t end = uv_now(&e->loop) + 2500;
    while (uv_now(&e->loop) < end) {
        uv_run(&e->loop, UV_RUN_ONCE);
        uv_update_time(&e->loop);
        for (int i = 0; i < 4; i++) {
            if (r[i].ncloses == 0)
                continue;
            if (r[i].status == RTC_GRPC_OK) {
                ok++;
            } else {
                failed++;
                fprintf(stderr, "max-age call failed: %d %s\n", r[i].status, r[i].message);
            }
            start(e, ch, "/rtc.test.v1.Test/Sleep", req, 4, NULL, &r[i]);
        }
    }
    for (int i = 0; i < 4; i++) {
        assert_true(run_until(e, closed_cond, &r[i], WAIT_MS));
        failed += r[i].status != RTC_GRPC_OK;
        result_free(&r[i]);
    }
    assert_int_equal(failed, 0);
    assert_true(ok >= 20);
    assert_true(metric(e->metrics, "rtc_grpc_client_connects_total", c.target, "ok") >= 4);
    server_kill(&c);
}

static bool all_closed(void *arg)
{
    result *r = arg;
    for (int i = 0; i < 2000; i++)
        if (r[i].ncloses == 0)
            return false;
    return true;
}

/* Many concurrent calls over two connections. */
static void test_many_concurrent(void **state)
{
    env *e = *state;
    char targets[80];
    snprintf(targets, sizeof(targets), "%s,%s", g_a.target, g_b.target);
    rtc_grpc_channel *ch = channel(e, 0, targets, false);
    wait_both_seen(e, ch, "A", "B");
    result *r = calloc(2000, sizeof(*r));
    uint8_t msg[100];
    memset(msg, 'm', sizeof(msg));
    for (int i = 0; i < 2000; i++)
        start(e, ch, "/rtc.test.v1.Test/Echo", msg, sizeof(msg), &wfr, &r[i]);
    assert_true(run_until(e, all_closed, r, WAIT_MS * 3));
    int na = 0;
    for (int i = 0; i < 2000; i++) {
        assert_int_equal(r[i].status, RTC_GRPC_OK);
        assert_int_equal(r[i].first_len, sizeof(msg));
        na += r[i].t_server[0] == 'A';
        result_free(&r[i]);
    }
    assert_int_equal(na, 1000);
    free(r);
}

/* User code calling back into the channel from inside callbacks (which
 * run inside nghttp2's receive path): a new call from on_close, and
 * rtc_grpc_channel_close from on_message. */
typedef struct chain {
    rtc_grpc_channel *ch;
    int done, failed;
} chain;

static void chain_close(void *ud, int status, const char *message, const rtc_grpc_metadata *tr,
                        size_t n)
{
    chain *c = ud;
    if (g_teardown)
        return;
    c->done++;
    c->failed += status != RTC_GRPC_OK;
    if (c->done < 20) {
        rtc_grpc_call_callbacks cb = {NULL, NULL, chain_close};
        if (rtc_grpc_channel_call(c->ch, "/rtc.test.v1.Test/Echo", (const uint8_t *)"c", 1, NULL,
                                  &cb, c, NULL) != 0)
            c->failed++;
    }
}

static bool chain_cond(void *arg)
{
    return ((chain *)arg)->done >= 20;
}

static rtc_grpc_channel *g_close_ch;

static int close_at_5(void *ud, const uint8_t *data, size_t len)
{
    result *r = ud;
    r_message(ud, data, len);
    if (r->nmsgs == 5)
        rtc_grpc_channel_close(g_close_ch);
    return 0;
}

static void test_reentrancy(void **state)
{
    env *e = *state;
    rtc_grpc_channel *ch = channel(e, 0, g_a.target, false);
    chain c = {.ch = ch};
    rtc_grpc_call_callbacks cb = {NULL, NULL, chain_close};
    assert_int_equal(rtc_grpc_channel_call(ch, "/rtc.test.v1.Test/Echo", (const uint8_t *)"c", 1,
                                           NULL, &cb, &c, NULL),
                     0);
    assert_true(run_until(e, chain_cond, &c, WAIT_MS));
    assert_int_equal(c.failed, 0);

    uint8_t req[8];
    be32(req, 1000000);
    be32(req + 4, 32);
    result r1 = {0}, r2 = {0};
    rtc_grpc_call_callbacks cb1 = {r_headers, close_at_5, r_close};
    g_close_ch = ch;
    assert_int_equal(
        rtc_grpc_channel_call(ch, "/rtc.test.v1.Test/Stream", req, 8, NULL, &cb1, &r1, NULL), 0);
    start(e, ch, "/rtc.test.v1.Test/Stream", req, 8, NULL, &r2);
    assert_true(run_until(e, closed_cond, &r1, WAIT_MS));
    e->ch[0] = NULL; /* closed from inside the callback */
    uv_run(&e->loop, UV_RUN_NOWAIT);
    assert_int_equal(r1.ncloses, 1);
    assert_int_equal(r1.status, RTC_GRPC_CANCELLED);
    assert_int_equal(r1.nmsgs, 5);
    assert_int_equal(r2.ncloses, 1);
    assert_int_equal(r2.status, RTC_GRPC_CANCELLED);
    result_free(&r1);
    result_free(&r2);
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    g_script = getenv("RTC_GRPCIO_SERVER");
    g_python = getenv("RTC_INTEROP_PYTHON");
    if (!g_python || !g_python[0])
        g_python = "/usr/bin/python3";
    if (!g_script) {
        fprintf(stderr, "RTC_GRPCIO_SERVER is not set\n");
        return -1;
    }
    rtc_log_level lvl = RTC_LOG_WARN;
    const char *l = getenv("RTC_LOG_LEVEL");
    if (l)
        rtc_log_level_parse(l, &lvl);
    rtc_log_init("client_vs_grpcio", lvl);
    if (server_start(&g_a, "A", 0, true) != 0 || server_start(&g_b, "B", 0, true) != 0) {
        server_kill(&g_a);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    server_kill(&g_a);
    server_kill(&g_b);
    return 0;
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, env_setup, env_teardown)
    const struct CMUnitTest tests[] = {
        T(test_unary_echo),
        T(test_metadata),
        T(test_server_stream),
        T(test_error_status),
        T(test_unknown_method),
        T(test_deadline),
        T(test_cancel_mid_stream),
        T(test_on_message_stop),
        T(test_max_recv),
        T(test_dead_port),
        T(test_reconnect),
        T(test_round_robin),
        T(test_health_failover),
        T(test_health_unimplemented),
        T(test_endpoint_killed),
        T(test_unary_protobuf),
        T(test_close_with_open_calls),
        T(test_resolve),
        T(test_goaway_drain),
        T(test_goaway_max_age),
        T(test_many_concurrent),
        T(test_reentrancy),
    };
#undef T
    const char *filter = getenv("RTC_TEST_FILTER");
    if (filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests_name("interop.client_vs_grpcio", tests, group_setup,
                                       group_teardown);
}

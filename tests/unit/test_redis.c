/* test_redis.c — rtc_redis against a real redis-server on loopback.
 *
 * Each test that needs Redis starts its own /usr/bin/redis-server on a
 * free 127.0.0.1 port (no persistence) and kills it in teardown, whatever
 * happened. The client runs on a private uv loop that the test drives;
 * every wait is "run the loop until this condition holds", bounded by a
 * generous deadline, so a busy machine makes the tests slower, not red.
 * Callbacks only record what happened (an assert inside uv_run would
 * longjmp out of libuv); the test body asserts afterwards. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <cmocka.h>
#include <uv.h>

#include <hiredis/hiredis.h>

#include "rtc/core.h"
#include "rtc/error.h"
#include "rtc/log.h"
#include "rtc/metrics.h"
#include "rtc/redis.h"
#include "support/redis_server.h"

#define WAIT_MS    20000 /* deadline for anything that should happen "soon" */
#define ADMIN_PASS "adm1n-pw"

/* > 0 while the test is inside rtc_redis_command*: no callback may run then. */
static int g_in_call;
/* Contract violations seen inside callbacks, asserted by the test body. */
static int g_violations;

struct result {
    int calls;
    int err;
    int type;
    long long integer;
    char str[512];
    size_t len;
};

struct fixture {
    uv_loop_t loop;
    uv_timer_t tick; /* keeps UV_RUN_ONCE from blocking past a deadline */
    rtc_metrics *metrics;
    rtc_redis *r;
    FILE *log;
    pid_t pid;
    uint16_t port;
    const char *admin_pass; /* requirepass of the running server, or NULL */
    int ups, downs;
    char reason[256];
};

/* ---- redis-server ------------------------------------------------------ */

static uint16_t free_port(void)
{
    uint16_t port = rtc_test_free_port();
    assert_true(port != 0);
    return port;
}

/* A blocking admin connection (hiredis sync API), authenticated. NULL if
 * the server does not answer yet. */
static redisContext *admin_connect(struct fixture *f)
{
    return rtc_test_redis_connect(f->port, f->admin_pass);
}

/* Start redis-server on f->port (picking one if 0) and wait until it
 * answers PING. */
static void redis_start(struct fixture *f, const char *requirepass)
{
    if (!f->port)
        f->port = free_port();
    f->admin_pass = requirepass;
    f->pid = rtc_test_redis_start(f->port, requirepass, WAIT_MS);
    assert_true(f->pid > 0);
}

static void redis_kill(struct fixture *f)
{
    rtc_test_redis_kill(f->pid);
    f->pid = 0;
}

/* One admin command with an integer or string answer. */
static redisReply *admin_cmd(struct fixture *f, const char *fmt, ...)
{
    redisContext *c = admin_connect(f);
    assert_non_null(c);
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    assert_non_null(rep);
    return rep;
}

static int blocked_clients(struct fixture *f)
{
    redisReply *rep = admin_cmd(f, "INFO clients");
    int n = -1;
    const char *p = rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "blocked_clients:") : NULL;
    if (p)
        n = atoi(p + strlen("blocked_clients:"));
    freeReplyObject(rep);
    return n;
}

/* ---- loop helpers ------------------------------------------------------- */

static void tick_cb(uv_timer_t *t)
{
}

/* Run the loop until cond holds or ms pass; then assert cond. */
#define WAIT_FOR(f, cond, ms)                                                                      \
    do {                                                                                           \
        uint64_t dl_ = rtc_now_ms() + (ms);                                                        \
        uv_timer_start(&(f)->tick, tick_cb, 20, 20);                                               \
        while (!(cond) && rtc_now_ms() < dl_)                                                      \
            uv_run(&(f)->loop, UV_RUN_ONCE);                                                       \
        uv_timer_stop(&(f)->tick);                                                                 \
        assert_true(cond);                                                                         \
    } while (0)

static void on_result(void *ud, int err, const redisReply *reply)
{
    struct result *res = ud;
    if (g_in_call)
        g_violations++;
    if ((err == 0) != (reply != NULL))
        g_violations++;
    res->calls++;
    res->err = err;
    res->type = reply ? reply->type : 0;
    if (reply) {
        res->integer = reply->integer;
        res->len = reply->len < sizeof(res->str) ? reply->len : sizeof(res->str) - 1;
        if (reply->str)
            memcpy(res->str, reply->str, res->len);
        res->str[res->len] = 0;
    }
}

/* rtc_redis_command with the "inside the call" marker set. */
#define CMD(f, res, tmo, req, ...)                                                                 \
    ({                                                                                             \
        g_in_call++;                                                                               \
        int rc_ = rtc_redis_command((f)->r, on_result, (res), (tmo), (req), __VA_ARGS__);          \
        g_in_call--;                                                                               \
        rc_;                                                                                       \
    })

static int cmd_argv(struct fixture *f, struct result *res, int argc, const char **argv,
                    const size_t *lens)
{
    g_in_call++;
    int rc = rtc_redis_command_argv(f->r, on_result, res, 0, argc, argv, lens, NULL);
    g_in_call--;
    return rc;
}

static void on_state(void *ud, bool up, const char *reason)
{
    struct fixture *f = ud;
    if (g_in_call)
        g_violations++;
    if (rtc_redis_ready(f->r) != up)
        g_violations++;
    if (up)
        f->ups++;
    else
        f->downs++;
    snprintf(f->reason, sizeof(f->reason), "%s", reason ? reason : "(null)");
}

static void client_opts(struct fixture *f, rtc_redis_options *o, char *url, size_t urllen,
                        const char *userinfo, const char *path)
{
    rtc_redis_options_init(o);
    snprintf(url, urllen, "redis://%s%s127.0.0.1:%u%s", userinfo ? userinfo : "",
             userinfo ? "@" : "", (unsigned)f->port, path ? path : "");
    o->url = url;
    o->client_name = "test";
    o->backoff_initial_ms = 50;
    o->backoff_max_ms = 500;
}

static void client_start(struct fixture *f, const rtc_redis_options *o)
{
    assert_int_equal(rtc_redis_new(&f->loop, o, f->metrics, &f->r), 0);
    rtc_redis_on_state(f->r, on_state, f);
}

static void start_and_wait_up(struct fixture *f, rtc_redis_options *o)
{
    client_start(f, o);
    WAIT_FOR(f, f->ups == 1, WAIT_MS);
    assert_true(rtc_redis_ready(f->r));
}

static double metric_value(struct fixture *f, rtc_metric_type type, const char *name,
                           const char *result)
{
    static const char *const l1[] = {"client"};
    static const char *const l2[] = {"client", "result"};
    rtc_metric_family *fam =
        rtc_metrics_family(f->metrics, type, name, "", result ? 2 : 1, result ? l2 : l1, NULL, 0);
    assert_non_null(fam);
    const char *values[2] = {"test", result};
    rtc_metric *m = rtc_metric_child(fam, values);
    assert_non_null(m);
    return rtc_metric_value(m);
}

static double reconnects(struct fixture *f)
{
    return metric_value(f, RTC_METRIC_COUNTER, "rtc_redis_reconnects_total", NULL);
}

/* Everything logged so far (the log goes to a temporary file). */
static char *log_text(struct fixture *f)
{
    fflush(f->log);
    long n = ftell(f->log);
    assert_true(n >= 0);
    char *s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    rewind(f->log);
    assert_int_equal(fread(s, 1, (size_t)n, f->log), (size_t)n);
    fseek(f->log, 0, SEEK_END);
    return s;
}

static void assert_not_logged(struct fixture *f, const char *secret)
{
    char *s = log_text(f);
    if (strstr(s, secret))
        fail_msg("secret found in the log: %s", s);
    free(s);
}

/* ---- fixture ------------------------------------------------------------ */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || uv_loop_init(&f->loop) != 0)
        return -1;
    uv_timer_init(&f->loop, &f->tick);
    f->metrics = rtc_metrics_new();
    f->log = tmpfile();
    if (!f->metrics || !f->log)
        return -1;
    rtc_log_init("test_redis", RTC_LOG_DEBUG);
    rtc_log_set_output(f->log);
    g_in_call = 0;
    g_violations = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    redis_kill(f);
    if (f->r)
        rtc_redis_close(f->r);
    if (getenv("RTC_TEST_VERBOSE") &&
        *getenv("RTC_TEST_VERBOSE")) { /* what the client logged, for debugging */
        char *s = log_text(f);
        fputs(s, stderr);
        free(s);
    }
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* the uv_close callbacks free everything */
    int rc = uv_loop_close(&f->loop);
    rtc_log_set_output(NULL);
    fclose(f->log);
    rtc_metrics_free(f->metrics);
    int violations = g_violations;
    free(f);
    if (rc != 0)
        fprintf(stderr, "teardown: handles left on the loop\n");
    if (violations)
        fprintf(stderr, "teardown: %d callback contract violations\n", violations);
    return rc == 0 && violations == 0 ? 0 : -1;
}

/* ---- URL parsing -------------------------------------------------------- */

static void test_url_parse(void **state)
{
    rtc_redis_url u;
    assert_int_equal(rtc_redis_url_parse("redis://127.0.0.1:6380", &u), 0);
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 6380);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");
    assert_int_equal(u.db, 0);

    assert_int_equal(rtc_redis_url_parse("redis://redis-0.cache_svc.local", &u), 0);
    assert_string_equal(u.host, "redis-0.cache_svc.local");
    assert_int_equal(u.port, 6379);

    assert_int_equal(rtc_redis_url_parse("REDIS://:s3cret@h:1/3", &u), 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "s3cret");
    assert_string_equal(u.host, "h");
    assert_int_equal(u.port, 1);
    assert_int_equal(u.db, 3);

    assert_int_equal(rtc_redis_url_parse("redis://alice:p%40ss%3Aw%2Frd@h:65535/15", &u), 0);
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "p@ss:w/rd");
    assert_int_equal(u.port, 65535);
    assert_int_equal(u.db, 15);

    /* The last '@' ends the userinfo; escapes in the user name too. */
    assert_int_equal(rtc_redis_url_parse("redis://b%6Fb:a@b@h", &u), 0);
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "a@b");
    assert_string_equal(u.host, "h");

    assert_int_equal(rtc_redis_url_parse("redis://[::1]:7000/", &u), 0);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 0);
    assert_int_equal(rtc_redis_url_parse("redis://[fe80::1]", &u), 0);
    assert_int_equal(u.port, 6379);

    /* Field limits: 127 user bytes, 255 password bytes, 255 host bytes,
     * counted after decoding. */
    char url[2048], big[1024];
    memset(big, 'u', 127);
    big[127] = 0;
    snprintf(url, sizeof(url), "redis://%s:p@h", big);
    assert_int_equal(rtc_redis_url_parse(url, &u), 0);
    assert_int_equal(strlen(u.user), 127);
    memset(big, 'u', 128);
    big[128] = 0;
    snprintf(url, sizeof(url), "redis://%s:p@h", big);
    assert_int_equal(rtc_redis_url_parse(url, &u), RTC_EINVAL);

    big[0] = 0;
    for (int i = 0; i < 255; i++)
        strcat(big, "%41"); /* 765 bytes encoded, 255 decoded */
    snprintf(url, sizeof(url), "redis://:%s@h", big);
    assert_int_equal(rtc_redis_url_parse(url, &u), 0);
    assert_int_equal(strlen(u.password), 255);
    strcat(big, "A");
    snprintf(url, sizeof(url), "redis://:%s@h", big);
    assert_int_equal(rtc_redis_url_parse(url, &u), RTC_EINVAL);
    assert_string_equal(u.password, ""); /* nothing half-parsed left behind */

    memset(big, 'h', 255);
    big[255] = 0;
    snprintf(url, sizeof(url), "redis://%s", big);
    assert_int_equal(rtc_redis_url_parse(url, &u), 0);
    memset(big, 'h', 256);
    big[256] = 0;
    snprintf(url, sizeof(url), "redis://%s", big);
    assert_int_equal(rtc_redis_url_parse(url, &u), RTC_EINVAL);

    static const char *const bad[] = {
        "",
        "127.0.0.1:6379",
        "http://h",
        "rediss://h",
        "redis://",
        "redis:///0",
        "redis://:6379",
        "redis://h:",
        "redis://h:0",
        "redis://h:65536",
        "redis://h:123456",
        "redis://h:12a",
        "redis://h:-1",
        "redis://alice@h",
        "redis://h/x",
        "redis://h/-1",
        "redis://h/12345678",
        "redis://h/0/1",
        "redis://h/1?timeout=1",
        "redis://h?x",
        "redis://h#f",
        "redis://u:%zz@h",
        "redis://u:%4@h",
        "redis://u:%@h",
        "redis://u:%00@h",
        "redis://u:a b@h",
        "redis://h h",
        "redis://h%41",
        "redis://[::1",
        "redis://[::1]x",
        "redis://[zz::]:1",
        "redis://[]:1",
        "redis://[::1]:",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (rtc_redis_url_parse(bad[i], &u) != RTC_EINVAL)
            fail_msg("accepted bad URL '%s'", bad[i]);
    }
    assert_int_equal(rtc_redis_url_parse(NULL, &u), RTC_EINVAL);
    assert_int_equal(rtc_redis_url_parse("redis://h", NULL), RTC_EINVAL);
}

static void test_new_rejects_bad_options(void **state)
{
    struct fixture *f = *state;
    rtc_redis_options o;
    rtc_redis_options_init(&o);
    o.url = "redis://alice@h";
    assert_int_equal(rtc_redis_new(&f->loop, &o, NULL, &f->r), RTC_EINVAL);
    assert_null(f->r);
    rtc_redis_options_init(&o);
    o.client_name = "has space";
    assert_int_equal(rtc_redis_new(&f->loop, &o, NULL, &f->r), RTC_EINVAL);
    assert_null(f->r);
    assert_int_equal(rtc_redis_new(NULL, &o, NULL, &f->r), RTC_EINVAL);
}

/* ---- commands ----------------------------------------------------------- */

static void test_set_get_binary(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    start_and_wait_up(f, &o);
    assert_string_equal(f->reason, "connected");

    struct result set = {0}, get = {0}, name = {0};
    assert_int_equal(CMD(f, &set, 0, NULL, "SET %s %s", "greeting", "hello"), 0);
    assert_int_equal(CMD(f, &get, 0, NULL, "GET %s", "greeting"), 0);
    assert_int_equal(CMD(f, &name, 0, NULL, "CLIENT GETNAME"), 0);
    assert_int_equal(set.calls + get.calls + name.calls, 0); /* never inside the call */
    WAIT_FOR(f, name.calls == 1, WAIT_MS);
    assert_int_equal(set.err, 0);
    assert_int_equal(set.type, REDIS_REPLY_STATUS);
    assert_string_equal(set.str, "OK");
    assert_int_equal(get.err, 0);
    assert_int_equal(get.type, REDIS_REPLY_STRING);
    assert_string_equal(get.str, "hello");
    assert_string_equal(name.str, "test");

    /* Binary-safe argv: NUL, CR LF and high bytes survive both ways. */
    static const char value[] = {'a', 0, 'b', '\r', '\n', (char)0xff, 'c'};
    const char *sargv[] = {"SET", "bin\0key", value};
    const size_t slen[] = {3, 7, sizeof(value)};
    struct result bset = {0}, bget = {0}, fmt = {0};
    assert_int_equal(cmd_argv(f, &bset, 3, sargv, slen), 0);
    const char *gargv[] = {"GET", "bin\0key"};
    const size_t glen[] = {3, 7};
    assert_int_equal(cmd_argv(f, &bget, 2, gargv, glen), 0);
    /* %b with the printf-style call reads the same key. */
    assert_int_equal(CMD(f, &fmt, 0, NULL, "STRLEN %b", "bin\0key", (size_t)7), 0);
    WAIT_FOR(f, fmt.calls == 1, WAIT_MS);
    assert_int_equal(bset.err, 0);
    assert_int_equal(bget.err, 0);
    assert_int_equal(bget.type, REDIS_REPLY_STRING);
    assert_int_equal(bget.len, sizeof(value));
    assert_memory_equal(bget.str, value, sizeof(value));
    assert_int_equal(fmt.type, REDIS_REPLY_INTEGER);
    assert_int_equal(fmt.integer, (long long)sizeof(value));

    /* argv without lengths is strlen'd. */
    const char *targv[] = {"ECHO", "plain"};
    struct result echo = {0};
    assert_int_equal(cmd_argv(f, &echo, 2, targv, NULL), 0);
    WAIT_FOR(f, echo.calls == 1, WAIT_MS);
    assert_string_equal(echo.str, "plain");

    assert_true(metric_value(f, RTC_METRIC_COUNTER, "rtc_redis_commands_total", "ok") >= 7);
    assert_true(metric_value(f, RTC_METRIC_GAUGE, "rtc_redis_up", NULL) == 1);
    assert_true(metric_value(f, RTC_METRIC_HISTOGRAM, "rtc_redis_command_seconds", NULL) >= 7);
    rtc_buf out = RTC_BUF_INIT;
    assert_int_equal(rtc_metrics_render(f->metrics, &out), 0);
    assert_int_equal(rtc_buf_append(&out, "", 1), 0);
    assert_non_null(strstr((char *)out.data, "rtc_redis_up{client=\"test\"} 1"));
    assert_non_null(
        strstr((char *)out.data, "rtc_redis_commands_total{client=\"test\",result=\"ok\"}"));
    rtc_buf_free(&out);
    assert_int_equal(g_violations, 0);
}

/* A callback that queues the next command from inside itself. */
struct chain {
    struct fixture *f;
    int left;
    int done;
    int errors;
};

static void on_chain(void *ud, int err, const redisReply *reply)
{
    struct chain *c = ud;
    if (g_in_call)
        g_violations++;
    if (err != 0 || reply->type != REDIS_REPLY_INTEGER)
        c->errors++;
    c->done++;
    if (--c->left > 0) {
        g_in_call++;
        if (rtc_redis_command(c->f->r, on_chain, c, 0, NULL, "INCR chain") != 0)
            c->errors++;
        g_in_call--;
    }
}

static void test_commands_from_callbacks(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    start_and_wait_up(f, &o);
    struct chain c = {.f = f, .left = 50};
    g_in_call++;
    assert_int_equal(rtc_redis_command(f->r, on_chain, &c, 0, NULL, "INCR chain"), 0);
    g_in_call--;
    WAIT_FOR(f, c.done == 50, WAIT_MS);
    assert_int_equal(c.errors, 0);
    redisReply *rep = admin_cmd(f, "GET chain");
    assert_string_equal(rep->str, "50");
    freeReplyObject(rep);
    assert_int_equal(g_violations, 0);
}

static void test_error_reply(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    start_and_wait_up(f, &o);

    struct result set = {0}, incr = {0}, unknown = {0};
    assert_int_equal(CMD(f, &set, 0, NULL, "SET word notanumber"), 0);
    assert_int_equal(CMD(f, &incr, 0, NULL, "INCR word"), 0);
    assert_int_equal(CMD(f, &unknown, 0, NULL, "NOSUCHCOMMAND x"), 0);
    WAIT_FOR(f, unknown.calls == 1, WAIT_MS);
    assert_int_equal(incr.err, 0);
    assert_int_equal(incr.type, REDIS_REPLY_ERROR);
    assert_non_null(strstr(incr.str, "not an integer"));
    assert_int_equal(unknown.err, 0);
    assert_int_equal(unknown.type, REDIS_REPLY_ERROR);
    assert_true(metric_value(f, RTC_METRIC_COUNTER, "rtc_redis_commands_total", "error") == 2);
    /* An error reply is an answer: the link stays up. */
    assert_true(rtc_redis_ready(f->r));
    assert_int_equal(f->downs, 0);

    /* Refused locally, and then the callback never runs. */
    struct result refused = {0};
    assert_int_equal(CMD(f, &refused, 0, NULL, "SUBSCRIBE news"), RTC_EINVAL);
    assert_int_equal(CMD(f, &refused, 0, NULL, "select 1"), RTC_EINVAL);
    assert_int_equal(CMD(f, &refused, 0, NULL, "MONITOR"), RTC_EINVAL);
    assert_int_equal(CMD(f, &refused, 0, NULL, "CLIENT REPLY OFF"), RTC_EINVAL);
    assert_int_equal(CMD(f, &refused, 0, NULL, ""), RTC_EINVAL);
    assert_int_equal(cmd_argv(f, &refused, 0, NULL, NULL), RTC_EINVAL);
    struct result ping = {0};
    assert_int_equal(CMD(f, &ping, 0, NULL, "PING"), 0);
    WAIT_FOR(f, ping.calls == 1, WAIT_MS);
    assert_int_equal(refused.calls, 0);
    assert_int_equal(g_violations, 0);
}

/* ---- authentication ------------------------------------------------------ */

static void test_auth_password_and_db(void **state)
{
    struct fixture *f = *state;
    redis_start(f, ADMIN_PASS);
    rtc_redis_options o;
    char url[256];
    client_opts(f, &o, url, sizeof(url), ":" ADMIN_PASS, "/2");
    start_and_wait_up(f, &o);
    struct result set = {0};
    assert_int_equal(CMD(f, &set, 0, NULL, "SET indb2 yes"), 0);
    WAIT_FOR(f, set.calls == 1, WAIT_MS);
    assert_int_equal(set.err, 0);
    /* SELECT 2 took effect: the key is in db 2, not in db 0. */
    redisReply *rep = admin_cmd(f, "EXISTS indb2");
    assert_int_equal(rep->integer, 0);
    freeReplyObject(rep);
    redisContext *c = admin_connect(f);
    assert_non_null(c);
    rep = redisCommand(c, "SELECT 2");
    freeReplyObject(rep);
    rep = redisCommand(c, "GET indb2");
    assert_non_null(rep);
    assert_string_equal(rep->str, "yes");
    freeReplyObject(rep);
    redisFree(c);
    assert_not_logged(f, ADMIN_PASS);
}

static void test_auth_acl_user(void **state)
{
    struct fixture *f = *state;
    redis_start(f, ADMIN_PASS);
    redisReply *rep = admin_cmd(f, "ACL SETUSER alice on %s ~* &* +@all", ">p@ss:w/rd");
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    rtc_redis_options o;
    char url[256];
    client_opts(f, &o, url, sizeof(url), "alice:p%40ss%3Aw%2Frd", NULL);
    start_and_wait_up(f, &o);
    struct result who = {0};
    assert_int_equal(CMD(f, &who, 0, NULL, "ACL WHOAMI"), 0);
    WAIT_FOR(f, who.calls == 1, WAIT_MS);
    assert_int_equal(who.err, 0);
    assert_string_equal(who.str, "alice");
    assert_not_logged(f, "p@ss:w/rd");
    assert_not_logged(f, "p%40ss");
}

static void test_auth_wrong_password(void **state)
{
    struct fixture *f = *state;
    redis_start(f, ADMIN_PASS);
    rtc_redis_options o;
    char url[256];
    client_opts(f, &o, url, sizeof(url), ":Wr0ngPassw0rd", NULL);
    client_start(f, &o);
    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    assert_non_null(strstr(f->reason, "AUTH failed"));
    assert_non_null(strstr(f->reason, "WRONGPASS"));
    /* It keeps trying, quietly: no more state callbacks, never up. */
    double base = reconnects(f);
    WAIT_FOR(f, reconnects(f) >= base + 3, WAIT_MS);
    assert_int_equal(f->ups, 0);
    assert_int_equal(f->downs, 1);
    assert_false(rtc_redis_ready(f->r));
    struct result res = {0};
    assert_int_equal(CMD(f, &res, 0, NULL, "PING"), 0);
    WAIT_FOR(f, res.calls == 1, WAIT_MS);
    assert_int_equal(res.err, RTC_EUNAVAIL);
    assert_not_logged(f, "Wr0ngPassw0rd");
    rtc_redis_close(f->r);
    f->r = NULL;

    /* No password at all: the handshake PING is refused. */
    f->downs = 0;
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    client_start(f, &o);
    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    assert_non_null(strstr(f->reason, "NOAUTH"));
    assert_int_equal(f->ups, 0);
    assert_int_equal(g_violations, 0);
}

/* ---- Redis away ---------------------------------------------------------- */

static void test_unavailable_when_not_running(void **state)
{
    struct fixture *f = *state;
    f->port = free_port(); /* nobody listens there */
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    client_start(f, &o);

    /* Right away, before the first attempt even started. */
    struct result early = {0}, abandoned = {0};
    rtc_redis_req *req = NULL;
    assert_int_equal(CMD(f, &early, 0, NULL, "GET k"), 0);
    assert_int_equal(CMD(f, &abandoned, 0, &req, "GET k"), 0);
    assert_non_null(req);
    rtc_redis_req_abandon(req);
    assert_int_equal(early.calls, 0);
    WAIT_FOR(f, early.calls == 1, WAIT_MS);
    assert_int_equal(early.err, RTC_EUNAVAIL);

    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    assert_non_null(strcasestr(f->reason, "refused"));
    assert_false(rtc_redis_ready(f->r));

    struct result later = {0};
    assert_int_equal(CMD(f, &later, 0, NULL, "GET k"), 0);
    assert_int_equal(later.calls, 0);
    WAIT_FOR(f, later.calls == 1, WAIT_MS);
    assert_int_equal(later.err, RTC_EUNAVAIL);
    double base = reconnects(f);
    WAIT_FOR(f, reconnects(f) >= base + 2, WAIT_MS);
    assert_int_equal(f->downs, 1);
    assert_int_equal(abandoned.calls, 0);
    assert_true(metric_value(f, RTC_METRIC_COUNTER, "rtc_redis_commands_total", "unavailable") ==
                2);
    assert_true(metric_value(f, RTC_METRIC_GAUGE, "rtc_redis_up", NULL) == 0);
    assert_int_equal(g_violations, 0);
}

static void test_killed_mid_run(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    o.ping_interval_ms = 0; /* the loss must be noticed from the socket alone */
    start_and_wait_up(f, &o);

    struct result blocked = {0}, behind = {0};
    assert_int_equal(CMD(f, &blocked, 30000, NULL, "BLPOP never 0"), 0);
    assert_int_equal(CMD(f, &behind, 30000, NULL, "GET k"), 0);
    WAIT_FOR(f, blocked_clients(f) == 1, WAIT_MS); /* both are at Redis now */
    redis_kill(f);
    WAIT_FOR(f, blocked.calls == 1 && behind.calls == 1, WAIT_MS);
    assert_int_equal(blocked.err, RTC_EUNAVAIL);
    assert_int_equal(behind.err, RTC_EUNAVAIL);
    assert_int_equal(f->downs, 1);
    assert_false(rtc_redis_ready(f->r));

    /* Reconnects keep failing, and the state callback stays quiet. */
    double base = reconnects(f);
    WAIT_FOR(f, reconnects(f) >= base + 3, WAIT_MS);
    assert_int_equal(f->downs, 1);
    assert_int_equal(f->ups, 1);
    char *log = log_text(f);
    assert_non_null(strstr(log, "redis connection lost"));
    free(log);
    assert_int_equal(g_violations, 0);
}

static void test_restart_same_port(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    start_and_wait_up(f, &o);
    redis_kill(f);
    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    redis_start(f, NULL); /* same f->port */
    WAIT_FOR(f, f->ups == 2, WAIT_MS);
    assert_true(rtc_redis_ready(f->r));
    assert_string_equal(f->reason, "connected");
    struct result set = {0}, get = {0};
    assert_int_equal(CMD(f, &set, 0, NULL, "SET after restart"), 0);
    assert_int_equal(CMD(f, &get, 0, NULL, "GET after"), 0);
    WAIT_FOR(f, get.calls == 1, WAIT_MS);
    assert_int_equal(get.err, 0);
    assert_string_equal(get.str, "restart");
    assert_int_equal(f->downs, 1);
    char *log = log_text(f);
    assert_non_null(strstr(log, "redis connection recovered"));
    free(log);
    assert_true(metric_value(f, RTC_METRIC_GAUGE, "rtc_redis_up", NULL) == 1);
    assert_true(reconnects(f) >= 1);
    assert_int_equal(g_violations, 0);
}

static void test_hung_redis(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    o.command_timeout_ms = 500;
    o.ping_interval_ms = 200;
    o.connect_timeout_ms = 1000;
    start_and_wait_up(f, &o);

    assert_int_equal(kill(f->pid, SIGSTOP), 0);
    struct result get = {0};
    uint64_t t0 = rtc_now_ms();
    assert_int_equal(CMD(f, &get, 300, NULL, "GET k"), 0);
    WAIT_FOR(f, get.calls == 1, WAIT_MS);
    uint64_t elapsed = rtc_now_ms() - t0;
    assert_int_equal(get.err, RTC_ETIMEDOUT);
    assert_true(elapsed >= 250); /* loop time may lag real time by a few ms */
    assert_true(elapsed < 10000);

    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    assert_true(strstr(f->reason, "timed out") != NULL);
    assert_false(rtc_redis_ready(f->r));
    struct result down = {0};
    assert_int_equal(CMD(f, &down, 0, NULL, "GET k"), 0);
    WAIT_FOR(f, down.calls == 1, WAIT_MS);
    assert_int_equal(down.err, RTC_EUNAVAIL);

    assert_int_equal(kill(f->pid, SIGCONT), 0);
    WAIT_FOR(f, f->ups == 2, WAIT_MS);
    struct result set = {0}, again = {0};
    assert_int_equal(CMD(f, &set, 0, NULL, "SET k v"), 0);
    assert_int_equal(CMD(f, &again, 0, NULL, "GET k"), 0);
    WAIT_FOR(f, again.calls == 1, WAIT_MS);
    assert_int_equal(again.err, 0);
    assert_string_equal(again.str, "v");
    assert_int_equal(get.calls, 1); /* the late answer to the first GET was dropped */
    assert_int_equal(f->downs, 1);
    assert_true(metric_value(f, RTC_METRIC_COUNTER, "rtc_redis_commands_total", "timeout") >= 1);
    assert_int_equal(g_violations, 0);
}

static void test_timeout_late_reply_dropped(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    start_and_wait_up(f, &o);
    /* Redis answers this one only when the admin pushes, after our
     * deadline has passed. */
    struct result slow = {0}, next = {0};
    assert_int_equal(CMD(f, &slow, 100, NULL, "BLPOP late 0"), 0);
    assert_int_equal(CMD(f, &next, 30000, NULL, "PING"), 0);
    WAIT_FOR(f, slow.calls == 1, WAIT_MS);
    assert_int_equal(slow.err, RTC_ETIMEDOUT);
    redisReply *rep = admin_cmd(f, "LPUSH late x");
    freeReplyObject(rep);
    WAIT_FOR(f, next.calls == 1, WAIT_MS); /* FIFO: the late BLPOP answer came first */
    assert_int_equal(next.err, 0);
    assert_string_equal(next.str, "PONG");
    assert_int_equal(slow.calls, 1);
    rep = admin_cmd(f, "LLEN late");
    assert_int_equal(rep->integer, 0); /* the command did run */
    freeReplyObject(rep);
    /* One timeout on a live connection does not drop it. */
    assert_int_equal(f->downs, 0);
    assert_true(rtc_redis_ready(f->r));
    assert_int_equal(g_violations, 0);
}

/* Pings off: only the command deadlines can tell that Redis hangs. */
static void test_hung_redis_without_ping(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    o.ping_interval_ms = 0;
    o.connect_timeout_ms = 1000;
    start_and_wait_up(f, &o);
    assert_int_equal(kill(f->pid, SIGSTOP), 0);
    struct result res[3] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(CMD(f, &res[i], 200, NULL, "GET k"), 0);
    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    assert_string_equal(f->reason, "commands timed out");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].calls, 1);
        assert_int_equal(res[i].err, RTC_ETIMEDOUT);
    }
    assert_int_equal(kill(f->pid, SIGCONT), 0);
    WAIT_FOR(f, f->ups == 2, WAIT_MS);
    assert_int_equal(g_violations, 0);
}

/* ---- host names ----------------------------------------------------------- */

static void test_hostname(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    rtc_redis_options_init(&o);
    snprintf(url, sizeof(url), "redis://localhost:%u", (unsigned)f->port);
    o.url = url;
    o.client_name = "test";
    o.backoff_initial_ms = 50;
    client_start(f, &o);
    /* localhost may resolve to ::1 first, which this server does not
     * listen on: the next attempt takes the next address. */
    WAIT_FOR(f, f->ups == 1, WAIT_MS);
    struct result ping = {0};
    assert_int_equal(CMD(f, &ping, 0, NULL, "PING"), 0);
    WAIT_FOR(f, ping.calls == 1, WAIT_MS);
    assert_int_equal(ping.err, 0);
    rtc_redis_close(f->r);
    f->r = NULL;

    /* Closed while the resolver runs: the answer is dropped, nothing leaks. */
    client_start(f, &o);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* the first attempt starts */
    rtc_redis_close(f->r);
    f->r = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(f->ups, 1);

    /* A name that does not resolve: down, with the resolver's reason. */
    rtc_redis_options_init(&o);
    o.url = "redis://no-such-host.invalid:6379";
    o.client_name = "test";
    f->downs = 0;
    client_start(f, &o);
    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    assert_non_null(strstr(f->reason, "resolve")); /* failed, or timed out on a slow DNS */
    assert_int_equal(g_violations, 0);
}

/* ---- abandon, close, limits ------------------------------------------- */

static void test_abandon(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    o.ping_interval_ms = 0; /* nothing but the abandoned BLPOP holds the link */
    start_and_wait_up(f, &o);
    struct result gone = {0}, slow = {0}, after = {0};
    rtc_redis_req *req = NULL, *req_slow = NULL;
    /* Abandoned before it was even written. */
    assert_int_equal(CMD(f, &gone, 0, &req, "SET abandoned yes"), 0);
    rtc_redis_req_abandon(req);
    /* Abandoned while Redis holds it, with a deadline that would fire. */
    assert_int_equal(CMD(f, &slow, 200, &req_slow, "BLPOP wake 0"), 0);
    assert_int_equal(CMD(f, &after, 30000, NULL, "GET abandoned"), 0);
    WAIT_FOR(f, blocked_clients(f) == 1, WAIT_MS);
    uint64_t t0 = rtc_now_ms();
    rtc_redis_req_abandon(req_slow);
    WAIT_FOR(f, rtc_now_ms() > t0 + 600, WAIT_MS); /* well past the 200 ms deadline */
    redisReply *rep = admin_cmd(f, "LPUSH wake x");
    freeReplyObject(rep);
    WAIT_FOR(f, after.calls == 1, WAIT_MS);
    assert_int_equal(gone.calls, 0);
    assert_int_equal(slow.calls, 0);
    assert_string_equal(after.str, "yes"); /* the abandoned SET still ran */
    assert_true(metric_value(f, RTC_METRIC_COUNTER, "rtc_redis_commands_total", "abandoned") == 2);
    assert_true(metric_value(f, RTC_METRIC_COUNTER, "rtc_redis_commands_total", "timeout") == 0);
    assert_true(rtc_redis_ready(f->r));
    assert_int_equal(g_violations, 0);
}

struct closer {
    struct fixture *f;
    int calls, err, again_rc;
};

/* Closes the client from inside a reply callback. */
static void on_close_it(void *ud, int err, const redisReply *reply)
{
    struct closer *c = ud;
    c->calls++;
    c->err = err;
    rtc_redis_close(c->f->r);
}

/* Tries to queue more from inside an RTC_ECLOSED callback. */
static void on_closed_try_again(void *ud, int err, const redisReply *reply)
{
    struct closer *c = ud;
    c->calls++;
    c->err = err;
    c->again_rc = rtc_redis_command(c->f->r, on_result, NULL, 0, NULL, "PING");
}

static void test_close_with_pending(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    start_and_wait_up(f, &o);
    struct result blocked = {0}, get = {0};
    struct closer again = {.f = f};
    assert_int_equal(CMD(f, &blocked, 30000, NULL, "BLPOP never 0"), 0);
    assert_int_equal(CMD(f, &get, 30000, NULL, "GET k"), 0);
    g_in_call++;
    assert_int_equal(rtc_redis_command(f->r, on_closed_try_again, &again, 30000, NULL, "GET k"), 0);
    g_in_call--;
    WAIT_FOR(f, blocked_clients(f) == 1, WAIT_MS);
    rtc_redis_close(f->r);
    /* Delivered before rtc_redis_close returned; nothing runs afterwards. */
    assert_int_equal(blocked.calls, 1);
    assert_int_equal(blocked.err, RTC_ECLOSED);
    assert_int_equal(get.calls, 1);
    assert_int_equal(get.err, RTC_ECLOSED);
    assert_int_equal(again.calls, 1);
    assert_int_equal(again.err, RTC_ECLOSED);
    assert_int_equal(again.again_rc, RTC_ECLOSED);
    assert_int_equal(f->downs, 0); /* closing is not "down" */
    f->r = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(blocked.calls + get.calls, 2);
    assert_int_equal(g_violations, 0);
}

static void test_close_inside_callback(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    start_and_wait_up(f, &o);
    struct closer closer = {.f = f};
    struct result behind = {0}, deferred = {0};
    g_in_call++;
    assert_int_equal(rtc_redis_command(f->r, on_close_it, &closer, 0, NULL, "PING"), 0);
    g_in_call--;
    assert_int_equal(CMD(f, &behind, 30000, NULL, "BLPOP never 0"), 0);
    WAIT_FOR(f, closer.calls == 1, WAIT_MS);
    assert_int_equal(closer.err, 0);
    assert_int_equal(behind.calls, 1);
    assert_int_equal(behind.err, RTC_ECLOSED);
    f->r = NULL;
    uv_run(&f->loop, UV_RUN_DEFAULT);

    /* Close while down, with failures still queued for the loop. */
    f->port = free_port();
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    client_start(f, &o);
    assert_int_equal(CMD(f, &deferred, 0, NULL, "GET k"), 0);
    rtc_redis_close(f->r);
    f->r = NULL;
    assert_int_equal(deferred.calls, 1);
    assert_int_equal(deferred.err, RTC_ECLOSED);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(deferred.calls, 1);
    assert_int_equal(g_violations, 0);
}

static void test_max_pending(void **state)
{
    struct fixture *f = *state;
    redis_start(f, NULL);
    rtc_redis_options o;
    char url[128];
    client_opts(f, &o, url, sizeof(url), NULL, NULL);
    o.max_pending = 3;
    start_and_wait_up(f, &o);
    struct result res[5] = {{0}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(CMD(f, &res[i], 0, NULL, "INCR n"), 0);
    assert_int_equal(CMD(f, &res[3], 0, NULL, "INCR n"), RTC_EAGAIN);
    WAIT_FOR(f, res[0].calls + res[1].calls + res[2].calls == 3, WAIT_MS);
    assert_int_equal(CMD(f, &res[4], 0, NULL, "INCR n"), 0);
    WAIT_FOR(f, res[4].calls == 1, WAIT_MS);
    assert_int_equal(res[3].calls, 0);
    assert_int_equal(res[4].integer, 4);

    /* Queued failures count too while down. */
    redis_kill(f);
    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    for (int i = 0; i < 3; i++) {
        memset(&res[i], 0, sizeof(res[i]));
        assert_int_equal(CMD(f, &res[i], 0, NULL, "INCR n"), 0);
    }
    assert_int_equal(CMD(f, &res[3], 0, NULL, "INCR n"), RTC_EAGAIN);
    WAIT_FOR(f, res[0].calls + res[1].calls + res[2].calls == 3, WAIT_MS);
    assert_int_equal(res[0].err, RTC_EUNAVAIL);
    assert_int_equal(res[3].calls, 0);
    assert_int_equal(g_violations, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),
        T(test_new_rejects_bad_options),
        T(test_set_get_binary),
        T(test_commands_from_callbacks),
        T(test_error_reply),
        T(test_auth_password_and_db),
        T(test_auth_acl_user),
        T(test_auth_wrong_password),
        T(test_unavailable_when_not_running),
        T(test_killed_mid_run),
        T(test_restart_same_port),
        T(test_hung_redis),
        T(test_hung_redis_without_ping),
        T(test_timeout_late_reply_dropped),
        T(test_hostname),
        T(test_abandon),
        T(test_close_with_pending),
        T(test_close_inside_callback),
        T(test_max_pending),
    };
    return cmocka_run_group_tests_name("redis", tests, NULL, NULL);
}

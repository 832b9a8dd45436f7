/* test_redis_ha.c — rtc_redis with Sentinel and rtc_redis_sub, against real
 * redis-server, replica and redis-sentinel processes on loopback.
 *
 * Each test starts what it needs on free 127.0.0.1 ports (sentinel configs
 * in a fresh temporary directory) and kills everything in teardown. Waits
 * are "run the loop until this holds" with generous deadlines: a Sentinel
 * failover takes a few seconds (down-after 1 s, then the election), so
 * those waits allow 30 s. Callbacks only record; the test body asserts. */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

#define WAIT_MS     20000
#define FAILOVER_MS 30000
#define MASTER      "m"
#define MAX_SENT    3

struct result {
    int calls;
    int err;
    int type;
    char str[256];
};

struct fixture {
    uv_loop_t loop;
    uv_timer_t tick;
    rtc_metrics *metrics;
    FILE *log;
    char dir[64];
    pid_t primary, replica, sentinel[MAX_SENT];
    uint16_t primary_port, replica_port, sentinel_port[MAX_SENT];
    int hung_fd; /* a listener that never accepts: a hung sentinel */
    rtc_redis *r;
    int ups, downs;
    char reason[256];
    rtc_redis_sub *sub;
    int sub_ups, sub_downs;
    int msgs;
    char last_channel[64], last_payload[64];
    bool close_in_message;
};

/* ---- processes ---------------------------------------------------------- */

static void start_primary(struct fixture *f)
{
    if (!f->primary_port)
        f->primary_port = rtc_test_free_port();
    f->primary = rtc_test_redis_start(f->primary_port, NULL, WAIT_MS);
    assert_true(f->primary > 0);
}

static redisReply *cmd_at(uint16_t port, const char *fmt, ...)
{
    redisContext *c = rtc_test_redis_connect(port, NULL);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return rep;
}

/* INFO/reply text of port contains needle (polled, so false on no answer). */
static bool reply_contains(uint16_t port, const char *needle, const char *fmt, const char *arg)
{
    redisReply *rep = arg ? cmd_at(port, fmt, arg) : cmd_at(port, fmt);
    bool ok = false;
    if (rep && rep->type == REDIS_REPLY_STRING)
        ok = strstr(rep->str, needle) != NULL;
    if (rep && rep->type == REDIS_REPLY_ARRAY) /* SENTINEL replicas: flat field lists */
        for (size_t i = 0; i < rep->elements && !ok; i++)
            for (size_t j = 0; j < rep->element[i]->elements; j++)
                if (rep->element[i]->element[j]->type == REDIS_REPLY_STRING &&
                    strcmp(rep->element[i]->element[j]->str, needle) == 0)
                    ok = true;
    if (rep)
        freeReplyObject(rep);
    return ok;
}

/* Poll an outside condition (no client involved) every 20 ms. */
#define POLL_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        uint64_t dl_ = rtc_now_ms() + (ms);                                                        \
        while (!(cond) && rtc_now_ms() < dl_) {                                                    \
            struct timespec ts_ = {0, 20 * 1000 * 1000};                                           \
            nanosleep(&ts_, NULL);                                                                 \
        }                                                                                          \
        assert_true(cond);                                                                         \
    } while (0)

static void start_replica(struct fixture *f)
{
    f->replica_port = rtc_test_free_port();
    char mp[8];
    snprintf(mp, sizeof(mp), "%u", (unsigned)f->primary_port);
    const char *extra[] = {"--replicaof", "127.0.0.1", mp, NULL};
    f->replica = rtc_test_redis_start_args(f->replica_port, NULL, extra, WAIT_MS);
    assert_true(f->replica > 0);
    POLL_FOR(reply_contains(f->replica_port, "master_link_status:up", "INFO replication", NULL),
             WAIT_MS);
}

static void start_sentinel(struct fixture *f, int i)
{
    if (!f->sentinel_port[i])
        f->sentinel_port[i] = rtc_test_free_port();
    f->sentinel[i] =
        rtc_test_sentinel_start(f->sentinel_port[i], f->dir, MASTER, f->primary_port, WAIT_MS);
    assert_true(f->sentinel[i] > 0);
}

/* The sentinel has seen the replica (from the primary's INFO), so it can
 * promote it. */
static void wait_sentinel_knows_replica(struct fixture *f, int i)
{
    POLL_FOR(reply_contains(f->sentinel_port[i], "slave", "SENTINEL replicas %s", MASTER),
             FAILOVER_MS);
}

static bool is_master(uint16_t port)
{
    return reply_contains(port, "role:master", "INFO replication", NULL);
}

static long long publish(uint16_t port, const char *ch, const char *msg)
{
    redisReply *rep = cmd_at(port, "PUBLISH %s %s", ch, msg);
    long long n = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep)
        freeReplyObject(rep);
    return n;
}

static long long numsub(uint16_t port, const char *ch)
{
    redisReply *rep = cmd_at(port, "PUBSUB NUMSUB %s", ch);
    long long n =
        rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 ? rep->element[1]->integer : -1;
    if (rep)
        freeReplyObject(rep);
    return n;
}

static void hung_listener(struct fixture *f, uint16_t *port)
{
    f->hung_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->hung_fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(f->hung_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(f->hung_fd, 16), 0);
    assert_int_equal(getsockname(f->hung_fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
}

/* ---- loop and client helpers -------------------------------------------- */

static void tick_cb(uv_timer_t *t)
{
}

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
    res->calls++;
    res->err = err;
    res->type = reply ? reply->type : 0;
    res->str[0] = 0;
    if (reply && reply->str)
        snprintf(res->str, sizeof(res->str), "%.*s", (int)reply->len, reply->str);
    else if (reply && reply->type == REDIS_REPLY_INTEGER)
        snprintf(res->str, sizeof(res->str), "%lld", (long long)reply->integer);
}

static void on_state(void *ud, bool up, const char *reason)
{
    struct fixture *f = ud;
    if (up)
        f->ups++;
    else
        f->downs++;
    snprintf(f->reason, sizeof(f->reason), "%s", reason);
}

static void on_sub_state(void *ud, bool up, const char *reason)
{
    struct fixture *f = ud;
    if (up)
        f->sub_ups++;
    else
        f->sub_downs++;
    (void)reason;
}

static void on_message(void *ud, const char *ch, size_t chlen, const char *msg, size_t len)
{
    struct fixture *f = ud;
    f->msgs++;
    snprintf(f->last_channel, sizeof(f->last_channel), "%.*s", (int)chlen, ch);
    snprintf(f->last_payload, sizeof(f->last_payload), "%.*s", (int)len, msg);
    if (f->close_in_message) {
        rtc_redis_sub_close(f->sub);
        f->sub = NULL;
    }
}

static void opts_init(struct fixture *f, rtc_redis_options *o, char *url, size_t len,
                      char *sentinels, size_t slen, int nsent)
{
    rtc_redis_options_init(o);
    /* With sentinels the URL's host:port is ignored: point it nowhere. */
    snprintf(url, len, "redis://127.0.0.1:%u", nsent ? 1u : (unsigned)f->primary_port);
    o->url = url;
    o->client_name = "test";
    o->backoff_initial_ms = 50;
    o->backoff_max_ms = 500;
    o->connect_timeout_ms = 1000;
    o->command_timeout_ms = 1000;
    sentinels[0] = 0;
    for (int i = 0; i < nsent; i++)
        snprintf(sentinels + strlen(sentinels), slen - strlen(sentinels), "%s127.0.0.1:%u",
                 i ? "," : "", (unsigned)f->sentinel_port[i]);
    if (nsent) {
        o->sentinels = sentinels;
        o->master_name = MASTER;
    }
}

static void client_start(struct fixture *f, const rtc_redis_options *o)
{
    assert_int_equal(rtc_redis_new(&f->loop, o, f->metrics, &f->r), 0);
    rtc_redis_on_state(f->r, on_state, f);
}

static void sub_start(struct fixture *f, const rtc_redis_options *o)
{
    assert_int_equal(rtc_redis_sub_new(&f->loop, o, f->metrics, on_message, f, &f->sub), 0);
    rtc_redis_sub_on_state(f->sub, on_sub_state, f);
}

/* Run one command to completion. */
static void run_cmd(struct fixture *f, struct result *res, const char *fmt, const char *a,
                    const char *b)
{
    memset(res, 0, sizeof(*res));
    int rc = b ? rtc_redis_command(f->r, on_result, res, 0, NULL, fmt, a, b)
               : rtc_redis_command(f->r, on_result, res, 0, NULL, fmt, a);
    assert_int_equal(rc, 0);
    WAIT_FOR(f, res->calls == 1, WAIT_MS);
}

static double metric(struct fixture *f, const char *name, const char *client)
{
    static const char *const l1[] = {"client"};
    rtc_metric_family *fam =
        rtc_metrics_family(f->metrics, RTC_METRIC_COUNTER, name, "", 1, l1, NULL, 0);
    assert_non_null(fam);
    const char *values[1] = {client};
    return rtc_metric_value(rtc_metric_child(fam, values));
}

static bool logged(struct fixture *f, const char *needle)
{
    fflush(f->log);
    long n = ftell(f->log);
    char *s = calloc(1, (size_t)n + 1);
    rewind(f->log);
    size_t got = fread(s, 1, (size_t)n, f->log);
    s[got] = 0;
    fseek(f->log, 0, SEEK_END);
    bool ok = strstr(s, needle) != NULL;
    free(s);
    return ok;
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
    snprintf(f->dir, sizeof(f->dir), "/tmp/rtc-redis-ha-XXXXXX");
    if (!f->metrics || !f->log || !mkdtemp(f->dir))
        return -1;
    f->hung_fd = -1;
    rtc_log_init("test_redis_ha", RTC_LOG_DEBUG);
    rtc_log_set_output(f->log);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->r)
        rtc_redis_close(f->r);
    if (f->sub)
        rtc_redis_sub_close(f->sub);
    rtc_test_redis_kill(f->primary);
    rtc_test_redis_kill(f->replica);
    for (int i = 0; i < MAX_SENT; i++)
        rtc_test_redis_kill(f->sentinel[i]);
    if (f->hung_fd >= 0)
        close(f->hung_fd);
    if (getenv("RTC_TEST_VERBOSE") && *getenv("RTC_TEST_VERBOSE")) {
        fflush(f->log);
        rewind(f->log);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f->log)) > 0)
            fwrite(buf, 1, n, stderr);
    }
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&f->loop);
    rtc_log_set_output(NULL);
    fclose(f->log);
    rtc_metrics_free(f->metrics);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "teardown: cannot remove %s\n", f->dir);
    free(f);
    if (rc != 0)
        fprintf(stderr, "teardown: handles left on the loop\n");
    return rc == 0 ? 0 : -1;
}

/* ---- options -------------------------------------------------------------- */

static void test_sentinel_options(void **state)
{
    struct fixture *f = *state;
    rtc_redis_options o;
    rtc_redis_options_init(&o);
    rtc_redis *r = NULL;
    o.sentinels = "127.0.0.1:26379";
    assert_int_equal(rtc_redis_new(&f->loop, &o, NULL, &r), RTC_EINVAL); /* no master_name */
    o.master_name = "bad name";
    assert_int_equal(rtc_redis_new(&f->loop, &o, NULL, &r), RTC_EINVAL);
    o.master_name = MASTER;
    static const char *const bad[] = {",",     "h:1,",  ",h:1",  "h:0",     "h:x",
                                      "::1:5", "a@h:1", "h:1/2", "h:1,,h:2"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        o.sentinels = bad[i];
        if (rtc_redis_new(&f->loop, &o, NULL, &r) != RTC_EINVAL)
            fail_msg("accepted sentinels '%s'", bad[i]);
    }
    static const char *const good[] = {"h", "h:1", "[::1]:5,10.0.0.1, s-2.local:26380"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        o.sentinels = good[i];
        assert_int_equal(rtc_redis_new(&f->loop, &o, NULL, &r), 0);
        rtc_redis_close(r);
    }
    rtc_redis_sub *s = NULL;
    assert_int_equal(rtc_redis_sub_new(&f->loop, &o, NULL, NULL, NULL, &s), RTC_EINVAL);
}

/* ---- Sentinel --------------------------------------------------------- */

static void test_sentinel_resolves(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    start_sentinel(f, 0);
    rtc_redis_options o;
    char url[64], sl[128];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 1);
    client_start(f, &o);
    WAIT_FOR(f, f->ups == 1, WAIT_MS);
    struct result res;
    run_cmd(f, &res, "SET k %s", "v1", NULL);
    assert_int_equal(res.err, 0);
    assert_string_equal(res.str, "OK");
    run_cmd(f, &res, "GET %s", "k", NULL);
    assert_string_equal(res.str, "v1");
    assert_true(logged(f, "redis master resolved"));
    assert_int_equal(metric(f, "rtc_redis_failovers_total", "test"), 0);
}

/* A dead sentinel (refused) and a hung one (accepts, never answers) before
 * the live one: the client moves on, each question bounded. */
static void test_sentinel_next_on_failure(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    f->sentinel_port[0] = rtc_test_free_port(); /* nothing there */
    hung_listener(f, &f->sentinel_port[1]);
    start_sentinel(f, 2);
    rtc_redis_options o;
    char url[64], sl[128];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 3);
    o.connect_timeout_ms = 500;
    uint64_t t0 = rtc_now_ms();
    client_start(f, &o);
    WAIT_FOR(f, f->ups == 1, WAIT_MS);
    uint64_t took = rtc_now_ms() - t0;
    print_message("    up through the third sentinel after %llu ms\n", (unsigned long long)took);
    assert_int_equal(f->downs, 0); /* one attempt, not a failure */
    assert_true(took >= 400);      /* it did wait for the hung one */
    struct result res;
    run_cmd(f, &res, "PING%s", "", NULL);
    assert_string_equal(res.str, "PONG");
}

/* No sentinel at all: commands fail at once with RTC_EUNAVAIL, the state
 * says why; once a sentinel starts, the client comes up by itself. */
static void test_sentinel_none_reachable(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    f->sentinel_port[0] = rtc_test_free_port();
    rtc_redis_options o;
    char url[64], sl[128];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 1);
    client_start(f, &o);
    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    assert_non_null(strstr(f->reason, "no sentinel answered"));
    struct result res;
    uint64_t t0 = rtc_now_ms();
    run_cmd(f, &res, "PING%s", "", NULL);
    assert_int_equal(res.err, RTC_EUNAVAIL);
    assert_true(rtc_now_ms() - t0 < 1000);
    start_sentinel(f, 0);
    t0 = rtc_now_ms();
    WAIT_FOR(f, f->ups == 1, WAIT_MS);
    print_message("    up %llu ms after the sentinel started\n",
                  (unsigned long long)(rtc_now_ms() - t0));
    run_cmd(f, &res, "PING%s", "", NULL);
    assert_int_equal(res.err, 0);
}

/* kill -9 the primary: Sentinel promotes the replica, the client and a
 * subscriber follow by themselves. */
static void test_sentinel_failover(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    start_replica(f);
    start_sentinel(f, 0);
    wait_sentinel_knows_replica(f, 0);
    rtc_redis_options o;
    char url[64], sl[128];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 1);
    client_start(f, &o);
    sub_start(f, &o);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "ch"), 0);
    WAIT_FOR(f, f->ups == 1 && f->sub_ups == 1, WAIT_MS);
    struct result res;
    run_cmd(f, &res, "SET k %s", "before", NULL);
    assert_string_equal(res.str, "OK");
    /* Replication is asynchronous: without WAIT a write acknowledged just
     * before the primary dies may be lost in the failover (the loss window
     * the signaling service closes with WAIT on what must survive). */
    run_cmd(f, &res, "WAIT %s %s", "1", "1500");
    assert_string_equal(res.str, "1");
    assert_int_equal(publish(f->primary_port, "ch", "m1"), 1);
    WAIT_FOR(f, f->msgs == 1, WAIT_MS);

    uint64_t t0 = rtc_now_ms();
    rtc_test_redis_kill(f->primary);
    f->primary = 0;
    WAIT_FOR(f, f->downs >= 1, WAIT_MS);
    /* Commands while down fail fast, never hang past their deadline. */
    uint64_t c0 = rtc_now_ms();
    run_cmd(f, &res, "GET %s", "k", NULL);
    assert_true(res.err == RTC_EUNAVAIL || res.err == RTC_ETIMEDOUT);
    assert_true(rtc_now_ms() - c0 <= 1500);

    WAIT_FOR(f, f->ups == 2, FAILOVER_MS);
    uint64_t client_ms = rtc_now_ms() - t0;
    WAIT_FOR(f, f->sub_ups == 2, FAILOVER_MS);
    uint64_t sub_ms = rtc_now_ms() - t0;
    assert_true(is_master(f->replica_port));
    run_cmd(f, &res, "GET %s", "k", NULL);
    assert_int_equal(res.err, 0);
    assert_string_equal(res.str, "before");
    run_cmd(f, &res, "SET k %s", "after", NULL);
    assert_string_equal(res.str, "OK");
    assert_int_equal(publish(f->replica_port, "ch", "m2"), 1);
    WAIT_FOR(f, f->msgs == 2, WAIT_MS);
    assert_string_equal(f->last_payload, "m2");
    assert_true(metric(f, "rtc_redis_failovers_total", "test") >= 1);
    assert_true(logged(f, "redis master changed (failover)"));
    print_message("    failover recovery: client %llu ms, subscriber %llu ms (kill -9 to up)\n",
                  (unsigned long long)client_ms, (unsigned long long)sub_ms);
}

/* A manual SENTINEL FAILOVER: the old master is demoted, +switch-master is
 * announced; the client moves to the new master. */
static void test_sentinel_switch_master(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    start_replica(f);
    start_sentinel(f, 0);
    wait_sentinel_knows_replica(f, 0);
    rtc_redis_options o;
    char url[64], sl[128];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 1);
    o.ping_interval_ms = 0; /* the switch, not liveness, must find it */
    client_start(f, &o);
    WAIT_FOR(f, f->ups == 1, WAIT_MS);
    uint64_t t0 = rtc_now_ms();
    /* Retried: right after start the replica may not be ready to be promoted. */
    POLL_FOR(reply_contains(f->sentinel_port[0], "OK", "SENTINEL FAILOVER %s", MASTER) ||
                 is_master(f->replica_port),
             FAILOVER_MS);
    WAIT_FOR(f, f->ups == 2, FAILOVER_MS);
    print_message("    switch-master recovery %llu ms\n", (unsigned long long)(rtc_now_ms() - t0));
    struct result res;
    /* Up again means ROLE said master: the new one. */
    assert_true(is_master(f->replica_port));
    run_cmd(f, &res, "SET k %s", "v", NULL);
    assert_int_equal(res.err, 0);
    assert_int_equal(res.type, REDIS_REPLY_STATUS);
    assert_true(metric(f, "rtc_redis_failovers_total", "test") >= 1);
}

/* A reply "-READONLY" reaches the caller as an error reply, then the link
 * is dropped and made again. Here without Sentinel: the URL points at the
 * replica. */
static void test_readonly_reresolves(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    start_replica(f);
    rtc_redis_options o;
    char url[64], sl[8];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 0);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%u", (unsigned)f->replica_port);
    client_start(f, &o);
    WAIT_FOR(f, f->ups == 1, WAIT_MS);
    struct result res;
    run_cmd(f, &res, "SET k %s", "v", NULL);
    assert_int_equal(res.err, 0);
    assert_int_equal(res.type, REDIS_REPLY_ERROR);
    assert_true(strncmp(res.str, "READONLY", 8) == 0);
    WAIT_FOR(f, f->downs == 1, WAIT_MS);
    assert_non_null(strstr(f->reason, "READONLY"));
    WAIT_FOR(f, f->ups == 2, WAIT_MS);
    assert_true(logged(f, "read-only"));
    run_cmd(f, &res, "GET %s", "k", NULL); /* reads still fine */
    assert_int_equal(res.err, 0);
}

/* With Sentinel, an answer naming a server that is no master (ROLE) fails
 * the attempt: here the sentinel's master is made a replica behind its
 * back, so the client keeps refusing it until it is a master again. */
static void test_sentinel_role_check(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    start_replica(f);
    start_sentinel(f, 0);
    rtc_redis_options o;
    char url[64], sl[128];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 1);
    /* The primary as a replica of the replica, then the replica of nobody:
     * the sentinel still names the (now replica) primary for a while. */
    redisReply *rep = cmd_at(f->replica_port, "REPLICAOF NO ONE");
    assert_non_null(rep);
    freeReplyObject(rep);
    rep = cmd_at(f->primary_port, "REPLICAOF 127.0.0.1 %d", (int)f->replica_port);
    assert_non_null(rep);
    freeReplyObject(rep);
    client_start(f, &o);
    /* Either the ROLE check refused it, or Sentinel already followed. */
    WAIT_FOR(f, f->downs >= 1 || f->ups >= 1, WAIT_MS);
    if (f->downs >= 1)
        assert_non_null(strstr(f->reason, "not master"));
    rep = cmd_at(f->primary_port, "REPLICAOF NO ONE");
    assert_non_null(rep);
    freeReplyObject(rep);
    WAIT_FOR(f, f->ups >= 1, FAILOVER_MS);
    struct result res;
    run_cmd(f, &res, "SET k %s", "v", NULL);
    assert_int_equal(res.err, 0);
}

/* ---- subscriber ------------------------------------------------------- */

static void test_sub_messages_and_unsubscribe(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    rtc_redis_options o;
    char url[64], sl[8];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 0);
    sub_start(f, &o);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "a"), 0);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "a"), 0); /* idempotent */
    WAIT_FOR(f, f->sub_ups == 1, WAIT_MS);
    assert_true(rtc_redis_sub_ready(f->sub));
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "b"), 0); /* while up */
    WAIT_FOR(f, numsub(f->primary_port, "b") == 1, WAIT_MS);
    assert_int_equal(publish(f->primary_port, "a", "hello"), 1);
    WAIT_FOR(f, f->msgs == 1, WAIT_MS);
    assert_string_equal(f->last_channel, "a");
    assert_string_equal(f->last_payload, "hello");
    assert_int_equal(publish(f->primary_port, "b", "x"), 1);
    WAIT_FOR(f, f->msgs == 2, WAIT_MS);
    assert_string_equal(f->last_channel, "b");

    /* Unsubscribed: nothing more for b, even what is already on the wire. */
    assert_int_equal(publish(f->primary_port, "b", "late"), 1);
    assert_int_equal(rtc_redis_sub_unsubscribe(f->sub, "b"), 0);
    assert_int_equal(rtc_redis_sub_unsubscribe(f->sub, "b"), 0);
    WAIT_FOR(f, numsub(f->primary_port, "b") == 0, WAIT_MS);
    assert_int_equal(publish(f->primary_port, "a", "marker"), 1);
    WAIT_FOR(f, f->msgs == 3, WAIT_MS); /* in order: b's would have come first */
    assert_string_equal(f->last_payload, "marker");

    /* Unsubscribe then subscribe again before Redis answered (the hiredis
     * 0.14 callback-table quirk): still delivered. */
    assert_int_equal(rtc_redis_sub_unsubscribe(f->sub, "a"), 0);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "a"), 0);
    WAIT_FOR(f, publish(f->primary_port, "a", "again") == 1 && f->msgs >= 4, WAIT_MS);
    assert_string_equal(f->last_payload, "again");
    assert_int_equal(f->sub_ups, 1);
    assert_int_equal(f->sub_downs, 0);

    /* Liveness pings in pub/sub mode do not disturb delivery. */
    uint64_t t0 = rtc_now_ms();
    WAIT_FOR(f, rtc_now_ms() - t0 >= 2500, WAIT_MS); /* spans two ping intervals */
    int before = f->msgs;
    assert_int_equal(publish(f->primary_port, "a", "after-pings"), 1);
    WAIT_FOR(f, f->msgs == before + 1, WAIT_MS);
    assert_int_equal(f->sub_downs, 0);
}

/* The server restarts: the subscriber reports down, then up again once
 * every channel (including one added while down) is subscribed again. */
static void test_sub_resubscribes_after_restart(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    rtc_redis_options o;
    char url[64], sl[8];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 0);
    sub_start(f, &o);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "a"), 0);
    WAIT_FOR(f, f->sub_ups == 1, WAIT_MS);
    rtc_test_redis_kill(f->primary);
    f->primary = 0;
    WAIT_FOR(f, f->sub_downs == 1, WAIT_MS);
    assert_false(rtc_redis_sub_ready(f->sub));
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "c"), 0);
    start_primary(f); /* same port */
    WAIT_FOR(f, f->sub_ups == 2, WAIT_MS);
    /* Up means confirmed: publishing now reaches it without polling NUMSUB. */
    assert_int_equal(publish(f->primary_port, "a", "1"), 1);
    assert_int_equal(publish(f->primary_port, "c", "2"), 1);
    WAIT_FOR(f, f->msgs == 2, WAIT_MS);
    assert_string_equal(f->last_channel, "c");
}

/* Closing with subscriptions, while up and while connecting, and from
 * inside the message callback: clean (teardown checks the loop). */
static void test_sub_close(void **state)
{
    struct fixture *f = *state;
    start_primary(f);
    rtc_redis_options o;
    char url[64], sl[8];
    opts_init(f, &o, url, sizeof(url), sl, sizeof(sl), 0);
    sub_start(f, &o);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "a"), 0);
    rtc_redis_sub_close(f->sub); /* before the first attempt */
    f->sub = NULL;

    sub_start(f, &o);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "a"), 0);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "b"), 0);
    WAIT_FOR(f, f->sub_ups == 1, WAIT_MS);
    rtc_redis_sub_close(f->sub); /* up, with subscriptions */
    f->sub = NULL;
    WAIT_FOR(f, numsub(f->primary_port, "a") == 0, WAIT_MS);

    f->sub_ups = 0;
    sub_start(f, &o);
    assert_int_equal(rtc_redis_sub_subscribe(f->sub, "a"), 0);
    WAIT_FOR(f, f->sub_ups == 1, WAIT_MS);
    f->close_in_message = true;
    assert_int_equal(publish(f->primary_port, "a", "bye"), 1);
    assert_int_equal(publish(f->primary_port, "a", "never"), 1);
    WAIT_FOR(f, f->sub == NULL, WAIT_MS);
    assert_int_equal(f->msgs, 1);
    WAIT_FOR(f, numsub(f->primary_port, "a") == 0, WAIT_MS);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_sentinel_options),
        T(test_sentinel_resolves),
        T(test_sentinel_next_on_failure),
        T(test_sentinel_none_reachable),
        T(test_sentinel_failover),
        T(test_sentinel_switch_master),
        T(test_readonly_reresolves),
        T(test_sentinel_role_check),
        T(test_sub_messages_and_unsubscribe),
        T(test_sub_resubscribes_after_restart),
        T(test_sub_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

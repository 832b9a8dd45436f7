/* redis.c — one Redis connection on the libuv loop, kept up in the background.
 *
 * An rtc_redis owns at most one connection (conn) at a time. An attempt
 * goes: resolve the address (today from the URL; later from Sentinel) →
 * redisAsyncConnect → AUTH / SELECT / CLIENT SETNAME / PING pipelined at
 * once → the PING answer makes the link "up". One timer in the rtc_redis
 * serves as the connect deadline during an attempt and as the backoff wait
 * between attempts; a second one drives the liveness PING while up.
 *
 * hiredis and the loop. hiredis 0.14's own libuv adapter ignores poll
 * errors (a refused connect would then never be reported) and frees its
 * state behind our back, so this file carries its own adapter: the
 * uv_poll_t lives inside the conn, hiredis's cleanup hook closes it, and
 * the conn is freed from that close callback — always after hiredis has
 * finished with the context, since hiredis calls cleanup only on its way to
 * redisFree, in the same call stack.
 *
 * Lifetimes. hiredis may call back into us (replies, connect, disconnect)
 * and user callbacks may call back into the client (new commands, abandon,
 * even close), so:
 *  - a conn is never freed by us synchronously. Dropping it (conn_drop)
 *    detaches it from the client, fails its waiting requests and frees the
 *    hiredis context — at once when called from outside hiredis, or, when
 *    we are inside redisAsyncHandleRead/Write (in_hiredis), on the way out
 *    of the poll callback. redisAsyncFree must not run inside hiredis's
 *    connect/disconnect callbacks (0.14 does not guard them);
 *  - a request is freed from the close callback of its timer, once its
 *    callback has run (or it was abandoned) and hiredis no longer holds it
 *    as privdata: a late reply to a timed-out request still arrives there;
 *  - the client itself is freed when its reference count (one while open,
 *    one per live handle, request, conn and resolver request) drops to 0.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "rtc/core.h"
#include "rtc/error.h"
#include "rtc/log.h"
#include "rtc/redis.h"

#define REDIS_DEFAULT_URL   "redis://127.0.0.1:6379"
#define REDIS_DEFAULT_LABEL "redis"
#define REDIS_MAX_TIMEOUTS  3  /* consecutive timeouts, no reply between: the link is hung */
#define REDIS_MAX_NAME      64 /* CLIENT SETNAME */
#define REDIS_MAX_ADDRS     8

typedef struct conn conn;

typedef struct req_list {
    rtc_redis_req *head, *tail;
} req_list;

struct rtc_redis_req {
    rtc_redis *r;
    conn *conn;     /* sent on it; valid while held */
    req_list *list; /* conn->reqs or r->deferred while the caller waits */
    rtc_redis_req *prev, *next;
    uv_timer_t timer; /* deadline, or the deferred failure; its close frees the req */
    rtc_redis_reply_fn fn;
    void *ud;
    uint64_t start_ns;
    int deferred_err; /* != 0: never sent, fails with this from the loop */
    bool done;        /* callback delivered, or abandoned */
    bool held;        /* hiredis holds the pointer as privdata */
    bool counted;     /* counts toward max_pending */
    bool freeing;
};

enum { HS_AUTH, HS_SELECT, HS_SETNAME, HS_PING };

struct conn {
    rtc_redis *r;
    redisAsyncContext *ac; /* NULL once hiredis frees it (or we did) */
    uv_poll_t poll;
    int events; /* UV_READABLE | UV_WRITABLE as hiredis asked */
    bool poll_closing;
    int in_hiredis; /* inside redisAsyncHandleRead/Write */
    bool free_ac;   /* dropped inside hiredis: free on the way out */
    bool dead;      /* dropped: detached from r, late callbacks ignored */
    bool up;        /* handshake done */
    unsigned char hs[4];
    int hs_n, hs_next;
    req_list reqs;       /* user requests waiting for a reply on this conn */
    uint64_t last_reply; /* uv_now() of the last reply of any kind */
    uint64_t ping_sent;
    bool ping_out;
    unsigned timeouts; /* consecutive command timeouts with no reply since */
};

typedef struct resolve_req {
    uv_getaddrinfo_t req;
    rtc_redis *r;
    unsigned attempt;
} resolve_req;

enum { REPORTED_NONE, REPORTED_UP, REPORTED_DOWN };
enum { TIMER_BACKOFF, TIMER_CONNECT };
enum { RES_OK, RES_ERROR, RES_TIMEOUT, RES_UNAVAILABLE, RES_CLOSED, RES_ABANDONED, RES_COUNT };
static const char *const result_names[RES_COUNT] = {"ok",          "error",  "timeout",
                                                    "unavailable", "closed", "abandoned"};

struct rtc_redis {
    uv_loop_t *loop;
    rtc_redis_options opts;
    rtc_redis_url url; /* holds the password: never logged */
    char *client_name; /* NULL: no CLIENT SETNAME */
    const char *label; /* metrics and logs */
    char addr[300];    /* "host:port", what logs show instead of the URL */
    conn *conn;        /* the current attempt or link; NULL while waiting */
    resolve_req *resolving;
    unsigned attempt;
    uint64_t backoff_ms; /* the next wait before jitter */
    uint64_t up_since;   /* uv_now() when the link came up */
    uv_timer_t timer;    /* connect deadline or backoff wait */
    int timer_mode;
    uv_timer_t ping;
    req_list deferred; /* refused while down, failing from the loop */
    size_t pending;    /* counted requests, against max_pending */
    int reported;      /* what the state callback and the logs last said */
    bool up;
    bool closed;
    size_t refs;
    uint64_t rand;
    rtc_redis_state_fn state_fn;
    void *state_ud;
    rtc_metric *m_result[RES_COUNT];
    rtc_metric *m_latency, *m_up, *m_reconnects;
};

/* ---- small helpers ----------------------------------------------------- */

static void list_push(req_list *l, rtc_redis_req *q)
{
    q->list = l;
    q->prev = l->tail;
    q->next = NULL;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
}

static void list_remove(rtc_redis_req *q)
{
    req_list *l = q->list;
    if (!l)
        return;
    if (q->prev)
        q->prev->next = q->next;
    else
        l->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        l->tail = q->prev;
    q->list = NULL;
    q->prev = q->next = NULL;
}

static uint64_t r_random(rtc_redis *r)
{
    /* xorshift64*: jitter only. */
    uint64_t x = r->rand;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->rand = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* d ±20 %. */
static uint64_t jitter(rtc_redis *r, uint64_t d)
{
    double f = 0.8 + 0.4 * ((double)(r_random(r) >> 11) / (double)(1ULL << 53));
    return (uint64_t)((double)d * f);
}

static void r_unref(rtc_redis *r)
{
    if (--r->refs > 0)
        return;
    free(r->client_name);
    memset(&r->url, 0, sizeof(r->url)); /* the password */
    free(r);
}

static void r_handle_closed(uv_handle_t *h)
{
    r_unref(h->data);
}

/* "prefix: what hiredis said" into buf (the context's text dies with it). */
static const char *ac_error(const redisAsyncContext *ac, const char *prefix, char *buf, size_t len)
{
    if (ac && ac->c.err && ac->c.errstr[0])
        snprintf(buf, len, "%s: %s", prefix, ac->c.errstr);
    else
        snprintf(buf, len, "%s", prefix);
    return buf;
}

static void conn_drop(conn *c, const char *why, int err);

/* ---- requests ---------------------------------------------------------- */

static void req_closed_cb(uv_handle_t *h)
{
    rtc_redis_req *q = h->data;
    rtc_redis *r = q->r;
    free(q);
    r_unref(r);
}

/* Stop counting a request once nobody waits for it and hiredis let go of
 * it; free it then. */
static void req_settle(rtc_redis_req *q)
{
    if (!q->done || q->held)
        return;
    if (q->counted) {
        q->counted = false;
        q->r->pending--;
    }
    if (!q->freeing) {
        q->freeing = true;
        uv_close((uv_handle_t *)&q->timer, req_closed_cb);
    }
}

static void req_count(rtc_redis *r, int res)
{
    rtc_metric_inc(r->m_result[res], 1);
}

/* The one way a request ends for its caller. */
static void req_complete(rtc_redis_req *q, int err, const redisReply *reply)
{
    if (q->done)
        return;
    rtc_redis *r = q->r;
    q->done = true;
    uv_timer_stop(&q->timer);
    list_remove(q);
    int res;
    switch (err) {
    case 0:
        res = reply->type == REDIS_REPLY_ERROR ? RES_ERROR : RES_OK;
        rtc_metric_observe(r->m_latency, (double)(uv_hrtime() - q->start_ns) / 1e9);
        break;
    case RTC_ETIMEDOUT:
        res = RES_TIMEOUT;
        break;
    case RTC_ECLOSED:
        res = RES_CLOSED;
        break;
    default:
        res = RES_UNAVAILABLE;
        break;
    }
    req_count(r, res);
    req_settle(q);
    if (q->fn)
        q->fn(q->ud, err, err == 0 ? reply : NULL);
}

static void req_timer_cb(uv_timer_t *t)
{
    rtc_redis_req *q = t->data;
    if (q->deferred_err) {
        req_complete(q, q->deferred_err, NULL);
        return;
    }
    /* Still held by hiredis, so its conn is alive (freed only after the
     * context, which gives every held request back first). */
    conn *c = q->conn;
    req_complete(q, RTC_ETIMEDOUT, NULL);
    if (!c->dead && ++c->timeouts >= REDIS_MAX_TIMEOUTS)
        conn_drop(c, "commands timed out", RTC_EUNAVAIL);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    rtc_redis_req *q = priv;
    conn *c = ac->data;
    q->held = false;
    if (reply) {
        c->last_reply = uv_now(c->r->loop);
        c->timeouts = 0;
    }
    if (!q->done && reply) {
        req_complete(q, 0, reply);
    } else if (!q->done && !c->dead) {
        /* hiredis is tearing the context down: the link is gone, and
         * conn_drop fails this request with the others. */
        char why[200];
        conn_drop(c, ac_error(ac, "connection lost", why, sizeof(why)), RTC_EUNAVAIL);
    }
    req_settle(q); /* a late reply to a timed-out request ends here */
}

/* ---- the libuv adapter for hiredis -------------------------------------- */

static void ev_poll_cb(uv_poll_t *h, int status, int events);

static void ev_update(conn *c)
{
    if (c->poll_closing)
        return;
    if (c->events)
        uv_poll_start(&c->poll, c->events, ev_poll_cb);
    else
        uv_poll_stop(&c->poll);
}

static void ev_add_read(void *p)
{
    conn *c = p;
    c->events |= UV_READABLE;
    ev_update(c);
}

static void ev_del_read(void *p)
{
    conn *c = p;
    c->events &= ~UV_READABLE;
    ev_update(c);
}

static void ev_add_write(void *p)
{
    conn *c = p;
    c->events |= UV_WRITABLE;
    ev_update(c);
}

static void ev_del_write(void *p)
{
    conn *c = p;
    c->events &= ~UV_WRITABLE;
    ev_update(c);
}

static void conn_poll_closed(uv_handle_t *h)
{
    conn *c = h->data;
    rtc_redis *r = c->r;
    free(c);
    r_unref(r);
}

/* hiredis is about to free the context: it calls this on its way to
 * redisFree, from __redisAsyncFree. Idempotent, in case a hiredis calls it
 * twice. */
static void ev_cleanup(void *p)
{
    conn *c = p;
    c->ac = NULL;
    if (!c->poll_closing) {
        c->poll_closing = true;
        uv_close((uv_handle_t *)&c->poll, conn_poll_closed);
    }
}

static void ev_poll_cb(uv_poll_t *h, int status, int events)
{
    conn *c = h->data;
    if (!c->ac)
        return;
    /* On a socket error libuv stops the watcher and reports no events
     * (the stock adapter then hangs): let hiredis try what it waited for
     * and find the error itself. */
    int ev = status < 0 ? c->events : events;
    c->in_hiredis++;
    if (ev & UV_READABLE)
        redisAsyncHandleRead(c->ac);
    if (c->ac && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(c->ac);
    c->in_hiredis--;
    if (c->in_hiredis > 0)
        return;
    if (!c->ac && !c->dead) /* hiredis gave up on its own without telling us */
        conn_drop(c, "connection lost", RTC_EUNAVAIL);
    if (c->free_ac && c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac);
    }
}

/* ---- link state -------------------------------------------------------- */

static void timer_cb(uv_timer_t *t);
static void ping_cb(uv_timer_t *t);

/* An attempt failed or the link was lost: schedule the next attempt, then
 * tell the world once per transition. */
static void link_down(rtc_redis *r, const char *why, bool was_up)
{
    if (r->closed)
        return;
    /* A link that lived at least one initial backoff starts over quickly;
     * a shorter one is flapping and keeps backing off like a failure. */
    if (was_up && uv_now(r->loop) - r->up_since >= r->opts.backoff_initial_ms)
        r->backoff_ms = r->opts.backoff_initial_ms;
    uint64_t delay = jitter(r, r->backoff_ms);
    r->backoff_ms =
        r->backoff_ms * 2 > r->opts.backoff_max_ms ? r->opts.backoff_max_ms : r->backoff_ms * 2;
    r->timer_mode = TIMER_BACKOFF;
    uv_timer_start(&r->timer, timer_cb, delay, 0);

    if (r->reported == REPORTED_DOWN) {
        rtc_debug("redis connect failed", "client", r->label, "addr", r->addr, "reason", why);
        return;
    }
    r->reported = REPORTED_DOWN;
    rtc_metric_set(r->m_up, 0);
    rtc_warn(was_up ? "redis connection lost" : "redis unavailable", "client", r->label, "addr",
             r->addr, "reason", why);
    if (r->state_fn)
        r->state_fn(r->state_ud, false, why);
}

static void attempt_failed(rtc_redis *r, const char *why)
{
    uv_timer_stop(&r->timer);
    link_down(r, why, false);
}

static void link_up(conn *c)
{
    rtc_redis *r = c->r;
    c->up = true;
    r->up = true;
    r->up_since = uv_now(r->loop);
    uv_timer_stop(&r->timer);
    c->last_reply = uv_now(r->loop);
    if (r->opts.ping_interval_ms)
        uv_timer_start(&r->ping, ping_cb, r->opts.ping_interval_ms, r->opts.ping_interval_ms);
    bool recovered = r->reported == REPORTED_DOWN;
    r->reported = REPORTED_UP;
    rtc_metric_set(r->m_up, 1);
    rtc_info(recovered ? "redis connection recovered" : "redis connected", "client", r->label,
             "addr", r->addr);
    if (r->state_fn)
        r->state_fn(r->state_ud, true, "connected");
}

/* The connection is over: detach it, report, fail whoever waits on it
 * (err, or RTC_ECLOSED once the client is closed), free the context. */
static void conn_drop(conn *c, const char *why, int err)
{
    if (c->dead)
        return;
    rtc_redis *r = c->r;
    char reason[256];
    snprintf(reason, sizeof(reason), "%s", why); /* why may live in the context */
    c->dead = true;
    bool was_up = c->up;
    if (r->conn == c)
        r->conn = NULL;
    if (was_up) {
        r->up = false;
        uv_timer_stop(&r->ping);
    }
    link_down(r, reason, was_up);
    rtc_redis_req *q;
    while ((q = c->reqs.head) != NULL)
        req_complete(q, r->closed ? RTC_ECLOSED : err, NULL);
    if (!c->ac)
        return;
    if (c->in_hiredis) {
        c->free_ac = true;
    } else {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        redisAsyncFree(ac); /* gives back held requests with NULL replies */
    }
}

/* ---- handshake and liveness -------------------------------------------- */

static void on_connect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    if (c->dead || status == REDIS_OK)
        return; /* the handshake is already queued behind the connect */
    char why[200];
    conn_drop(c, ac_error(ac, "connect failed", why, sizeof(why)), RTC_EUNAVAIL);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    conn *c = ac->data;
    char why[200];
    if (!c->dead)
        conn_drop(c, ac_error(ac, "connection lost", why, sizeof(why)), RTC_EUNAVAIL);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *priv)
{
    static const char *const step_names[] = {"AUTH", "SELECT", "CLIENT SETNAME", "PING"};
    conn *c = priv;
    redisReply *rep = reply;
    if (c->dead)
        return;
    if (!rep) {
        char why[200];
        conn_drop(c, ac_error(ac, "connection lost during handshake", why, sizeof(why)),
                  RTC_EUNAVAIL);
        return;
    }
    c->last_reply = uv_now(c->r->loop);
    int step = c->hs_next < c->hs_n ? c->hs[c->hs_next++] : HS_PING;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (step == HS_SETNAME) {
            /* Only a label (an ACL user may lack the right): not fatal. */
            rtc_debug("redis CLIENT SETNAME refused", "client", c->r->label, "error", rep->str);
            return;
        }
        char why[256];
        snprintf(why, sizeof(why), "%s failed: %.200s", step_names[step], rep->str);
        conn_drop(c, why, RTC_EUNAVAIL);
        return;
    }
    if (step == HS_PING)
        link_up(c);
}

static void on_ping(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = priv;
    redisReply *rep = reply;
    if (c->dead)
        return;
    if (!rep) {
        char why[200];
        conn_drop(c, ac_error(ac, "connection lost", why, sizeof(why)), RTC_EUNAVAIL);
        return;
    }
    c->ping_out = false;
    c->last_reply = uv_now(c->r->loop);
    c->timeouts = 0;
    if (rep->type == REDIS_REPLY_ERROR) {
        char why[256];
        snprintf(why, sizeof(why), "ping failed: %.200s", rep->str);
        conn_drop(c, why, RTC_EUNAVAIL);
    }
}

/* Every ping_interval_ms while up. A PING goes out only when nothing came
 * back during the last interval; one unanswered for command_timeout_ms
 * means the server is hung (or the path to it is). */
static void ping_cb(uv_timer_t *t)
{
    rtc_redis *r = t->data;
    conn *c = r->conn;
    if (!c || !c->up || c->dead || !c->ac)
        return;
    uint64_t now = uv_now(r->loop);
    if (c->ping_out) {
        if (now - c->ping_sent >= r->opts.command_timeout_ms)
            conn_drop(c, "ping timed out", RTC_EUNAVAIL);
        return;
    }
    if (now - c->last_reply < r->opts.ping_interval_ms)
        return;
    if (redisAsyncCommand(c->ac, on_ping, c, "PING") != REDIS_OK) {
        conn_drop(c, "cannot send ping", RTC_EUNAVAIL);
        return;
    }
    c->ping_out = true;
    c->ping_sent = now;
}

/* ---- connecting -------------------------------------------------------- */

static int queue_handshake(conn *c, redisAsyncContext *ac)
{
    rtc_redis *r = c->r;
    const char *argv[3];
    size_t argvlen[3];
    int argc = 0;
    if (r->url.user[0] || r->url.password[0]) {
        argv[argc] = "AUTH";
        argvlen[argc++] = 4;
        if (r->url.user[0]) {
            argv[argc] = r->url.user;
            argvlen[argc] = strlen(r->url.user);
            argc++;
        }
        argv[argc] = r->url.password;
        argvlen[argc] = strlen(r->url.password);
        argc++;
        if (redisAsyncCommandArgv(ac, on_handshake, c, argc, argv, argvlen) != REDIS_OK)
            return RTC_ENOMEM;
        c->hs[c->hs_n++] = HS_AUTH;
    }
    if (r->url.db != 0) {
        if (redisAsyncCommand(ac, on_handshake, c, "SELECT %d", r->url.db) != REDIS_OK)
            return RTC_ENOMEM;
        c->hs[c->hs_n++] = HS_SELECT;
    }
    if (r->client_name) {
        if (redisAsyncCommand(ac, on_handshake, c, "CLIENT SETNAME %s", r->client_name) != REDIS_OK)
            return RTC_ENOMEM;
        c->hs[c->hs_n++] = HS_SETNAME;
    }
    if (redisAsyncCommand(ac, on_handshake, c, "PING") != REDIS_OK)
        return RTC_ENOMEM;
    c->hs[c->hs_n++] = HS_PING;
    return 0;
}

/* TCP connect to a numeric address; the rest of the attempt runs from
 * hiredis's callbacks, bounded by the connect deadline. */
static void conn_start(rtc_redis *r, const char *ip, uint16_t port)
{
    char why[200];
    conn *c = calloc(1, sizeof(*c));
    redisAsyncContext *ac = c ? redisAsyncConnect(ip, port) : NULL;
    if (!ac) {
        free(c);
        attempt_failed(r, "out of memory");
        return;
    }
    if (ac->err) {
        /* A refused loopback connect fails right inside connect(2). */
        ac_error(ac, "connect failed", why, sizeof(why));
        redisAsyncFree(ac);
        free(c);
        attempt_failed(r, why);
        return;
    }
    if (uv_poll_init(r->loop, &c->poll, ac->c.fd) != 0) {
        redisAsyncFree(ac);
        free(c);
        attempt_failed(r, "cannot watch the socket");
        return;
    }
    c->r = r;
    c->ac = ac;
    c->poll.data = c;
    r->refs++;
    r->conn = c;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect); /* starts watching for writable */
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (queue_handshake(c, ac) != 0)
        conn_drop(c, "out of memory", RTC_EUNAVAIL);
}

/* Pick one of the resolved addresses, rotating between attempts. */
static void connect_resolved(rtc_redis *r, const struct addrinfo *ai)
{
    const struct addrinfo *pick[REDIS_MAX_ADDRS];
    size_t n = 0;
    for (const struct addrinfo *a = ai; a && n < REDIS_MAX_ADDRS; a = a->ai_next)
        if (a->ai_family == AF_INET || a->ai_family == AF_INET6)
            pick[n++] = a;
    if (n == 0) {
        attempt_failed(r, "resolve failed: no address");
        return;
    }
    const struct addrinfo *a = pick[(r->attempt - 1) % n];
    char ip[64];
    if (a->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)a->ai_addr, ip, sizeof(ip));
    else
        uv_ip6_name((const struct sockaddr_in6 *)a->ai_addr, ip, sizeof(ip));
    conn_start(r, ip, r->url.port);
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    resolve_req *rr = (resolve_req *)req;
    rtc_redis *r = rr->r;
    bool current = !r->closed && r->resolving == rr && rr->attempt == r->attempt;
    if (r->resolving == rr)
        r->resolving = NULL;
    free(rr);
    if (current) {
        if (status < 0) {
            char why[200];
            snprintf(why, sizeof(why), "resolve failed: %s", uv_strerror(status));
            attempt_failed(r, why);
        } else {
            connect_resolved(r, ai);
        }
    }
    if (ai)
        uv_freeaddrinfo(ai);
    r_unref(r);
}

/* Where to connect. Today the URL's host; this is the step a Sentinel
 * lookup (ask the sentinels for the master's address) will replace. */
static void resolve_start(rtc_redis *r)
{
    struct sockaddr_in6 sa6;
    struct sockaddr_in sa4;
    if (uv_ip4_addr(r->url.host, r->url.port, &sa4) == 0 ||
        uv_ip6_addr(r->url.host, r->url.port, &sa6) == 0) {
        conn_start(r, r->url.host, r->url.port); /* a literal needs no resolver */
        return;
    }
    resolve_req *rr = calloc(1, sizeof(*rr));
    if (!rr) {
        attempt_failed(r, "out of memory");
        return;
    }
    rr->r = r;
    rr->attempt = r->attempt;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)r->url.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(r->loop, &rr->req, resolved_cb, r->url.host, port, &hints);
    if (rc < 0) {
        free(rr);
        char why[200];
        snprintf(why, sizeof(why), "resolve failed: %s", uv_strerror(rc));
        attempt_failed(r, why);
        return;
    }
    r->refs++;
    r->resolving = rr;
}

static void attempt_start(rtc_redis *r)
{
    if (r->attempt++ > 0)
        rtc_metric_inc(r->m_reconnects, 1);
    r->timer_mode = TIMER_CONNECT;
    uv_timer_start(&r->timer, timer_cb, r->opts.connect_timeout_ms, 0);
    resolve_start(r);
}

static void timer_cb(uv_timer_t *t)
{
    rtc_redis *r = t->data;
    if (r->closed)
        return;
    if (r->timer_mode == TIMER_BACKOFF) {
        attempt_start(r);
        return;
    }
    /* The connect deadline: TCP, AUTH, SELECT and PING did not all make it. */
    if (r->conn && !r->conn->up) {
        conn_drop(r->conn, "connect timed out", RTC_EUNAVAIL);
    } else if (r->resolving) {
        r->resolving = NULL; /* its answer will be ignored */
        attempt_failed(r, "resolve timed out");
    }
}

/* ---- public API -------------------------------------------------------- */

void rtc_redis_options_init(rtc_redis_options *o)
{
    memset(o, 0, sizeof(*o));
    o->url = REDIS_DEFAULT_URL;
    o->connect_timeout_ms = 2000;
    o->command_timeout_ms = 2000;
    o->backoff_initial_ms = 100;
    o->backoff_max_ms = 5000;
    o->ping_interval_ms = 1000;
    o->max_pending = 100000;
}

static bool valid_client_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > REDIS_MAX_NAME)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false; /* Redis refuses spaces and newlines in names */
    return true;
}

int rtc_redis_new(uv_loop_t *loop, const rtc_redis_options *opts, rtc_metrics *metrics,
                  rtc_redis **out)
{
    int rc = RTC_EINVAL;
    rtc_redis *r = NULL;
    if (out)
        *out = NULL;
    if (!loop || !out)
        return RTC_EINVAL;
    rtc_redis_options def;
    rtc_redis_options_init(&def);
    r = calloc(1, sizeof(*r));
    if (!r)
        return RTC_ENOMEM;
    r->loop = loop;
    r->opts = opts ? *opts : def;
    if (!r->opts.url || !r->opts.url[0])
        r->opts.url = def.url;
    if (!r->opts.connect_timeout_ms)
        r->opts.connect_timeout_ms = def.connect_timeout_ms;
    if (!r->opts.command_timeout_ms)
        r->opts.command_timeout_ms = def.command_timeout_ms;
    if (!r->opts.backoff_initial_ms)
        r->opts.backoff_initial_ms = def.backoff_initial_ms;
    if (!r->opts.backoff_max_ms)
        r->opts.backoff_max_ms = def.backoff_max_ms;
    if (r->opts.backoff_max_ms < r->opts.backoff_initial_ms)
        r->opts.backoff_max_ms = r->opts.backoff_initial_ms;
    if (!r->opts.max_pending)
        r->opts.max_pending = def.max_pending;
    if (rtc_redis_url_parse(r->opts.url, &r->url) != 0)
        goto fail;
    r->opts.url = NULL; /* not kept: it may hold the password */
    if (r->opts.client_name) {
        if (!valid_client_name(r->opts.client_name))
            goto fail;
        r->client_name = strdup(r->opts.client_name);
        if (!r->client_name) {
            rc = RTC_ENOMEM;
            goto fail;
        }
    }
    r->opts.client_name = r->client_name;
    r->label = r->client_name ? r->client_name : REDIS_DEFAULT_LABEL;
    if (strchr(r->url.host, ':'))
        snprintf(r->addr, sizeof(r->addr), "[%s]:%u", r->url.host, (unsigned)r->url.port);
    else
        snprintf(r->addr, sizeof(r->addr), "%s:%u", r->url.host, (unsigned)r->url.port);
    r->rand = uv_hrtime() ^ (uint64_t)(uintptr_t)r ^ 0x9E3779B97F4A7C15ULL;
    if (r->rand == 0)
        r->rand = 1;
    r->backoff_ms = r->opts.backoff_initial_ms;

    if (metrics) {
        static const char *const client_labels[] = {"client"};
        static const char *const result_labels[] = {"client", "result"};
        const char *values[2] = {r->label, NULL};
        rtc_metric_family *f =
            rtc_metrics_family(metrics, RTC_METRIC_COUNTER, "rtc_redis_commands_total",
                               "Redis commands by outcome (error = Redis answered with an error).",
                               2, result_labels, NULL, 0);
        for (int i = 0; i < RES_COUNT; i++) {
            values[1] = result_names[i];
            r->m_result[i] = rtc_metric_child(f, values);
        }
        f = rtc_metrics_family(metrics, RTC_METRIC_HISTOGRAM, "rtc_redis_command_seconds",
                               "Time from queueing a Redis command to its reply.", 1, client_labels,
                               NULL, 0);
        r->m_latency = rtc_metric_child(f, values);
        f = rtc_metrics_family(metrics, RTC_METRIC_GAUGE, "rtc_redis_up",
                               "1 while the Redis link is connected, authenticated and answering.",
                               1, client_labels, NULL, 0);
        r->m_up = rtc_metric_child(f, values);
        rtc_metric_set(r->m_up, 0);
        f = rtc_metrics_family(metrics, RTC_METRIC_COUNTER, "rtc_redis_reconnects_total",
                               "Redis connection attempts after the first one.", 1, client_labels,
                               NULL, 0);
        r->m_reconnects = rtc_metric_child(f, values);
    }

    /* hiredis writes with write(2): a Redis that goes away mid-write must be
     * an EPIPE error, not the end of the process. rtc_signals_start does
     * this too; done here as well unless someone installed a handler. */
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);

    /* From here on the client lives until its references drop. */
    r->refs = 1;
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->refs++;
    uv_timer_init(loop, &r->ping);
    r->ping.data = r;
    r->refs++;
    /* The first attempt starts from the loop, like everything else. */
    r->timer_mode = TIMER_BACKOFF;
    uv_timer_start(&r->timer, timer_cb, 0, 0);
    *out = r;
    return 0;
fail:
    free(r->client_name);
    memset(&r->url, 0, sizeof(r->url));
    free(r);
    return rc;
}

void rtc_redis_close(rtc_redis *r)
{
    if (!r || r->closed)
        return;
    r->closed = true;
    r->state_fn = NULL;
    r->up = false;
    rtc_metric_set(r->m_up, 0);
    if (r->resolving) {
        uv_cancel((uv_req_t *)&r->resolving->req); /* its callback frees it */
        r->resolving = NULL;
    }
    uv_close((uv_handle_t *)&r->timer, r_handle_closed);
    uv_close((uv_handle_t *)&r->ping, r_handle_closed);
    if (r->conn)
        conn_drop(r->conn, "closed", RTC_ECLOSED);
    rtc_redis_req *q;
    while ((q = r->deferred.head) != NULL)
        req_complete(q, RTC_ECLOSED, NULL);
    rtc_debug("redis client closed", "client", r->label, "addr", r->addr);
    r_unref(r);
}

bool rtc_redis_ready(const rtc_redis *r)
{
    return r && !r->closed && r->up;
}

void rtc_redis_on_state(rtc_redis *r, rtc_redis_state_fn fn, void *ud)
{
    if (!r || r->closed)
        return;
    r->state_fn = fn;
    r->state_ud = fn ? ud : NULL;
}

/* The idx-th argument of a RESP-formatted command, or false. */
static bool cmd_arg(const char *cmd, size_t len, int idx, const char **arg, size_t *alen)
{
    const char *p = cmd, *end = cmd + len;
    const char *nl = memchr(p, '\n', len);
    if (len == 0 || *p != '*' || !nl)
        return false;
    p = nl + 1;
    for (int i = 0; p < end; i++) {
        if (*p != '$')
            return false;
        char *e = NULL;
        unsigned long n = strtoul(p + 1, &e, 10);
        if (!e || e + 2 > end || e[0] != '\r' || e[1] != '\n')
            return false;
        p = e + 2;
        if (n > (size_t)(end - p))
            return false;
        if (i == idx) {
            *arg = p;
            *alen = n;
            return true;
        }
        p += n + 2;
    }
    return false;
}

static bool arg_is(const char *a, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp(a, name, n) == 0;
}

/* Commands that would break one-reply-per-command (pub/sub, MONITOR,
 * CLIENT REPLY, RESP3) or change connection state that a reconnect would
 * silently lose (SELECT, AUTH, RESET, QUIT). */
static bool cmd_allowed(const char *cmd, size_t len)
{
    static const char *const refused[] = {
        "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe", "sunsubscribe",
        "monitor",   "hello",      "select",     "auth",        "reset",        "quit"};
    const char *a;
    size_t n;
    if (!cmd_arg(cmd, len, 0, &a, &n) || n == 0)
        return false;
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
        if (arg_is(a, n, refused[i]))
            return false;
    if (arg_is(a, n, "client")) {
        const char *s;
        size_t sn;
        if (cmd_arg(cmd, len, 1, &s, &sn) && arg_is(s, sn, "reply"))
            return false;
    }
    return true;
}

/* Takes a formatted command (not owned). */
static int submit(rtc_redis *r, rtc_redis_reply_fn fn, void *ud, uint64_t timeout_ms,
                  const char *cmd, size_t len, rtc_redis_req **out)
{
    if (r->closed)
        return RTC_ECLOSED;
    if (!cmd_allowed(cmd, len))
        return RTC_EINVAL;
    if (r->pending >= r->opts.max_pending)
        return RTC_EAGAIN;
    rtc_redis_req *q = calloc(1, sizeof(*q));
    if (!q)
        return RTC_ENOMEM;
    q->r = r;
    q->fn = fn;
    q->ud = ud;
    q->start_ns = uv_hrtime();
    uv_timer_init(r->loop, &q->timer);
    q->timer.data = q;
    r->refs++;
    q->counted = true;
    r->pending++;
    conn *c = r->conn;
    if (c && c->up && !c->dead && c->ac &&
        redisAsyncFormattedCommand(c->ac, on_reply, q, cmd, len) == REDIS_OK) {
        q->held = true;
        q->conn = c;
        list_push(&c->reqs, q);
        uv_timer_start(&q->timer, req_timer_cb,
                       timeout_ms ? timeout_ms : r->opts.command_timeout_ms, 0);
    } else {
        /* Down: fail now, but from the loop, never inside this call. */
        q->deferred_err = RTC_EUNAVAIL;
        list_push(&r->deferred, q);
        uv_timer_start(&q->timer, req_timer_cb, 0, 0);
    }
    if (out)
        *out = q;
    return 0;
}

int rtc_redis_command_argv(rtc_redis *r, rtc_redis_reply_fn fn, void *ud, uint64_t timeout_ms,
                           int argc, const char **argv, const size_t *argvlen, rtc_redis_req **req)
{
    if (req)
        *req = NULL;
    if (!r || argc <= 0 || !argv)
        return RTC_EINVAL;
    for (int i = 0; i < argc; i++)
        if (!argv[i])
            return RTC_EINVAL;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0)
        return RTC_ENOMEM;
    int rc = submit(r, fn, ud, timeout_ms, cmd, (size_t)len, req);
    redisFreeCommand(cmd);
    return rc;
}

int rtc_redis_command(rtc_redis *r, rtc_redis_reply_fn fn, void *ud, uint64_t timeout_ms,
                      rtc_redis_req **req, const char *fmt, ...)
{
    if (req)
        *req = NULL;
    if (!r || !fmt)
        return RTC_EINVAL;
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0)
        return RTC_EINVAL; /* hiredis does not tell a bad format from no memory */
    int rc = submit(r, fn, ud, timeout_ms, cmd, (size_t)len, req);
    redisFreeCommand(cmd);
    return rc;
}

void rtc_redis_req_abandon(rtc_redis_req *q)
{
    if (!q || q->done)
        return;
    q->done = true;
    uv_timer_stop(&q->timer);
    list_remove(q);
    req_count(q->r, RES_ABANDONED);
    req_settle(q);
}

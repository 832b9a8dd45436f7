/* redis.c — one Redis connection on the libuv loop, kept up in the background.
 *
 * An rtc_redis owns at most one connection (conn) at a time. An attempt
 * goes: resolve the address (from the URL, or ask Sentinel) →
 * redisAsyncConnect → AUTH / SELECT / CLIENT SETNAME / PING pipelined at
 * once → the PING answer makes the link "up". One timer in the rtc_redis
 * serves as the connect deadline during an attempt and as the backoff wait
 * between attempts; a second one drives the liveness PING while up.
 * With Sentinel, short-lived conns ask for the master before each attempt
 * and one more stays subscribed to +switch-master (see "Sentinel"); in
 * subscriber mode (rtc_redis_sub) the link is a pub/sub one (see
 * "subscriber"). All conns share the adapter and lifetime rules below.
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
#define REDIS_MAX_SENTINELS 16
#define REDIS_SWITCH_MASTER "+switch-master"

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

enum { HS_AUTH, HS_SELECT, HS_SETNAME, HS_ROLE, HS_PING };

/* What a conn is for: the link itself, a one-shot Sentinel question, or
 * the Sentinel subscription that reports failovers. All share the adapter
 * and the teardown rules; conn_drop dispatches on the kind. */
enum { CONN_MAIN, CONN_SQUERY, CONN_SWATCH };

struct conn {
    rtc_redis *r;
    int kind;
    redisAsyncContext *ac; /* NULL once hiredis frees it (or we did) */
    uv_poll_t poll;
    int events; /* UV_READABLE | UV_WRITABLE as hiredis asked */
    bool poll_closing;
    int in_hiredis; /* inside redisAsyncHandleRead/Write */
    bool free_ac;   /* dropped inside hiredis: free on the way out */
    bool dead;      /* dropped: detached from r, late callbacks ignored */
    bool up;        /* handshake done */
    unsigned char hs[5];
    int hs_n, hs_next;
    req_list reqs;       /* user requests waiting for a reply on this conn */
    uint64_t last_reply; /* uv_now() of the last reply of any kind */
    uint64_t ping_sent;
    bool ping_out;
    unsigned timeouts; /* consecutive command timeouts with no reply since */
    bool subscribed;   /* subscriber: SUBSCRIBE sent, only pub/sub commands from now on */
    bool broken;       /* subscriber: a SUBSCRIBE could not be queued; dropped by the ping timer */
    char ip[64];       /* where it connects to */
    uint16_t port;
};

typedef struct resolve_req {
    uv_getaddrinfo_t req;
    rtc_redis *r;
    unsigned attempt;
    int kind; /* CONN_MAIN or CONN_SQUERY: who waits for the address */
    uint16_t port;
} resolve_req;

typedef struct sentinel_addr {
    char host[256];
    uint16_t port;
} sentinel_addr;

typedef struct sub_channel {
    char *name;
    size_t len;
} sub_channel;

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
    rtc_metric *m_latency, *m_up, *m_reconnects, *m_failovers;

    /* Sentinel (n_sentinels > 0): where the master is comes from them. */
    sentinel_addr sentinels[REDIS_MAX_SENTINELS];
    size_t n_sentinels;
    char *master_name;
    char *sentinel_password; /* never logged */
    size_t sq_good;          /* the sentinel that answered last: asked first */
    size_t sq_cur, sq_tried; /* the one being asked, how many this round */
    conn *squery;            /* the question in flight */
    resolve_req *sresolving; /* a sentinel's host name being resolved */
    uv_timer_t sq_timer;     /* deadline of one sentinel question */
    char sq_err[200];        /* why the last sentinel failed */
    conn *swatch;            /* subscribed to +switch-master */
    char swatch_ip[64];      /* the sentinel it talks to */
    uint16_t swatch_port;
    uv_timer_t swatch_timer; /* reopen the watch after it was lost */
    char master_host[256];   /* the last answer; "" before the first */
    uint16_t master_port;

    /* Subscriber mode (rtc_redis_sub): pub/sub only, no commands. */
    rtc_redis_sub *sub;
    sub_channel *channels;
    size_t n_channels, cap_channels;
    char hb_channel[48]; /* private channel re-SUBSCRIBEd as the liveness ping */
    rtc_redis_sub_message_fn msg_fn;
    void *msg_ud;
};

struct rtc_redis_sub {
    rtc_redis *r;
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
    free(r->master_name);
    if (r->sentinel_password) {
        memset(r->sentinel_password, 0, strlen(r->sentinel_password));
        free(r->sentinel_password);
    }
    for (size_t i = 0; i < r->n_channels; i++)
        free(r->channels[i].name);
    free(r->channels);
    free(r->sub);
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
static void master_demoted(conn *c, const char *err);
static void sentinel_conn_lost(conn *c, const char *why);
static void sub_resubscribe(conn *c);
static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv);

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
    const redisReply *rep = reply;
    if (!q->done && rep)
        req_complete(q, 0, rep);
    if (rep && rep->type == REDIS_REPLY_ERROR && rep->str &&
        strncmp(rep->str, "READONLY", 8) == 0 && !c->dead) {
        /* A master turned replica under us (failover): the caller got its
         * error reply and may retry; the link goes and we ask again. */
        master_demoted(c, rep->str);
    } else if (!rep && !q->done && !c->dead) {
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

static void ev_set(void *p, int flag, bool on)
{
    conn *c = p;
    c->events = on ? c->events | flag : c->events & ~flag;
    ev_update(c);
}

/* hiredis's four adapter hooks. */
static void ev_add_read(void *p)
{
    ev_set(p, UV_READABLE, true);
}

static void ev_del_read(void *p)
{
    ev_set(p, UV_READABLE, false);
}

static void ev_add_write(void *p)
{
    ev_set(p, UV_WRITABLE, true);
}

static void ev_del_write(void *p)
{
    ev_set(p, UV_WRITABLE, false);
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
        r->state_fn(r->state_ud, true, r->sub ? "subscribed" : "connected");
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
    if (c->kind != CONN_MAIN) {
        sentinel_conn_lost(c, reason);
    } else {
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
    }
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
    static const char *const step_names[] = {"AUTH", "SELECT", "CLIENT SETNAME", "ROLE", "PING"};
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
    if (step == HS_ROLE) {
        /* Sentinel may lag behind a failover, or we may have raced one:
         * only a master will do; anything else is a failed attempt. */
        const char *role = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
                                   rep->element[0]->type == REDIS_REPLY_STRING
                               ? rep->element[0]->str
                               : "?";
        if (strcmp(role, "master") != 0) {
            char why[128];
            snprintf(why, sizeof(why), "ROLE says %.40s, not master", role);
            conn_drop(c, why, RTC_EUNAVAIL);
        }
        return;
    }
    if (step == HS_PING) {
        if (c->r->sub)
            sub_resubscribe(c); /* up once the subscriptions are confirmed */
        else
            link_up(c);
    }
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
    if (c->broken) {
        conn_drop(c, "cannot subscribe", RTC_EUNAVAIL);
        return;
    }
    if (c->ping_out) {
        if (now - c->ping_sent >= r->opts.command_timeout_ms)
            conn_drop(c, "ping timed out", RTC_EUNAVAIL);
        return;
    }
    if (now - c->last_reply < r->opts.ping_interval_ms)
        return;
    /* A subscribed hiredis 0.14 context must not send PING (its answer
     * would be matched against the wrong callback): a subscriber pings by
     * subscribing again to its private channel, which Redis confirms. */
    int rc = r->sub ? redisAsyncCommand(c->ac, on_sub_reply, c, "SUBSCRIBE %s", r->hb_channel)
                    : redisAsyncCommand(c->ac, on_ping, c, "PING");
    if (rc != REDIS_OK) {
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
    if (r->n_sentinels) {
        if (redisAsyncCommand(ac, on_handshake, c, "ROLE") != REDIS_OK)
            return RTC_ENOMEM;
        c->hs[c->hs_n++] = HS_ROLE;
    }
    if (redisAsyncCommand(ac, on_handshake, c, "PING") != REDIS_OK)
        return RTC_ENOMEM;
    c->hs[c->hs_n++] = HS_PING;
    return 0;
}

/* TCP connect to a numeric address and hook the context to the loop.
 * NULL with why filled when it failed at once (a refused loopback connect
 * fails right inside connect(2)). */
static conn *conn_open(rtc_redis *r, int kind, const char *ip, uint16_t port, char *why,
                       size_t whylen)
{
    conn *c = calloc(1, sizeof(*c));
    redisAsyncContext *ac = c ? redisAsyncConnect(ip, port) : NULL;
    if (!ac) {
        free(c);
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    if (ac->err) {
        ac_error(ac, "connect failed", why, whylen);
        redisAsyncFree(ac);
        free(c);
        return NULL;
    }
    if (uv_poll_init(r->loop, &c->poll, ac->c.fd) != 0) {
        redisAsyncFree(ac);
        free(c);
        snprintf(why, whylen, "cannot watch the socket");
        return NULL;
    }
    c->r = r;
    c->kind = kind;
    c->ac = ac;
    c->poll.data = c;
    snprintf(c->ip, sizeof(c->ip), "%s", ip);
    c->port = port;
    r->refs++;
    ac->data = c;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect); /* starts watching for writable */
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return c;
}

/* The link's connection; the rest of the attempt runs from hiredis's
 * callbacks, bounded by the connect deadline. */
static void conn_start(rtc_redis *r, const char *ip, uint16_t port)
{
    char why[200];
    conn *c = conn_open(r, CONN_MAIN, ip, port, why, sizeof(why));
    if (!c) {
        attempt_failed(r, why);
        return;
    }
    r->conn = c;
    if (queue_handshake(c, c->ac) != 0)
        conn_drop(c, "out of memory", RTC_EUNAVAIL);
}

static void sentinel_connect(rtc_redis *r, const char *ip, uint16_t port);
static void sentinel_failed(rtc_redis *r, const char *why);

/* The first usable address of a resolver answer, as text. */
static bool first_ip(const struct addrinfo *ai, unsigned rotate, char *ip, size_t iplen)
{
    const struct addrinfo *pick[REDIS_MAX_ADDRS];
    size_t n = 0;
    for (const struct addrinfo *a = ai; a && n < REDIS_MAX_ADDRS; a = a->ai_next)
        if (a->ai_family == AF_INET || a->ai_family == AF_INET6)
            pick[n++] = a;
    if (n == 0)
        return false;
    const struct addrinfo *a = pick[rotate % n];
    if (a->ai_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)a->ai_addr, ip, iplen);
    else
        uv_ip6_name((const struct sockaddr_in6 *)a->ai_addr, ip, iplen);
    return true;
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *ai)
{
    resolve_req *rr = (resolve_req *)req;
    rtc_redis *r = rr->r;
    resolve_req **slot = rr->kind == CONN_MAIN ? &r->resolving : &r->sresolving;
    bool current = !r->closed && *slot == rr && rr->attempt == r->attempt;
    if (*slot == rr)
        *slot = NULL;
    int kind = rr->kind;
    uint16_t port = rr->port;
    free(rr);
    if (current) {
        char why[200] = "", ip[64] = "";
        if (status < 0)
            snprintf(why, sizeof(why), "resolve failed: %s", uv_strerror(status));
        else if (!first_ip(ai, r->attempt - 1, ip, sizeof(ip)))
            snprintf(why, sizeof(why), "resolve failed: no address");
        if (kind == CONN_MAIN) {
            if (status < 0 || !ip[0])
                attempt_failed(r, why);
            else
                conn_start(r, ip, port);
        } else {
            if (status < 0 || !ip[0])
                sentinel_failed(r, why);
            else
                sentinel_connect(r, ip, port);
        }
    }
    if (ai)
        uv_freeaddrinfo(ai);
    r_unref(r);
}

/* host:port to an address: a literal at once, a name through the loop's
 * resolver (attempts rotate through its addresses). kind says who
 * continues: the link (CONN_MAIN) or a sentinel question (CONN_SQUERY).
 * False when it failed at once (why filled). */
static bool resolve_host(rtc_redis *r, int kind, const char *host, uint16_t port, char *why,
                         size_t whylen)
{
    struct sockaddr_in6 sa6;
    struct sockaddr_in sa4;
    if (uv_ip4_addr(host, port, &sa4) == 0 || uv_ip6_addr(host, port, &sa6) == 0) {
        if (kind == CONN_MAIN)
            conn_start(r, host, port); /* a literal needs no resolver */
        else
            sentinel_connect(r, host, port);
        return true;
    }
    resolve_req *rr = calloc(1, sizeof(*rr));
    if (!rr) {
        snprintf(why, whylen, "out of memory");
        return false;
    }
    rr->r = r;
    rr->attempt = r->attempt;
    rr->kind = kind;
    rr->port = port;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", (unsigned)port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(r->loop, &rr->req, resolved_cb, host, portstr, &hints);
    if (rc < 0) {
        free(rr);
        snprintf(why, whylen, "resolve failed: %s", uv_strerror(rc));
        return false;
    }
    r->refs++;
    if (kind == CONN_MAIN)
        r->resolving = rr;
    else
        r->sresolving = rr;
    return true;
}

static void connect_master(rtc_redis *r, const char *host, uint16_t port)
{
    char why[200];
    r->timer_mode = TIMER_CONNECT;
    uv_timer_start(&r->timer, timer_cb, r->opts.connect_timeout_ms, 0);
    if (!resolve_host(r, CONN_MAIN, host, port, why, sizeof(why)))
        attempt_failed(r, why);
}

/* ---- Sentinel ----------------------------------------------------------
 *
 * An attempt in Sentinel mode first asks the sentinels, one at a time
 * starting with the one that answered last, SENTINEL
 * get-master-addr-by-name on a short-lived connection of its own, each
 * question bounded by connect_timeout_ms; the first answer is where the
 * link connects (and the handshake adds ROLE, so a stale answer is caught).
 * Separately, one connection to a sentinel stays subscribed to
 * +switch-master: a failover of our master drops the link and starts a new
 * attempt at once. */

static void sq_timer_cb(uv_timer_t *t);
static void swatch_open(rtc_redis *r, const char *ip, uint16_t port);

static void sentinel_ask(rtc_redis *r)
{
    if (r->closed)
        return;
    if (r->sq_tried >= r->n_sentinels) {
        char why[320];
        snprintf(why, sizeof(why), "no sentinel answered (last: %s)", r->sq_err);
        attempt_failed(r, why);
        return;
    }
    r->sq_cur = (r->sq_good + r->sq_tried++) % r->n_sentinels;
    const sentinel_addr *s = &r->sentinels[r->sq_cur];
    char why[200];
    uv_timer_start(&r->sq_timer, sq_timer_cb, r->opts.connect_timeout_ms, 0);
    if (!resolve_host(r, CONN_SQUERY, s->host, s->port, why, sizeof(why)))
        sentinel_failed(r, why);
}

/* This sentinel could not tell us: note why, ask the next one. */
static void sentinel_failed(rtc_redis *r, const char *why)
{
    uv_timer_stop(&r->sq_timer);
    const sentinel_addr *s = &r->sentinels[r->sq_cur];
    snprintf(r->sq_err, sizeof(r->sq_err), "%.60s:%u: %.120s", s->host, (unsigned)s->port, why);
    rtc_debug("redis sentinel failed", "client", r->label, "reason", r->sq_err);
    sentinel_ask(r);
}

static void master_found(rtc_redis *r, const conn *sq, const char *host, uint16_t port)
{
    bool changed =
        r->master_host[0] && (strcmp(r->master_host, host) != 0 || r->master_port != port);
    char prev[300];
    snprintf(prev, sizeof(prev), "%s", r->addr);
    snprintf(r->master_host, sizeof(r->master_host), "%s", host);
    r->master_port = port;
    if (strchr(host, ':'))
        snprintf(r->addr, sizeof(r->addr), "[%s]:%u", host, (unsigned)port);
    else
        snprintf(r->addr, sizeof(r->addr), "%s:%u", host, (unsigned)port);
    char from[80];
    snprintf(from, sizeof(from), "%s:%u", sq->ip, (unsigned)sq->port);
    if (changed) {
        rtc_metric_inc(r->m_failovers, 1);
        rtc_warn("redis master changed (failover)", "client", r->label, "master", r->master_name,
                 "from", prev, "addr", r->addr, "sentinel", from);
    } else {
        rtc_info("redis master resolved", "client", r->label, "master", r->master_name, "addr",
                 r->addr, "sentinel", from);
    }
    if (!r->swatch) {
        uv_timer_stop(&r->swatch_timer);
        swatch_open(r, sq->ip, sq->port);
    }
    connect_master(r, host, port);
}

/* Common checks of a sentinel connection's reply: false (and the link
 * dropped) when the link is gone or the sentinel answered an error. */
static bool sentinel_reply_ok(conn *c, redisAsyncContext *ac, const redisReply *rep)
{
    char why[256];
    if (c->dead)
        return false;
    if (!rep) {
        conn_drop(c, ac_error(ac, "connection lost", why, sizeof(why)), RTC_EUNAVAIL);
        return false;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "sentinel said: %.200s", rep->str);
        conn_drop(c, why, RTC_EUNAVAIL);
        return false;
    }
    return true;
}

static void on_squery(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = priv;
    rtc_redis *r = c->r;
    redisReply *rep = reply;
    if (!sentinel_reply_ok(c, ac, rep))
        return;
    if (c->hs_next++ < c->hs_n)
        return; /* AUTH went through; the answer comes next */
    if (rep->type == REDIS_REPLY_NIL) {
        conn_drop(c, "master name unknown to this sentinel", RTC_EUNAVAIL);
        return;
    }
    char host[256];
    unsigned long port = 0;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_STRING &&
        rep->element[1]->type == REDIS_REPLY_STRING && rep->element[0]->len > 0 &&
        rep->element[0]->len < sizeof(host)) {
        memcpy(host, rep->element[0]->str, rep->element[0]->len);
        host[rep->element[0]->len] = 0;
        char *e = NULL;
        port = strtoul(rep->element[1]->str, &e, 10);
        if (!e || *e || port == 0 || port > 65535)
            port = 0;
    }
    if (port == 0) {
        conn_drop(c, "sentinel gave a malformed answer", RTC_EUNAVAIL);
        return;
    }
    /* Done with this question: detach first so the drop is no failure. */
    r->squery = NULL;
    uv_timer_stop(&r->sq_timer);
    r->sq_good = r->sq_cur;
    conn_drop(c, "answered", 0);
    master_found(r, c, host, (uint16_t)port);
}

static void sentinel_connect(rtc_redis *r, const char *ip, uint16_t port)
{
    char why[200];
    conn *c = conn_open(r, CONN_SQUERY, ip, port, why, sizeof(why));
    if (!c) {
        sentinel_failed(r, why);
        return;
    }
    r->squery = c;
    if (r->sentinel_password) {
        if (redisAsyncCommand(c->ac, on_squery, c, "AUTH %s", r->sentinel_password) != REDIS_OK) {
            conn_drop(c, "out of memory", RTC_EUNAVAIL);
            return;
        }
        c->hs_n = 1;
    }
    if (redisAsyncCommand(c->ac, on_squery, c, "SENTINEL get-master-addr-by-name %s",
                          r->master_name) != REDIS_OK)
        conn_drop(c, "out of memory", RTC_EUNAVAIL);
}

static void sq_timer_cb(uv_timer_t *t)
{
    rtc_redis *r = t->data;
    if (r->closed)
        return;
    if (r->squery) {
        conn_drop(r->squery, "sentinel timed out", RTC_EUNAVAIL);
    } else if (r->sresolving) {
        r->sresolving = NULL; /* its answer will be ignored */
        sentinel_failed(r, "resolve timed out");
    }
}

/* A failover of our master was announced (or a reply said READONLY): drop
 * the link and start a new attempt now rather than after a backoff. */
static void master_moved(rtc_redis *r, const char *why)
{
    if (r->closed)
        return;
    if (r->conn)
        conn_drop(r->conn, why, RTC_EUNAVAIL);
    if (r->closed)
        return; /* the state callback closed us */
    r->backoff_ms = r->opts.backoff_initial_ms;
    if (!r->conn && !r->resolving && !r->squery && !r->sresolving && r->timer_mode == TIMER_BACKOFF)
        uv_timer_start(&r->timer, timer_cb, jitter(r, r->opts.backoff_initial_ms / 2), 0);
}

static void master_demoted(conn *c, const char *err)
{
    rtc_redis *r = c->r;
    rtc_warn("redis server is read-only (demoted master?), re-resolving", "client", r->label,
             "addr", r->addr);
    char why[128];
    snprintf(why, sizeof(why), "%.100s", err);
    if (r->conn == c)
        master_moved(r, why);
    else
        conn_drop(c, why, RTC_EUNAVAIL);
}

/* "+switch-master" payload: "<name> <old-ip> <old-port> <new-ip> <new-port>". */
static void on_swatch(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = priv;
    rtc_redis *r = c->r;
    redisReply *rep = reply;
    if (!sentinel_reply_ok(c, ac, rep))
        return;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING || strcmp(rep->element[0]->str, "message") ||
        rep->element[2]->type != REDIS_REPLY_STRING)
        return; /* the AUTH answer, the subscribe confirmation */
    char buf[600];
    snprintf(buf, sizeof(buf), "%.*s", (int)rep->element[2]->len, rep->element[2]->str);
    char *tok[5] = {0}, *save = NULL;
    int n = 0;
    for (char *t = strtok_r(buf, " ", &save); t && n < 5; t = strtok_r(NULL, " ", &save))
        tok[n++] = t;
    if (n != 5 || strcmp(tok[0], r->master_name) != 0)
        return;
    char *e = NULL;
    unsigned long port = strtoul(tok[4], &e, 10);
    if (r->conn && !r->conn->dead && e && !*e && port == r->master_port &&
        strcmp(tok[3], r->master_host) == 0) {
        /* Sentinel answered with the new master before announcing it: the
         * link already goes there. */
        rtc_info("redis failover announced by sentinel, already following", "client", r->label,
                 "master", r->master_name, "addr", r->addr);
        return;
    }
    rtc_warn("redis failover announced by sentinel", "client", r->label, "master", r->master_name,
             "from", tok[1], "to", tok[3]);
    char m[128];
    snprintf(m, sizeof(m), "failover: master moved to %.60s:%.8s", tok[3], tok[4]);
    master_moved(r, m);
}

static void swatch_timer_cb(uv_timer_t *t)
{
    rtc_redis *r = t->data;
    if (!r->closed && !r->swatch)
        swatch_open(r, r->swatch_ip, r->swatch_port);
}

static void swatch_open(rtc_redis *r, const char *ip, uint16_t port)
{
    char why[200];
    snprintf(r->swatch_ip, sizeof(r->swatch_ip), "%s", ip);
    r->swatch_port = port;
    conn *c = conn_open(r, CONN_SWATCH, ip, port, why, sizeof(why));
    if (!c) {
        uv_timer_start(&r->swatch_timer, swatch_timer_cb, r->opts.backoff_max_ms, 0);
        return;
    }
    r->swatch = c;
    /* AUTH is an ordinary command: hiredis matches its answer before any
     * pub/sub traffic. After SUBSCRIBE nothing else is sent. */
    if ((r->sentinel_password &&
         redisAsyncCommand(c->ac, on_swatch, c, "AUTH %s", r->sentinel_password) != REDIS_OK) ||
        redisAsyncCommand(c->ac, on_swatch, c, "SUBSCRIBE %s", REDIS_SWITCH_MASTER) != REDIS_OK)
        conn_drop(c, "out of memory", RTC_EUNAVAIL);
}

/* A sentinel connection is over (conn_drop). */
static void sentinel_conn_lost(conn *c, const char *why)
{
    rtc_redis *r = c->r;
    if (c->kind == CONN_SQUERY) {
        if (r->squery != c)
            return; /* answered, or given up */
        r->squery = NULL;
        if (!r->closed)
            sentinel_failed(r, why);
        return;
    }
    if (r->swatch != c)
        return;
    r->swatch = NULL;
    if (r->closed)
        return;
    rtc_debug("redis sentinel watch lost", "client", r->label, "reason", why);
    /* Reopened later, or sooner by the next successful question. */
    uv_timer_start(&r->swatch_timer, swatch_timer_cb, r->opts.backoff_max_ms, 0);
}

static void attempt_start(rtc_redis *r)
{
    if (r->attempt++ > 0)
        rtc_metric_inc(r->m_reconnects, 1);
    if (r->n_sentinels) {
        r->timer_mode = TIMER_CONNECT; /* the deadline starts with the master connect */
        r->sq_tried = 0;
        r->sq_err[0] = 0;
        sentinel_ask(r);
        return;
    }
    connect_master(r, r->url.host, r->url.port);
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

/* "host:port[,host:port…]" (port default 26379, [v6]:port) into r. */
static int parse_sentinels(rtc_redis *r, const char *list)
{
    const char *p = list;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n > 0 && *p == ' ') {
            p++;
            n--;
        }
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if (n == 0 || n >= 300 || r->n_sentinels >= REDIS_MAX_SENTINELS)
            return RTC_EINVAL;
        char url[320];
        snprintf(url, sizeof(url), "redis://%.*s", (int)n, p);
        bool has_port = p[n - 1] != ']' && memchr(p, ':', n) != NULL &&
                        (p[0] != '[' || memchr(p, ']', n) != NULL);
        size_t colons = 0;
        for (size_t i = 0; i < n; i++)
            colons += p[i] == ':';
        if (p[0] != '[' && colons > 1)
            return RTC_EINVAL; /* a bare IPv6 literal: write it as [addr]:port */
        rtc_redis_url u;
        if (rtc_redis_url_parse(url, &u) != 0 || u.user[0] || u.password[0] || u.db != 0 ||
            memchr(p, '/', n) || memchr(p, '@', n))
            return RTC_EINVAL;
        sentinel_addr *s = &r->sentinels[r->n_sentinels++];
        snprintf(s->host, sizeof(s->host), "%s", u.host);
        s->port = has_port ? u.port : 26379;
        if (!end)
            break;
        p = end + 1;
        if (!*p)
            return RTC_EINVAL;
    }
    return r->n_sentinels > 0 ? 0 : RTC_EINVAL;
}

static bool valid_master_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return false; /* +switch-master payloads are space-separated */
    return true;
}

static int redis_new(uv_loop_t *loop, const rtc_redis_options *opts, rtc_metrics *metrics, bool sub,
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
    if (sub) {
        /* Its own name, so its metrics and CLIENT LIST entry are told
         * apart from a command client made from the same options. */
        char name[REDIS_MAX_NAME + 8];
        snprintf(name, sizeof(name), "%s-sub",
                 r->client_name ? r->client_name : REDIS_DEFAULT_LABEL);
        free(r->client_name);
        r->client_name = NULL;
        if (!valid_client_name(name))
            goto fail;
        r->client_name = strdup(name);
        r->sub = calloc(1, sizeof(*r->sub));
        if (!r->client_name || !r->sub) {
            rc = RTC_ENOMEM;
            goto fail;
        }
        r->sub->r = r;
    }
    r->opts.client_name = r->client_name;
    r->label = r->client_name ? r->client_name : REDIS_DEFAULT_LABEL;
    if (r->opts.sentinels && r->opts.sentinels[0]) {
        if (parse_sentinels(r, r->opts.sentinels) != 0 || !r->opts.master_name ||
            !valid_master_name(r->opts.master_name))
            goto fail;
        r->master_name = strdup(r->opts.master_name);
        if (!r->master_name) {
            rc = RTC_ENOMEM;
            goto fail;
        }
        if (r->opts.sentinel_password && r->opts.sentinel_password[0]) {
            r->sentinel_password = strdup(r->opts.sentinel_password);
            if (!r->sentinel_password) {
                rc = RTC_ENOMEM;
                goto fail;
            }
        }
    }
    r->opts.sentinels = NULL; /* copied */
    r->opts.master_name = r->master_name;
    r->opts.sentinel_password = NULL;
    if (r->n_sentinels)
        snprintf(r->addr, sizeof(r->addr), "sentinel:%s", r->master_name);
    else if (strchr(r->url.host, ':'))
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
        f = rtc_metrics_family(metrics, RTC_METRIC_COUNTER, "rtc_redis_failovers_total",
                               "Times Sentinel named a different master than before.", 1,
                               client_labels, NULL, 0);
        r->m_failovers = rtc_metric_child(f, values);
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
    uv_timer_init(loop, &r->sq_timer);
    r->sq_timer.data = r;
    r->refs++;
    uv_timer_init(loop, &r->swatch_timer);
    r->swatch_timer.data = r;
    r->refs++;
    /* The first attempt starts from the loop, like everything else. */
    r->timer_mode = TIMER_BACKOFF;
    uv_timer_start(&r->timer, timer_cb, 0, 0);
    *out = r;
    return 0;
fail:
    free(r->client_name);
    free(r->master_name);
    free(r->sentinel_password);
    free(r->sub);
    memset(&r->url, 0, sizeof(r->url));
    free(r);
    return rc;
}

int rtc_redis_new(uv_loop_t *loop, const rtc_redis_options *opts, rtc_metrics *metrics,
                  rtc_redis **out)
{
    return redis_new(loop, opts, metrics, false, out);
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
    if (r->sresolving) {
        uv_cancel((uv_req_t *)&r->sresolving->req);
        r->sresolving = NULL;
    }
    uv_close((uv_handle_t *)&r->timer, r_handle_closed);
    uv_close((uv_handle_t *)&r->ping, r_handle_closed);
    uv_close((uv_handle_t *)&r->sq_timer, r_handle_closed);
    uv_close((uv_handle_t *)&r->swatch_timer, r_handle_closed);
    if (r->conn)
        conn_drop(r->conn, "closed", RTC_ECLOSED);
    if (r->squery)
        conn_drop(r->squery, "closed", RTC_ECLOSED);
    if (r->swatch)
        conn_drop(r->swatch, "closed", RTC_ECLOSED);
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

/* ---- subscriber --------------------------------------------------------
 *
 * An rtc_redis in subscriber mode: the same connection machinery (and
 * Sentinel), but once the handshake is done the context is subscribed and,
 * as hiredis 0.14 requires, sends nothing but SUBSCRIBE/UNSUBSCRIBE from
 * then on. Every (re)connect subscribes to all channels of the set plus a
 * private heartbeat channel, last: its confirmation means all the others
 * are in, and only then does the link count as up. The same heartbeat
 * SUBSCRIBE, repeated, is the liveness ping. */

static ssize_t sub_find(const rtc_redis *r, const char *ch, size_t len)
{
    for (size_t i = 0; i < r->n_channels; i++)
        if (r->channels[i].len == len && memcmp(r->channels[i].name, ch, len) == 0)
            return (ssize_t)i;
    return -1;
}

static void sub_resubscribe(conn *c)
{
    rtc_redis *r = c->r;
    size_t n = r->n_channels + 2;
    const char **argv = calloc(n, sizeof(*argv));
    size_t *lens = calloc(n, sizeof(*lens));
    int rc = REDIS_ERR;
    if (argv && lens) {
        argv[0] = "SUBSCRIBE";
        lens[0] = 9;
        for (size_t i = 0; i < r->n_channels; i++) {
            argv[i + 1] = r->channels[i].name;
            lens[i + 1] = r->channels[i].len;
        }
        argv[n - 1] = r->hb_channel;
        lens[n - 1] = strlen(r->hb_channel);
        rc = redisAsyncCommandArgv(c->ac, on_sub_reply, c, (int)n, argv, lens);
    }
    free(argv);
    free(lens);
    if (rc != REDIS_OK) {
        conn_drop(c, "cannot subscribe", RTC_EUNAVAIL);
        return;
    }
    c->subscribed = true;
}

static bool elem_is(const redisReply *e, const char *s)
{
    return e->type == REDIS_REPLY_STRING && e->len == strlen(s) && memcmp(e->str, s, e->len) == 0;
}

static void on_sub_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    conn *c = priv;
    rtc_redis *r = c->r;
    redisReply *rep = reply;
    if (c->dead)
        return;
    if (!rep) { /* hiredis runs every subscription callback with NULL on teardown */
        char why[200];
        conn_drop(c, ac_error(ac, "connection lost", why, sizeof(why)), RTC_EUNAVAIL);
        return;
    }
    c->last_reply = uv_now(r->loop);
    c->timeouts = 0;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[1]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *ch = rep->element[1];
    if (elem_is(rep->element[0], "message")) {
        const redisReply *msg = rep->element[2];
        /* Not after unsubscribe: messages already on the wire are dropped. */
        if (r->closed || !r->msg_fn || msg->type != REDIS_REPLY_STRING ||
            sub_find(r, ch->str, ch->len) < 0)
            return;
        r->msg_fn(r->msg_ud, ch->str, ch->len, msg->str, msg->len);
    } else if (elem_is(rep->element[0], "subscribe")) {
        if (ch->len != strlen(r->hb_channel) || memcmp(ch->str, r->hb_channel, ch->len) != 0)
            return;
        c->ping_out = false;
        if (!c->up)
            link_up(c); /* every channel before it is in */
    } else if (elem_is(rep->element[0], "unsubscribe")) {
        /* hiredis 0.14 forgets a channel's callback when the UNSUBSCRIBE
         * answer arrives, even if SUBSCRIBE was sent again meanwhile: if
         * the channel is wanted again, subscribe once more. */
        if (!r->closed && sub_find(r, ch->str, ch->len) >= 0 && c->ac &&
            redisAsyncCommand(c->ac, on_sub_reply, c, "SUBSCRIBE %b", ch->str, ch->len) != REDIS_OK)
            c->broken = true;
    }
}

int rtc_redis_sub_new(uv_loop_t *loop, const rtc_redis_options *opts, rtc_metrics *metrics,
                      rtc_redis_sub_message_fn on_message, void *ud, rtc_redis_sub **out)
{
    if (out)
        *out = NULL;
    if (!on_message || !out)
        return RTC_EINVAL;
    rtc_redis *r = NULL;
    int rc = redis_new(loop, opts, metrics, true, &r);
    if (rc != 0)
        return rc;
    r->msg_fn = on_message;
    r->msg_ud = ud;
    snprintf(r->hb_channel, sizeof(r->hb_channel), "__rtc:sub-heartbeat:%016llx",
             (unsigned long long)r_random(r));
    *out = r->sub;
    return 0;
}

int rtc_redis_sub_subscribe(rtc_redis_sub *sub, const char *channel)
{
    if (!sub || !channel || !channel[0])
        return RTC_EINVAL;
    rtc_redis *r = sub->r;
    if (r->closed)
        return RTC_ECLOSED;
    size_t len = strlen(channel);
    if (len == strlen(r->hb_channel) && memcmp(channel, r->hb_channel, len) == 0)
        return RTC_EINVAL;
    if (sub_find(r, channel, len) >= 0)
        return 0;
    if (r->n_channels == r->cap_channels) {
        size_t cap = r->cap_channels ? r->cap_channels * 2 : 8;
        sub_channel *nc = realloc(r->channels, cap * sizeof(*nc));
        if (!nc)
            return RTC_ENOMEM;
        r->channels = nc;
        r->cap_channels = cap;
    }
    char *name = strdup(channel);
    if (!name)
        return RTC_ENOMEM;
    r->channels[r->n_channels++] = (sub_channel){name, len};
    conn *c = r->conn;
    /* Not subscribed yet: the (re)subscribe after the handshake takes it. */
    if (c && c->subscribed && !c->dead && c->ac &&
        redisAsyncCommand(c->ac, on_sub_reply, c, "SUBSCRIBE %b", channel, len) != REDIS_OK)
        c->broken = true; /* dropped (and all resubscribed) from the loop */
    return 0;
}

int rtc_redis_sub_unsubscribe(rtc_redis_sub *sub, const char *channel)
{
    if (!sub || !channel || !channel[0])
        return RTC_EINVAL;
    rtc_redis *r = sub->r;
    if (r->closed)
        return RTC_ECLOSED;
    size_t len = strlen(channel);
    ssize_t i = sub_find(r, channel, len);
    if (i < 0)
        return 0;
    free(r->channels[i].name);
    r->channels[i] = r->channels[--r->n_channels];
    conn *c = r->conn;
    if (c && c->subscribed && !c->dead && c->ac &&
        redisAsyncCommand(c->ac, on_sub_reply, c, "UNSUBSCRIBE %b", channel, len) != REDIS_OK)
        c->broken = true;
    return 0;
}

void rtc_redis_sub_on_state(rtc_redis_sub *sub, rtc_redis_state_fn fn, void *ud)
{
    if (sub)
        rtc_redis_on_state(sub->r, fn, ud);
}

bool rtc_redis_sub_ready(const rtc_redis_sub *sub)
{
    return sub && rtc_redis_ready(sub->r);
}

void rtc_redis_sub_close(rtc_redis_sub *sub)
{
    if (sub)
        rtc_redis_close(sub->r); /* sub itself is freed with r */
}

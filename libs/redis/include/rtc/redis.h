/* rtc/redis.h — Redis on the libuv loop (hiredis 0.14 async underneath).
 *
 * hiredis 0.14 gives an async context and a libuv adapter, but no
 * reconnect, no timeouts and no notion of "up". This module adds them:
 *
 *  - one connection, (re)connected in the background with jittered
 *    exponential backoff; AUTH (ACL user or password) and SELECT on every
 *    connect, then a PING before the link counts as up;
 *  - a deadline on every command: the callback runs with RTC_ETIMEDOUT
 *    when it passes, and a late reply is dropped; a connection whose
 *    commands keep timing out (or that fails a periodic PING) is dropped
 *    and reconnected, so a hung Redis is noticed, not waited on;
 *  - while the link is down, commands fail at once with RTC_EUNAVAIL
 *    (callers map that to gRPC UNAVAILABLE) instead of queueing;
 *  - up/down transitions are reported to a state callback (readiness) and
 *    counted in metrics;
 *  - optionally the master is found through Redis Sentinel and followed
 *    across failovers (see "Sentinel" below);
 *  - rtc_redis_sub is a separate pub/sub subscriber on the same machinery
 *    (see "Subscriber" below).
 *
 * Every callback runs from the loop, never inside the call that queued it,
 * and exactly once per command unless the request was abandoned.
 *
 * Sentinel. With opts.sentinels set, each connect attempt asks the
 * sentinels in turn (starting with the one that answered last; each
 * question on its own short connection bounded by connect_timeout_ms)
 * SENTINEL get-master-addr-by-name master_name, connects there (the URL
 * still gives user, password and db; its host:port is ignored) and adds
 * ROLE to the handshake: a server that is not a master fails the attempt,
 * which is retried after the backoff. One connection to a sentinel stays
 * subscribed to +switch-master: when it names our master, the link is
 * dropped and a new attempt starts at once. A -READONLY error reply (the
 * server was demoted under us) is delivered to its caller as usual (err 0,
 * REDIS_REPLY_ERROR: retry it) and then drops the link the same way, with
 * or without Sentinel. Meanwhile commands fail with RTC_EUNAVAIL as for any
 * other down link. Logged: each resolution (info), a changed master and an
 * announced failover (warn); counted in rtc_redis_failovers_total. With an
 * ACL user, it needs ROLE on the data nodes; sentinel_password, if set, is
 * sent as AUTH to the sentinels.
 *
 * Not for pub/sub or MONITOR (one reply per command is assumed), nor for
 * commands that change connection state a reconnect would lose (SELECT,
 * AUTH, HELLO, RESET, QUIT, CLIENT REPLY): those are refused with
 * RTC_EINVAL. Blocking commands (BLPOP …) hold the connection: with pings
 * on, one that blocks longer than command_timeout_ms gets the link dropped.
 *
 * hiredis writes with write(2): the process must ignore SIGPIPE
 * (rtc_signals_start does; rtc_redis_new also does if SIGPIPE is still at
 * its default). */
#ifndef RTC_REDIS_H
#define RTC_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <hiredis/hiredis.h>

#include "rtc/metrics.h"

typedef struct rtc_redis rtc_redis;
typedef struct rtc_redis_req rtc_redis_req;

typedef struct rtc_redis_options {
    /* redis://[[user]:password@]host[:port][/db]; default redis://127.0.0.1:6379.
     * Percent-escapes are decoded in user and password. */
    const char *url;
    const char *client_name;     /* CLIENT SETNAME and metric label, e.g. "rtc-auth" */
    uint64_t connect_timeout_ms; /* TCP connect + AUTH/SELECT/PING, default 2000 */
    uint64_t command_timeout_ms; /* per-command default, default 2000 */
    uint64_t backoff_initial_ms; /* default 100; x2 per failure, ±20 % jitter */
    uint64_t backoff_max_ms;     /* default 5000 */
    uint64_t ping_interval_ms;   /* liveness PING while idle, default 1000; 0 = off.
                                  * Unanswered for command_timeout_ms → link dropped. */
    size_t max_pending;          /* commands in flight; beyond → RTC_EAGAIN, default 100000.
                                  * A timed-out command counts until Redis answers
                                  * it or the link drops. */
    /* Sentinel: "host:port[,host:port…]" (port default 26379, IPv6 as
     * [addr]:port, at most 16), NULL or "" = connect to the URL's host.
     * master_name is then required (no spaces). sentinel_password: AUTH
     * for the sentinels, NULL = none. All three are copied. */
    const char *sentinels;
    const char *master_name;
    const char *sentinel_password;
} rtc_redis_options;

void rtc_redis_options_init(rtc_redis_options *o);

/* Parse a redis:// URL (exposed for tests and config checks). user and
 * password may come back "" when absent. 0 or RTC_EINVAL. */
typedef struct rtc_redis_url {
    char host[256];
    uint16_t port;
    char user[128];
    char password[256];
    int db;
} rtc_redis_url;
int rtc_redis_url_parse(const char *url, rtc_redis_url *out);

/* Start connecting (returns before the link is up; the first attempt
 * starts from the loop). Zero timeouts/backoff/max_pending mean the
 * default. A host name is resolved on every attempt (uv_getaddrinfo),
 * attempts rotate through its addresses. metrics may be NULL. RTC_EINVAL
 * for a bad URL, a client_name Redis would refuse (empty, spaces, control
 * characters, over 64 bytes), a bad sentinels list or a missing/bad
 * master_name with sentinels. *out owned by the caller: close it. */
int rtc_redis_new(uv_loop_t *loop, const rtc_redis_options *opts, rtc_metrics *metrics,
                  rtc_redis **out);

/* Close the link; pending commands get RTC_ECLOSED, delivered before this
 * returns. After it returns no callback (reply or state) runs and r must
 * not be used. Memory is released from uv_close callbacks: keep running
 * the loop. Safe inside callbacks (reply and state ones). */
void rtc_redis_close(rtc_redis *r);

/* True while connected, authenticated and answering. */
bool rtc_redis_ready(const rtc_redis *r);

/* Called on every up/down transition (not repeatedly while down). The
 * outcome of the first attempt is always reported, so a client that never
 * comes up still says why. reason is a short text, valid during the call
 * ("connected", "connect failed: Connection refused", "AUTH failed:
 * WRONGPASS …", "ping timed out", "commands timed out", …; never the
 * password). One callback per rtc_redis; NULL to remove. */
typedef void (*rtc_redis_state_fn)(void *ud, bool up, const char *reason);
void rtc_redis_on_state(rtc_redis *r, rtc_redis_state_fn fn, void *ud);

/* err: 0 with a reply (which may be a REDIS_REPLY_ERROR — Redis said no),
 * or RTC_EUNAVAIL (not connected / link lost before the reply),
 * RTC_ETIMEDOUT (deadline passed), RTC_ECLOSED (rtc_redis_close).
 * reply is NULL unless err is 0 and is freed after the callback returns. */
typedef void (*rtc_redis_reply_fn)(void *ud, int err, const redisReply *reply);

/* Send a command given as an argument vector (binary-safe; argvlen NULL =
 * strlen). timeout_ms 0 = the default. fn may be NULL (nobody waits).
 * Returns 0 (the callback will run later), RTC_EAGAIN when max_pending is
 * reached, RTC_EINVAL (bad arguments or a refused command, see above),
 * RTC_ENOMEM, RTC_ECLOSED (called from a callback during rtc_redis_close)
 * — on a nonzero return the callback never runs. req (may be NULL) lets
 * the caller abandon it; it stays valid until the callback returns or
 * until rtc_redis_req_abandon, whichever comes first. */
int rtc_redis_command_argv(rtc_redis *r, rtc_redis_reply_fn fn, void *ud, uint64_t timeout_ms,
                           int argc, const char **argv, const size_t *argvlen, rtc_redis_req **req);

/* printf-style, as hiredis's redisvFormatCommand (%s, %b). */
int rtc_redis_command(rtc_redis *r, rtc_redis_reply_fn fn, void *ud, uint64_t timeout_ms,
                      rtc_redis_req **req, const char *fmt, ...);

/* The caller no longer wants the answer (its own request was cancelled):
 * the callback will not run. The command itself may still execute. */
void rtc_redis_req_abandon(rtc_redis_req *req);

/* ---- Subscriber ---------------------------------------------------------
 *
 * A pub/sub subscriber: its own connection, kept up like rtc_redis's (same
 * options, Sentinel included; it names itself "<client_name>-sub", which
 * must then fit in 64 bytes, and so labels its metrics). It keeps the set
 * of channels and subscribes to all of them again after every reconnect or
 * failover; the state callback says up (reason "subscribed") only once they
 * are all confirmed. Messages published while it was down are lost: on
 * every up after the first, callers should re-read what the messages would
 * have told them (their streams). Liveness is checked as for rtc_redis,
 * with a SUBSCRIBE to a private channel instead of PING (a subscribed
 * hiredis 0.14 context may only send (UN)SUBSCRIBE). A channel the server
 * refuses (ACL) drops the link, as hiredis 0.14 gives up on unexpected
 * error replies in pub/sub mode. */
typedef struct rtc_redis_sub rtc_redis_sub;

/* channel and payload are binary-safe, valid during the call only. Runs
 * from the loop; may call rtc_redis_sub_* (close included). */
typedef void (*rtc_redis_sub_message_fn)(void *ud, const char *channel, size_t channel_len,
                                         const char *payload, size_t payload_len);

/* As rtc_redis_new (same errors; RTC_EINVAL also when on_message is NULL).
 * *out owned by the caller: rtc_redis_sub_close it. */
int rtc_redis_sub_new(uv_loop_t *loop, const rtc_redis_options *opts, rtc_metrics *metrics,
                      rtc_redis_sub_message_fn on_message, void *ud, rtc_redis_sub **out);

/* Add a channel to the set (a NUL-terminated name; no patterns) and
 * subscribe now if connected, else on the next connect. Idempotent.
 * Returns 0, RTC_EINVAL, RTC_ENOMEM, RTC_ECLOSED. Never calls back from
 * inside the call. Delivery starts when Redis has confirmed, which the
 * caller does not see: re-read after subscribing. */
int rtc_redis_sub_subscribe(rtc_redis_sub *sub, const char *channel);

/* Remove a channel: no message for it is delivered after this returns.
 * 0 also when it was not in the set; RTC_EINVAL, RTC_ECLOSED. */
int rtc_redis_sub_unsubscribe(rtc_redis_sub *sub, const char *channel);

/* As rtc_redis_on_state: up = connected and every channel subscribed. */
void rtc_redis_sub_on_state(rtc_redis_sub *sub, rtc_redis_state_fn fn, void *ud);
bool rtc_redis_sub_ready(const rtc_redis_sub *sub);

/* As rtc_redis_close: no callback after it returns, memory released from
 * uv_close callbacks, safe inside callbacks (message and state ones). */
void rtc_redis_sub_close(rtc_redis_sub *sub);

#endif

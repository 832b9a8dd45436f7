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
 *    counted in metrics.
 *
 * Every callback runs from the loop, never inside the call that queued it,
 * and exactly once per command unless the request was abandoned.
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
 * for a bad URL or a client_name Redis would refuse (empty, spaces,
 * control characters, over 64 bytes). *out owned by the caller: close it. */
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

#endif

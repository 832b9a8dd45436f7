/* relay.c — Signal and Broadcast: checked here, written by signaling.lua
 * (rtc_signals, rtc_broadcast), optionally confirmed with WAIT. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/core.h"
#include "rtc/log.h"
#include "rtc/utf8.h"
#include "sig.h"

/* ---- Signal and Broadcast (optionally confirmed with WAIT) ------------------ */

static void relay_done(sig_op *o);

/* Record the first failure of a relay step. */
static void relay_failed(sig_op *o, int status, const char *msg)
{
    if (!o->fail_status) {
        o->fail_status = status;
        snprintf(o->fail_msg, sizeof(o->fail_msg), "%s", msg);
    }
}

static void on_relayed(void *ud, int err, const redisReply *reply)
{
    sig_op *o = ud;
    o->rreq = NULL;
    int status;
    const char *msg;
    if (sig_redis_failed(err, reply, &status, &msg))
        relay_failed(o, status, msg);
    else if (!sig_reply_array(reply, 2))
        relay_failed(o, RTC_GRPC_INTERNAL, "unexpected reply from Redis");
    else if (reply->element[0]->type == REDIS_REPLY_INTEGER)
        o->count = reply->element[0]->integer;
    else if (reply->element[0]->type == REDIS_REPLY_STRING &&
             reply->element[0]->len < sizeof(o->event_id))
        memcpy(o->event_id, reply->element[0]->str, reply->element[0]->len + 1);
    else
        relay_failed(o, RTC_GRPC_INTERNAL, "unexpected event id from Redis");
    relay_done(o);
}

static const char *wait_failure(int err, const redisReply *reply, bool *short_wait);

static void on_waited(void *ud, int err, const redisReply *reply)
{
    sig_op *o = ud;
    o->wreq = NULL;
    const char *why = wait_failure(err, reply, &o->short_wait);
    if (why)
        relay_failed(o, RTC_GRPC_UNAVAILABLE, why);
    relay_done(o);
}

static void relay_done(sig_op *o)
{
    if (--o->waiting > 0)
        return;
    if (o->short_wait)
        rtc_metric_inc(G.m_wait_short, 1);
    if (o->fail_status) {
        sig_op_finish(o, o->fail_status, o->fail_msg, NULL);
        return;
    }
    if (o->broadcast) {
        Rtc__Signaling__V1__BroadcastResponse resp = RTC__SIGNALING__V1__BROADCAST_RESPONSE__INIT;
        resp.recipient_count = (uint32_t)o->count;
        sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
        return;
    }
    Rtc__Signaling__V1__SignalResponse resp = RTC__SIGNALING__V1__SIGNAL_RESPONSE__INIT;
    resp.event_id = o->event_id;
    sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
}

/* WAIT --wait-replicas --wait-timeout, right behind a write on the same
 * connection. 0 or the error of rtc_redis_command. */
static int send_wait(rtc_redis_reply_fn fn, void *ud, rtc_redis_req **req)
{
    char nrep[24], ms[24];
    snprintf(nrep, sizeof(nrep), "%lld", (long long)G.cfg.wait_replicas);
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)G.cfg.wait_timeout);
    return rtc_redis_command(G.redis, fn, ud, G.cfg.wait_timeout + G.cfg.redis_timeout, req,
                             "WAIT %s %s", nrep, ms);
}

/* The outcome of a WAIT: NULL when enough replicas confirmed, else why. */
static const char *wait_failure(int err, const redisReply *reply, bool *short_wait)
{
    if (err || reply->type != REDIS_REPLY_INTEGER)
        return "redis: WAIT failed; retry with the same client_msg_id";
    if (reply->integer < G.cfg.wait_replicas) {
        *short_wait = true;
        return "not confirmed by the Redis replicas in time; retry with the same client_msg_id";
    }
    return NULL;
}

/* FCALL, then (with --wait-replicas) WAIT on the same connection, both
 * sent at once. */
static void relay(sig_op *o, const char *fn, int n, const char **argv, const size_t *lens)
{
    o->waiting = 1;
    int rc = sig_fcall(fn, n, argv, lens, 0, on_relayed, o, &o->rreq);
    if (rc < 0) {
        sig_op_fail(o, rc == RTC_EAGAIN ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL, "redis: %s",
                    rtc_strerror(rc));
        return;
    }
    if (G.cfg.wait_replicas > 0) {
        if (send_wait(on_waited, o, &o->wreq) == 0)
            o->waiting++;
        else
            relay_failed(o, RTC_GRPC_UNAVAILABLE, "redis: WAIT could not be sent");
    }
}

/* ---- the Signal batch -------------------------------------------------------
 *
 * Signals checked during one loop iteration leave together, in arrival
 * order, as one FCALL rtc_signals (plus one WAIT with --wait-replicas) when
 * the iteration's I/O is done (a uv_check handle). Redis then parses one
 * command and enters Lua once for all of them; each signal is still its
 * own atomic change with its own answer, and a session's signals keep
 * their order. A call cancelled meanwhile only leaves an empty slot. */

#define BATCH_MAX 64

typedef struct relay_batch {
    size_t n;    /* slots used */
    int pending; /* replies still expected: FCALL, WAIT */
    sig_op *ops[BATCH_MAX];
    const char *wait_fail; /* static text, or NULL */
    bool short_wait;
} relay_batch;

static relay_batch *open_batch;
static uv_check_t batch_check;
static bool batch_check_ready;

void sig_batch_forget(sig_op *o)
{
    if (o->batch)
        o->batch->ops[o->slot] = NULL;
    o->batch = NULL;
}

/* Both replies are in: answer every call still waiting. */
static void batch_done(relay_batch *b)
{
    if (--b->pending > 0)
        return;
    if (b->short_wait)
        rtc_metric_inc(G.m_wait_short, 1);
    for (size_t i = 0; i < b->n; i++) {
        sig_op *o = b->ops[i];
        if (!o)
            continue;
        o->batch = NULL;
        if (b->wait_fail)
            relay_failed(o, RTC_GRPC_UNAVAILABLE, b->wait_fail);
        o->waiting = 1;
        relay_done(o);
    }
    free(b);
}

static void on_batch(void *ud, int err, const redisReply *reply)
{
    relay_batch *b = ud;
    int status;
    const char *msg;
    bool whole = sig_redis_failed(err, reply, &status, &msg);
    if (!whole && (reply->type != REDIS_REPLY_ARRAY || reply->elements != b->n)) {
        whole = true;
        status = RTC_GRPC_INTERNAL;
        msg = "unexpected reply from rtc_signals";
    }
    for (size_t i = 0; i < b->n; i++) {
        sig_op *o = b->ops[i];
        if (!o)
            continue;
        if (whole) {
            relay_failed(o, status, msg);
            continue;
        }
        const redisReply *r = reply->element[i];
        if (sig_redis_failed(0, r, &status, &msg))
            relay_failed(o, status, msg);
        else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                 r->element[0]->type == REDIS_REPLY_STRING &&
                 r->element[0]->len < sizeof(o->event_id))
            memcpy(o->event_id, r->element[0]->str, r->element[0]->len + 1);
        else
            relay_failed(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_signals");
    }
    batch_done(b);
}

static void on_batch_wait(void *ud, int err, const redisReply *reply)
{
    relay_batch *b = ud;
    b->wait_fail = wait_failure(err, reply, &b->short_wait);
    batch_done(b);
}

static void batch_send(relay_batch *b)
{
    if (b == open_batch)
        open_batch = NULL;
    const char *argv[3 + 3 + 8 * BATCH_MAX];
    size_t lens[3 + 3 + 8 * BATCH_MAX];
    size_t argc = 0;
    const char *head[] = {"FCALL", "rtc_signals", "0", G.nego_ttl, G.rate, G.maxlen};
    for (size_t i = 0; i < 6; i++) {
        argv[argc] = head[i];
        lens[argc++] = strlen(head[i]);
    }
    for (size_t i = 0; i < b->n; i++) {
        sig_op *o = b->ops[i];
        if (!o)
            continue;
        const Rtc__Signaling__V1__SignalRequest *req = (const void *)o->req;
        snprintf(o->plen_s, sizeof(o->plen_s), "%zu", o->plen);
        const char *f[] = {o->claims.room_id,
                           req->session_id,
                           o->claims.identity,
                           req->to_participant_id,
                           (const char *)o->payload,
                           o->plen_s,
                           o->nego,
                           req->client_msg_id};
        for (size_t k = 0; k < 8; k++) {
            argv[argc] = f[k];
            lens[argc++] = k == 4 ? o->plen : strlen(f[k]);
        }
    }
    /* Slots of calls cancelled before sending are dropped: renumber. */
    size_t used = 0;
    for (size_t i = 0; i < b->n; i++)
        if (b->ops[i]) {
            b->ops[used] = b->ops[i];
            b->ops[used]->slot = used;
            used++;
        }
    b->n = used;
    if (used == 0) {
        free(b);
        return;
    }
    b->pending = 1;
    int rc = rtc_redis_command_argv(G.redis, on_batch, b, 0, (int)argc, argv, lens, NULL);
    if (rc < 0) {
        b->pending = 0;
        for (size_t i = 0; i < b->n; i++)
            if (b->ops[i])
                relay_failed(b->ops[i], rc == RTC_EAGAIN ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL,
                             rtc_strerror(rc));
        b->pending = 1;
        batch_done(b);
        return;
    }
    if (G.cfg.wait_replicas > 0) {
        if (send_wait(on_batch_wait, b, NULL) == 0)
            b->pending++;
        else
            b->wait_fail = "redis: WAIT could not be sent";
    }
}

static void on_batch_check(uv_check_t *h)
{
    uv_check_stop(h);
    if (open_batch)
        batch_send(open_batch);
}

/* Queue a checked Signal (o->payload packed) for this iteration's batch. */
static void batch_add(sig_op *o)
{
    if (!open_batch) {
        open_batch = calloc(1, sizeof(*open_batch));
        if (!open_batch) {
            sig_op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        uv_check_start(&batch_check, on_batch_check);
    }
    relay_batch *b = open_batch;
    o->batch = b;
    o->slot = b->n;
    b->ops[b->n++] = o;
    if (b->n == BATCH_MAX)
        batch_send(b);
}

static bool client_msg_id_ok(sig_op *o, const char *id)
{
    if (*id && !sig_valid_id(id)) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT,
                    "client_msg_id: at most %d bytes of [A-Za-z0-9_-]", SIG_MAX_ID);
        return false;
    }
    return true;
}

void sig_signal_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__SignalRequest *req = (const void *)o->req;
    if (!sig_session_ok(o, req->session_id))
        return;
    if (!sig_valid_id(req->to_participant_id)) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "to_participant_id is malformed");
        return;
    }
    if (!client_msg_id_ok(o, req->client_msg_id))
        return;
    const char *nego;
    char why[160];
    if (sig_payload_check(req->payload, G.cfg.max_sdp, &nego, why, sizeof(why)) < 0) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "%s", why);
        return;
    }
    o->plen = rtc__signaling__v1__signal_payload__get_packed_size(req->payload);
    o->payload = malloc(o->plen ? o->plen : 1);
    if (!o->payload) {
        sig_op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    rtc__signaling__v1__signal_payload__pack(req->payload, o->payload);
    o->nego = nego;
    batch_add(o);
}

void sig_broadcast_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__BroadcastRequest *req = (const void *)o->req;
    if (!sig_session_ok(o, req->session_id) || !client_msg_id_ok(o, req->client_msg_id))
        return;
    if (req->data.len == 0 || req->data.len > SIG_MAX_DATA) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "data must be 1 to %d bytes", SIG_MAX_DATA);
        return;
    }
    const char *argv[] = {o->claims.room_id,
                          req->session_id,
                          o->claims.identity,
                          (const char *)req->data.data,
                          req->client_msg_id,
                          G.rate,
                          G.maxlen};
    size_t lens[7];
    for (size_t i = 0; i < 7; i++)
        lens[i] = i == 3 ? req->data.len : strlen(argv[i]);
    o->broadcast = true;
    relay(o, "rtc_broadcast", 7, argv, lens);
}

void sig_relay_init(void)
{
    uv_check_init(G.loop, &batch_check);
    batch_check_ready = true;
}

void sig_relay_close(void)
{
    if (batch_check_ready) {
        uv_close((uv_handle_t *)&batch_check, NULL);
        batch_check_ready = false;
    }
    free(open_batch); /* its calls were all cancelled by the drain */
    open_batch = NULL;
}

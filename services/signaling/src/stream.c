/* Subscribe: a participant's mailbox as a server stream.
 *
 * A stream starts with rtc_attach (one FCALL: check the session, make this
 * pod the one woken for it, replay the mailbox after after_event_id). It
 * is then found by room + participant when a wake message arrives on this
 * pod's pub/sub channel. A wake carries the event; wakes of one mailbox
 * arrive in id order on the one subscriber connection. While nothing is
 * being read back, an event newer than the last one delivered goes out as
 * is ("direct") and an older one was already sent. Whenever wakes may have
 * been missed, the stream reads the mailbox after its last id with XRANGE
 * ("fill") and meanwhile only notes that wakes came (they are in the
 * stream too): after the attach (wakes that raced it), after the pub/sub
 * link comes back (wakes published while it was down are gone), when a
 * slow client's send queue has drained, and when the session ends (then
 * the stream finishes with OK once the mailbox is drained). So each event
 * goes out once and in mailbox order, whatever was lost on the way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "rtc/core.h"
#include "rtc/log.h"
#include "sig.h"

#define FILL_COUNT   "64" /* mailbox entries per XRANGE */
#define ATTACH_COUNT "64"
#define SEND_LIMIT   (256 * 1024) /* queued bytes beyond which a stream reads back later */
#define TOUCH_BATCH  100          /* sessions per rtc_touch */
/* Sessions refreshed per touch tick at least allowed (more with many
 * streams): a pod holding 10,000 streams must not send Redis one burst of
 * rtc_touch calls (it blocked Redis for over a second, and other commands
 * timed out behind it). */
#define TOUCH_PER_TICK 500

struct sig_stream {
    UT_hash_handle hh;
    char key[128 + 1 + SIG_MAX_ID + 1]; /* "<room>|<participant>" */
    rtc_grpc_call *call;
    rtc_redis_req *rreq; /* attach or fill in flight */
    char room[128];      /* as rtc_jwt_claims.room_id; at most 64 bytes used */
    char part[SIG_MAX_ID + 1];
    char session[SIG_SESSION_LEN + 1];
    char identity[129];
    char last[SIG_MAX_EVENT_ID + 1]; /* last event id delivered ("" = none) */
    int64_t gen;                     /* takeover generation from rtc_attach */
    bool registered;                 /* in G.streams */
    bool dirty;                      /* a wake arrived while reading: read again */
    bool ending;                     /* session over: finish once drained */
    bool behind;                     /* send queue full: read back on drain */
    bool stale;                      /* a read failed: retry on resync / touch */
    uint64_t next_touch;             /* rtc_now_ms() when the session is refreshed next */
};

/* The touch period: a third of the session TTL, so a session survives two
 * lost touches. Each stream is first touched at a random point of its
 * first period, so streams attached together are not refreshed together. */
static uint64_t touch_period(void)
{
    uint64_t p = G.cfg.session_ttl / 3;
    return p ? p : 1;
}

static void stream_end(sig_stream *s, int status, const char *msg)
{
    if (s->registered) {
        HASH_DEL(G.streams, s);
        G.nstreams--;
        rtc_metric_set(G.m_streams, (double)G.nstreams);
    }
    if (s->rreq)
        rtc_redis_req_abandon(s->rreq);
    rtc_grpc_call_on_cancel(s->call, NULL, NULL);
    rtc_grpc_call_on_drain(s->call, NULL, NULL);
    rtc_grpc_call_finish(s->call, status, msg);
    free(s);
}

/* Send one mailbox entry. false when the stream is over (finished or the
 * call is gone): s must not be used then. */
static bool deliver(sig_stream *s, sig_slice id, sig_slice t, sig_slice a, sig_slice b,
                    rtc_metric *path)
{
    sig_event e;
    if (sig_event_build(id, t, a, b, &e) < 0) {
        /* Only this service writes mailboxes: log and skip the entry. */
        rtc_log(RTC_LOG_ERROR, "undecodable mailbox entry skipped", "room", s->room, "participant",
                s->part, NULL);
        char idbuf[SIG_MAX_EVENT_ID + 1];
        if (id.len < sizeof(idbuf)) {
            memcpy(idbuf, id.p, id.len);
            idbuf[id.len] = '\0';
            if (sig_valid_event_id(idbuf))
                memcpy(s->last, idbuf, id.len + 1);
        }
        return true;
    }
    int rc = rtc_grpc_call_send(s->call, &e.ev.base);
    memcpy(s->last, e.id, sizeof(s->last)); /* both SIG_MAX_EVENT_ID + 1 */
    bool terminal = e.terminal;
    sig_event_clear(&e);
    if (rc < 0) {
        if (rc != RTC_ECLOSED) { /* too big or no memory: the stream cannot go on */
            stream_end(s, RTC_GRPC_INTERNAL, rtc_strerror(rc));
            return false;
        }
        return true; /* cancelled: the cancel callback frees it */
    }
    rtc_metric_inc(path, 1);
    if (terminal) {
        stream_end(s, RTC_GRPC_OK, NULL);
        return false;
    }
    return true;
}

static sig_slice slice_of(const redisReply *r)
{
    sig_slice sl = {"", 0};
    if (r && r->type == REDIS_REPLY_STRING) {
        sl.p = r->str;
        sl.len = r->len;
    }
    return sl;
}

/* Deliver XRANGE entries [[id, [t, T, a, A, b, B]], …]. Returns the number
 * delivered, or -1 when the stream is over. */
static int deliver_entries(sig_stream *s, const redisReply *entries)
{
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return 0;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *en = entries->element[i];
        if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
            en->element[1]->type != REDIS_REPLY_ARRAY || en->element[1]->elements != 6)
            continue;
        redisReply **f = en->element[1]->element;
        if (!deliver(s, slice_of(en->element[0]), slice_of(f[1]), slice_of(f[3]), slice_of(f[5]),
                     G.m_fill))
            return -1;
    }
    return (int)entries->elements;
}

static void fill(sig_stream *s);

static void on_fill(void *ud, int err, const redisReply *reply)
{
    sig_stream *s = ud;
    s->rreq = NULL;
    int status;
    const char *msg;
    bool failed = sig_redis_failed(err, reply, &status, &msg);
    if (failed && status == RTC_GRPC_OUT_OF_RANGE) { /* events lost to trimming */
        stream_end(s, status, msg);
        return;
    }
    if (failed || reply->type != REDIS_REPLY_ARRAY) {
        s->stale = true; /* retried on resync or the next touch */
        return;
    }
    int n = deliver_entries(s, reply);
    if (n < 0)
        return;
    if (n >= atoi(FILL_COUNT) || s->dirty) {
        fill(s);
        return;
    }
    if (s->ending)
        stream_end(s, RTC_GRPC_OK, NULL);
}

/* Read the mailbox after s->last (rtc_read: XRANGE, or OUT_OF_RANGE when
 * the mailbox was trimmed past it). */
static void fill(sig_stream *s)
{
    if (s->rreq) {
        s->dirty = true;
        return;
    }
    if (rtc_grpc_call_pending(s->call) > SEND_LIMIT) {
        s->behind = true; /* resumes from the drain callback */
        return;
    }
    s->dirty = s->stale = false;
    const char *argv[] = {s->room, s->part, s->last, FILL_COUNT};
    if (sig_fcall("rtc_read", 4, argv, NULL, 0, on_fill, s, &s->rreq) < 0) {
        s->rreq = NULL;
        s->stale = true;
    }
}

static void on_drain(rtc_grpc_call *call, void *ud)
{
    (void)call;
    sig_stream *s = ud;
    if (s->behind) {
        s->behind = false;
        fill(s);
    }
}

static void on_cancel(rtc_grpc_call *call, void *ud)
{
    (void)call;
    stream_end(ud, RTC_GRPC_CANCELLED, "cancelled");
}

static void on_attach(void *ud, int err, const redisReply *reply)
{
    sig_stream *s = ud;
    s->rreq = NULL;
    int status;
    const char *msg;
    if (sig_redis_failed(err, reply, &status, &msg)) {
        stream_end(s, status, msg);
        return;
    }
    /* {P, generation, ended, entries} */
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 4 ||
        reply->element[0]->type != REDIS_REPLY_STRING || reply->element[0]->len > SIG_MAX_ID) {
        stream_end(s, RTC_GRPC_INTERNAL, "unexpected reply from rtc_attach");
        return;
    }
    snprintf(s->part, sizeof(s->part), "%s", reply->element[0]->str);
    s->gen = reply->element[1]->integer;
    s->ending = reply->element[2]->integer == 1;
    if (G.draining) {
        stream_end(s, RTC_GRPC_UNAVAILABLE, "pod shutting down: subscribe again");
        return;
    }
    /* Registered also when the session has ended (draining what is left),
     * so reads that fail are retried like any other stream's. */
    snprintf(s->key, sizeof(s->key), "%s|%s", s->room, s->part);
    sig_stream *old;
    HASH_FIND_STR(G.streams, s->key, old);
    if (old)
        stream_end(old, RTC_GRPC_ABORTED, "a newer Subscribe for this session took over");
    HASH_ADD_STR(G.streams, key, s);
    s->registered = true;
    s->next_touch = rtc_now_ms() + 1 + (uint64_t)rand() % touch_period();
    G.nstreams++;
    rtc_metric_set(G.m_streams, (double)G.nstreams);
    if (deliver_entries(s, reply->element[3]) < 0)
        return;
    /* Wakes that came before this stream was registered are in the
     * mailbox: read once more (and on to the end if the session is over). */
    fill(s);
}

void sig_subscribe(rtc_grpc_call *call, const ProtobufCMessage *msg, const rtc_jwt_claims *claims)
{
    const Rtc__Signaling__V1__SubscribeRequest *req = (const void *)msg;
    switch (sig_session_check(claims->room_id, req->session_id)) {
    case 0:
        break;
    case RTC_EDENIED:
        rtc_grpc_call_finish(call, RTC_GRPC_PERMISSION_DENIED,
                             "the session belongs to another room");
        return;
    default:
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT, "session_id is malformed");
        return;
    }
    if (*req->after_event_id && !sig_valid_event_id(req->after_event_id)) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "after_event_id is not an event id (<ms>-<seq>)");
        return;
    }
    if (G.draining) {
        rtc_grpc_call_finish(call, RTC_GRPC_UNAVAILABLE, "pod shutting down");
        return;
    }
    sig_stream *s = calloc(1, sizeof(*s));
    if (!s) {
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    s->call = call;
    snprintf(s->room, sizeof(s->room), "%s", claims->room_id);
    snprintf(s->session, sizeof(s->session), "%s", req->session_id);
    snprintf(s->identity, sizeof(s->identity), "%s", claims->identity);
    snprintf(s->last, sizeof(s->last), "%s", req->after_event_id);
    rtc_grpc_call_on_cancel(call, on_cancel, s);
    rtc_grpc_call_on_drain(call, on_drain, s);
    const char *argv[] = {s->room, s->session,    s->identity, G.pod,
                          s->last, G.session_ttl, ATTACH_COUNT};
    int rc = sig_fcall("rtc_attach", 7, argv, NULL, 0, on_attach, s, &s->rreq);
    if (rc < 0) {
        s->rreq = NULL;
        stream_end(s, RTC_GRPC_UNAVAILABLE, rtc_strerror(rc));
    }
}

static bool slice_is(sig_slice sl, const char *s)
{
    return sl.len == strlen(s) && memcmp(sl.p, s, sl.len) == 0;
}

void sig_streams_on_wake(const char *payload, size_t len)
{
    sig_wake w;
    char key[sizeof(((sig_stream *)0)->key)];
    if (sig_wake_parse(payload, len, &w) < 0 || w.room.len > SIG_MAX_ROOM ||
        w.part.len > SIG_MAX_ID) {
        rtc_log(RTC_LOG_WARN, "malformed wake message ignored", NULL);
        return;
    }
    memcpy(key, w.room.p, w.room.len);
    key[w.room.len] = '|';
    memcpy(key + w.room.len + 1, w.part.p, w.part.len);
    key[w.room.len + 1 + w.part.len] = '\0';
    sig_stream *s;
    HASH_FIND_STR(G.streams, key, s);
    if (!s)
        return; /* not (or no longer) here */
    if (slice_is(w.op, "T")) {
        char gen[24];
        snprintf(gen, sizeof(gen), "%.*s", (int)(w.a.len < 23 ? w.a.len : 23), w.a.p);
        if (s->gen < strtoll(gen, NULL, 10))
            stream_end(s, RTC_GRPC_ABORTED, "a newer Subscribe for this session took over");
        return;
    }
    if (slice_is(w.op, "x")) {
        s->ending = true;
        fill(s);
        return;
    }
    if (!slice_is(w.op, "e"))
        return;
    if (s->rreq || s->behind || s->stale) {
        s->dirty = true;
        if (s->stale)
            fill(s); /* a read failed: never deliver past a gap it left */
        return;
    }
    if (!sig_event_id_after(w.id, s->last))
        return; /* already delivered (read back before its wake came) */
    if (rtc_grpc_call_pending(s->call) > SEND_LIMIT) {
        s->behind = true; /* read back once the client has caught up */
        return;
    }
    deliver(s, w.id, w.t, w.a, w.b, G.m_direct);
}

void sig_streams_resync(void)
{
    sig_stream *s, *tmp;
    HASH_ITER(hh, G.streams, s, tmp)
    {
        fill(s);
    }
}

/* ---- keeping sessions with open streams alive ------------------------------- */

typedef struct touch_batch {
    size_t n;
    char keys[TOUCH_BATCH][sizeof(((sig_stream *)0)->key)];
} touch_batch;

static void on_touched(void *ud, int err, const redisReply *reply)
{
    touch_batch *b = ud;
    if (!err && reply->type == REDIS_REPLY_ARRAY && reply->elements == b->n) {
        for (size_t i = 0; i < b->n; i++) {
            long long gen = reply->element[i]->integer;
            sig_stream *s;
            HASH_FIND_STR(G.streams, b->keys[i], s);
            if (!s)
                continue;
            if (gen == 0) { /* the session ended under the stream (swept) */
                s->ending = true;
                fill(s);
            } else if (gen > s->gen) { /* taken over; the wake saying so was lost */
                stream_end(s, RTC_GRPC_ABORTED, "a newer Subscribe for this session took over");
            }
        }
    }
    free(b);
}

static void touch_send(touch_batch *b, const char **argv, size_t argc)
{
    if (rtc_redis_command_argv(G.redis, on_touched, b, 0, (int)argc, argv, NULL, NULL) < 0)
        free(b);
}

/* Runs every touch tick (a tenth of the period): refreshes the sessions
 * whose time has come, at most TOUCH_PER_TICK of them, in rtc_touch calls
 * of TOUCH_BATCH; the rest wait for the next tick. */
void sig_streams_touch(uv_timer_t *t)
{
    (void)t;
    if (!G.redis_up || !G.funcs_loaded || !G.streams)
        return;
    const char *argv[4 + 2 * TOUCH_BATCH] = {"FCALL", "rtc_touch", "0", G.session_ttl};
    size_t argc = 4, sent = 0;
    /* Twice the even share of a tick, so a backlog clears in a few ticks
     * and no session waits past its TTL. */
    size_t cap = G.nstreams / 5 > TOUCH_PER_TICK ? G.nstreams / 5 : TOUCH_PER_TICK;
    uint64_t now = rtc_now_ms(), period = touch_period();
    touch_batch *b = NULL;
    sig_stream *s, *tmp;
    HASH_ITER(hh, G.streams, s, tmp)
    {
        if (s->stale && !s->rreq)
            fill(s); /* a read that failed earlier */
        if (s->next_touch > now || sent == cap)
            continue;
        if (!b && !(b = calloc(1, sizeof(*b))))
            return;
        s->next_touch = now + period;
        snprintf(b->keys[b->n++], sizeof(b->keys[0]), "%s", s->key);
        argv[argc++] = s->room;
        argv[argc++] = s->session;
        sent++;
        if (b->n == TOUCH_BATCH) {
            touch_send(b, argv, argc);
            b = NULL;
            argc = 4;
        }
    }
    if (b)
        touch_send(b, argv, argc);
}

void sig_streams_close_all(void)
{
    sig_stream *s, *tmp;
    HASH_ITER(hh, G.streams, s, tmp)
    {
        stream_end(s, RTC_GRPC_UNAVAILABLE, "pod shutting down: subscribe again");
    }
}

/* rtc.signaling.v1.Signaling and SignalingAdmin: configuration, start-up,
 * readiness, the sweeper, authorization and the unary RPCs. Subscribe and
 * the pub/sub side are in stream.c; the Redis functions in signaling.lua;
 * who may call what and the Redis layout in services/signaling/README.md.
 *
 * Every handler checks its caller (bearer token or API key), then its
 * input, then makes one FCALL and answers from the reply. A call cancelled
 * while waiting is finished with CANCELLED after its pending work is
 * dropped. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/auth/v1/auth.pb-c.h"
#include "rtc/core.h"
#include "rtc/log.h"
#include "rtc/signaling_service.h"
#include "rtc/utf8.h"
#include "sig.h"

#define SIGNALING "rtc.signaling.v1.Signaling"
#define ADMIN     "rtc.signaling.v1.SignalingAdmin"
#define DAY_MS    (24ull * 3600 * 1000)

extern const uint8_t sig_lua_source[]; /* signaling.lua (cmake/EmbedFile.cmake) */
extern const size_t sig_lua_source_len;

sig G;

/* ---- configuration ------------------------------------------------------- */

static const rtc_option sig_options[] = {
    {"redis", RTC_OPT_STRING, "redis://127.0.0.1:6379",
     "Redis: redis://[user:pass@]HOST:PORT[/db] (with --sentinels only user, password, db count)",
     &G.cfg.redis, 0, 0},
    {"sentinels", RTC_OPT_STRING, NULL, "Redis Sentinels host:port,… (the primary is found there)",
     &G.cfg.sentinels, 0, 0},
    {"master-name", RTC_OPT_STRING, "rtc", "the Sentinel master name", &G.cfg.master_name, 0, 0},
    {"sentinel-password", RTC_OPT_STRING, NULL, "AUTH password of the Sentinels",
     &G.cfg.sentinel_password, 0, 0},
    {"auth", RTC_OPT_STRING, "127.0.0.1:8081",
     "rtc-auth host:port,…: signing keys for token checks, ICE servers for Join", &G.cfg.auth, 0,
     0},
    {"api-keys-file", RTC_OPT_STRING, NULL,
     "file of API keys, one per line: <key_id> <secret> <rights> (admin opens SignalingAdmin)",
     &G.cfg.api_keys_file, 0, 0},
    {"api-keys", RTC_OPT_STRING, NULL, "API keys inline, ';'-separated (same format)",
     &G.cfg.api_keys, 0, 0},
    {"issuer", RTC_OPT_STRING, "rtc", "required token issuer (iss)", &G.cfg.issuer, 0, 0},
    {"audience", RTC_OPT_STRING, "rtc", "required token audience (aud)", &G.cfg.audience, 0, 0},
    {"leeway", RTC_OPT_DURATION, "30s", "clock skew allowed on token exp/nbf/iat", &G.cfg.leeway,
     0, 300000},
    {"revocation-check", RTC_OPT_DURATION, "5s",
     "how often a cached token's revocation is rechecked (the revocation bound)",
     &G.cfg.revocation_check, 0, 3600000},
    {"session-ttl", RTC_OPT_DURATION, "30s",
     "a session without Heartbeat or open stream ends this long after its last sign of life",
     &G.cfg.session_ttl, 1000, (int64_t)DAY_MS},
    {"heartbeat-interval", RTC_OPT_DURATION, "10s", "Heartbeat period told to clients at Join",
     &G.cfg.heartbeat_interval, 100, (int64_t)DAY_MS},
    {"sweep-interval", RTC_OPT_DURATION, "1s",
     "how often this pod sweeps expired sessions and empty rooms", &G.cfg.sweep_interval, 10,
     600000},
    {"max-participants", RTC_OPT_INT, "100", "default room size", &G.cfg.max_participants, 1,
     10000},
    {"empty-timeout", RTC_OPT_DURATION, "5m", "default life of an empty room",
     &G.cfg.empty_timeout, 0, (int64_t)(30 * DAY_MS)},
    {"max-sdp", RTC_OPT_SIZE, "65536", "largest SDP in bytes", &G.cfg.max_sdp, 1, 65536},
    {"rate-limit", RTC_OPT_INT, "100", "Signal + Broadcast calls per second per session (0 = none)",
     &G.cfg.rate_limit, 0, 1000000},
    {"mailbox-size", RTC_OPT_INT, "256", "events kept per participant mailbox (approximate)",
     &G.cfg.mailbox_size, 10, 1000000},
    {"negotiation-ttl", RTC_OPT_DURATION, "10m", "how long GetNegotiation keeps an offer/answer",
     &G.cfg.negotiation_ttl, 1000, (int64_t)DAY_MS},
    {"wait-replicas", RTC_OPT_INT, "0",
     "replicas that must confirm each Signal/Broadcast (Redis WAIT); 0 = do not wait",
     &G.cfg.wait_replicas, 0, 16},
    {"wait-timeout", RTC_OPT_DURATION, "500ms", "how long to wait for them", &G.cfg.wait_timeout,
     1, 60000},
    {"redis-timeout", RTC_OPT_DURATION, "2s", "deadline of each Redis command",
     &G.cfg.redis_timeout, 10, 60000},
    {"pod-id", RTC_OPT_STRING, NULL,
     "this pod's name in Redis and logs ([A-Za-z0-9_-], default random)", &G.cfg.pod_id, 0, 0},
};

const rtc_option *rtc_signaling_options(size_t *n)
{
    *n = sizeof(sig_options) / sizeof(sig_options[0]);
    return sig_options;
}

/* ---- Redis helpers -------------------------------------------------------- */

int sig_fcall(const char *name, int n, const char **argv, const size_t *lens, uint64_t timeout_ms,
              rtc_redis_reply_fn fn, void *ud, rtc_redis_req **req)
{
    const char *av[32];
    size_t al[32];
    if (n + 3 > 32)
        return RTC_EINVAL;
    av[0] = "FCALL";
    av[1] = name;
    av[2] = "0";
    al[0] = 5;
    al[1] = strlen(name);
    al[2] = 1;
    for (int i = 0; i < n; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    return rtc_redis_command_argv(G.redis, fn, ud, timeout_ms ? timeout_ms : G.cfg.redis_timeout,
                                  n + 3, av, al, req);
}

static void load_functions(void);

bool sig_redis_failed(int err, const redisReply *reply, int *status, const char **msg)
{
    static char buf[300];
    if (err) {
        *status = RTC_GRPC_UNAVAILABLE; /* down, timed out or closing: retry */
        snprintf(buf, sizeof(buf), "redis: %s", rtc_strerror(err));
        *msg = buf;
        return true;
    }
    if (reply->type != REDIS_REPLY_ERROR)
        return false;
    /* "<STATUS> message" from signaling.lua, or Redis's own error. */
    const char *sp = memchr(reply->str, ' ', reply->len);
    char name[32];
    size_t n = sp ? (size_t)(sp - reply->str) : reply->len;
    int code;
    if (n < sizeof(name)) {
        memcpy(name, reply->str, n);
        name[n] = '\0';
        if (rtc_grpc_status_from_name(name, &code) == 0 && code != RTC_GRPC_OK) {
            snprintf(buf, sizeof(buf), "%.*s", (int)(reply->len - n - (sp ? 1 : 0)),
                     sp ? sp + 1 : "");
            *status = code;
            *msg = buf;
            return true;
        }
    }
    if (strstr(reply->str, "Function not found") || strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        /* A Redis that lost our functions (restarted empty, a new primary
         * that never got them): load them again; the client retries. */
        G.funcs_loaded = false;
        load_functions();
    }
    *status = strncmp(reply->str, "READONLY", 8) == 0 || strncmp(reply->str, "LOADING", 7) == 0 ||
                      strstr(reply->str, "Function not found")
                  ? RTC_GRPC_UNAVAILABLE
                  : RTC_GRPC_INTERNAL;
    if (*status == RTC_GRPC_INTERNAL)
        rtc_log(RTC_LOG_ERROR, "redis error reply", "error", reply->str, NULL);
    snprintf(buf, sizeof(buf), "redis: %.*s", (int)reply->len, reply->str);
    *msg = buf;
    return true;
}

static const char *rstr(const redisReply *r, size_t *len)
{
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)) {
        if (len)
            *len = r->len;
        return r->str;
    }
    if (len)
        *len = 0;
    return "";
}

static int64_t rint64(const redisReply *r)
{
    if (!r)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* ---- readiness ------------------------------------------------------------ */

static void update_ready(void)
{
    bool ready = G.redis_up && G.funcs_loaded && G.sub_up && !G.draining;
    const char *why = !G.redis_up       ? "redis down"
                      : !G.funcs_loaded ? "loading redis functions"
                      : !G.sub_up       ? "redis pub/sub down"
                                        : "ok";
    rtc_service_set_ready(G.svc, ready, why);
    int h = ready ? RTC_GRPC_HEALTH_SERVING : RTC_GRPC_HEALTH_NOT_SERVING;
    rtc_grpc_server_set_health(G.grpc, SIGNALING, h);
    rtc_grpc_server_set_health(G.grpc, ADMIN, h);
}

static void on_functions_loaded(void *ud, int err, const redisReply *reply)
{
    (void)ud;
    G.loading = false;
    if (err || reply->type == REDIS_REPLY_ERROR) {
        rtc_log(RTC_LOG_ERROR, "loading redis functions failed", "error",
                err ? rtc_strerror(err) : reply->str, NULL);
        return; /* retried on the next up, or the next call that needs them */
    }
    G.funcs_loaded = true;
    rtc_log(RTC_LOG_INFO, "redis functions loaded", "library", rstr(reply, NULL), NULL);
    update_ready();
}

static void load_functions(void)
{
    if (G.loading || !G.redis_up)
        return;
    const char *argv[] = {"FUNCTION", "LOAD", "REPLACE", (const char *)sig_lua_source};
    size_t lens[] = {8, 4, 7, sig_lua_source_len};
    if (rtc_redis_command_argv(G.redis, on_functions_loaded, NULL, 0, 4, argv, lens, NULL) == 0)
        G.loading = true;
}

static void on_redis_state(void *ud, bool up, const char *reason)
{
    (void)ud;
    rtc_log(up ? RTC_LOG_INFO : RTC_LOG_WARN, up ? "redis up" : "redis down", "reason", reason,
            NULL);
    G.redis_up = up;
    G.funcs_loaded = false;
    if (up)
        load_functions();
    update_ready();
}

static void on_sub_state(void *ud, bool up, const char *reason)
{
    (void)ud;
    rtc_log(up ? RTC_LOG_INFO : RTC_LOG_WARN, up ? "redis pub/sub up" : "redis pub/sub down",
            "reason", reason, NULL);
    G.sub_up = up;
    if (up && G.sub_was_up)
        sig_streams_resync();
    if (up)
        G.sub_was_up = true;
    update_ready();
}

static void on_sub_message(void *ud, const char *channel, size_t chlen, const char *payload,
                           size_t len)
{
    (void)ud;
    (void)channel;
    (void)chlen;
    sig_streams_on_wake(payload, len);
}

/* ---- sweeper -------------------------------------------------------------- */

#define SWEEP_BATCH "200"

static bool sweeping;
static void sweep_tick(uv_timer_t *t);

static void on_swept(void *ud, int err, const redisReply *reply)
{
    (void)ud;
    sweeping = false;
    int status;
    const char *msg;
    if (sig_redis_failed(err, reply, &status, &msg)) {
        rtc_log(RTC_LOG_DEBUG, "sweep failed", "error", msg, NULL);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2)
        return;
    int64_t s = rint64(reply->element[0]), r = rint64(reply->element[1]);
    rtc_metric_inc(G.m_swept_sessions, (double)s);
    rtc_metric_inc(G.m_swept_rooms, (double)r);
    if (s || r) {
        char sb[24], rb[24];
        snprintf(sb, sizeof(sb), "%lld", (long long)s);
        snprintf(rb, sizeof(rb), "%lld", (long long)r);
        rtc_log(RTC_LOG_INFO, "swept", "sessions", sb, "rooms", rb, NULL);
    }
    if (s + r >= (int64_t)atoi(SWEEP_BATCH)) /* more may be due: go on at once */
        uv_timer_start(&G.sweep_timer, sweep_tick, 0, G.cfg.sweep_interval);
}

static void sweep_tick(uv_timer_t *t)
{
    (void)t;
    if (sweeping || !G.redis_up || !G.funcs_loaded)
        return;
    const char *argv[] = {SWEEP_BATCH, G.maxlen};
    if (sig_fcall("rtc_sweep", 2, argv, NULL, 0, on_swept, NULL, NULL) == 0)
        sweeping = true;
}

/* ---- async calls ---------------------------------------------------------- */

typedef struct op op;
typedef void (*op_fn)(op *o);
typedef void (*op_answer_fn)(op *o, const redisReply *reply);

struct op {
    rtc_grpc_call *call;
    const ProtobufCMessage *req;
    rtc_verifier_req *vreq;
    rtc_redis_req *rreq, *wreq;
    rtc_grpc_client_call *ice_call;
    rtc_jwt_claims claims;
    bool by_key; /* admin through an API key (claims unset) */
    op_fn then;  /* after the caller is known */
    op_answer_fn answer; /* op_fcall's answer */
    const char *room; /* admin: the room the call touches ("" = none) */
    int grant;        /* admin: ADMIN_ANY, ADMIN_CREATE or ADMIN_LIST */
    /* Join */
    Rtc__Auth__V1__GetIceServersResponse *ice;
    char session[SIG_SESSION_LEN + 1];
    char resume[128];
    /* Signal / Broadcast with --wait-replicas */
    int waiting;         /* replies still expected */
    int fail_status;     /* first failure */
    char fail_msg[300];
    char event_id[SIG_MAX_EVENT_ID + 1];
    int64_t count;
    bool short_wait;
    bool broadcast;
    /* Signal: waiting in (or sent with) a batch */
    struct relay_batch *batch;
    size_t slot;
    uint8_t *payload; /* packed SignalPayload */
    size_t plen;
    const char *nego;
};

static void batch_forget(op *o);

static void op_cancel(rtc_grpc_call *call, void *ud)
{
    op *o = ud;
    batch_forget(o);
    free(o->payload);
    if (o->vreq)
        rtc_verifier_req_cancel(o->vreq);
    if (o->rreq)
        rtc_redis_req_abandon(o->rreq);
    if (o->wreq)
        rtc_redis_req_abandon(o->wreq);
    if (o->ice_call)
        rtc_grpc_client_call_cancel(o->ice_call);
    if (o->ice)
        rtc__auth__v1__get_ice_servers_response__free_unpacked(o->ice, NULL);
    rtc_grpc_call_finish(call, RTC_GRPC_CANCELLED, "cancelled");
    free(o);
}

static op *op_new(rtc_grpc_call *call, const ProtobufCMessage *req, op_fn then)
{
    op *o = calloc(1, sizeof(*o));
    if (!o) {
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    o->call = call;
    o->req = req;
    o->then = then;
    o->room = "";
    rtc_grpc_call_on_cancel(call, op_cancel, o);
    return o;
}

/* Finish the call with status/msg (or reply with resp when status is OK
 * and resp is set) and free the op. */
static void op_finish(op *o, int status, const char *msg, const ProtobufCMessage *resp)
{
    rtc_grpc_call *call = o->call;
    rtc_grpc_call_on_cancel(call, NULL, NULL);
    if (status == RTC_GRPC_OK && resp)
        rtc_grpc_call_reply(call, resp); /* resp may point into o */
    else
        rtc_grpc_call_finish(call, status, msg);
    if (o->ice)
        rtc__auth__v1__get_ice_servers_response__free_unpacked(o->ice, NULL);
    free(o->payload);
    free(o);
}

static void op_fail(op *o, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void op_fail(op *o, int status, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    op_finish(o, status, msg, NULL);
}

/* Check the Redis outcome; on failure finish the call. */
static bool op_redis_ok(op *o, int err, const redisReply *reply)
{
    int status;
    const char *msg;
    if (!sig_redis_failed(err, reply, &status, &msg))
        return true;
    op_finish(o, status, msg, NULL);
    return false;
}

static void on_fcall(void *ud, int err, const redisReply *reply)
{
    op *o = ud;
    o->rreq = NULL;
    if (op_redis_ok(o, err, reply))
        o->answer(o, reply);
}

/* FCALL name; its answer (not an error) goes to answer(o, reply), an
 * error finishes the call. */
static void op_fcall(op *o, const char *name, int n, const char **argv, const size_t *lens,
                     op_answer_fn answer)
{
    o->answer = answer;
    int rc = sig_fcall(name, n, argv, lens, 0, on_fcall, o, &o->rreq);
    if (rc < 0)
        op_fail(o, rc == RTC_EAGAIN ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL, "redis: %s",
                rtc_strerror(rc));
}

/* ---- authentication --------------------------------------------------------- */

enum { ADMIN_ANY, ADMIN_CREATE, ADMIN_LIST };

static void refused(op *o, int err, rtc_jwt_error reason, const char *detail)
{
    if (err) {
        op_fail(o, err == RTC_EUNAVAIL ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL, "%s",
                detail && *detail ? detail : rtc_strerror(err));
        return;
    }
    op_fail(o, RTC_GRPC_UNAUTHENTICATED, "token refused: %s%s%s", rtc_jwt_error_name(reason),
            detail && *detail ? ": " : "", detail ? detail : "");
}

static void authorized(op *o, const rtc_jwt_claims *c);

static void on_verified(void *ud, int err, rtc_jwt_error reason, const rtc_jwt_claims *claims,
                        const char *detail)
{
    op *o = ud;
    o->vreq = NULL;
    if (err || reason != RTC_JWT_OK) {
        refused(o, err, reason, detail);
        return;
    }
    authorized(o, claims);
}

static void verify(op *o, const char *tok, size_t len)
{
    rtc_jwt_claims claims;
    if (rtc_verifier_verify_cached(G.verifier, tok, len, &claims)) {
        authorized(o, &claims);
        return;
    }
    int rc = rtc_verifier_verify(G.verifier, tok, len, on_verified, o, &o->vreq);
    if (rc < 0)
        op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "%s", rtc_strerror(rc));
}

/* The grants a call needs, once the token is verified. */
static void authorized(op *o, const rtc_jwt_claims *c)
{
    o->claims = *c;
    bool admin = c->grants & RTC_JWT_GRANT_ADMIN;
    if (o->grant < 0) { /* Signaling */
        if (!(c->grants & RTC_JWT_GRANT_JOIN)) {
            op_fail(o, RTC_GRPC_PERMISSION_DENIED, "the token lacks the join grant");
            return;
        }
        if (!c->room_id[0] || !sig_valid_room(c->room_id)) {
            op_fail(o, RTC_GRPC_PERMISSION_DENIED, "the token names no room");
            return;
        }
        o->then(o);
        return;
    }
    bool room_ok = !c->room_id[0] || !*o->room || strcmp(c->room_id, o->room) == 0;
    bool ok = admin && room_ok;
    if (o->grant == ADMIN_CREATE && (c->grants & RTC_JWT_GRANT_CREATE) && c->room_id[0] &&
        strcmp(c->room_id, o->room) == 0)
        ok = true;
    if (o->grant == ADMIN_LIST && (admin || (c->grants & RTC_JWT_GRANT_LIST)))
        ok = true;
    if (!ok) {
        op_fail(o, RTC_GRPC_PERMISSION_DENIED,
                admin ? "the token's admin grant is for room %s only"
                      : "this RPC needs an API key or a token with the admin grant%s",
                admin ? c->room_id : "");
        return;
    }
    o->then(o);
}

/* Signaling: a bearer token with the join grant and a room. */
static void user_call(rtc_grpc_call *call, const ProtobufCMessage *req, op_fn then)
{
    const char *h = rtc_grpc_call_metadata(call, "authorization");
    const char *tok;
    size_t len;
    if (!rtc_authn_bearer(h, &tok, &len)) {
        rtc_grpc_call_finish(call, RTC_GRPC_UNAUTHENTICATED,
                             h ? "this RPC needs a bearer token" : "missing bearer token");
        return;
    }
    op *o = op_new(call, req, then);
    if (!o)
        return;
    o->grant = -1;
    verify(o, tok, len);
}

/* A Signaling RPC: what it does once its caller is known. */
typedef struct user_rpc {
    op_fn authorized;
} user_rpc;

static void user_handler(rtc_grpc_call *call, const ProtobufCMessage *req, void *ud)
{
    user_call(call, req, ((const user_rpc *)ud)->authorized);
}

/* SignalingAdmin: an API key with admin, or a bearer token with the grant. */
static void admin_call(rtc_grpc_call *call, const ProtobufCMessage *req, const char *room,
                       int grant, op_fn then)
{
    const char *h = rtc_grpc_call_metadata(call, "authorization");
    const char *tok;
    size_t len;
    if (h && rtc_authn_is_basic(h)) {
        switch (G.apikeys ? rtc_apikeys_check(G.apikeys, h, RTC_APIKEY_ADMIN, NULL)
                          : RTC_AUTHN_UNAUTHENTICATED) {
        case RTC_AUTHN_OK:
            break;
        case RTC_AUTHN_PERMISSION_DENIED:
            rtc_grpc_call_finish(call, RTC_GRPC_PERMISSION_DENIED, "API key lacks admin");
            return;
        default:
            rtc_grpc_call_finish(call, RTC_GRPC_UNAUTHENTICATED, "invalid API key");
            return;
        }
        op *o = op_new(call, req, then);
        if (o) {
            o->by_key = true;
            o->room = room;
            then(o);
        }
        return;
    }
    if (!rtc_authn_bearer(h, &tok, &len)) {
        rtc_grpc_call_finish(call, RTC_GRPC_UNAUTHENTICATED,
                             "missing authorization (API key or bearer token)");
        return;
    }
    op *o = op_new(call, req, then);
    if (!o)
        return;
    o->room = room;
    o->grant = grant;
    verify(o, tok, len);
}

/* The session id of a Signaling request, checked against the token's room.
 * false = the call was finished. */
static bool session_ok(op *o, const char *sid)
{
    switch (sig_session_check(o->claims.room_id, sid)) {
    case 0:
        return true;
    case RTC_EDENIED:
        op_fail(o, RTC_GRPC_PERMISSION_DENIED, "the session belongs to another room");
        return false;
    default:
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "session_id is malformed");
        return false;
    }
}

/* ---- building responses ----------------------------------------------------- */

/* info = {max, empty, meta, created, count} from signaling.lua. */
static void room_from(redisReply **info, const char *id, Rtc__Signaling__V1__Room *room,
                      Rtc__Signaling__V1__RoomSettings *st)
{
    rtc__signaling__v1__room__init(room);
    rtc__signaling__v1__room_settings__init(st);
    st->max_participants = (uint32_t)rint64(info[0]);
    st->empty_timeout_ms = rint64(info[1]);
    st->metadata = (char *)rstr(info[2], NULL);
    room->id = (char *)id;
    room->settings = st;
    room->created_at_ms = rint64(info[3]);
    room->participant_count = (uint32_t)rint64(info[4]);
}

/* Unpack Participant blobs r[0..n) into a fresh array (free with
 * free_participants). NULL on failure (n > 0). */
static Rtc__Signaling__V1__Participant **participants_from(redisReply **r, size_t n)
{
    Rtc__Signaling__V1__Participant **v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *b = rstr(r[i], &len);
        v[i] = rtc__signaling__v1__participant__unpack(NULL, len, (const uint8_t *)b);
        if (!v[i]) {
            for (size_t j = 0; j < i; j++)
                rtc__signaling__v1__participant__free_unpacked(v[j], NULL);
            free(v);
            return NULL;
        }
    }
    return v;
}

static void free_participants(Rtc__Signaling__V1__Participant **v, size_t n)
{
    for (size_t i = 0; i < n && v; i++)
        rtc__signaling__v1__participant__free_unpacked(v[i], NULL);
    free(v);
}

static bool reply_array(const redisReply *r, size_t min)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements >= min;
}

/* ---- Join ------------------------------------------------------------------- */

static void join_fcall(op *o);

static void on_join(op *o, const redisReply *reply)
{
    /* {resumed, P, blob, S, deadline, room info (5), others...} */
    if (!reply_array(reply, 10)) {
        op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_join");
        return;
    }
    redisReply **e = reply->element;
    size_t len, nothers = reply->elements - 10;
    const char *blob = rstr(e[2], &len);
    Rtc__Signaling__V1__Participant *me =
        rtc__signaling__v1__participant__unpack(NULL, len, (const uint8_t *)blob);
    Rtc__Signaling__V1__Participant **others = participants_from(e + 10, nothers);
    if (!me || !others) {
        if (me)
            rtc__signaling__v1__participant__free_unpacked(me, NULL);
        free_participants(others, nothers);
        op_fail(o, RTC_GRPC_INTERNAL, "undecodable participant in Redis");
        return;
    }
    Rtc__Signaling__V1__JoinResponse resp = RTC__SIGNALING__V1__JOIN_RESPONSE__INIT;
    Rtc__Signaling__V1__Room room;
    Rtc__Signaling__V1__RoomSettings st;
    room_from(e + 5, o->claims.room_id, &room, &st);
    resp.resumed = rint64(e[0]) == 1;
    resp.session_id = (char *)rstr(e[3], NULL);
    resp.participant = me;
    resp.participants = others;
    resp.n_participants = nothers;
    resp.room = &room;
    resp.resume_token = o->resume;
    resp.heartbeat_interval_ms = (int64_t)G.cfg.heartbeat_interval;
    if (o->ice) {
        resp.ice_servers = o->ice->ice_servers;
        resp.n_ice_servers = o->ice->n_ice_servers;
    }
    if (!resp.resumed)
        rtc_log(RTC_LOG_INFO, "joined", "room", o->claims.room_id, "participant", me->id,
                "identity", o->claims.identity, NULL);
    op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    rtc__signaling__v1__participant__free_unpacked(me, NULL);
    free_participants(others, nothers);
}

static int on_ice_message(void *ud, const uint8_t *data, size_t len)
{
    op *o = ud;
    if (!o->ice)
        o->ice = rtc__auth__v1__get_ice_servers_response__unpack(NULL, len, data);
    return 0;
}

static void on_ice_close(void *ud, int status, const char *message,
                         const rtc_grpc_metadata *trailers, size_t ntrailers)
{
    (void)trailers;
    (void)ntrailers;
    op *o = ud;
    o->ice_call = NULL;
    if (status != RTC_GRPC_OK || !o->ice) {
        /* Join still works: the client can call GetIceServers itself. */
        rtc_metric_inc(G.m_ice_fail, 1);
        rtc_log(RTC_LOG_WARN, "GetIceServers failed; joining without ICE servers", "status",
                rtc_grpc_status_name(status), "message", message, NULL);
    }
    join_fcall(o);
}

static void join_fcall(op *o)
{
    const Rtc__Signaling__V1__JoinRequest *req = (const void *)o->req;
    char pid[23], digest[65], rsess[SIG_SESSION_LEN + 1] = "", rdigest[65] = "";
    if (rtc_jwt_new_id(pid, sizeof(pid)) < 0 || sig_session_new(o->claims.room_id, o->session) < 0 ||
        sig_resume_new(o->session, o->resume, sizeof(o->resume), digest) < 0) {
        op_fail(o, RTC_GRPC_INTERNAL, "no randomness");
        return;
    }
    if (*req->resume_token) {
        /* A token that does not parse, or is of another room, just starts
         * a new session (the old one may be long gone). */
        if (sig_resume_parse(req->resume_token, rsess, rdigest) < 0 ||
            sig_session_check(o->claims.room_id, rsess) != 0)
            rsess[0] = rdigest[0] = '\0';
    }
    Rtc__Signaling__V1__Participant me = RTC__SIGNALING__V1__PARTICIPANT__INIT;
    me.id = pid;
    me.identity = o->claims.identity;
    me.display_name = o->claims.display_name[0] ? o->claims.display_name : o->claims.identity;
    me.metadata = req->metadata;
    me.joined_at_ms = rtc_wall_ms();
    size_t blen = rtc__signaling__v1__participant__get_packed_size(&me);
    uint8_t *blob = malloc(blen ? blen : 1);
    if (!blob) {
        op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    rtc__signaling__v1__participant__pack(&me, blob);
    char defmax[24], defempty[24];
    snprintf(defmax, sizeof(defmax), "%lld", (long long)G.cfg.max_participants);
    snprintf(defempty, sizeof(defempty), "%llu", (unsigned long long)G.cfg.empty_timeout);
    const char *argv[] = {o->claims.room_id,
                          pid,
                          o->session,
                          o->claims.identity,
                          (const char *)blob,
                          digest,
                          G.session_ttl,
                          (o->claims.grants & RTC_JWT_GRANT_CREATE) ? "1" : "0",
                          defmax,
                          defempty,
                          G.maxlen,
                          rsess,
                          rdigest};
    size_t lens[13];
    for (size_t i = 0; i < 13; i++)
        lens[i] = i == 4 ? blen : strlen(argv[i]);
    op_fcall(o, "rtc_join", 13, argv, lens, on_join);
    free(blob);
}

static void join_authorized(op *o)
{
    const Rtc__Signaling__V1__JoinRequest *req = (const void *)o->req;
    if (!sig_valid_text(req->metadata, SIG_MAX_META)) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "metadata: at most %d bytes of UTF-8", SIG_MAX_META);
        return;
    }
    if (strlen(req->resume_token) > 127) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "resume_token is malformed");
        return;
    }
    if (!G.auth) {
        join_fcall(o);
        return;
    }
    /* ICE servers for this identity: rtc-auth's GetIceServers with the
     * caller's own token. */
    Rtc__Auth__V1__GetIceServersRequest ir = RTC__AUTH__V1__GET_ICE_SERVERS_REQUEST__INIT;
    uint8_t buf[16];
    size_t n = rtc__auth__v1__get_ice_servers_request__pack(&ir, buf);
    rtc_grpc_metadata md = {"authorization",
                            rtc_grpc_call_metadata(o->call, "authorization")};
    rtc_grpc_call_options co = {.metadata = &md, .nmetadata = 1,
                                .timeout_ms = G.cfg.redis_timeout};
    static const rtc_grpc_call_callbacks cb = {.on_message = on_ice_message,
                                               .on_close = on_ice_close};
    if (rtc_grpc_channel_call(G.auth, "/rtc.auth.v1.Auth/GetIceServers", buf, n, &co, &cb, o,
                              &o->ice_call) < 0) {
        o->ice_call = NULL;
        join_fcall(o);
    }
}

/* ---- Leave ------------------------------------------------------------------ */

static void on_left(op *o, const redisReply *reply)
{
    Rtc__Signaling__V1__LeaveResponse resp = RTC__SIGNALING__V1__LEAVE_RESPONSE__INIT;
    op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
}

static void leave_authorized(op *o)
{
    const Rtc__Signaling__V1__LeaveRequest *req = (const void *)o->req;
    if (!session_ok(o, req->session_id))
        return;
    const char *argv[] = {o->claims.room_id, req->session_id, o->claims.identity, G.maxlen};
    op_fcall(o, "rtc_leave", 4, argv, NULL, on_left);
}

/* ---- Signal and Broadcast (optionally confirmed with WAIT) ------------------ */

static void relay_done(op *o);

/* Record the first failure of a relay step. */
static void relay_failed(op *o, int status, const char *msg)
{
    if (!o->fail_status) {
        o->fail_status = status;
        snprintf(o->fail_msg, sizeof(o->fail_msg), "%s", msg);
    }
}

static void on_relayed(void *ud, int err, const redisReply *reply)
{
    op *o = ud;
    o->rreq = NULL;
    int status;
    const char *msg;
    if (sig_redis_failed(err, reply, &status, &msg))
        relay_failed(o, status, msg);
    else if (!reply_array(reply, 2))
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
    op *o = ud;
    o->wreq = NULL;
    const char *why = wait_failure(err, reply, &o->short_wait);
    if (why)
        relay_failed(o, RTC_GRPC_UNAVAILABLE, why);
    relay_done(o);
}

static void relay_done(op *o)
{
    if (--o->waiting > 0)
        return;
    if (o->short_wait)
        rtc_metric_inc(G.m_wait_short, 1);
    if (o->fail_status) {
        op_finish(o, o->fail_status, o->fail_msg, NULL);
        return;
    }
    if (o->broadcast) {
        Rtc__Signaling__V1__BroadcastResponse resp = RTC__SIGNALING__V1__BROADCAST_RESPONSE__INIT;
        resp.recipient_count = (uint32_t)o->count;
        op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
        return;
    }
    Rtc__Signaling__V1__SignalResponse resp = RTC__SIGNALING__V1__SIGNAL_RESPONSE__INIT;
    resp.event_id = o->event_id;
    op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
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
static void relay(op *o, const char *fn, int n, const char **argv, const size_t *lens)
{
    o->waiting = 1;
    int rc = sig_fcall(fn, n, argv, lens, 0, on_relayed, o, &o->rreq);
    if (rc < 0) {
        op_fail(o, rc == RTC_EAGAIN ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL, "redis: %s",
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
    size_t n;       /* slots used */
    int pending;    /* replies still expected: FCALL, WAIT */
    op *ops[BATCH_MAX];
    const char *wait_fail; /* static text, or NULL */
    bool short_wait;
} relay_batch;

static relay_batch *open_batch;
static uv_check_t batch_check;
static bool batch_check_ready;

static void batch_forget(op *o)
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
        op *o = b->ops[i];
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
        op *o = b->ops[i];
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
    const char *argv[3 + 3 + 7 * BATCH_MAX];
    size_t lens[3 + 3 + 7 * BATCH_MAX];
    size_t argc = 0;
    const char *head[] = {"FCALL", "rtc_signals", "0", G.nego_ttl, G.rate, G.maxlen};
    for (size_t i = 0; i < 6; i++) {
        argv[argc] = head[i];
        lens[argc++] = strlen(head[i]);
    }
    for (size_t i = 0; i < b->n; i++) {
        op *o = b->ops[i];
        if (!o)
            continue;
        const Rtc__Signaling__V1__SignalRequest *req = (const void *)o->req;
        const char *f[] = {o->claims.room_id,      req->session_id,      o->claims.identity,
                           req->to_participant_id, (const char *)o->payload, o->nego,
                           req->client_msg_id};
        for (size_t k = 0; k < 7; k++) {
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
                relay_failed(b->ops[i], rc == RTC_EAGAIN ? RTC_GRPC_UNAVAILABLE
                                                         : RTC_GRPC_INTERNAL,
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
static void batch_add(op *o)
{
    if (!open_batch) {
        open_batch = calloc(1, sizeof(*open_batch));
        if (!open_batch) {
            op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
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

static bool client_msg_id_ok(op *o, const char *id)
{
    if (*id && !sig_valid_id(id)) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT,
                "client_msg_id: at most %d bytes of [A-Za-z0-9_-]", SIG_MAX_ID);
        return false;
    }
    return true;
}

static void signal_authorized(op *o)
{
    const Rtc__Signaling__V1__SignalRequest *req = (const void *)o->req;
    if (!session_ok(o, req->session_id))
        return;
    if (!sig_valid_id(req->to_participant_id)) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "to_participant_id is malformed");
        return;
    }
    if (!client_msg_id_ok(o, req->client_msg_id))
        return;
    const char *nego;
    char why[160];
    if (sig_payload_check(req->payload, G.cfg.max_sdp, &nego, why, sizeof(why)) < 0) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "%s", why);
        return;
    }
    o->plen = rtc__signaling__v1__signal_payload__get_packed_size(req->payload);
    o->payload = malloc(o->plen ? o->plen : 1);
    if (!o->payload) {
        op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    rtc__signaling__v1__signal_payload__pack(req->payload, o->payload);
    o->nego = nego;
    batch_add(o);
}

static void broadcast_authorized(op *o)
{
    const Rtc__Signaling__V1__BroadcastRequest *req = (const void *)o->req;
    if (!session_ok(o, req->session_id) || !client_msg_id_ok(o, req->client_msg_id))
        return;
    if (req->data.len == 0 || req->data.len > SIG_MAX_DATA) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "data must be 1 to %d bytes", SIG_MAX_DATA);
        return;
    }
    const char *argv[] = {o->claims.room_id, req->session_id, o->claims.identity,
                          (const char *)req->data.data, req->client_msg_id, G.rate, G.maxlen};
    size_t lens[7];
    for (size_t i = 0; i < 7; i++)
        lens[i] = i == 3 ? req->data.len : strlen(argv[i]);
    o->broadcast = true;
    relay(o, "rtc_broadcast", 7, argv, lens);
}

/* ---- Heartbeat, GetNegotiation, Subscribe ------------------------------------ */

static void on_heartbeat(op *o, const redisReply *reply)
{
    Rtc__Signaling__V1__HeartbeatResponse resp = RTC__SIGNALING__V1__HEARTBEAT_RESPONSE__INIT;
    resp.session_expires_at_ms = rint64(reply);
    op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
}

static void heartbeat_authorized(op *o)
{
    const Rtc__Signaling__V1__HeartbeatRequest *req = (const void *)o->req;
    if (!session_ok(o, req->session_id))
        return;
    const char *argv[] = {o->claims.room_id, req->session_id, o->claims.identity, G.session_ttl};
    op_fcall(o, "rtc_heartbeat", 4, argv, NULL, on_heartbeat);
}

/* One cached description as rtc_signal stores it. NULL when absent or
 * unreadable; *p is the unpacked payload to free. */
static Rtc__Signaling__V1__NegotiationEntry *nego_entry(const redisReply *r,
                                                        Rtc__Signaling__V1__NegotiationEntry *e,
                                                        char *from, char *id,
                                                        Rtc__Signaling__V1__SignalPayload **p)
{
    sig_slice f, i, pl;
    *p = NULL;
    if (r->type != REDIS_REPLY_STRING || sig_nego_parse(r->str, r->len, &f, &i, &pl) < 0 ||
        f.len > SIG_MAX_ID || i.len > SIG_MAX_EVENT_ID)
        return NULL;
    *p = rtc__signaling__v1__signal_payload__unpack(NULL, pl.len, (const uint8_t *)pl.p);
    if (!*p || (*p)->kind_case != RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DESCRIPTION)
        return NULL;
    memcpy(from, f.p, f.len);
    from[f.len] = '\0';
    memcpy(id, i.p, i.len);
    id[i.len] = '\0';
    rtc__signaling__v1__negotiation_entry__init(e);
    e->from_participant_id = from;
    e->description = (*p)->description;
    e->event_id = id;
    e->sent_at_ms = sig_event_id_ms(id);
    return e;
}

static void on_negotiation(op *o, const redisReply *reply)
{
    if (!reply_array(reply, 2)) {
        op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_negotiation");
        return;
    }
    Rtc__Signaling__V1__GetNegotiationResponse resp =
        RTC__SIGNALING__V1__GET_NEGOTIATION_RESPONSE__INIT;
    Rtc__Signaling__V1__NegotiationEntry oe, ae;
    Rtc__Signaling__V1__SignalPayload *op_, *ap;
    char of[SIG_MAX_ID + 1], oi[SIG_MAX_EVENT_ID + 1], af[SIG_MAX_ID + 1], ai[SIG_MAX_EVENT_ID + 1];
    resp.offer = nego_entry(reply->element[0], &oe, of, oi, &op_);
    resp.answer = nego_entry(reply->element[1], &ae, af, ai, &ap);
    op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    if (op_)
        rtc__signaling__v1__signal_payload__free_unpacked(op_, NULL);
    if (ap)
        rtc__signaling__v1__signal_payload__free_unpacked(ap, NULL);
}

static void negotiation_authorized(op *o)
{
    const Rtc__Signaling__V1__GetNegotiationRequest *req = (const void *)o->req;
    if (!session_ok(o, req->session_id))
        return;
    if (!sig_valid_id(req->peer_participant_id)) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "peer_participant_id is malformed");
        return;
    }
    const char *argv[] = {o->claims.room_id, req->session_id, o->claims.identity,
                          req->peer_participant_id};
    op_fcall(o, "rtc_negotiation", 4, argv, NULL, on_negotiation);
}

static void subscribe_authorized(op *o)
{
    rtc_grpc_call *call = o->call;
    const ProtobufCMessage *req = o->req;
    rtc_jwt_claims claims = o->claims;
    rtc_grpc_call_on_cancel(call, NULL, NULL);
    free(o);
    sig_subscribe(call, req, &claims);
}

/* ---- SignalingAdmin ------------------------------------------------------------ */

static bool room_arg_ok(rtc_grpc_call *call, const char *room)
{
    if (sig_valid_room(room))
        return true;
    rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                         "room_id must be 1-64 bytes of [A-Za-z0-9._-]");
    return false;
}

static bool reason_ok(op *o, const char *reason)
{
    if (sig_valid_text(reason, SIG_MAX_REASON))
        return true;
    op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "reason: at most %d bytes of UTF-8", SIG_MAX_REASON);
    return false;
}

static void on_room(op *o, const redisReply *reply)
{
    if (!reply_array(reply, 5)) {
        op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from Redis");
        return;
    }
    Rtc__Signaling__V1__Room room;
    Rtc__Signaling__V1__RoomSettings st;
    room_from(reply->element, o->room, &room, &st);
    if (o->req->descriptor == &rtc__signaling__v1__create_room_request__descriptor) {
        Rtc__Signaling__V1__CreateRoomResponse resp =
            RTC__SIGNALING__V1__CREATE_ROOM_RESPONSE__INIT;
        resp.room = &room;
        rtc_log(RTC_LOG_INFO, "room created", "room", o->room, NULL);
        op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    } else {
        Rtc__Signaling__V1__GetRoomResponse resp = RTC__SIGNALING__V1__GET_ROOM_RESPONSE__INIT;
        resp.room = &room;
        op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    }
}

static void create_room_authorized(op *o)
{
    const Rtc__Signaling__V1__CreateRoomRequest *req = (const void *)o->req;
    const Rtc__Signaling__V1__RoomSettings *s = req->settings;
    uint32_t max = s && s->max_participants ? s->max_participants
                                            : (uint32_t)G.cfg.max_participants;
    int64_t empty = s && s->empty_timeout_ms ? s->empty_timeout_ms : (int64_t)G.cfg.empty_timeout;
    const char *meta = s ? s->metadata : "";
    if (max > 10000) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "settings.max_participants: at most 10000");
        return;
    }
    if (empty < 0 || empty > (int64_t)(30 * DAY_MS)) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "settings.empty_timeout_ms: 0 to 30 days");
        return;
    }
    if (!sig_valid_text(meta, SIG_MAX_META)) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "settings.metadata: at most %d bytes of UTF-8",
                SIG_MAX_META);
        return;
    }
    char maxs[24], emptys[24];
    snprintf(maxs, sizeof(maxs), "%u", max);
    snprintf(emptys, sizeof(emptys), "%lld", (long long)empty);
    const char *argv[] = {req->room_id, maxs, emptys, meta};
    op_fcall(o, "rtc_create_room", 4, argv, NULL, on_room);
}

static void create_room(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__CreateRoomRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        admin_call(call, msg, req->room_id, ADMIN_CREATE, create_room_authorized);
}

static void get_room_authorized(op *o)
{
    const char *argv[] = {o->room};
    op_fcall(o, "rtc_get_room", 1, argv, NULL, on_room);
}

static void get_room(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__GetRoomRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        admin_call(call, msg, req->room_id, ADMIN_ANY, get_room_authorized);
}

#define PAGE_PREFIX "r1."

static void on_rooms(op *o, const redisReply *reply)
{
    /* {more, then per room: id, max, empty, meta, created, count} */
    if (!reply_array(reply, 1) || (reply->elements - 1) % 6) {
        op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_list_rooms");
        return;
    }
    size_t n = (reply->elements - 1) / 6;
    Rtc__Signaling__V1__Room *rooms = calloc(n ? n : 1, sizeof(*rooms));
    Rtc__Signaling__V1__RoomSettings *st = calloc(n ? n : 1, sizeof(*st));
    Rtc__Signaling__V1__Room **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!rooms || !st || !ptrs) {
        free(rooms);
        free(st);
        free(ptrs);
        op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        redisReply **e = reply->element + 1 + 6 * i;
        room_from(e + 1, rstr(e[0], NULL), &rooms[i], &st[i]);
        ptrs[i] = &rooms[i];
    }
    char token[SIG_MAX_ROOM + sizeof(PAGE_PREFIX)] = "";
    if (rint64(reply->element[0]) && n)
        snprintf(token, sizeof(token), PAGE_PREFIX "%s", rooms[n - 1].id);
    Rtc__Signaling__V1__ListRoomsResponse resp = RTC__SIGNALING__V1__LIST_ROOMS_RESPONSE__INIT;
    resp.rooms = ptrs;
    resp.n_rooms = n;
    resp.next_page_token = token;
    op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    free(rooms);
    free(st);
    free(ptrs);
}

static void list_rooms_authorized(op *o)
{
    const Rtc__Signaling__V1__ListRoomsRequest *req = (const void *)o->req;
    char count[16];
    snprintf(count, sizeof(count), "%d",
             req->page_size == 0 ? 100 : req->page_size > 1000 ? 1000 : req->page_size);
    const char *after = *req->page_token ? req->page_token + strlen(PAGE_PREFIX) : "";
    const char *argv[] = {after, count};
    op_fcall(o, "rtc_list_rooms", 2, argv, NULL, on_rooms);
}

static void list_rooms(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__ListRoomsRequest *req = (const void *)msg;
    if (req->page_size < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT, "page_size must not be negative");
        return;
    }
    if (*req->page_token && (strncmp(req->page_token, PAGE_PREFIX, strlen(PAGE_PREFIX)) != 0 ||
                             !sig_valid_room(req->page_token + strlen(PAGE_PREFIX)))) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "page_token does not come from ListRooms");
        return;
    }
    admin_call(call, msg, "", ADMIN_LIST, list_rooms_authorized);
}

static void on_ok(op *o, const redisReply *reply)
{
    const ProtobufCMessageDescriptor *d = o->req->descriptor;
    union {
        Rtc__Signaling__V1__CloseRoomResponse close;
        Rtc__Signaling__V1__RemoveParticipantResponse remove;
        Rtc__Signaling__V1__SendDataResponse send;
    } u;
    if (d == &rtc__signaling__v1__close_room_request__descriptor) {
        rtc__signaling__v1__close_room_response__init(&u.close);
        rtc_log(RTC_LOG_INFO, "room closed", "room", o->room, NULL);
    } else if (d == &rtc__signaling__v1__remove_participant_request__descriptor) {
        rtc__signaling__v1__remove_participant_response__init(&u.remove);
    } else {
        rtc__signaling__v1__send_data_response__init(&u.send);
        u.send.recipient_count = (uint32_t)rint64(reply);
    }
    op_finish(o, RTC_GRPC_OK, NULL, (const ProtobufCMessage *)&u);
}

static void close_room_authorized(op *o)
{
    const Rtc__Signaling__V1__CloseRoomRequest *req = (const void *)o->req;
    if (!reason_ok(o, req->reason))
        return;
    const char *argv[] = {req->room_id, req->reason, G.maxlen};
    op_fcall(o, "rtc_close_room", 3, argv, NULL, on_ok);
}

static void close_room(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__CloseRoomRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        admin_call(call, msg, req->room_id, ADMIN_ANY, close_room_authorized);
}

static void on_participants(op *o, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY) {
        op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_list_participants");
        return;
    }
    Rtc__Signaling__V1__Participant **v = participants_from(reply->element, reply->elements);
    if (!v) {
        op_fail(o, RTC_GRPC_INTERNAL, "undecodable participant in Redis");
        return;
    }
    Rtc__Signaling__V1__ListParticipantsResponse resp =
        RTC__SIGNALING__V1__LIST_PARTICIPANTS_RESPONSE__INIT;
    resp.participants = v;
    resp.n_participants = reply->elements;
    op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    free_participants(v, reply->elements);
}

static void list_participants_authorized(op *o)
{
    const char *argv[] = {o->room};
    op_fcall(o, "rtc_list_participants", 1, argv, NULL, on_participants);
}

static void list_participants(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__ListParticipantsRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        admin_call(call, msg, req->room_id, ADMIN_ANY, list_participants_authorized);
}

static void remove_authorized(op *o)
{
    const Rtc__Signaling__V1__RemoveParticipantRequest *req = (const void *)o->req;
    if (!sig_valid_id(req->participant_id)) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "participant_id is malformed");
        return;
    }
    if (!reason_ok(o, req->reason))
        return;
    const char *argv[] = {req->room_id, req->participant_id, req->reason, G.maxlen};
    op_fcall(o, "rtc_remove", 4, argv, NULL, on_ok);
}

static void remove_participant(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__RemoveParticipantRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        admin_call(call, msg, req->room_id, ADMIN_ANY, remove_authorized);
}

static void send_data_authorized(op *o)
{
    const Rtc__Signaling__V1__SendDataRequest *req = (const void *)o->req;
    if (*req->to_participant_id && !sig_valid_id(req->to_participant_id)) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "to_participant_id is malformed");
        return;
    }
    if (req->data.len == 0 || req->data.len > SIG_MAX_DATA) {
        op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "data must be 1 to %d bytes", SIG_MAX_DATA);
        return;
    }
    const char *argv[] = {req->room_id, req->to_participant_id, (const char *)req->data.data,
                          G.maxlen};
    size_t lens[] = {strlen(argv[0]), strlen(argv[1]), req->data.len, strlen(argv[3])};
    op_fcall(o, "rtc_send_data", 4, argv, lens, on_ok);
}

static void send_data(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__SendDataRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        admin_call(call, msg, req->room_id, ADMIN_ANY, send_data_authorized);
}

/* ---- setup ------------------------------------------------------------------ */

static int load_api_keys(void)
{
    char err[256];
    int rc = 0;
    if (G.cfg.api_keys_file && *G.cfg.api_keys_file)
        rc = rtc_apikeys_load_file(G.cfg.api_keys_file, &G.apikeys, err, sizeof(err));
    else if (G.cfg.api_keys && *G.cfg.api_keys)
        rc = rtc_apikeys_parse(G.cfg.api_keys, &G.apikeys, err, sizeof(err));
    if (rc < 0) {
        rtc_log(RTC_LOG_ERROR, "bad API keys", "error", err, NULL);
        return RTC_EINVAL;
    }
    if (!G.apikeys)
        rtc_log(RTC_LOG_WARN, "no API keys: SignalingAdmin takes admin tokens only", NULL);
    return 0;
}

static rtc_metric *counter(const char *name, const char *help, const char *label,
                           const char *value)
{
    rtc_metrics *m = rtc_service_metrics(G.svc);
    const char *const labels[] = {label};
    rtc_metric_family *f = rtc_metrics_family(m, RTC_METRIC_COUNTER, name, help, label ? 1 : 0,
                                              label ? labels : NULL, NULL, 0);
    const char *values[] = {value};
    return f ? rtc_metric_child(f, label ? values : NULL) : NULL;
}

static int setup_metrics(void)
{
    rtc_metrics *m = rtc_service_metrics(G.svc);
    rtc_metric_family *f = rtc_metrics_family(m, RTC_METRIC_GAUGE, "rtc_signaling_streams",
                                              "Open Subscribe streams on this pod.", 0, NULL,
                                              NULL, 0);
    G.m_streams = f ? rtc_metric_child(f, NULL) : NULL;
    static const char *events_help =
        "Events streamed to subscribers: direct = from pub/sub, fill = read back from Redis.";
    G.m_direct = counter("rtc_signaling_events_total", events_help, "path", "direct");
    G.m_fill = counter("rtc_signaling_events_total", events_help, "path", "fill");
    static const char *swept_help = "Sessions expired and empty rooms closed by this pod's sweeper.";
    G.m_swept_sessions = counter("rtc_signaling_swept_total", swept_help, "what", "session");
    G.m_swept_rooms = counter("rtc_signaling_swept_total", swept_help, "what", "room");
    G.m_wait_short = counter("rtc_signaling_wait_short_total",
                             "Signals/Broadcasts refused because too few replicas confirmed them.",
                             NULL, NULL);
    G.m_ice_fail = counter("rtc_signaling_ice_failures_total",
                           "Joins answered without ICE servers (GetIceServers failed).", NULL,
                           NULL);
    return G.m_streams && G.m_direct && G.m_fill && G.m_swept_sessions && G.m_swept_rooms &&
                   G.m_wait_short && G.m_ice_fail
               ? 0
               : RTC_ENOMEM;
}

static int setup_pod_id(void)
{
    if (G.cfg.pod_id && *G.cfg.pod_id) {
        if (!sig_valid_id(G.cfg.pod_id)) {
            rtc_log(RTC_LOG_ERROR, "bad --pod-id: 1-64 of [A-Za-z0-9_-]", NULL);
            return RTC_EINVAL;
        }
        snprintf(G.pod, sizeof(G.pod), "%s", G.cfg.pod_id);
    } else if (rtc_jwt_new_id(G.pod, sizeof(G.pod)) < 0) {
        return RTC_EIO;
    }
    snprintf(G.channel, sizeof(G.channel), "rtc:pod:%s", G.pod);
    snprintf(G.maxlen, sizeof(G.maxlen), "%lld", (long long)G.cfg.mailbox_size);
    snprintf(G.session_ttl, sizeof(G.session_ttl), "%llu", (unsigned long long)G.cfg.session_ttl);
    snprintf(G.nego_ttl, sizeof(G.nego_ttl), "%llu", (unsigned long long)G.cfg.negotiation_ttl);
    snprintf(G.rate, sizeof(G.rate), "%lld", (long long)G.cfg.rate_limit);
    return 0;
}

static int setup_redis(void)
{
    rtc_redis_options ro;
    rtc_redis_options_init(&ro);
    ro.url = G.cfg.redis;
    ro.client_name = "rtc-signaling";
    ro.command_timeout_ms = G.cfg.redis_timeout;
    ro.sentinels = G.cfg.sentinels;
    ro.master_name = G.cfg.master_name;
    ro.sentinel_password = G.cfg.sentinel_password;
    rtc_metrics *m = rtc_service_metrics(G.svc);
    int rc = rtc_redis_new(G.loop, &ro, m, &G.redis);
    if (rc < 0) {
        rtc_log(RTC_LOG_ERROR, "bad Redis settings (--redis, --sentinels, --master-name)", NULL);
        return RTC_EINVAL;
    }
    rtc_redis_on_state(G.redis, on_redis_state, NULL);
    rc = rtc_redis_sub_new(G.loop, &ro, m, on_sub_message, NULL, &G.sub);
    if (rc < 0)
        return RTC_EINVAL;
    rtc_redis_sub_on_state(G.sub, on_sub_state, NULL);
    return rtc_redis_sub_subscribe(G.sub, G.channel);
}

static int setup_verifier(void)
{
    if (!G.cfg.auth || !*G.cfg.auth) {
        rtc_log(RTC_LOG_ERROR, "--auth is required (rtc-auth's address, for signing keys)", NULL);
        return RTC_EINVAL;
    }
    rtc_grpc_channel_options co;
    rtc_grpc_channel_options_init(&co);
    co.targets = G.cfg.auth;
    if (rtc_grpc_channel_new(G.loop, &co, rtc_service_metrics(G.svc), &G.auth) < 0) {
        rtc_log(RTC_LOG_ERROR, "bad --auth", "auth", G.cfg.auth, NULL);
        return RTC_EINVAL;
    }
    rtc_verifier_options vo;
    rtc_verifier_options_init(&vo);
    vo.issuer = G.cfg.issuer;
    vo.audience = G.cfg.audience;
    vo.leeway_ms = (int64_t)G.cfg.leeway;
    vo.revocation_check_ms = G.cfg.revocation_check;
    vo.auth = G.auth;
    vo.redis = G.redis;
    return rtc_verifier_new(G.loop, &vo, rtc_service_metrics(G.svc), &G.verifier);
}

int rtc_signaling_service_setup(rtc_service *svc, void *ud)
{
    (void)ud;
    G.svc = svc;
    G.loop = rtc_service_loop(svc);
    G.grpc = rtc_service_grpc(svc);
    int rc;
    if ((rc = setup_pod_id()) < 0 || (rc = load_api_keys()) < 0 || (rc = setup_metrics()) < 0 ||
        (rc = setup_redis()) < 0 || (rc = setup_verifier()) < 0)
        return rc;

    if ((rc = rtc_grpc_server_add_service(G.grpc, &rtc__signaling__v1__signaling__descriptor)) < 0 ||
        (rc = rtc_grpc_server_add_service(G.grpc,
                                          &rtc__signaling__v1__signaling_admin__descriptor)) < 0)
        return rc;
    static const user_rpc join = {join_authorized}, leave = {leave_authorized},
                          signal = {signal_authorized}, broadcast = {broadcast_authorized},
                          subscribe = {subscribe_authorized}, heartbeat = {heartbeat_authorized},
                          negotiation = {negotiation_authorized};
    const ProtobufCServiceDescriptor *user = &rtc__signaling__v1__signaling__descriptor;
    const ProtobufCServiceDescriptor *admin = &rtc__signaling__v1__signaling_admin__descriptor;
    const struct {
        const ProtobufCServiceDescriptor *svc;
        const char *method;
        rtc_grpc_method_kind kind;
        rtc_grpc_handler_fn fn;
        const user_rpc *rpc;
    } handlers[] = {
        {user, "Join", RTC_GRPC_UNARY, user_handler, &join},
        {user, "Leave", RTC_GRPC_UNARY, user_handler, &leave},
        {user, "Signal", RTC_GRPC_UNARY, user_handler, &signal},
        {user, "Broadcast", RTC_GRPC_UNARY, user_handler, &broadcast},
        {user, "Subscribe", RTC_GRPC_SERVER_STREAMING, user_handler, &subscribe},
        {user, "Heartbeat", RTC_GRPC_UNARY, user_handler, &heartbeat},
        {user, "GetNegotiation", RTC_GRPC_UNARY, user_handler, &negotiation},
        {admin, "CreateRoom", RTC_GRPC_UNARY, create_room, NULL},
        {admin, "GetRoom", RTC_GRPC_UNARY, get_room, NULL},
        {admin, "ListRooms", RTC_GRPC_UNARY, list_rooms, NULL},
        {admin, "CloseRoom", RTC_GRPC_UNARY, close_room, NULL},
        {admin, "ListParticipants", RTC_GRPC_UNARY, list_participants, NULL},
        {admin, "RemoveParticipant", RTC_GRPC_UNARY, remove_participant, NULL},
        {admin, "SendData", RTC_GRPC_UNARY, send_data, NULL},
    };
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
        if ((rc = rtc_grpc_server_handle(G.grpc, handlers[i].svc, handlers[i].method,
                                         handlers[i].kind, handlers[i].fn,
                                         (void *)handlers[i].rpc)) < 0)
            return rc;

    uv_check_init(G.loop, &batch_check);
    batch_check_ready = true;
    uv_timer_init(G.loop, &G.sweep_timer);
    uv_timer_init(G.loop, &G.touch_timer);
    G.timers_started = true;
    uv_timer_start(&G.sweep_timer, sweep_tick, G.cfg.sweep_interval, G.cfg.sweep_interval);
    uint64_t touch = G.cfg.session_ttl / 3 ? G.cfg.session_ttl / 3 : 1;
    uv_timer_start(&G.touch_timer, sig_streams_touch, touch, touch);
    update_ready();
    rtc_log(RTC_LOG_INFO, "signaling pod", "pod", G.pod, NULL);
    return 0;
}

void rtc_signaling_service_drain(rtc_service *svc, void *ud)
{
    (void)svc;
    (void)ud;
    G.draining = true;
    update_ready();
    /* Open streams would only be cut at the drain deadline: end them now so
     * their clients subscribe again on another pod at once. */
    sig_streams_close_all();
    if (G.timers_started) {
        uv_timer_stop(&G.sweep_timer);
        uv_timer_stop(&G.touch_timer);
    }
}

void rtc_signaling_service_cleanup(rtc_service *svc, void *ud)
{
    (void)svc;
    (void)ud;
    sig_streams_close_all();
    if (batch_check_ready) {
        uv_close((uv_handle_t *)&batch_check, NULL);
        batch_check_ready = false;
    }
    free(open_batch); /* its calls were all cancelled by the drain */
    open_batch = NULL;
    if (G.timers_started) {
        uv_close((uv_handle_t *)&G.sweep_timer, NULL);
        uv_close((uv_handle_t *)&G.touch_timer, NULL);
        G.timers_started = false;
    }
    if (G.verifier)
        rtc_verifier_free(G.verifier);
    if (G.auth)
        rtc_grpc_channel_close(G.auth);
    if (G.sub)
        rtc_redis_sub_close(G.sub);
    if (G.redis)
        rtc_redis_close(G.redis);
    rtc_apikeys_free(G.apikeys);
    G.verifier = NULL;
    G.auth = NULL;
    G.sub = NULL;
    G.redis = NULL;
    G.apikeys = NULL;
}

/* rtc.signaling.v1.Signaling and SignalingAdmin: configuration, start-up,
 * readiness, the sweeper, and the session RPCs (Join, Leave, Heartbeat,
 * GetNegotiation; Subscribe starts here). The rest is split by concern:
 * call.c (an RPC's life: caller check, one FCALL, answer), relay.c (Signal
 * and Broadcast), admin.c (SignalingAdmin), stream.c (Subscribe and the
 * pub/sub side), wire.c (pure helpers), signaling.lua (the Redis
 * functions). Who may call what and the Redis layout:
 * services/signaling/README.md. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
     "Redis: redis://[user:pass@]HOST:PORT[/db] (with --sentinels only its user, password and db "
     "are used)",
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
    {"leeway", RTC_OPT_DURATION, "30s", "clock skew allowed on token exp/nbf/iat", &G.cfg.leeway, 0,
     300000},
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
    {"empty-timeout", RTC_OPT_DURATION, "5m", "default life of an empty room", &G.cfg.empty_timeout,
     0, (int64_t)(30 * DAY_MS)},
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
    {"wait-timeout", RTC_OPT_DURATION, "500ms", "how long to wait for them", &G.cfg.wait_timeout, 1,
     60000},
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
    /* Redis busy, out of memory, without its primary, or a replica: retry. */
    *status = strncmp(reply->str, "READONLY", 8) == 0 || strncmp(reply->str, "LOADING", 7) == 0 ||
                      strncmp(reply->str, "BUSY", 4) == 0 || strncmp(reply->str, "OOM", 3) == 0 ||
                      strncmp(reply->str, "MASTERDOWN", 10) == 0 ||
                      strstr(reply->str, "Function not found")
                  ? RTC_GRPC_UNAVAILABLE
                  : RTC_GRPC_INTERNAL;
    if (*status == RTC_GRPC_INTERNAL)
        rtc_log(RTC_LOG_ERROR, "redis error reply", "error", reply->str, NULL);
    snprintf(buf, sizeof(buf), "redis: %.*s", (int)reply->len, reply->str);
    *msg = buf;
    return true;
}

const char *sig_rstr(const redisReply *r, size_t *len)
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

int64_t sig_rint64(const redisReply *r)
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
    rtc_log(RTC_LOG_INFO, "redis functions loaded", "library", sig_rstr(reply, NULL), NULL);
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

#define SWEEP_BATCH "50" /* sessions per rtc_sweep: bounds one call's work */

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
    int64_t s = sig_rint64(reply->element[0]), r = sig_rint64(reply->element[1]);
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

/* ---- Join ------------------------------------------------------------------- */

static void join_fcall(sig_op *o);

static void on_join(sig_op *o, const redisReply *reply)
{
    const Rtc__Signaling__V1__JoinRequest *req = (const void *)o->req;
    /* {resumed, P, blob, S, deadline, room info (5), others...} */
    if (!sig_reply_array(reply, 10)) {
        sig_op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_join");
        return;
    }
    redisReply **e = reply->element;
    size_t len, nothers = reply->elements - 10;
    const char *blob = sig_rstr(e[2], &len);
    Rtc__Signaling__V1__Participant *me =
        rtc__signaling__v1__participant__unpack(NULL, len, (const uint8_t *)blob);
    Rtc__Signaling__V1__Participant **others = sig_participants_from(e + 10, nothers);
    if (!me || !others) {
        if (me)
            rtc__signaling__v1__participant__free_unpacked(me, NULL);
        sig_free_participants(others, nothers);
        sig_op_fail(o, RTC_GRPC_INTERNAL, "undecodable participant in Redis");
        return;
    }
    Rtc__Signaling__V1__JoinResponse resp = RTC__SIGNALING__V1__JOIN_RESPONSE__INIT;
    Rtc__Signaling__V1__Room room;
    Rtc__Signaling__V1__RoomSettings st;
    sig_room_from(e + 5, o->claims.room_id, &room, &st);
    resp.resumed = sig_rint64(e[0]) == 1;
    resp.session_id = (char *)sig_rstr(e[3], NULL);
    resp.participant = me;
    resp.participants = others;
    resp.n_participants = nothers;
    resp.room = &room;
    /* A resumed session keeps its resume token (the one presented). */
    resp.resume_token = resp.resumed ? req->resume_token : o->resume;
    resp.heartbeat_interval_ms = (int64_t)G.cfg.heartbeat_interval;
    if (o->ice) {
        resp.ice_servers = o->ice->ice_servers;
        resp.n_ice_servers = o->ice->n_ice_servers;
    }
    if (!resp.resumed)
        rtc_log(RTC_LOG_INFO, "joined", "room", o->claims.room_id, "participant", me->id,
                "identity", o->claims.identity, NULL);
    sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    rtc__signaling__v1__participant__free_unpacked(me, NULL);
    sig_free_participants(others, nothers);
}

static int on_ice_message(void *ud, const uint8_t *data, size_t len)
{
    sig_op *o = ud;
    if (!o->ice)
        o->ice = rtc__auth__v1__get_ice_servers_response__unpack(NULL, len, data);
    return 0;
}

static void on_ice_close(void *ud, int status, const char *message,
                         const rtc_grpc_metadata *trailers, size_t ntrailers)
{
    (void)trailers;
    (void)ntrailers;
    sig_op *o = ud;
    o->ice_call = NULL;
    if (status != RTC_GRPC_OK || !o->ice) {
        /* Join still works: the client can call GetIceServers itself. */
        rtc_metric_inc(G.m_ice_fail, 1);
        rtc_log(RTC_LOG_WARN, "GetIceServers failed; joining without ICE servers", "status",
                rtc_grpc_status_name(status), "message", message, NULL);
    }
    join_fcall(o);
}

static void join_fcall(sig_op *o)
{
    const Rtc__Signaling__V1__JoinRequest *req = (const void *)o->req;
    char pid[23], digest[65], rsess[SIG_SESSION_LEN + 1] = "", rdigest[65] = "";
    if (rtc_jwt_new_id(pid, sizeof(pid)) < 0 ||
        sig_session_new(o->claims.room_id, o->session) < 0 ||
        sig_resume_new(o->session, o->resume, sizeof(o->resume), digest) < 0) {
        sig_op_fail(o, RTC_GRPC_INTERNAL, "no randomness");
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
        sig_op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
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
    sig_op_fcall(o, "rtc_join", 13, argv, lens, on_join);
    free(blob);
}

static void join_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__JoinRequest *req = (const void *)o->req;
    if (!sig_valid_text(req->metadata, SIG_MAX_META)) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "metadata: at most %d bytes of UTF-8",
                    SIG_MAX_META);
        return;
    }
    if (strlen(req->resume_token) > 127) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "resume_token is malformed");
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
    rtc_grpc_metadata md = {"authorization", rtc_grpc_call_metadata(o->call, "authorization")};
    rtc_grpc_call_options co = {.metadata = &md, .nmetadata = 1, .timeout_ms = G.cfg.redis_timeout};
    static const rtc_grpc_call_callbacks cb = {.on_message = on_ice_message,
                                               .on_close = on_ice_close};
    if (rtc_grpc_channel_call(G.auth, "/rtc.auth.v1.Auth/GetIceServers", buf, n, &co, &cb, o,
                              &o->ice_call) < 0) {
        o->ice_call = NULL;
        join_fcall(o);
    }
}

/* ---- Leave ------------------------------------------------------------------ */

static void on_left(sig_op *o, const redisReply *reply)
{
    Rtc__Signaling__V1__LeaveResponse resp = RTC__SIGNALING__V1__LEAVE_RESPONSE__INIT;
    sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
}

static void leave_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__LeaveRequest *req = (const void *)o->req;
    if (!sig_session_ok(o, req->session_id))
        return;
    const char *argv[] = {o->claims.room_id, req->session_id, o->claims.identity, G.maxlen};
    sig_op_fcall(o, "rtc_leave", 4, argv, NULL, on_left);
}

/* ---- Heartbeat, GetNegotiation, Subscribe ------------------------------------ */

static void on_heartbeat(sig_op *o, const redisReply *reply)
{
    Rtc__Signaling__V1__HeartbeatResponse resp = RTC__SIGNALING__V1__HEARTBEAT_RESPONSE__INIT;
    resp.session_expires_at_ms = sig_rint64(reply);
    sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
}

static void heartbeat_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__HeartbeatRequest *req = (const void *)o->req;
    if (!sig_session_ok(o, req->session_id))
        return;
    const char *argv[] = {o->claims.room_id, req->session_id, o->claims.identity, G.session_ttl};
    sig_op_fcall(o, "rtc_heartbeat", 4, argv, NULL, on_heartbeat);
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

static void on_negotiation(sig_op *o, const redisReply *reply)
{
    if (!sig_reply_array(reply, 2)) {
        sig_op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_negotiation");
        return;
    }
    Rtc__Signaling__V1__GetNegotiationResponse resp =
        RTC__SIGNALING__V1__GET_NEGOTIATION_RESPONSE__INIT;
    Rtc__Signaling__V1__NegotiationEntry oe, ae;
    Rtc__Signaling__V1__SignalPayload *op_, *ap;
    char of[SIG_MAX_ID + 1], oi[SIG_MAX_EVENT_ID + 1], af[SIG_MAX_ID + 1], ai[SIG_MAX_EVENT_ID + 1];
    resp.offer = nego_entry(reply->element[0], &oe, of, oi, &op_);
    resp.answer = nego_entry(reply->element[1], &ae, af, ai, &ap);
    sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    if (op_)
        rtc__signaling__v1__signal_payload__free_unpacked(op_, NULL);
    if (ap)
        rtc__signaling__v1__signal_payload__free_unpacked(ap, NULL);
}

static void negotiation_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__GetNegotiationRequest *req = (const void *)o->req;
    if (!sig_session_ok(o, req->session_id))
        return;
    if (!sig_valid_id(req->peer_participant_id)) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "peer_participant_id is malformed");
        return;
    }
    const char *argv[] = {o->claims.room_id, req->session_id, o->claims.identity,
                          req->peer_participant_id};
    sig_op_fcall(o, "rtc_negotiation", 4, argv, NULL, on_negotiation);
}

static void subscribe_authorized(sig_op *o)
{
    rtc_grpc_call *call = o->call;
    const ProtobufCMessage *req = o->req;
    rtc_jwt_claims claims = o->claims;
    rtc_grpc_call_on_cancel(call, NULL, NULL);
    free(o);
    sig_subscribe(call, req, &claims);
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

static rtc_metric *counter(const char *name, const char *help, const char *label, const char *value)
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
    rtc_metric_family *f =
        rtc_metrics_family(m, RTC_METRIC_GAUGE, "rtc_signaling_streams",
                           "Open Subscribe streams on this pod.", 0, NULL, NULL, 0);
    G.m_streams = f ? rtc_metric_child(f, NULL) : NULL;
    static const char *events_help =
        "Events streamed to subscribers: direct = from pub/sub, fill = read back from Redis.";
    G.m_direct = counter("rtc_signaling_events_total", events_help, "path", "direct");
    G.m_fill = counter("rtc_signaling_events_total", events_help, "path", "fill");
    static const char *swept_help =
        "Sessions expired and empty rooms closed by this pod's sweeper.";
    G.m_swept_sessions = counter("rtc_signaling_swept_total", swept_help, "what", "session");
    G.m_swept_rooms = counter("rtc_signaling_swept_total", swept_help, "what", "room");
    G.m_wait_short =
        counter("rtc_signaling_wait_short_total",
                "Signals/Broadcasts refused because too few replicas confirmed them.", NULL, NULL);
    G.m_ice_fail =
        counter("rtc_signaling_ice_failures_total",
                "Joins answered without ICE servers (GetIceServers failed).", NULL, NULL);
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

    if ((rc = rtc_grpc_server_add_service(G.grpc, &rtc__signaling__v1__signaling__descriptor)) <
            0 ||
        (rc = rtc_grpc_server_add_service(G.grpc,
                                          &rtc__signaling__v1__signaling_admin__descriptor)) < 0)
        return rc;
    static const sig_user_rpc join = {join_authorized}, leave = {leave_authorized},
                              signal = {sig_signal_authorized},
                              broadcast = {sig_broadcast_authorized},
                              subscribe = {subscribe_authorized},
                              heartbeat = {heartbeat_authorized},
                              negotiation = {negotiation_authorized};
    static const struct {
        const char *method;
        rtc_grpc_method_kind kind;
        const sig_user_rpc *rpc;
    } handlers[] = {
        {"Join", RTC_GRPC_UNARY, &join},
        {"Leave", RTC_GRPC_UNARY, &leave},
        {"Signal", RTC_GRPC_UNARY, &signal},
        {"Broadcast", RTC_GRPC_UNARY, &broadcast},
        {"Subscribe", RTC_GRPC_SERVER_STREAMING, &subscribe},
        {"Heartbeat", RTC_GRPC_UNARY, &heartbeat},
        {"GetNegotiation", RTC_GRPC_UNARY, &negotiation},
    };
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
        if ((rc = rtc_grpc_server_handle(G.grpc, &rtc__signaling__v1__signaling__descriptor,
                                         handlers[i].method, handlers[i].kind, sig_user_handler,
                                         (void *)handlers[i].rpc)) < 0)
            return rc;
    if ((rc = sig_admin_register()) < 0)
        return rc;

    srand((unsigned)(rtc_now_ms() ^ ((uint64_t)getpid() << 16))); /* touch jitter */
    sig_relay_init();
    uv_timer_init(G.loop, &G.sweep_timer);
    uv_timer_init(G.loop, &G.touch_timer);
    G.timers_started = true;
    uv_timer_start(&G.sweep_timer, sweep_tick, G.cfg.sweep_interval, G.cfg.sweep_interval);
    /* Each stream's session is refreshed every session_ttl / 3, spread
     * over ticks of a tenth of that (see sig_streams_touch). */
    uint64_t tick = G.cfg.session_ttl / 30 ? G.cfg.session_ttl / 30 : 1;
    uv_timer_start(&G.touch_timer, sig_streams_touch, tick, tick);
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
    sig_relay_close();
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

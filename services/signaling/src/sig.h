/* sig.h — rtc-signaling's internals shared by its source files. */
#ifndef RTC_SIGNALING_SIG_H
#define RTC_SIGNALING_SIG_H

#include <stdbool.h>
#include <stdint.h>

#include "rtc/auth/v1/auth.pb-c.h"
#include "rtc/authn.h"
#include "rtc/grpc.h"
#include "rtc/metrics.h"
#include "rtc/redis.h"
#include "rtc/service.h"
#include "wire.h"

typedef struct sig_config {
    char *redis, *sentinels, *master_name, *sentinel_password;
    char *auth, *api_keys_file, *api_keys, *issuer, *audience, *pod_id;
    uint64_t leeway, revocation_check, session_ttl, heartbeat_interval, sweep_interval;
    uint64_t empty_timeout, negotiation_ttl, wait_timeout, redis_timeout, max_sdp;
    int64_t max_participants, rate_limit, mailbox_size, wait_replicas;
} sig_config;

typedef struct sig_stream sig_stream;

typedef struct sig {
    sig_config cfg;
    rtc_service *svc;
    uv_loop_t *loop;
    rtc_grpc_server *grpc;
    rtc_redis *redis;
    rtc_redis_sub *sub;
    rtc_grpc_channel *auth;
    rtc_verifier *verifier;
    rtc_apikeys *apikeys;
    char pod[65];
    char channel[80]; /* rtc:pod:<pod> */
    /* Settings as FCALL arguments, formatted once. */
    char maxlen[24];      /* --mailbox-size */
    char session_ttl[24]; /* --session-ttl, ms */
    char nego_ttl[24];    /* --negotiation-ttl, ms */
    char rate[24];        /* --rate-limit */
    bool redis_up, funcs_loaded, loading, sub_up, sub_was_up, draining;
    uv_timer_t sweep_timer, touch_timer;
    bool timers_started;
    sig_stream *streams; /* uthash, by room + participant */
    size_t nstreams;
    rtc_metric *m_streams, *m_direct, *m_fill, *m_swept_sessions, *m_swept_rooms;
    rtc_metric *m_wait_short, *m_ice_fail;
} sig;

extern sig G;

/* ---- one RPC (call.c) ------------------------------------------------------ */

typedef struct sig_op sig_op;
typedef void (*sig_op_fn)(sig_op *o);
typedef void (*sig_op_answer_fn)(sig_op *o, const redisReply *reply);

struct sig_op {
    rtc_grpc_call *call;
    const ProtobufCMessage *req;
    rtc_verifier_req *vreq;
    rtc_redis_req *rreq, *wreq;
    rtc_grpc_client_call *ice_call;
    rtc_jwt_claims claims;
    bool by_key;             /* admin through an API key (claims unset) */
    sig_op_fn then;          /* after the caller is known */
    sig_op_answer_fn answer; /* sig_op_fcall's answer */
    const char *room;        /* admin: the room the call touches ("" = none) */
    int grant;               /* admin: ADMIN_ANY, ADMIN_CREATE or ADMIN_LIST */
    /* Join */
    Rtc__Auth__V1__GetIceServersResponse *ice;
    char session[SIG_SESSION_LEN + 1];
    char resume[128];
    /* Signal / Broadcast with --wait-replicas */
    int waiting;     /* replies still expected */
    int fail_status; /* first failure */
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
    char plen_s[24]; /* plen as text */
    const char *nego;
};

/* What SignalingAdmin RPCs need of a bearer token (an API key with admin
 * passes them all). */
enum { ADMIN_ANY, ADMIN_CREATE, ADMIN_LIST };

/* A Signaling RPC: what it does once its caller is known. Registered with
 * sig_user_handler and a pointer to one of these as user data. */
typedef struct sig_user_rpc {
    sig_op_fn authorized;
} sig_user_rpc;

/* A Signaling call: a bearer token with the join grant and a room, then
 * ud's authorized(op). */
void sig_user_handler(rtc_grpc_call *call, const ProtobufCMessage *req, void *ud);
/* A SignalingAdmin call on room ("" = none): an API key with admin, or a
 * bearer token with the grant; then then(op). */
void sig_admin_call(rtc_grpc_call *call, const ProtobufCMessage *req, const char *room, int grant,
                    sig_op_fn then);
/* The call's session id, checked against the token's room; false = the call
 * was finished. */
bool sig_session_ok(sig_op *o, const char *sid);

sig_op *sig_op_new(rtc_grpc_call *call, const ProtobufCMessage *req, sig_op_fn then);
/* Finish with status/msg, or reply with resp when status is OK and resp is
 * set (resp may point into o); frees o. */
void sig_op_finish(sig_op *o, int status, const char *msg, const ProtobufCMessage *resp);
void sig_op_fail(sig_op *o, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Check a Redis outcome; on failure finish the call and return false. */
bool sig_op_redis_ok(sig_op *o, int err, const redisReply *reply);
/* FCALL name; its answer (not an error) goes to answer(o, reply), an error
 * finishes the call. */
void sig_op_fcall(sig_op *o, const char *name, int n, const char **argv, const size_t *lens,
                  sig_op_answer_fn answer);

/* Reading replies. */
const char *sig_rstr(const redisReply *r, size_t *len); /* "" unless a string */
int64_t sig_rint64(const redisReply *r);                /* integer or numeric string */
bool sig_reply_array(const redisReply *r, size_t min);
/* info = {max, empty, meta, created, count} from signaling.lua. */
void sig_room_from(redisReply **info, const char *id, Rtc__Signaling__V1__Room *room,
                   Rtc__Signaling__V1__RoomSettings *st);
/* Unpack Participant blobs r[0..n) (free with sig_free_participants); NULL
 * on failure. */
Rtc__Signaling__V1__Participant **sig_participants_from(redisReply **r, size_t n);
void sig_free_participants(Rtc__Signaling__V1__Participant **v, size_t n);

/* ---- Signal and Broadcast (relay.c), SignalingAdmin (admin.c) ---------------- */

void sig_signal_authorized(sig_op *o);
void sig_broadcast_authorized(sig_op *o);
/* A cancelled Signal leaves its batch (its slot is skipped). */
void sig_batch_forget(sig_op *o);
void sig_relay_init(void);
void sig_relay_close(void);
int sig_admin_register(void);

/* ---- Redis (signaling_service.c) ---------------------------------------------- */

/* Map a Redis outcome to a gRPC status + message, for replies that are
 * errors (err != 0 or an error reply). Returns false when the reply is a
 * usable answer. */
bool sig_redis_failed(int err, const redisReply *reply, int *status, const char **msg);

/* FCALL name with args (binary safe): argv[0..n). */
int sig_fcall(const char *name, int n, const char **argv, const size_t *lens, uint64_t timeout_ms,
              rtc_redis_reply_fn fn, void *ud, rtc_redis_req **req);

/* stream.c: Subscribe and the pub/sub side. */
void sig_subscribe(rtc_grpc_call *call, const ProtobufCMessage *req, const rtc_jwt_claims *claims);
void sig_streams_on_wake(const char *payload, size_t len);
void sig_streams_resync(void); /* pub/sub was down: re-read every mailbox */
void sig_streams_touch(uv_timer_t *t);
void sig_streams_close_all(void);

#endif

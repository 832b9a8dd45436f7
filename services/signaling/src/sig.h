/* sig.h — rtc-signaling's internals shared by its source files. */
#ifndef RTC_SIGNALING_SIG_H
#define RTC_SIGNALING_SIG_H

#include <stdbool.h>
#include <stdint.h>

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

/* call.c — the life of one unary RPC of rtc-signaling: who is calling
 * (bearer token through the shared verifier, or an API key), the grants the
 * RPC needs, one FCALL, the answer. A call cancelled while waiting is
 * finished with CANCELLED after its pending work is dropped. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/core.h"
#include "rtc/log.h"
#include "rtc/utf8.h"
#include "sig.h"

static void op_cancel(rtc_grpc_call *call, void *ud)
{
    sig_op *o = ud;
    sig_batch_forget(o);
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

sig_op *sig_op_new(rtc_grpc_call *call, const ProtobufCMessage *req, sig_op_fn then)
{
    sig_op *o = calloc(1, sizeof(*o));
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
void sig_op_finish(sig_op *o, int status, const char *msg, const ProtobufCMessage *resp)
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

void sig_op_fail(sig_op *o, int status, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    sig_op_finish(o, status, msg, NULL);
}

/* Check the Redis outcome; on failure finish the call. */
bool sig_op_redis_ok(sig_op *o, int err, const redisReply *reply)
{
    int status;
    const char *msg;
    if (!sig_redis_failed(err, reply, &status, &msg))
        return true;
    sig_op_finish(o, status, msg, NULL);
    return false;
}

static void on_fcall(void *ud, int err, const redisReply *reply)
{
    sig_op *o = ud;
    o->rreq = NULL;
    if (sig_op_redis_ok(o, err, reply))
        o->answer(o, reply);
}

/* FCALL name; its answer (not an error) goes to answer(o, reply), an
 * error finishes the call. */
void sig_op_fcall(sig_op *o, const char *name, int n, const char **argv, const size_t *lens,
                  sig_op_answer_fn answer)
{
    o->answer = answer;
    int rc = sig_fcall(name, n, argv, lens, 0, on_fcall, o, &o->rreq);
    if (rc < 0)
        sig_op_fail(o, rc == RTC_EAGAIN ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL, "redis: %s",
                    rtc_strerror(rc));
}

/* ---- authentication --------------------------------------------------------- */

static void refused(sig_op *o, int err, rtc_jwt_error reason, const char *detail)
{
    if (err) {
        sig_op_fail(o, err == RTC_EUNAVAIL ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL, "%s",
                    detail && *detail ? detail : rtc_strerror(err));
        return;
    }
    sig_op_fail(o, RTC_GRPC_UNAUTHENTICATED, "token refused: %s%s%s", rtc_jwt_error_name(reason),
                detail && *detail ? ": " : "", detail ? detail : "");
}

static void authorized(sig_op *o, const rtc_jwt_claims *c);

static void on_verified(void *ud, int err, rtc_jwt_error reason, const rtc_jwt_claims *claims,
                        const char *detail)
{
    sig_op *o = ud;
    o->vreq = NULL;
    if (err || reason != RTC_JWT_OK) {
        refused(o, err, reason, detail);
        return;
    }
    authorized(o, claims);
}

static void verify(sig_op *o, const char *tok, size_t len)
{
    rtc_jwt_claims claims;
    if (rtc_verifier_verify_cached(G.verifier, tok, len, &claims)) {
        authorized(o, &claims);
        return;
    }
    int rc = rtc_verifier_verify(G.verifier, tok, len, on_verified, o, &o->vreq);
    if (rc < 0)
        sig_op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "%s", rtc_strerror(rc));
}

/* The grants a call needs, once the token is verified. */
static void authorized(sig_op *o, const rtc_jwt_claims *c)
{
    o->claims = *c;
    bool admin = c->grants & RTC_JWT_GRANT_ADMIN;
    if (o->grant < 0) { /* Signaling */
        if (!(c->grants & RTC_JWT_GRANT_JOIN)) {
            sig_op_fail(o, RTC_GRPC_PERMISSION_DENIED, "the token lacks the join grant");
            return;
        }
        if (!c->room_id[0] || !sig_valid_room(c->room_id)) {
            sig_op_fail(o, RTC_GRPC_PERMISSION_DENIED, "the token names no room");
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
    /* Listing shows every room: only for tokens not scoped to one. */
    if (o->grant == ADMIN_LIST)
        ok = (admin || (c->grants & RTC_JWT_GRANT_LIST)) && !c->room_id[0];
    if (!ok) {
        sig_op_fail(o, RTC_GRPC_PERMISSION_DENIED,
                    admin ? "the token's admin grant is for room %s only"
                          : "this RPC needs an API key or a token with the admin grant%s",
                    admin ? c->room_id : "");
        return;
    }
    o->then(o);
}

/* Signaling: a bearer token with the join grant and a room. */
static void sig_user_call(rtc_grpc_call *call, const ProtobufCMessage *req, sig_op_fn then)
{
    const char *h = rtc_grpc_call_metadata(call, "authorization");
    const char *tok;
    size_t len;
    if (!rtc_authn_bearer(h, &tok, &len)) {
        rtc_grpc_call_finish(call, RTC_GRPC_UNAUTHENTICATED,
                             h ? "this RPC needs a bearer token" : "missing bearer token");
        return;
    }
    sig_op *o = sig_op_new(call, req, then);
    if (!o)
        return;
    o->grant = -1;
    verify(o, tok, len);
}

void sig_user_handler(rtc_grpc_call *call, const ProtobufCMessage *req, void *ud)
{
    sig_user_call(call, req, ((const sig_user_rpc *)ud)->authorized);
}

/* SignalingAdmin: an API key with admin, or a bearer token with the grant. */
void sig_admin_call(rtc_grpc_call *call, const ProtobufCMessage *req, const char *room, int grant,
                    sig_op_fn then)
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
        sig_op *o = sig_op_new(call, req, then);
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
    sig_op *o = sig_op_new(call, req, then);
    if (!o)
        return;
    o->room = room;
    o->grant = grant;
    verify(o, tok, len);
}

/* The session id of a Signaling request, checked against the token's room.
 * false = the call was finished. */
bool sig_session_ok(sig_op *o, const char *sid)
{
    switch (sig_session_check(o->claims.room_id, sid)) {
    case 0:
        return true;
    case RTC_EDENIED:
        sig_op_fail(o, RTC_GRPC_PERMISSION_DENIED, "the session belongs to another room");
        return false;
    default:
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "session_id is malformed");
        return false;
    }
}

/* ---- building responses ----------------------------------------------------- */

/* info = {max, empty, meta, created, count} from signaling.lua. */
void sig_room_from(redisReply **info, const char *id, Rtc__Signaling__V1__Room *room,
                   Rtc__Signaling__V1__RoomSettings *st)
{
    rtc__signaling__v1__room__init(room);
    rtc__signaling__v1__room_settings__init(st);
    st->max_participants = (uint32_t)sig_rint64(info[0]);
    st->empty_timeout_ms = sig_rint64(info[1]);
    st->metadata = (char *)sig_rstr(info[2], NULL);
    room->id = (char *)id;
    room->settings = st;
    room->created_at_ms = sig_rint64(info[3]);
    room->participant_count = (uint32_t)sig_rint64(info[4]);
}

/* Unpack Participant blobs r[0..n) into a fresh array (free with
 * sig_free_participants). NULL on failure (n > 0). */
Rtc__Signaling__V1__Participant **sig_participants_from(redisReply **r, size_t n)
{
    Rtc__Signaling__V1__Participant **v = calloc(n ? n : 1, sizeof(*v));
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *b = sig_rstr(r[i], &len);
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

void sig_free_participants(Rtc__Signaling__V1__Participant **v, size_t n)
{
    for (size_t i = 0; i < n && v; i++)
        rtc__signaling__v1__participant__free_unpacked(v[i], NULL);
    free(v);
}

bool sig_reply_array(const redisReply *r, size_t min)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements >= min;
}

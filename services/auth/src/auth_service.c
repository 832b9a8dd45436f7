/* rtc.auth.v1.Auth: access tokens, API keys, revocation, TURN credentials.
 *
 * Who may call what is in services/auth/README.md. Every handler checks
 * its caller first (API key or bearer token), then its input, then acts.
 * Calls that need Redis (revocation, and verification whose revocation
 * check is due) go async; everything else answers at once. A call
 * cancelled while waiting is finished with CANCELLED after its pending
 * work is dropped. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "rtc/auth/v1/auth.pb-c.h"
#include "rtc/auth_service.h"
#include "rtc/authn.h"
#include "rtc/core.h"
#include "rtc/jwt.h"
#include "rtc/log.h"
#include "rtc/redis.h"
#include "rtc/utf8.h"

#define SERVICE_NAME    "rtc.auth.v1.Auth"
#define MAX_TEXT        128 /* identity, display name: bytes */
#define MAX_ROOM        64
#define MAX_JTI         64
#define MAX_TURN_SECRET 1024
#define MAX_ICE_URLS    16

/* ---- configuration ------------------------------------------------------- */

static struct auth_config {
    char *redis;
    char *sentinels;
    char *master_name;
    char *sentinel_password;
    char *signing_key;
    char *verify_keys;
    char *issuer;
    char *audience;
    uint64_t token_ttl;
    uint64_t max_token_ttl;
    uint64_t max_session;
    uint64_t leeway;
    uint64_t revocation_check;
    int64_t verify_cache;
    uint64_t keys_max_age;
    char *api_keys_file;
    char *api_keys;
    char *turn_secret;
    char *turn_secret_file;
    char *turn_urls;
    char *stun_urls;
    uint64_t turn_ttl;
} cfg;

#define DAY_MS (24ull * 3600 * 1000)

static const rtc_option auth_options[] = {
    {"redis", RTC_OPT_STRING, "redis://127.0.0.1:6379",
     "Redis for revocation: redis://[user:pass@]HOST:PORT[/db] (with --sentinels only its user, "
     "password and db are used)",
     &cfg.redis, 0, 0},
    {"sentinels", RTC_OPT_STRING, NULL, "Redis Sentinels host:port,… (the primary is found there)",
     &cfg.sentinels, 0, 0},
    {"master-name", RTC_OPT_STRING, "rtc", "the Sentinel master name", &cfg.master_name, 0, 0},
    {"sentinel-password", RTC_OPT_STRING, NULL, "AUTH password of the Sentinels",
     &cfg.sentinel_password, 0, 0},
    {"signing-key", RTC_OPT_STRING, NULL,
     "PEM file of the P-256 private key that signs (required without --dev)", &cfg.signing_key, 0,
     0},
    {"verify-keys", RTC_OPT_STRING, NULL,
     "comma-separated PEM files of more keys that still verify (rotation)", &cfg.verify_keys, 0, 0},
    {"issuer", RTC_OPT_STRING, "rtc", "token issuer (iss)", &cfg.issuer, 0, 0},
    {"audience", RTC_OPT_STRING, "rtc", "token audience (aud)", &cfg.audience, 0, 0},
    {"token-ttl", RTC_OPT_DURATION, "15m", "lifetime of tokens when the request sets none",
     &cfg.token_ttl, 1000, (int64_t)(30 * DAY_MS)},
    {"max-token-ttl", RTC_OPT_DURATION, "24h", "largest ttl_ms a request may ask for",
     &cfg.max_token_ttl, 1000, (int64_t)(30 * DAY_MS)},
    {"max-session", RTC_OPT_DURATION, "24h",
     "RefreshToken stops extending a session this long after it started", &cfg.max_session, 1000,
     (int64_t)(365 * DAY_MS)},
    {"leeway", RTC_OPT_DURATION, "30s", "clock skew allowed on exp/nbf/iat", &cfg.leeway, 0,
     300000},
    {"revocation-check", RTC_OPT_DURATION, "5s",
     "how often a cached token's revocation is rechecked (the revocation bound)",
     &cfg.revocation_check, 0, 3600000},
    {"verify-cache", RTC_OPT_INT, "100000", "verified tokens kept in memory", &cfg.verify_cache, 1,
     10000000},
    {"keys-max-age", RTC_OPT_DURATION, "5m", "max_age_ms returned by GetSigningKeys",
     &cfg.keys_max_age, 1000, (int64_t)DAY_MS},
    {"api-keys-file", RTC_OPT_STRING, NULL,
     "file of API keys, one per line: <key_id> <secret> <rights>", &cfg.api_keys_file, 0, 0},
    {"api-keys", RTC_OPT_STRING, NULL, "API keys inline, ';'-separated (same format)",
     &cfg.api_keys, 0, 0},
    {"turn-secret", RTC_OPT_STRING, NULL, "coturn static-auth-secret (prefer --turn-secret-file)",
     &cfg.turn_secret, 0, 0},
    {"turn-secret-file", RTC_OPT_STRING, NULL, "file holding the coturn static-auth-secret",
     &cfg.turn_secret_file, 0, 0},
    {"turn-urls", RTC_OPT_STRING,
     "turn:127.0.0.1:3478?transport=udp,turn:127.0.0.1:3478?transport=tcp",
     "comma-separated TURN URLs handed out with credentials", &cfg.turn_urls, 0, 0},
    {"stun-urls", RTC_OPT_STRING, "stun:127.0.0.1:3478", "comma-separated STUN URLs",
     &cfg.stun_urls, 0, 0},
    {"turn-ttl", RTC_OPT_DURATION, "1h", "lifetime of TURN credentials (largest ttl_ms)",
     &cfg.turn_ttl, 1000, (int64_t)(7 * DAY_MS)},
};

const rtc_option *rtc_auth_options(size_t *n)
{
    *n = sizeof(auth_options) / sizeof(auth_options[0]);
    return auth_options;
}

/* ---- state ---------------------------------------------------------------- */

typedef struct auth {
    rtc_service *svc;
    rtc_grpc_server *grpc;
    bool dev;
    rtc_jwt_keyset *keys;
    rtc_apikeys *apikeys;
    rtc_redis *redis;
    rtc_verifier *verifier;
    char *turn_secret;
    char **turn_urls, **stun_urls;
    size_t nturn, nstun;
    rtc_metric *m_issued, *m_refreshed, *m_dev, *m_revoked;
} auth;

static auth A;

/* ---- small helpers -------------------------------------------------------- */

/* Identities and display names (auth.proto): UTF-8 without control
 * characters, at most 128 bytes. */
static bool valid_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max || !rtc_utf8_valid(s, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

/* Room ids (auth.proto): 1-64 bytes of [A-Za-z0-9._-]. */
static bool valid_room(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_ROOM)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return false;
    }
    return true;
}

/* A requested lifetime: negative is refused, 0 is the default, above the
 * maximum is capped. false (call finished) when refused. */
static bool ttl_of(rtc_grpc_call *call, int64_t req, uint64_t def, uint64_t max, int64_t *out)
{
    if (req < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT, "ttl_ms: must not be negative");
        return false;
    }
    uint64_t t = req ? (uint64_t)req : def;
    *out = (int64_t)(t > max ? max : t);
    return true;
}

static int split_list(const char *s, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s || !*s)
        return 0;
    char **v = calloc(MAX_ICE_URLS, sizeof(*v));
    if (!v)
        return RTC_ENOMEM;
    size_t k = 0;
    const char *p = s;
    while (*p) {
        size_t len = strcspn(p, ",");
        while (len && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        size_t end = len;
        while (end && isspace((unsigned char)p[end - 1]))
            end--;
        if (end) {
            if (k == MAX_ICE_URLS) {
                for (size_t i = 0; i < k; i++)
                    free(v[i]);
                free(v);
                return RTC_ETOOBIG;
            }
            v[k] = strndup(p, end);
            if (!v[k]) {
                for (size_t i = 0; i < k; i++)
                    free(v[i]);
                free(v);
                return RTC_ENOMEM;
            }
            k++;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    *out = v;
    *n = k;
    return 0;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static uint32_t grants_from_request(const Rtc__Auth__V1__Grant *g, size_t n, bool *bad)
{
    uint32_t bits = 0;
    *bad = false;
    for (size_t i = 0; i < n; i++) {
        if (g[i] < RTC__AUTH__V1__GRANT__GRANT_JOIN || g[i] > RTC__AUTH__V1__GRANT__GRANT_ADMIN)
            *bad = true;
        else
            bits |= 1u << g[i];
    }
    return bits;
}

/* Fill Claims (the proto) from rtc_jwt_claims; arrays point into c. */
typedef struct claims_msg {
    Rtc__Auth__V1__Claims m;
    char *aud[RTC_JWT_MAX_AUDIENCES];
    Rtc__Auth__V1__Grant grants[4];
} claims_msg;

static void claims_to_proto(rtc_jwt_claims *c, claims_msg *out)
{
    rtc__auth__v1__claims__init(&out->m);
    out->m.issuer = c->issuer;
    for (size_t i = 0; i < c->naudience; i++)
        out->aud[i] = c->audience[i];
    out->m.audience = out->aud;
    out->m.n_audience = c->naudience;
    out->m.identity = c->identity;
    out->m.issued_at_ms = c->issued_at_ms;
    out->m.not_before_ms = c->not_before_ms;
    out->m.expires_at_ms = c->expires_at_ms;
    out->m.token_id = c->token_id;
    out->m.room_id = c->room_id;
    size_t ng = 0;
    for (int g = RTC__AUTH__V1__GRANT__GRANT_JOIN; g <= RTC__AUTH__V1__GRANT__GRANT_ADMIN; g++)
        if (c->grants & (1u << g))
            out->grants[ng++] = (Rtc__Auth__V1__Grant)g;
    out->m.grants = out->grants;
    out->m.n_grants = ng;
    out->m.display_name = c->display_name;
    out->m.session_started_at_ms = c->session_started_at_ms;
    out->m.key_id = c->key_id;
}

/* Sign a new token for c (identity, room, grants, name, sst set by the
 * caller) expiring at exp_ms. Sets iss/aud/iat/nbf/jti. */
static int mint(rtc_jwt_claims *c, int64_t now, int64_t exp_ms, char **token)
{
    snprintf(c->issuer, sizeof(c->issuer), "%s", cfg.issuer);
    snprintf(c->audience[0], sizeof(c->audience[0]), "%s", cfg.audience);
    c->naudience = 1;
    c->issued_at_ms = now;
    c->not_before_ms = now;
    c->expires_at_ms = exp_ms;
    int rc = rtc_jwt_new_id(c->token_id, sizeof(c->token_id));
    if (rc < 0)
        return rc;
    return rtc_jwt_sign(A.keys, c, token);
}

/* The token's exp as the token carries it (whole seconds), in ms. */
static int64_t exp_seconds_ms(int64_t ms)
{
    return ms / 1000 * 1000;
}

/* ---- caller checks --------------------------------------------------------- */

/* API key check that finishes the call on failure. true = go on. A
 * bearer token is a credential of the wrong kind: PERMISSION_DENIED. */
static bool require_key_id(rtc_grpc_call *call, uint32_t need, char *key_id)
{
    const char *h = rtc_grpc_call_metadata(call, "authorization");
    const char *tok;
    size_t len;
    if (rtc_authn_bearer(h, &tok, &len)) {
        rtc_grpc_call_finish(
            call, RTC_GRPC_PERMISSION_DENIED,
            "this RPC needs an API key (authorization: Basic), not a bearer token");
        return false;
    }
    switch (rtc_apikeys_check(A.apikeys, h, need, key_id)) {
    case RTC_AUTHN_OK:
        return true;
    case RTC_AUTHN_PERMISSION_DENIED:
        rtc_grpc_call_finish(call, RTC_GRPC_PERMISSION_DENIED, "API key lacks the right");
        return false;
    default:
        rtc_grpc_call_finish(call, RTC_GRPC_UNAUTHENTICATED,
                             h ? "invalid API key" : "missing authorization (API key)");
        return false;
    }
}

static bool require_key(rtc_grpc_call *call, uint32_t need)
{
    return require_key_id(call, need, NULL);
}

/* A call waiting on the verifier or Redis. */
typedef struct pending pending;
typedef void (*after_verify_fn)(pending *p, const rtc_jwt_claims *claims);

struct pending {
    rtc_grpc_call *call;
    const ProtobufCMessage *req;
    rtc_verifier_req *vreq;
    rtc_redis_req *rreq;
    after_verify_fn then;
    /* VerifyToken answers refusals in the response; others fail the call. */
    bool refusal_is_answer;
};

static void pending_cancel(rtc_grpc_call *call, void *ud)
{
    pending *p = ud;
    if (p->vreq)
        rtc_verifier_req_cancel(p->vreq);
    if (p->rreq)
        rtc_redis_req_abandon(p->rreq);
    rtc_grpc_call_finish(call, RTC_GRPC_CANCELLED, "cancelled");
    free(p);
}

static pending *pending_new(rtc_grpc_call *call, const ProtobufCMessage *req, after_verify_fn then)
{
    pending *p = calloc(1, sizeof(*p));
    if (!p) {
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    p->call = call;
    p->req = req;
    p->then = then;
    rtc_grpc_call_on_cancel(call, pending_cancel, p);
    return p;
}

/* Finish a pending call (after its async step): detach the cancel hook. */
static void pending_done(pending *p)
{
    rtc_grpc_call_on_cancel(p->call, NULL, NULL);
    free(p);
}

static void answer_refusal(pending *p, int err, rtc_jwt_error reason, const char *detail);

static void on_verified(void *ud, int err, rtc_jwt_error reason, const rtc_jwt_claims *claims,
                        const char *detail)
{
    pending *p = ud;
    p->vreq = NULL;
    if (err || reason != RTC_JWT_OK) {
        answer_refusal(p, err, reason, detail);
        return;
    }
    p->then(p, claims);
}

/* Verify `token` and continue with p->then(claims), or answer the refusal. */
static void verify_then(pending *p, const char *token, size_t len)
{
    rtc_jwt_claims claims;
    if (rtc_verifier_verify_cached(A.verifier, token, len, &claims)) {
        p->then(p, &claims);
        return;
    }
    int rc = rtc_verifier_verify(A.verifier, token, len, on_verified, p, &p->vreq);
    if (rc < 0) {
        rtc_grpc_call *call = p->call;
        pending_done(p);
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, rtc_strerror(rc));
    }
}

/* Bearer token from metadata → verify_then; UNAUTHENTICATED without one. */
static void bearer_then(rtc_grpc_call *call, const ProtobufCMessage *req, after_verify_fn then)
{
    const char *tok;
    size_t len;
    if (!rtc_authn_bearer(rtc_grpc_call_metadata(call, "authorization"), &tok, &len)) {
        rtc_grpc_call_finish(call, RTC_GRPC_UNAUTHENTICATED, "missing bearer token");
        return;
    }
    pending *p = pending_new(call, req, then);
    if (p)
        verify_then(p, tok, len);
}

static void answer_refusal(pending *p, int err, rtc_jwt_error reason, const char *detail)
{
    rtc_grpc_call *call = p->call;
    bool answer = p->refusal_is_answer;
    pending_done(p);
    if (err) {
        rtc_grpc_call_finish(call, err == RTC_EUNAVAIL ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL,
                             detail && *detail ? detail : rtc_strerror(err));
        return;
    }
    if (answer) {
        Rtc__Auth__V1__VerifyTokenResponse resp = RTC__AUTH__V1__VERIFY_TOKEN_RESPONSE__INIT;
        resp.result_case = RTC__AUTH__V1__VERIFY_TOKEN_RESPONSE__RESULT_ERROR;
        resp.error = (Rtc__Auth__V1__TokenError)reason;
        resp.detail = (char *)(detail ? detail : "");
        rtc_grpc_call_reply(call, &resp.base);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof(msg), "token refused: %s%s%s", rtc_jwt_error_name(reason),
             detail && *detail ? ": " : "", detail ? detail : "");
    rtc_grpc_call_finish(call, RTC_GRPC_UNAUTHENTICATED, msg);
}

/* ---- IssueToken ------------------------------------------------------------ */

static void issue_token(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Auth__V1__IssueTokenRequest *req = (const void *)msg;
    if (!require_key(call, RTC_APIKEY_ISSUE))
        return;
    if (!*req->identity || !valid_text(req->identity, MAX_TEXT)) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "identity: required, 1-128 bytes of UTF-8 without control characters");
        return;
    }
    if (!valid_text(req->display_name, MAX_TEXT)) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "display_name: at most 128 bytes of UTF-8 without control characters");
        return;
    }
    bool bad;
    uint32_t grants = grants_from_request(req->grants, req->n_grants, &bad);
    if (bad || !grants) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "grants: at least one of JOIN, CREATE, LIST, ADMIN");
        return;
    }
    bool needs_room = grants & (RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_CREATE);
    if ((*req->room_id || needs_room) && !valid_room(req->room_id)) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             needs_room && !*req->room_id
                                 ? "room_id: required with the JOIN or CREATE grant"
                                 : "room_id: 1-64 bytes of [A-Za-z0-9._-]");
        return;
    }
    int64_t ttl;
    if (!ttl_of(call, req->ttl_ms, cfg.token_ttl, cfg.max_token_ttl, &ttl))
        return;
    int64_t now = rtc_wall_ms();
    rtc_jwt_claims c = {0};
    snprintf(c.identity, sizeof(c.identity), "%s", req->identity);
    snprintf(c.room_id, sizeof(c.room_id), "%s", req->room_id);
    snprintf(c.display_name, sizeof(c.display_name), "%s", req->display_name);
    c.grants = grants;
    c.session_started_at_ms = now;
    char *token = NULL;
    int rc = mint(&c, now, now + ttl, &token);
    if (rc < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INTERNAL, "cannot sign token");
        return;
    }
    Rtc__Auth__V1__IssueTokenResponse resp = RTC__AUTH__V1__ISSUE_TOKEN_RESPONSE__INIT;
    resp.access_token = token;
    resp.token_id = c.token_id;
    resp.expires_at_ms = exp_seconds_ms(now + ttl);
    rtc_grpc_call_reply(call, &resp.base);
    rtc_metric_inc(A.m_issued, 1);
    free(token);
}

/* ---- RefreshToken ---------------------------------------------------------- */

static void refresh_verified(pending *p, const rtc_jwt_claims *old)
{
    const Rtc__Auth__V1__RefreshTokenRequest *req = (const void *)p->req;
    rtc_grpc_call *call = p->call;
    pending_done(p);
    int64_t ttl;
    if (!ttl_of(call, req->ttl_ms, cfg.token_ttl, cfg.max_token_ttl, &ttl))
        return;
    int64_t now = rtc_wall_ms();
    int64_t started = old->session_started_at_ms ? old->session_started_at_ms : old->issued_at_ms;
    int64_t session_end = started + (int64_t)cfg.max_session;
    if (now >= session_end) {
        rtc_grpc_call_finish(call, RTC_GRPC_UNAUTHENTICATED,
                             "session expired (SESSION_EXPIRED): log in again");
        return;
    }
    int64_t exp = now + ttl < session_end ? now + ttl : session_end;
    rtc_jwt_claims c = {0};
    snprintf(c.identity, sizeof(c.identity), "%s", old->identity);
    snprintf(c.room_id, sizeof(c.room_id), "%s", old->room_id);
    snprintf(c.display_name, sizeof(c.display_name), "%s", old->display_name);
    c.grants = old->grants;
    c.session_started_at_ms = started;
    char *token = NULL;
    if (mint(&c, now, exp, &token) < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INTERNAL, "cannot sign token");
        return;
    }
    Rtc__Auth__V1__RefreshTokenResponse resp = RTC__AUTH__V1__REFRESH_TOKEN_RESPONSE__INIT;
    resp.access_token = token;
    resp.token_id = c.token_id;
    resp.expires_at_ms = exp_seconds_ms(exp);
    resp.session_expires_at_ms = session_end;
    rtc_grpc_call_reply(call, &resp.base);
    rtc_metric_inc(A.m_refreshed, 1);
    free(token);
}

static void refresh_token(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    bearer_then(call, msg, refresh_verified);
}

/* ---- RevokeToken ------------------------------------------------------------ */

static void on_revoked(void *ud, int err, const redisReply *reply)
{
    pending *p = ud;
    p->rreq = NULL;
    const Rtc__Auth__V1__RevokeTokenRequest *req = (const void *)p->req;
    rtc_grpc_call *call = p->call;
    pending_done(p);
    if (err || !reply || reply->type == REDIS_REPLY_ERROR) {
        rtc_grpc_call_finish(call, RTC_GRPC_UNAVAILABLE,
                             err ? "revocation store unavailable" : "revocation store error");
        return;
    }
    rtc_verifier_forget(A.verifier, req->token_id);
    rtc_info("token revoked", "jti", req->token_id);
    rtc_metric_inc(A.m_revoked, 1);
    Rtc__Auth__V1__RevokeTokenResponse resp = RTC__AUTH__V1__REVOKE_TOKEN_RESPONSE__INIT;
    rtc_grpc_call_reply(call, &resp.base);
}

static void revoke_authorized(pending *p, const rtc_jwt_claims *caller)
{
    const Rtc__Auth__V1__RevokeTokenRequest *req = (const void *)p->req;
    if (caller && !(caller->grants & RTC_JWT_GRANT_ADMIN)) {
        rtc_grpc_call *call = p->call;
        pending_done(p);
        rtc_grpc_call_finish(call, RTC_GRPC_PERMISSION_DENIED, "needs the admin grant");
        return;
    }
    int64_t now = rtc_wall_ms();
    int64_t until = req->expires_at_ms ? req->expires_at_ms : now + (int64_t)cfg.max_token_ttl;
    /* Tokens pass until exp + leeway: the mark must outlive that. */
    int64_t ttl = until + (int64_t)cfg.leeway - now;
    if (ttl <= 0) {
        /* Already dead everywhere; nothing to store. */
        rtc_grpc_call *call = p->call;
        pending_done(p);
        rtc_verifier_forget(A.verifier, req->token_id);
        Rtc__Auth__V1__RevokeTokenResponse resp = RTC__AUTH__V1__REVOKE_TOKEN_RESPONSE__INIT;
        rtc_grpc_call_reply(call, &resp.base);
        return;
    }
    char key[160];
    rtc_authn_revoked_key(req->token_id, key, sizeof(key));
    char ttl_s[24];
    snprintf(ttl_s, sizeof(ttl_s), "%lld", (long long)ttl);
    int rc = rtc_redis_command(A.redis, on_revoked, p, 0, &p->rreq, "SET %s 1 PX %s", key, ttl_s);
    if (rc < 0) {
        rtc_grpc_call *call = p->call;
        pending_done(p);
        rtc_grpc_call_finish(call, RTC_GRPC_UNAVAILABLE, "revocation store busy");
    }
}

static void revoke_token(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Auth__V1__RevokeTokenRequest *req = (const void *)msg;
    const char *h = rtc_grpc_call_metadata(call, "authorization");
    const char *tok;
    size_t len;
    bool bearer = rtc_authn_bearer(h, &tok, &len);
    if (!bearer && !require_key(call, RTC_APIKEY_REVOKE))
        return;
    size_t jn = strlen(req->token_id);
    if (jn == 0 || jn > MAX_JTI || !valid_text(req->token_id, MAX_JTI)) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "token_id: required, at most 64 bytes without control characters");
        return;
    }
    if (req->expires_at_ms < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT, "expires_at_ms: must be >= 0");
        return;
    }
    pending *p = pending_new(call, msg, revoke_authorized);
    if (!p)
        return;
    if (bearer)
        verify_then(p, tok, len);
    else
        revoke_authorized(p, NULL);
}

/* ---- VerifyToken ----------------------------------------------------------- */

static void reply_claims(rtc_grpc_call *call, const rtc_jwt_claims *claims)
{
    rtc_jwt_claims c = *claims;
    claims_msg cm;
    claims_to_proto(&c, &cm);
    Rtc__Auth__V1__VerifyTokenResponse resp = RTC__AUTH__V1__VERIFY_TOKEN_RESPONSE__INIT;
    resp.result_case = RTC__AUTH__V1__VERIFY_TOKEN_RESPONSE__RESULT_CLAIMS;
    resp.claims = &cm.m;
    rtc_grpc_call_reply(call, &resp.base);
}

static void verify_answer(pending *p, const rtc_jwt_claims *claims)
{
    rtc_grpc_call *call = p->call;
    pending_done(p);
    reply_claims(call, claims);
}

static void verify_token(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Auth__V1__VerifyTokenRequest *req = (const void *)msg;
    if (!require_key(call, RTC_APIKEY_VERIFY))
        return;
    size_t len = strlen(req->access_token);
    if (len == 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT, "access_token: required");
        return;
    }
    rtc_jwt_claims claims;
    if (len <= RTC_JWT_MAX_TOKEN &&
        rtc_verifier_verify_cached(A.verifier, req->access_token, len, &claims)) {
        /* The hot path: no allocation, no ECDSA. */
        reply_claims(call, &claims);
        return;
    }
    pending *p = pending_new(call, msg, verify_answer);
    if (!p)
        return;
    p->refusal_is_answer = true;
    int rc = rtc_verifier_verify(A.verifier, req->access_token, len, on_verified, p, &p->vreq);
    if (rc < 0) {
        pending_done(p);
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, rtc_strerror(rc));
    }
}

/* ---- GetSigningKeys --------------------------------------------------------- */

static void get_signing_keys(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)msg;
    (void)ud;
    size_t n = rtc_jwt_keyset_count(A.keys);
    Rtc__Auth__V1__SigningKey *keys = calloc(n ? n : 1, sizeof(*keys));
    Rtc__Auth__V1__SigningKey **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!keys || !ptrs) {
        free(keys);
        free(ptrs);
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        rtc_jwt_key_info info;
        rtc_jwt_keyset_get(A.keys, i, &info);
        rtc__auth__v1__signing_key__init(&keys[i]);
        keys[i].key_id = (char *)info.kid;
        keys[i].algorithm = "ES256";
        keys[i].public_key_pem = (char *)info.public_pem;
        keys[i].jwk_json = (char *)info.jwk_json;
        keys[i].created_at_ms = info.created_at_ms;
        keys[i].signing = info.signing;
        ptrs[i] = &keys[i];
    }
    Rtc__Auth__V1__GetSigningKeysResponse resp = RTC__AUTH__V1__GET_SIGNING_KEYS_RESPONSE__INIT;
    resp.keys = ptrs;
    resp.n_keys = n;
    resp.max_age_ms = (int64_t)cfg.keys_max_age;
    rtc_grpc_call_reply(call, &resp.base);
    free(keys);
    free(ptrs);
}

/* ---- GetIceServers --------------------------------------------------------- */

/* coturn's REST scheme: username "<expiry>:<identity>", credential
 * base64(HMAC-SHA1(secret, username)). */
static int turn_credential(const char *username, char *out, size_t outlen)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (!HMAC(EVP_sha1(), A.turn_secret, (int)strlen(A.turn_secret),
              (const unsigned char *)username, strlen(username), mac, &maclen))
        return RTC_EIO;
    if (outlen < 4 * ((maclen + 2) / 3) + 1)
        return RTC_ETOOBIG;
    EVP_EncodeBlock((unsigned char *)out, mac, (int)maclen);
    return 0;
}

static void ice_verified(pending *p, const rtc_jwt_claims *claims)
{
    const Rtc__Auth__V1__GetIceServersRequest *req = (const void *)p->req;
    rtc_grpc_call *call = p->call;
    pending_done(p);
    int64_t ttl;
    if (!ttl_of(call, req->ttl_ms, cfg.turn_ttl, cfg.turn_ttl, &ttl))
        return;
    int64_t now = rtc_wall_ms();
    int64_t expiry_s = (now + ttl) / 1000;
    char username[256], credential[64];
    snprintf(username, sizeof(username), "%lld:%s", (long long)expiry_s, claims->identity);

    Rtc__Auth__V1__IceServer stun = RTC__AUTH__V1__ICE_SERVER__INIT;
    Rtc__Auth__V1__IceServer turn = RTC__AUTH__V1__ICE_SERVER__INIT;
    Rtc__Auth__V1__IceServer *servers[2];
    size_t n = 0;
    if (A.nstun) {
        stun.urls = A.stun_urls;
        stun.n_urls = A.nstun;
        servers[n++] = &stun;
    }
    if (A.nturn && A.turn_secret) {
        if (turn_credential(username, credential, sizeof(credential)) < 0) {
            rtc_grpc_call_finish(call, RTC_GRPC_INTERNAL, "cannot compute TURN credential");
            return;
        }
        turn.urls = A.turn_urls;
        turn.n_urls = A.nturn;
        turn.username = username;
        turn.credential = credential;
        turn.expires_at_ms = expiry_s * 1000;
        servers[n++] = &turn;
    }
    Rtc__Auth__V1__GetIceServersResponse resp = RTC__AUTH__V1__GET_ICE_SERVERS_RESPONSE__INIT;
    resp.ice_servers = servers;
    resp.n_ice_servers = n;
    resp.expires_at_ms = turn.expires_at_ms; /* 0 without a TURN entry */
    rtc_grpc_call_reply(call, &resp.base);
    OPENSSL_cleanse(credential, sizeof(credential));
}

static void get_ice_servers(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const char *h = rtc_grpc_call_metadata(call, "authorization");
    if (!rtc_authn_is_basic(h)) {
        bearer_then(call, msg, ice_verified);
        return;
    }
    /* An internal caller with an API key: the key id is the identity. */
    rtc_jwt_claims c = {0};
    if (!require_key_id(call, RTC_APIKEY_ISSUE, c.identity))
        return;
    pending *p = pending_new(call, msg, ice_verified);
    if (p)
        ice_verified(p, &c);
}

/* ---- DevLogin --------------------------------------------------------------- */

static void dev_login(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Auth__V1__DevLoginRequest *req = (const void *)msg;
    if (!A.dev) {
        rtc_grpc_call_finish(call, RTC_GRPC_UNIMPLEMENTED,
                             "DevLogin is only available when rtc-auth runs with --dev");
        return;
    }
    if (!valid_room(req->room_id)) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "room_id: required, 1-64 bytes of [A-Za-z0-9._-]");
        return;
    }
    if (!*req->display_name || !valid_text(req->display_name, MAX_TEXT)) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "display_name: required, 1-128 bytes of UTF-8 without control "
                             "characters");
        return;
    }
    char rnd[32];
    if (rtc_jwt_new_id(rnd, sizeof(rnd)) < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INTERNAL, "no randomness");
        return;
    }
    int64_t now = rtc_wall_ms();
    rtc_jwt_claims c = {0};
    snprintf(c.identity, sizeof(c.identity), "guest-%.12s", rnd);
    snprintf(c.room_id, sizeof(c.room_id), "%s", req->room_id);
    snprintf(c.display_name, sizeof(c.display_name), "%s", req->display_name);
    c.grants = RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_CREATE;
    c.session_started_at_ms = now;
    char *token = NULL;
    if (mint(&c, now, now + (int64_t)cfg.token_ttl, &token) < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INTERNAL, "cannot sign token");
        return;
    }
    Rtc__Auth__V1__DevLoginResponse resp = RTC__AUTH__V1__DEV_LOGIN_RESPONSE__INIT;
    resp.access_token = token;
    resp.token_id = c.token_id;
    resp.expires_at_ms = exp_seconds_ms(now + (int64_t)cfg.token_ttl);
    resp.identity = c.identity;
    rtc_grpc_call_reply(call, &resp.base);
    rtc_metric_inc(A.m_dev, 1);
    free(token);
}

/* ---- setup ------------------------------------------------------------------ */

static void on_redis_state(void *ud, bool up, const char *reason)
{
    (void)ud;
    rtc_service_set_ready(A.svc, up, up ? NULL : reason);
    rtc_grpc_server_set_health(A.grpc, SERVICE_NAME,
                               up ? RTC_GRPC_HEALTH_SERVING : RTC_GRPC_HEALTH_NOT_SERVING);
}

static int load_key_file(const char *path, bool signing)
{
    char *pem = NULL;
    size_t len = 0;
    int rc = rtc_read_file(path, 64 * 1024, &pem, &len);
    if (rc < 0) {
        rtc_error("cannot read key file", "path", path, "error",
                  rc == RTC_EIO ? strerror(errno) : rtc_strerror(rc));
        return rc;
    }
    char kid[64];
    rc = rtc_jwt_keyset_add_pem(A.keys, pem, len, NULL, 0, kid);
    OPENSSL_cleanse(pem, len);
    free(pem);
    if (rc < 0) {
        rtc_error("not a usable P-256 key", "path", path, "error", rtc_strerror(rc));
        return rc;
    }
    if (signing && (rc = rtc_jwt_keyset_set_signing(A.keys, kid)) < 0) {
        rtc_error("--signing-key must be a private key", "path", path);
        return rc;
    }
    rtc_info("key loaded", "kid", kid, "path", path, "signing", signing ? "true" : "false");
    return 0;
}

static int load_keys(void)
{
    int rc = rtc_jwt_keyset_new(&A.keys);
    if (rc < 0)
        return rc;
    if (cfg.signing_key && (rc = load_key_file(cfg.signing_key, true)) < 0)
        return rc;
    if (cfg.verify_keys) {
        char **paths;
        size_t n;
        if ((rc = split_list(cfg.verify_keys, &paths, &n)) < 0)
            return rc;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = load_key_file(paths[i], false);
        free_list(paths, n);
        if (rc < 0)
            return rc;
    }
    if (!cfg.signing_key) {
        if (!A.dev) {
            rtc_error("--signing-key is required (or --dev for an ephemeral key)");
            return RTC_EINVAL;
        }
        char kid[64];
        if ((rc = rtc_jwt_keyset_generate(A.keys, rtc_wall_ms(), kid)) < 0)
            return rc;
        if ((rc = rtc_jwt_keyset_set_signing(A.keys, kid)) < 0)
            return rc;
        rtc_warn("development mode: generated an in-memory signing key; its tokens die with "
                 "this process",
                 "kid", kid);
    }
    return 0;
}

static int load_api_keys(void)
{
    char err[300];
    int rc;
    if (cfg.api_keys_file && cfg.api_keys) {
        rtc_error("give --api-keys-file or --api-keys, not both");
        return RTC_EINVAL;
    }
    if (cfg.api_keys_file)
        rc = rtc_apikeys_load_file(cfg.api_keys_file, &A.apikeys, err, sizeof(err));
    else
        rc = rtc_apikeys_parse(cfg.api_keys ? cfg.api_keys : "", &A.apikeys, err, sizeof(err));
    if (rc < 0) {
        rtc_error("bad API keys", "error", err);
        return rc;
    }
    char n[24];
    snprintf(n, sizeof(n), "%zu", rtc_apikeys_count(A.apikeys));
    if (rtc_apikeys_count(A.apikeys) == 0)
        rtc_warn("no API keys configured: IssueToken, RevokeToken and VerifyToken will refuse "
                 "every caller");
    else
        rtc_info("API keys loaded", "count", n);
    return 0;
}

static int load_turn(void)
{
    int rc;
    if (cfg.turn_secret && cfg.turn_secret_file) {
        rtc_error("give --turn-secret or --turn-secret-file, not both");
        return RTC_EINVAL;
    }
    if (cfg.turn_secret_file) {
        size_t len;
        rc = rtc_read_file(cfg.turn_secret_file, MAX_TURN_SECRET, &A.turn_secret, &len);
        if (rc < 0) {
            rtc_error("cannot read --turn-secret-file", "path", cfg.turn_secret_file);
            return rc;
        }
        while (len && isspace((unsigned char)A.turn_secret[len - 1]))
            A.turn_secret[--len] = '\0';
    } else if (cfg.turn_secret) {
        A.turn_secret = strdup(cfg.turn_secret);
        if (!A.turn_secret)
            return RTC_ENOMEM;
    }
    if (A.turn_secret && !*A.turn_secret) {
        rtc_error("the TURN secret is empty");
        return RTC_EINVAL;
    }
    if ((rc = split_list(cfg.turn_urls, &A.turn_urls, &A.nturn)) < 0 ||
        (rc = split_list(cfg.stun_urls, &A.stun_urls, &A.nstun)) < 0) {
        rtc_error("too many ICE URLs (at most 16 each)");
        return rc;
    }
    if (!A.turn_secret && A.nturn)
        rtc_warn("no TURN secret: GetIceServers returns STUN servers only");
    return 0;
}

static rtc_metric *counter_child(rtc_metric_family *f, const char *v)
{
    const char *vals[] = {v};
    return f ? rtc_metric_child(f, vals) : NULL;
}

int rtc_auth_service_setup(rtc_service *svc, void *ud)
{
    (void)ud;
    int rc;
    memset(&A, 0, sizeof(A));
    A.svc = svc;
    A.grpc = rtc_service_grpc(svc);
    A.dev = rtc_service_config_get(svc)->dev;
    if (cfg.max_token_ttl < cfg.token_ttl) {
        rtc_error("--token-ttl is larger than --max-token-ttl");
        return RTC_EINVAL;
    }
    if ((rc = load_keys()) < 0 || (rc = load_api_keys()) < 0 || (rc = load_turn()) < 0)
        return rc;

    rtc_metrics *m = rtc_service_metrics(svc);
    static const char *const labels[] = {"method"};
    rtc_metric_family *f =
        rtc_metrics_family(m, RTC_METRIC_COUNTER, "rtc_auth_tokens_issued_total",
                           "Access tokens signed, by the RPC that asked.", 1, labels, NULL, 0);
    A.m_issued = counter_child(f, "IssueToken");
    A.m_refreshed = counter_child(f, "RefreshToken");
    A.m_dev = counter_child(f, "DevLogin");
    A.m_revoked = rtc_metrics_counter(m, "rtc_auth_tokens_revoked_total", "RevokeToken successes.");

    rtc_redis_options ro;
    rtc_redis_options_init(&ro);
    ro.url = cfg.redis;
    ro.client_name = "rtc-auth";
    ro.sentinels = cfg.sentinels;
    ro.master_name = cfg.master_name;
    ro.sentinel_password = cfg.sentinel_password;
    if ((rc = rtc_redis_new(rtc_service_loop(svc), &ro, m, &A.redis)) < 0) {
        rtc_error("bad Redis settings (--redis, --sentinels, --master-name)", "error",
                  rtc_strerror(rc));
        return rc;
    }
    rtc_redis_on_state(A.redis, on_redis_state, NULL);

    rtc_verifier_options vo;
    rtc_verifier_options_init(&vo);
    vo.issuer = cfg.issuer;
    vo.audience = cfg.audience;
    vo.leeway_ms = (int64_t)cfg.leeway;
    vo.cache_capacity = (size_t)cfg.verify_cache;
    vo.revocation_check_ms = cfg.revocation_check;
    vo.keys = A.keys;
    vo.redis = A.redis;
    if ((rc = rtc_verifier_new(rtc_service_loop(svc), &vo, m, &A.verifier)) < 0)
        return rc;

    const ProtobufCServiceDescriptor *d = &rtc__auth__v1__auth__descriptor;
    if ((rc = rtc_grpc_server_add_service(A.grpc, d)) < 0)
        return rc;
    static const struct {
        const char *method;
        rtc_grpc_handler_fn fn;
    } handlers[] = {
        {"IssueToken", issue_token},
        {"RefreshToken", refresh_token},
        {"RevokeToken", revoke_token},
        {"VerifyToken", verify_token},
        {"GetSigningKeys", get_signing_keys},
        {"GetIceServers", get_ice_servers},
        {"DevLogin", dev_login},
    };
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
        rc = rtc_grpc_server_handle(A.grpc, d, handlers[i].method, RTC_GRPC_UNARY, handlers[i].fn,
                                    NULL);
        if (rc < 0)
            return rc;
    }
    /* Not ready until Redis answers; the state callback flips both. */
    if (!rtc_redis_ready(A.redis)) {
        rtc_service_set_ready(svc, false, "redis: connecting");
        rtc_grpc_server_set_health(A.grpc, SERVICE_NAME, RTC_GRPC_HEALTH_NOT_SERVING);
    }
    return 0;
}

void rtc_auth_service_cleanup(rtc_service *svc, void *ud)
{
    (void)svc;
    (void)ud;
    rtc_verifier_free(A.verifier);
    A.verifier = NULL;
    if (A.redis) {
        rtc_redis_close(A.redis);
        A.redis = NULL;
    }
    rtc_jwt_keyset_free(A.keys);
    rtc_apikeys_free(A.apikeys);
    if (A.turn_secret) {
        OPENSSL_cleanse(A.turn_secret, strlen(A.turn_secret));
        free(A.turn_secret);
    }
    free_list(A.turn_urls, A.nturn);
    free_list(A.stun_urls, A.nstun);
    memset(&A, 0, sizeof(A));
}

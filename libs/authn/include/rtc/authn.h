/* rtc/authn.h — who is calling: internal API keys and end-user bearer
 * tokens, for every service that links it.
 *
 * API keys (`authorization: Basic base64(key_id:secret)`) are loaded from a
 * file or a string (the RTC_API_KEYS environment variable). Secrets are
 * kept only as SHA-256 digests and compared in constant time.
 *
 * Bearer tokens (`authorization: Bearer <jwt>`) go through rtc_verifier:
 *   1. a verified-token cache: a token seen before costs one SHA-256, not an
 *      ECDSA verify, until it expires;
 *   2. otherwise strict ES256 verification (rtc/jwt.h) against public keys
 *      that are either given (rtc-auth itself) or fetched with
 *      GetSigningKeys from rtc-auth and refreshed after max_age_ms, or at
 *      once (rate-limited) when a token names an unknown kid;
 *   3. revocation: `EXISTS rtc:auth:revoked:<jti>` in Redis, at most every
 *      revocation_check_ms per cached token. So a revoked token is refused
 *      everywhere within revocation_check_ms of RevokeToken (the bound).
 *      With Redis down a token whose check is due fails closed:
 *      RTC_EUNAVAIL, which callers return as gRPC UNAVAILABLE. */
#ifndef RTC_AUTHN_H
#define RTC_AUTHN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "rtc/grpc.h"
#include "rtc/jwt.h"
#include "rtc/metrics.h"
#include "rtc/redis.h"

/* ---- API keys ---------------------------------------------------------- */

/* Rights an API key may hold. */
enum {
    RTC_APIKEY_ISSUE = 1u << 0,  /* IssueToken */
    RTC_APIKEY_REVOKE = 1u << 1, /* RevokeToken */
    RTC_APIKEY_VERIFY = 1u << 2, /* VerifyToken */
    RTC_APIKEY_ADMIN = 1u << 3,  /* SignalingAdmin; implies every right */
};

typedef enum {
    RTC_AUTHN_OK = 0,
    RTC_AUTHN_UNAUTHENTICATED,   /* missing, malformed, unknown key or wrong secret */
    RTC_AUTHN_PERMISSION_DENIED, /* a valid key without the right */
} rtc_authn_result;

typedef struct rtc_apikeys rtc_apikeys;

/* Parse API keys. Text format, one key per entry; entries are separated by
 * newlines or ';'; '#' starts a comment; fields by whitespace or ':':
 *     <key_id> <secret> <right>[,<right>…]
 * rights: issue, revoke, verify, admin. A secret written as
 * "sha256:<64 hex>" is taken as its digest. key_id: [A-Za-z0-9_.-]{1,64};
 * secrets of at least 16 bytes. Errors are one line in err
 * ("line 3: unknown right 'foo'"). An empty text gives an empty set. */
int rtc_apikeys_parse(const char *text, rtc_apikeys **out, char *err, size_t errlen);
int rtc_apikeys_load_file(const char *path, rtc_apikeys **out, char *err, size_t errlen);
size_t rtc_apikeys_count(const rtc_apikeys *k);
void rtc_apikeys_free(rtc_apikeys *k);

/* Check an `authorization` header value (may be NULL) for a key that holds
 * every right in need. key_id_out (>= 65 bytes, may be NULL) gets the key
 * id on success. Constant time in the secret. */
rtc_authn_result rtc_apikeys_check(const rtc_apikeys *k, const char *authorization, uint32_t need,
                                   char *key_id_out);

/* ---- bearer ------------------------------------------------------------ */

/* The token in "Bearer <token>" (scheme case-insensitive, one space or
 * more). false when the header is absent or not a bearer header. */
bool rtc_authn_bearer(const char *authorization, const char **token, size_t *len);
/* True when the header uses the Basic scheme. */
bool rtc_authn_is_basic(const char *authorization);

/* ---- verifier ---------------------------------------------------------- */

typedef struct rtc_verifier rtc_verifier;
typedef struct rtc_verifier_req rtc_verifier_req;

typedef struct rtc_verifier_options {
    const char *issuer;           /* required iss, default "rtc" */
    const char *audience;         /* required aud entry, default "rtc" */
    int64_t leeway_ms;            /* default 30000 */
    size_t cache_capacity;        /* verified tokens kept, default 100000 */
    uint64_t revocation_check_ms; /* recheck period per token, default 5000 */
    /* Keys: either local (not owned; rtc-auth passes its own keyset) … */
    const rtc_jwt_keyset *keys;
    /* … or fetched from rtc-auth with GetSigningKeys on this channel
     * (not owned). */
    rtc_grpc_channel *auth;
    uint64_t keys_refresh_min_ms; /* least time between fetches, default 5000 */
    /* Revocation store (not owned). NULL = no revocation check (tests only). */
    rtc_redis *redis;
    uint64_t redis_timeout_ms; /* default 1000 */
} rtc_verifier_options;

void rtc_verifier_options_init(rtc_verifier_options *o);

int rtc_verifier_new(uv_loop_t *loop, const rtc_verifier_options *opts, rtc_metrics *metrics,
                     rtc_verifier **out);
/* Pending requests get their callback with RTC_ECLOSED first. */
void rtc_verifier_free(rtc_verifier *v);

/* Synchronous fast path: true when the token is in the cache, unexpired,
 * and its revocation status is fresh; claims are copied out. false means
 * "ask rtc_verifier_verify" (not "invalid"). Answers keep call order: while
 * answers of earlier rtc_verifier_verify calls are pending, this returns
 * false, so a caller that acts in answer order never lets a later call
 * overtake an earlier one. */
bool rtc_verifier_verify_cached(rtc_verifier *v, const char *token, size_t len,
                                rtc_jwt_claims *claims);

/* err: 0 and reason RTC_JWT_OK with claims; 0 and a reason (claims NULL)
 * when the token is refused; RTC_EUNAVAIL when keys or revocation status
 * cannot be had now; RTC_ECLOSED on free. detail is a short text for logs
 * and error messages (never the token). */
typedef void (*rtc_verifier_done_fn)(void *ud, int err, rtc_jwt_error reason,
                                     const rtc_jwt_claims *claims, const char *detail);

/* Full path. The callback runs once, later from the loop (never inside
 * this call). req (may be NULL) can be cancelled, after which the
 * callback does not run. */
int rtc_verifier_verify(rtc_verifier *v, const char *token, size_t len, rtc_verifier_done_fn fn,
                        void *ud, rtc_verifier_req **req);
void rtc_verifier_req_cancel(rtc_verifier_req *req);

/* A local revocation (rtc-auth's RevokeToken): forget cached entries for
 * this jti so this process refuses it at once. */
void rtc_verifier_forget(rtc_verifier *v, const char *jti);

/* The Redis key that marks a revoked token id: "rtc:auth:revoked:<jti>". */
int rtc_authn_revoked_key(const char *jti, char *out, size_t outlen);

#endif

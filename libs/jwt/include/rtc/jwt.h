/* rtc/jwt.h — ES256 access tokens: keys, signing, strict verification, a
 * verified-token cache. No I/O: the caller passes the time and the bytes.
 *
 * Why not plain libjwt 1.10: it takes the algorithm from the token header
 * (so `alg: none` or HS256 keyed with a public key get through unless the
 * caller pins it), checks no claim, and parses the PEM key on every call
 * (bench/jwt/run: 1,405 signs/s against 33,322 for rtc_jwt_sign and 35,939
 * for openssl speed, same run). This module pins ES256, checks every claim, and keeps keys parsed
 * (OpenSSL EVP_PKEY). libjwt stays in the tests as an independent
 * implementation that must accept what we sign and vice versa.
 *
 * Token format (JWS compact, RFC 7515/7519):
 *   header  {"alg":"ES256","typ":"JWT","kid":"<kid>"}
 *   claims  iss, aud (string or array), sub (identity), iat, nbf, exp
 *           (NumericDate seconds), jti, and the rtc claims
 *           "room" (room id), "grants" (array of "join"/"create"/"list"/
 *           "admin"), "name" (display name), "auth_time" (session start, seconds).
 *   signature  raw r||s, 64 bytes, base64url without padding.
 * A key's id is its RFC 7638 JWK thumbprint unless one is given. */
#ifndef RTC_JWT_H
#define RTC_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Tokens longer than this are refused before any decoding. */
#define RTC_JWT_MAX_TOKEN 8192

/* Grants, as a bit set. Bit values match rtc.auth.v1.Grant: 1 << Grant. */
enum {
    RTC_JWT_GRANT_JOIN = 1u << 1,
    RTC_JWT_GRANT_CREATE = 1u << 2,
    RTC_JWT_GRANT_LIST = 1u << 3,
    RTC_JWT_GRANT_ADMIN = 1u << 4,
};

/* Why a token was refused. Values match rtc.auth.v1.TokenError. */
typedef enum {
    RTC_JWT_OK = 0,
    RTC_JWT_MALFORMED = 1,
    RTC_JWT_UNSUPPORTED_ALGORITHM = 2,
    RTC_JWT_UNKNOWN_KEY = 3,
    RTC_JWT_BAD_SIGNATURE = 4,
    RTC_JWT_EXPIRED = 5,
    RTC_JWT_NOT_YET_VALID = 6,
    RTC_JWT_WRONG_ISSUER = 7,
    RTC_JWT_WRONG_AUDIENCE = 8,
    RTC_JWT_REVOKED = 9,          /* set by callers that check revocation */
    RTC_JWT_SESSION_EXPIRED = 10, /* set by callers that cap session life */
} rtc_jwt_error;

/* Stable lower-case name ("expired", "bad_signature", …). */
const char *rtc_jwt_error_name(rtc_jwt_error e);

#define RTC_JWT_MAX_AUDIENCES 8

/* Plain data. Strings are NUL-terminated copies; lengths are capped and
 * tokens with longer values are MALFORMED. Times are Unix milliseconds
 * (the token carries seconds; nbf/iat/exp come back as s*1000). */
typedef struct rtc_jwt_claims {
    char issuer[128];
    char audience[RTC_JWT_MAX_AUDIENCES][128];
    size_t naudience;
    char identity[129];            /* sub: 1-128 bytes */
    int64_t issued_at_ms;          /* iat */
    int64_t not_before_ms;         /* nbf */
    int64_t expires_at_ms;         /* exp */
    char token_id[65];             /* jti: at most 64 bytes */
    char room_id[128];             /* room; "" = none */
    uint32_t grants;               /* RTC_JWT_GRANT_* bits */
    char display_name[129];        /* name: at most 128 bytes */
    int64_t session_started_at_ms; /* auth_time (s*1000); 0 = absent */
    char key_id[64];               /* kid from the header */
} rtc_jwt_claims;

/* ---- keys ------------------------------------------------------------ */

/* Signing and verifying only read a keyset (each key's OpenSSL contexts
 * are guarded internally), so several threads may sign and verify at once;
 * adding, clearing or set_signing needs the caller's exclusion. */
typedef struct rtc_jwt_keyset rtc_jwt_keyset;

int rtc_jwt_keyset_new(rtc_jwt_keyset **out);
void rtc_jwt_keyset_free(rtc_jwt_keyset *ks);

/* Add a P-256 key from PEM (a private key: may sign and verifies; a public
 * key: verifies only). kid NULL = the RFC 7638 thumbprint. created_at_ms is
 * informational (GetSigningKeys). The first private key added becomes the
 * signing key unless rtc_jwt_keyset_set_signing picks another.
 * RTC_EINVAL: not a P-256 key, unparsable, encrypted, or empty, or a kid
 * that is not 1-63 printable ASCII characters; RTC_EEXIST: kid already
 * present. The new kid is copied to kid_out (>= 64 bytes) if non-NULL. */
int rtc_jwt_keyset_add_pem(rtc_jwt_keyset *ks, const char *pem, size_t len, const char *kid,
                           int64_t created_at_ms, char *kid_out);
/* Make an existing private key the signing key. RTC_ENOTFOUND / RTC_EINVAL
 * (public only). */
int rtc_jwt_keyset_set_signing(rtc_jwt_keyset *ks, const char *kid);
/* Generate a fresh P-256 private key (dev mode) and add it. */
int rtc_jwt_keyset_generate(rtc_jwt_keyset *ks, int64_t created_at_ms, char *kid_out);
/* Remove every key (before a refresh from GetSigningKeys). */
void rtc_jwt_keyset_clear(rtc_jwt_keyset *ks);

typedef struct rtc_jwt_key_info {
    const char *kid;
    const char *public_pem; /* SubjectPublicKeyInfo PEM */
    /* {"kty":"EC","crv":"P-256","x":…,"y":…,"kid":…,"alg":"ES256","use":"sig"} */
    const char *jwk_json;
    int64_t created_at_ms;
    bool signing;
    bool has_private;
} rtc_jwt_key_info;

/* Keys in insertion order; pointers valid until the keyset changes. */
size_t rtc_jwt_keyset_count(const rtc_jwt_keyset *ks);
int rtc_jwt_keyset_get(const rtc_jwt_keyset *ks, size_t i, rtc_jwt_key_info *out);
/* kid of the signing key, or NULL. */
const char *rtc_jwt_keyset_signing_kid(const rtc_jwt_keyset *ks);

/* ---- sign ------------------------------------------------------------ */

/* Sign claims with the signing key. Uses issuer, audience, identity,
 * issued_at_ms/not_before_ms/expires_at_ms (rounded down to seconds),
 * token_id, room_id, grants, display_name, session_started_at_ms.
 * key_id is ignored (the signing key's kid is used). iss, aud, iat, nbf,
 * room, grants, name and auth_time are left out when empty / zero. *out is
 * malloc'd, NUL-terminated. RTC_EINVAL (no signing key, missing sub/jti/exp),
 * RTC_ENOMEM. */
int rtc_jwt_sign(const rtc_jwt_keyset *ks, const rtc_jwt_claims *claims, char **out);

/* ---- verify ---------------------------------------------------------- */

typedef struct rtc_jwt_policy {
    const char *issuer;   /* required iss; NULL = not checked */
    const char *audience; /* must be in aud; NULL = not checked */
    int64_t leeway_ms;    /* clock skew allowed on exp/nbf/iat, e.g. 30000 */
    int64_t now_ms;       /* the caller's wall clock */
} rtc_jwt_policy;

/* Verify a token: length cap, three base64url parts, header JSON with
 * alg exactly "ES256" (anything else, "none" included, is
 * UNSUPPORTED_ALGORITHM), typ absent or "JWT", kid present and in ks,
 * ECDSA P-256 signature over the first two parts, then claims: exp
 * present and exp + leeway > now, nbf - leeway <= now, iat - leeway <=
 * now, iss and aud as the policy says, sub and jti present, types right.
 * Returns RTC_JWT_OK and fills *claims (may be NULL), or the reason;
 * detail (may be NULL) gets a short human-readable explanation, never the
 * token. Never reads past len. A signature that is not 64 bytes is
 * BAD_SIGNATURE; a kid that no key could have (not 1-63 printable ASCII)
 * is MALFORMED, not UNKNOWN_KEY, so it cannot trigger a key refresh. */
rtc_jwt_error rtc_jwt_verify(const rtc_jwt_keyset *ks, const char *token, size_t len,
                             const rtc_jwt_policy *policy, rtc_jwt_claims *claims, char *detail,
                             size_t detail_len);

/* ---- verified-token cache -------------------------------------------- */

/* Maps a token (by SHA-256) to its verified claims until the token
 * expires, so a hot path pays one hash instead of one ECDSA verify.
 * Bounded: when full, expired entries go first, then the oldest. Each
 * entry also remembers when its revocation status was last confirmed,
 * so callers can recheck revocation every N ms without re-verifying.
 * "Expired" when choosing a victim means at the latest time the cache has
 * been given (now_ms of get, checked_at_ms of put/touch). Capacity is
 * 1..2^26 (RTC_EINVAL otherwise); memory grows with use, not capacity.
 * Not thread-safe: one loop owns a cache. */
typedef struct rtc_jwt_cache rtc_jwt_cache;

int rtc_jwt_cache_new(size_t capacity, rtc_jwt_cache **out);
void rtc_jwt_cache_free(rtc_jwt_cache *c);

/* Look a token up. Returns true and copies its claims when present and
 * not expired at now_ms (expired entries are dropped). *checked_at_ms gets
 * the time of the last revocation confirmation (0 = never). */
bool rtc_jwt_cache_get(rtc_jwt_cache *c, const char *token, size_t len, int64_t now_ms,
                       rtc_jwt_claims *claims, int64_t *checked_at_ms);
/* Insert or replace. */
int rtc_jwt_cache_put(rtc_jwt_cache *c, const char *token, size_t len, const rtc_jwt_claims *claims,
                      int64_t checked_at_ms);
/* Record a fresh revocation confirmation for a cached token. */
void rtc_jwt_cache_touch(rtc_jwt_cache *c, const char *token, size_t len, int64_t checked_at_ms);
/* Drop every entry with this jti (after a local revocation). */
void rtc_jwt_cache_forget_jti(rtc_jwt_cache *c, const char *jti);
void rtc_jwt_cache_clear(rtc_jwt_cache *c);
size_t rtc_jwt_cache_size(const rtc_jwt_cache *c);

/* ---- helpers shared with callers -------------------------------------- */

/* Random token id: 22 chars of base64url (128 bits) + NUL; out >= 23 bytes.
 * RTC_EINVAL (out too small), RTC_EIO (no randomness). */
int rtc_jwt_new_id(char *out, size_t outlen);
/* "join" ↔ RTC_JWT_GRANT_JOIN, etc. 0 for unknown; NULL for a bit that is
 * not exactly one known grant. */
uint32_t rtc_jwt_grant_from_name(const char *name);
const char *rtc_jwt_grant_name(uint32_t bit);

#endif

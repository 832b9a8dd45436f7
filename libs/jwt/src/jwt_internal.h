/* jwt_internal.h — what the rtc_jwt sources share; never included from
 * outside libs/jwt. */
#ifndef RTC_JWT_INTERNAL_H
#define RTC_JWT_INTERNAL_H

#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rtc/jwt.h"

/* ---- base64url (RFC 4648 §5, no padding) ------------------------------ */

/* Characters needed for n bytes, without the NUL. */
size_t jwt_b64url_len(size_t n);
/* Writes jwt_b64url_len(n) characters and a NUL. */
void jwt_b64url_encode(const uint8_t *in, size_t n, char *out);
/* True when every byte of s[0..n) is in the base64url alphabet. */
bool jwt_b64url_charset_ok(const char *s, size_t n);
/* Strict decode: alphabet only, no '=', no impossible length (n % 4 == 1),
 * zero trailing bits (one encoding per byte string). out has room for
 * n * 3 / 4 bytes. -1 on any violation. */
int jwt_b64url_decode(const char *in, size_t n, uint8_t *out, size_t *outlen);

/* 9999-12-31T23:59:59Z. NumericDates beyond are nonsense; the bound keeps
 * every millisecond computation far from overflow. */
#define JWT_MAX_SECONDS 253402300799LL
#define JWT_MAX_MS      (JWT_MAX_SECONDS * 1000 + 999)

/* ---- keys ------------------------------------------------------------- */

#define JWT_KID_MAX 64 /* buffer size, NUL included (rtc_jwt_claims.key_id) */

/* Key ids end up in token headers, logs and error details: 1 to
 * JWT_KID_MAX - 1 printable ASCII characters. */
bool jwt_kid_ok(const char *kid, size_t n);

typedef struct jwt_key {
    char kid[JWT_KID_MAX];
    EVP_PKEY *pkey;
    bool has_private;
    int64_t created_at_ms;
    char *public_pem;
    char *jwk_json;
    char *header_b64; /* the signing header, encoded once: it only names the kid */
    /* Contexts initialised once (sign_init / verify_init are the costly
     * part after key parsing). Used under `lock`; a caller that finds the
     * lock taken builds a private context instead of waiting, so a keyset
     * stays usable from several threads. */
    pthread_mutex_t lock;
    EVP_PKEY_CTX *sign_ctx; /* NULL for public keys */
    EVP_PKEY_CTX *verify_ctx;
} jwt_key;

/* The keyset owns its keys; a const keyset still hands out mutable keys
 * because signing and verifying use the per-key contexts. */
jwt_key *jwt_keyset_find(const rtc_jwt_keyset *ks, const char *kid);
jwt_key *jwt_keyset_signer(const rtc_jwt_keyset *ks);

/* SHA-256 with the keyset's pre-fetched digest (no per-call fetch). */
int jwt_keyset_sha256(const rtc_jwt_keyset *ks, const void *data, size_t len, uint8_t out[32]);

/* ES256 over a SHA-256 digest: raw r||s (64 bytes) in and out. 0 / -1. */
int jwt_key_sign_digest(jwt_key *k, const uint8_t digest[32], uint8_t sig[64]);
/* 1 valid, 0 not. */
int jwt_key_verify_digest(jwt_key *k, const uint8_t digest[32], const uint8_t sig[64]);

#endif

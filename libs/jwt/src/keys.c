/* keys.c — the keyset: P-256 keys parsed once, with everything a caller
 * asks for per key (public PEM, JWK, RFC 7638 thumbprint) computed at
 * insertion, and the OpenSSL contexts that make signing and verifying
 * cost only the ECDSA arithmetic.
 *
 * Only P-256 is accepted: ES256 is the one algorithm tokens may use, so a
 * key of any other type or curve can only be a configuration mistake. */
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jwt_internal.h"
#include "rtc/error.h"

struct rtc_jwt_keyset {
    jwt_key **keys; /* insertion order */
    size_t n, cap;
    jwt_key *signing; /* NULL = cannot sign */
    EVP_MD *sha256;   /* fetched once: an implicit fetch per hash is slow */
};

int rtc_jwt_keyset_new(rtc_jwt_keyset **out)
{
    if (!out)
        return RTC_EINVAL;
    *out = NULL;
    rtc_jwt_keyset *ks = calloc(1, sizeof(*ks));
    if (!ks)
        return RTC_ENOMEM;
    ks->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!ks->sha256) {
        free(ks);
        return RTC_ENOMEM;
    }
    *out = ks;
    return 0;
}

static void key_free(jwt_key *k)
{
    if (!k)
        return;
    EVP_PKEY_CTX_free(k->sign_ctx);
    EVP_PKEY_CTX_free(k->verify_ctx);
    EVP_PKEY_free(k->pkey);
    free(k->public_pem);
    free(k->jwk_json);
    free(k->header_b64);
    pthread_mutex_destroy(&k->lock);
    free(k);
}

void rtc_jwt_keyset_clear(rtc_jwt_keyset *ks)
{
    if (!ks)
        return;
    for (size_t i = 0; i < ks->n; i++)
        key_free(ks->keys[i]);
    ks->n = 0;
    ks->signing = NULL;
}

void rtc_jwt_keyset_free(rtc_jwt_keyset *ks)
{
    if (!ks)
        return;
    rtc_jwt_keyset_clear(ks);
    free(ks->keys);
    EVP_MD_free(ks->sha256);
    free(ks);
}

jwt_key *jwt_keyset_find(const rtc_jwt_keyset *ks, const char *kid)
{
    /* A handful of keys at most (current + rotated-out): a scan is fastest. */
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->keys[i]->kid, kid) == 0)
            return ks->keys[i];
    return NULL;
}

jwt_key *jwt_keyset_signer(const rtc_jwt_keyset *ks)
{
    return ks->signing;
}

int jwt_keyset_sha256(const rtc_jwt_keyset *ks, const void *data, size_t len, uint8_t out[32])
{
    unsigned int n = 0;
    if (EVP_Digest(data, len, out, &n, ks->sha256, NULL) != 1 || n != 32)
        return -1;
    return 0;
}

/* ---- adding keys ------------------------------------------------------- */

/* Never prompt on a terminal for an encrypted PEM: refuse it. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static bool is_p256(EVP_PKEY *pkey)
{
    char group[64];
    size_t len = 0;
    if (!EVP_PKEY_is_a(pkey, "EC"))
        return false;
    if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &len) != 1)
        return false;
    return strcmp(group, SN_X9_62_prime256v1) == 0;
}

static bool has_private_part(EVP_PKEY *pkey)
{
    BIGNUM *d = NULL;
    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &d) != 1)
        return false;
    BN_clear_free(d);
    return true;
}

bool jwt_kid_ok(const char *kid, size_t n)
{
    if (n == 0 || n >= JWT_KID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)kid[i] < 0x20 || (unsigned char)kid[i] > 0x7e)
            return false;
    return true;
}

static int coordinate(EVP_PKEY *pkey, const char *param, char out[44])
{
    BIGNUM *bn = NULL;
    uint8_t raw[32];
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
        return -1;
    int ok = BN_bn2binpad(bn, raw, sizeof(raw)) == (int)sizeof(raw);
    BN_free(bn);
    if (!ok)
        return -1;
    jwt_b64url_encode(raw, sizeof(raw), out);
    return 0;
}

static char *public_pem(EVP_PKEY *pkey)
{
    char *out = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio)
        return NULL;
    if (PEM_write_bio_PUBKEY(bio, pkey) == 1) {
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        if (n > 0 && (out = malloc((size_t)n + 1)) != NULL) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
        }
    }
    BIO_free(bio);
    return out;
}

static char *header_b64(const char *kid)
{
    char *out = NULL;
    json_t *o = json_pack("{s:s, s:s, s:s}", "alg", "ES256", "typ", "JWT", "kid", kid);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    if (s && (out = malloc(jwt_b64url_len(strlen(s)) + 1)) != NULL)
        jwt_b64url_encode((const uint8_t *)s, strlen(s), out);
    free(s);
    json_decref(o);
    return out;
}

static char *jwk_json(const char *x, const char *y, const char *kid)
{
    /* jansson keeps insertion order: the members come out as documented. */
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "kty", "EC", "crv", "P-256", "x",
                          x, "y", y, "kid", kid, "alg", "ES256", "use", "sig");
    if (!o)
        return NULL;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Takes ownership of pkey, on failure too. */
static int add_pkey(rtc_jwt_keyset *ks, EVP_PKEY *pkey, const char *kid, int64_t created_at_ms,
                    char *kid_out)
{
    int rc = RTC_EINVAL;
    jwt_key *k = NULL;
    char x[44], y[44], canon[160];
    uint8_t digest[32];

    if (!is_p256(pkey))
        goto out;
    if (kid && !jwt_kid_ok(kid, strlen(kid)))
        goto out;
    if (coordinate(pkey, OSSL_PKEY_PARAM_EC_PUB_X, x) < 0 ||
        coordinate(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, y) < 0)
        goto out;

    k = calloc(1, sizeof(*k));
    if (!k) {
        rc = RTC_ENOMEM;
        goto out;
    }
    if (pthread_mutex_init(&k->lock, NULL) != 0) {
        free(k);
        k = NULL;
        rc = RTC_ENOMEM;
        goto out;
    }
    k->pkey = pkey;
    pkey = NULL;
    k->has_private = has_private_part(k->pkey);
    k->created_at_ms = created_at_ms;

    if (kid) {
        strcpy(k->kid, kid); /* length checked by jwt_kid_ok */
    } else {
        /* RFC 7638: the required members, lexicographic order, no spaces. */
        int n = snprintf(canon, sizeof(canon),
                         "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", x, y);
        if (n < 0 || (size_t)n >= sizeof(canon) ||
            jwt_keyset_sha256(ks, canon, (size_t)n, digest) < 0)
            goto out;
        jwt_b64url_encode(digest, sizeof(digest), k->kid);
    }
    if (jwt_keyset_find(ks, k->kid)) {
        rc = RTC_EEXIST;
        goto out;
    }

    rc = RTC_ENOMEM;
    k->public_pem = public_pem(k->pkey);
    k->jwk_json = jwk_json(x, y, k->kid);
    k->header_b64 = header_b64(k->kid);
    if (!k->public_pem || !k->jwk_json || !k->header_b64)
        goto out;
    k->verify_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
    if (!k->verify_ctx || EVP_PKEY_verify_init(k->verify_ctx) != 1)
        goto out;
    if (k->has_private) {
        k->sign_ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
        if (!k->sign_ctx || EVP_PKEY_sign_init(k->sign_ctx) != 1)
            goto out;
    }

    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 4;
        jwt_key **keys = realloc(ks->keys, cap * sizeof(*keys));
        if (!keys)
            goto out;
        ks->keys = keys;
        ks->cap = cap;
    }
    ks->keys[ks->n++] = k;
    if (k->has_private && !ks->signing)
        ks->signing = k;
    if (kid_out)
        memcpy(kid_out, k->kid, JWT_KID_MAX);
    k = NULL;
    rc = 0;
out:
    key_free(k);
    EVP_PKEY_free(pkey);
    return rc;
}

int rtc_jwt_keyset_add_pem(rtc_jwt_keyset *ks, const char *pem, size_t len, const char *kid,
                           int64_t created_at_ms, char *kid_out)
{
    if (!ks || !pem || len == 0 || len > INT_MAX)
        return RTC_EINVAL;
    ERR_set_mark();
    EVP_PKEY *pkey = NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio)
        pkey = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    if (bio && !pkey) {
        /* Not a private key: maybe a SubjectPublicKeyInfo. */
        BIO_free(bio);
        bio = BIO_new_mem_buf(pem, (int)len);
        if (bio)
            pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    }
    BIO_free(bio);
    int rc = pkey ? add_pkey(ks, pkey, kid, created_at_ms, kid_out) : RTC_EINVAL;
    ERR_pop_to_mark(); /* leave no error of ours in the thread's queue */
    return rc;
}

int rtc_jwt_keyset_generate(rtc_jwt_keyset *ks, int64_t created_at_ms, char *kid_out)
{
    if (!ks)
        return RTC_EINVAL;
    ERR_set_mark();
    EVP_PKEY *pkey = EVP_EC_gen(SN_X9_62_prime256v1);
    int rc = pkey ? add_pkey(ks, pkey, NULL, created_at_ms, kid_out) : RTC_ENOMEM;
    ERR_pop_to_mark();
    return rc;
}

int rtc_jwt_keyset_set_signing(rtc_jwt_keyset *ks, const char *kid)
{
    if (!ks || !kid)
        return RTC_EINVAL;
    jwt_key *k = jwt_keyset_find(ks, kid);
    if (!k)
        return RTC_ENOTFOUND;
    if (!k->has_private)
        return RTC_EINVAL;
    ks->signing = k;
    return 0;
}

size_t rtc_jwt_keyset_count(const rtc_jwt_keyset *ks)
{
    return ks ? ks->n : 0;
}

int rtc_jwt_keyset_get(const rtc_jwt_keyset *ks, size_t i, rtc_jwt_key_info *out)
{
    if (!ks || !out)
        return RTC_EINVAL;
    if (i >= ks->n)
        return RTC_ENOTFOUND;
    const jwt_key *k = ks->keys[i];
    out->kid = k->kid;
    out->public_pem = k->public_pem;
    out->jwk_json = k->jwk_json;
    out->created_at_ms = k->created_at_ms;
    out->signing = k == ks->signing;
    out->has_private = k->has_private;
    return 0;
}

const char *rtc_jwt_keyset_signing_kid(const rtc_jwt_keyset *ks)
{
    return ks && ks->signing ? ks->signing->kid : NULL;
}

/* ---- ES256 primitives -------------------------------------------------- */

/* JWS carries r||s; OpenSSL speaks DER. A P-256 DER signature is at most
 * 72 bytes (two 33-byte INTEGERs plus headers). */
#define DER_MAX 80

/* The key's shared context when it is free; under contention a private
 * one rather than a wait. Hand it back with release(). NULL without memory. */
static EVP_PKEY_CTX *borrow(jwt_key *k, bool for_sign, bool *locked, EVP_PKEY_CTX **own)
{
    *own = NULL;
    *locked = pthread_mutex_trylock(&k->lock) == 0;
    if (*locked)
        return for_sign ? k->sign_ctx : k->verify_ctx;
    *own = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
    if (*own && (for_sign ? EVP_PKEY_sign_init(*own) : EVP_PKEY_verify_init(*own)) == 1)
        return *own;
    return NULL;
}

static void release(jwt_key *k, bool locked, EVP_PKEY_CTX *own)
{
    if (locked)
        pthread_mutex_unlock(&k->lock);
    EVP_PKEY_CTX_free(own);
}

int jwt_key_sign_digest(jwt_key *k, const uint8_t digest[32], uint8_t sig[64])
{
    int rc = -1;
    uint8_t der[DER_MAX];
    size_t derlen = sizeof(der);
    const uint8_t *p = der;
    EVP_PKEY_CTX *own, *ctx;
    ECDSA_SIG *es = NULL;
    const BIGNUM *r = NULL, *s = NULL;
    bool locked;

    if (!k->has_private)
        return -1;
    ERR_set_mark();
    ctx = borrow(k, true, &locked, &own);
    int ok = ctx && EVP_PKEY_sign(ctx, der, &derlen, digest, 32) == 1;
    release(k, locked, own);
    if (!ok || !(es = d2i_ECDSA_SIG(NULL, &p, (long)derlen)))
        goto out;
    ECDSA_SIG_get0(es, &r, &s);
    if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32)
        goto out;
    rc = 0;
out:
    ECDSA_SIG_free(es);
    ERR_pop_to_mark();
    return rc;
}

int jwt_key_verify_digest(jwt_key *k, const uint8_t digest[32], const uint8_t sig[64])
{
    int valid = 0, derlen;
    uint8_t der[DER_MAX];
    uint8_t *p = der;
    EVP_PKEY_CTX *own, *ctx;
    BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG *es = NULL;
    bool locked;

    ERR_set_mark();
    r = BN_bin2bn(sig, 32, NULL);
    s = BN_bin2bn(sig + 32, 32, NULL);
    es = ECDSA_SIG_new();
    if (!r || !s || !es || ECDSA_SIG_set0(es, r, s) != 1)
        goto out;
    r = s = NULL; /* owned by es now */
    if (i2d_ECDSA_SIG(es, NULL) > DER_MAX || (derlen = i2d_ECDSA_SIG(es, &p)) <= 0)
        goto out;
    ctx = borrow(k, false, &locked, &own);
    valid = ctx && EVP_PKEY_verify(ctx, der, (size_t)derlen, digest, 32) == 1;
    release(k, locked, own);
out:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    ERR_pop_to_mark();
    return valid;
}

/* fuzz_jwt.c — libFuzzer target for rtc_jwt_verify (and the cache behind it).
 *
 * Random bytes almost never carry a valid ECDSA signature, so a plain
 * "token in, verdict out" target would stop at the signature check and
 * never reach the claims parser. The first byte therefore picks a mode:
 *
 *   'S'  the rest is "<header JSON>\n<payload JSON>": both are base64url-
 *        encoded here and signed with the fuzzer's key, so the header and
 *        claims checks see arbitrary JSON behind a valid signature;
 *   'U'  the same, but "\n<signature bytes>" follows and is used as is
 *        (header parsing, kid lookup, signature length and DER paths);
 *   else the rest is the token itself.
 *
 * Checks: the verdict is a documented one, detail is NUL-terminated, an
 * accepted token's strings are NUL-terminated inside their buffers and its
 * times are consistent, and an accepted token survives a trip through the
 * verified-token cache unchanged. */
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fuzzer's own P-256 key (test only); the seed corpus is signed
 * with it under kid "fuzz-key". */
static const char FUZZ_KEY_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBnvVZXMR/f3hiRWd\n"
    "EuKQ/dKWtrCPVha2S1c3Hrb+/RahRANCAARrxBVraXhILd2+D3yV7+Xwj1P3eoAn\n"
    "zzlSmN1tLAN0ov+M5WnXGi94mI0NlyJjsoEni+rmaMqbsttNFJZGAFOI\n"
    "-----END PRIVATE KEY-----\n";
#define FUZZ_KID    "fuzz-key"
#define FUZZ_NOW_MS 1700000000000LL

static rtc_jwt_keyset *keys;
static rtc_jwt_cache *cache;
static EVP_PKEY *pkey;
static const rtc_jwt_policy policy = {"rtc", "rtc", 30000, FUZZ_NOW_MS};

static void init(void)
{
    if (keys)
        return;
    if (rtc_jwt_keyset_new(&keys) != 0 ||
        rtc_jwt_keyset_add_pem(keys, FUZZ_KEY_PEM, sizeof(FUZZ_KEY_PEM) - 1, FUZZ_KID, 0, NULL) !=
            0 ||
        rtc_jwt_keyset_generate(keys, 0, NULL) != 0 || rtc_jwt_cache_new(64, &cache) != 0)
        abort();
    BIO *bio = BIO_new_mem_buf(FUZZ_KEY_PEM, -1);
    pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!pkey)
        abort();
}

static char *b64url(const uint8_t *in, size_t n, char *out)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = A[v >> 18];
        *out++ = A[(v >> 12) & 63];
        *out++ = A[(v >> 6) & 63];
        *out++ = A[v & 63];
    }
    if (n - i >= 1) {
        uint32_t v = (uint32_t)in[i] << 16 | (n - i == 2 ? (uint32_t)in[i + 1] << 8 : 0);
        *out++ = A[v >> 18];
        *out++ = A[(v >> 12) & 63];
        if (n - i == 2)
            *out++ = A[(v >> 6) & 63];
    }
    return out;
}

/* r||s over input with the fuzzer's key; 0 on success. */
static int sign(const char *input, size_t n, uint8_t sig[64])
{
    int rc = -1;
    uint8_t der[80];
    size_t derlen = sizeof(der);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pkey) == 1 &&
        EVP_DigestSign(ctx, der, &derlen, (const uint8_t *)input, n) == 1) {
        const uint8_t *p = der;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
        if (es && BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) == 32 &&
            BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) == 32)
            rc = 0;
        ECDSA_SIG_free(es);
    }
    EVP_MD_CTX_free(ctx);
    return rc;
}

static void check_string(const char *s, size_t cap)
{
    if (!memchr(s, '\0', cap))
        abort();
}

static void check(const char *token, size_t len)
{
    rtc_jwt_claims c, again;
    char detail[128];
    memset(&c, 0xa5, sizeof(c));
    memset(detail, 'x', sizeof(detail));
    rtc_jwt_error e = rtc_jwt_verify(keys, token, len, &policy, &c, detail, sizeof(detail));
    if (!memchr(detail, '\0', sizeof(detail)))
        abort();
    if (e < RTC_JWT_OK || e > RTC_JWT_WRONG_AUDIENCE)
        abort(); /* REVOKED and SESSION_EXPIRED are the callers' */
    if (e != RTC_JWT_OK)
        return;

    check_string(c.issuer, sizeof(c.issuer));
    check_string(c.identity, sizeof(c.identity));
    check_string(c.token_id, sizeof(c.token_id));
    check_string(c.room_id, sizeof(c.room_id));
    check_string(c.display_name, sizeof(c.display_name));
    check_string(c.key_id, sizeof(c.key_id));
    if (c.naudience < 1 || c.naudience > RTC_JWT_MAX_AUDIENCES)
        abort(); /* the policy names an audience, so there is one */
    for (size_t i = 0; i < c.naudience; i++)
        check_string(c.audience[i], sizeof(c.audience[i]));
    if (!c.identity[0] || !c.token_id[0] || strcmp(c.issuer, "rtc") != 0)
        abort();
    if (c.expires_at_ms + policy.leeway_ms <= FUZZ_NOW_MS)
        abort();
    if (c.grants & ~(uint32_t)(RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_CREATE | RTC_JWT_GRANT_LIST |
                               RTC_JWT_GRANT_ADMIN))
        abort();

    /* Through the cache and back. */
    if (rtc_jwt_cache_put(cache, token, len, &c, FUZZ_NOW_MS) != 0)
        abort();
    int64_t checked = 0;
    bool hit = rtc_jwt_cache_get(cache, token, len, FUZZ_NOW_MS, &again, &checked);
    if (hit != (c.expires_at_ms > FUZZ_NOW_MS))
        abort();
    if (hit) {
        if (checked != FUZZ_NOW_MS || strcmp(again.identity, c.identity) != 0 ||
            strcmp(again.token_id, c.token_id) != 0 || again.naudience != c.naudience ||
            again.expires_at_ms != c.expires_at_ms || again.grants != c.grants)
            abort();
        rtc_jwt_cache_forget_jti(cache, c.token_id);
        if (rtc_jwt_cache_get(cache, token, len, FUZZ_NOW_MS, &again, NULL))
            abort();
    }
}

/* Mode S / U: "<header>\n<payload>[\n<signature>]" → a token. */
static void build_and_check(const uint8_t *data, size_t size, bool sign_it)
{
    const uint8_t *nl = memchr(data, '\n', size);
    if (!nl)
        return;
    size_t hl = (size_t)(nl - data);
    const uint8_t *p = nl + 1;
    size_t pl = size - hl - 1, sl = 0;
    const uint8_t *s = NULL;
    if (!sign_it) {
        const uint8_t *nl2 = memchr(p, '\n', pl);
        if (!nl2)
            return;
        s = nl2 + 1;
        sl = pl - (size_t)(s - p);
        pl = (size_t)(nl2 - p);
    }
    /* Exactly as long as the token: ASan sees any read past len. */
    size_t cap = (hl + pl + (sign_it ? 64 : sl)) / 3 * 4 + 16;
    char *tok = malloc(cap);
    if (!tok)
        return;
    char *o = b64url(data, hl, tok);
    *o++ = '.';
    o = b64url(p, pl, o);
    size_t input_len = (size_t)(o - tok);
    *o++ = '.';
    if (sign_it) {
        uint8_t sig[64];
        if (sign(tok, input_len, sig) != 0)
            abort();
        o = b64url(sig, sizeof(sig), o);
    } else {
        o = b64url(s, sl, o);
    }
    size_t len = (size_t)(o - tok);
    char *exact = malloc(len ? len : 1);
    if (exact) {
        memcpy(exact, tok, len);
        check(exact, len);
        free(exact);
    }
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    if (mode == 'S' || mode == 'U') {
        /* The length cap applies to the token; bound the JSON so most
         * inputs stay under it and reach the parser. */
        if (size <= RTC_JWT_MAX_TOKEN)
            build_and_check(data, size, mode == 'S');
        return 0;
    }
    char *tok = malloc(size ? size : 1);
    if (!tok)
        return 0;
    memcpy(tok, data, size);
    check(tok, size);
    free(tok);
    return 0;
}

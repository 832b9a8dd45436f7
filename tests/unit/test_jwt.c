/* test_jwt.c — rtc_jwt: keys, signing, strict verification (every
 * rejection path on its own), the verified-token cache, and a cross-check
 * against libjwt as an independent implementation.
 *
 * Hostile tokens are built here with OpenSSL and jansson directly, not with
 * rtc_jwt_sign, so the verifier is tested against bytes it did not make:
 * a correctly signed token whose claims are wrong reaches the claims
 * checks, and one whose signature is wrong must stop before them. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "rtc/error.h"
#include "rtc/jwt.h"

#define NOW_MS    1700000000000LL
#define NOW_S     (NOW_MS / 1000)
#define LEEWAY_MS 30000

/* RFC 7515 Appendix A.3's P-256 key as PKCS#8, with its coordinates as
 * the RFC prints them, and its RFC 7638 thumbprint computed outside this
 * code base (Python hashlib over the canonical JWK). */
static const char RFC7515_A3_PEM[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjpsQnnGQmL+YBIff\n"
    "H1136cspYG6+0iY7X1fCE9+E9LKhRANCAAR/zc4ncPbEXUGDy+5v20t7WAczNXvp\n"
    "7xO6z248e9FURcfxRM0bvZt+hyzf7bnuufSzaV1uqQskrYpGIyiFiOWt\n"
    "-----END PRIVATE KEY-----\n";
#define RFC7515_A3_X          "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
#define RFC7515_A3_Y          "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
#define RFC7515_A3_THUMBPRINT "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U"

/* ---- shared keys (made once: RSA generation is slow) ------------------- */

static struct {
    EVP_PKEY *a, *b, *rsa, *p384;
    char *a_priv, *a_pub, *b_priv, *rsa_priv, *rsa_pub, *p384_priv, *p384_pub;
} K;

/* Per test: a keyset holding key A (signing), its kid, the policy. */
typedef struct {
    rtc_jwt_keyset *ks;
    char kid[64];
    char hdr[256]; /* {"alg":"ES256","typ":"JWT","kid":"<kid>"} */
    rtc_jwt_policy policy;
} fixture;

/* Memory the current test made; freed by teardown. */
static void *garbage[256];
static size_t ngarbage;

static void *keep(void *p)
{
    assert_non_null(p);
    assert_true(ngarbage < sizeof(garbage) / sizeof(garbage[0]));
    garbage[ngarbage++] = p;
    return p;
}

static char *pem_of(EVP_PKEY *k, int private)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    if (private)
        assert_int_equal(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL), 1);
    else
        assert_int_equal(PEM_write_bio_PUBKEY(bio, k), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    char *s = strndup(data, (size_t)n);
    BIO_free(bio);
    return s;
}

static int group_setup(void **state)
{
    K.a = EVP_EC_gen("P-256");
    K.b = EVP_EC_gen("P-256");
    K.rsa = EVP_RSA_gen(2048);
    K.p384 = EVP_EC_gen("P-384");
    if (!K.a || !K.b || !K.rsa || !K.p384)
        return -1;
    K.a_priv = pem_of(K.a, 1);
    K.a_pub = pem_of(K.a, 0);
    K.b_priv = pem_of(K.b, 1);
    K.rsa_priv = pem_of(K.rsa, 1);
    K.rsa_pub = pem_of(K.rsa, 0);
    K.p384_priv = pem_of(K.p384, 1);
    K.p384_pub = pem_of(K.p384, 0);
    return 0;
}

static int group_teardown(void **state)
{
    EVP_PKEY_free(K.a);
    EVP_PKEY_free(K.b);
    EVP_PKEY_free(K.rsa);
    EVP_PKEY_free(K.p384);
    free(K.a_priv);
    free(K.a_pub);
    free(K.b_priv);
    free(K.rsa_priv);
    free(K.rsa_pub);
    free(K.p384_priv);
    free(K.p384_pub);
    return 0;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f || rtc_jwt_keyset_new(&f->ks) != 0)
        return -1;
    if (rtc_jwt_keyset_add_pem(f->ks, K.a_priv, strlen(K.a_priv), NULL, 1, f->kid) != 0)
        return -1;
    snprintf(f->hdr, sizeof(f->hdr), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", f->kid);
    f->policy = (rtc_jwt_policy){"rtc", "rtc", LEEWAY_MS, NOW_MS};
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rtc_jwt_keyset_free(f->ks);
    free(f);
    for (size_t i = 0; i < ngarbage; i++)
        free(garbage[i]);
    ngarbage = 0;
    return 0;
}

/* ---- building tokens independently ----------------------------------- */

/* base64url via OpenSSL's base64, translated: not the code under test. */
static char *b64url(const void *data, size_t n)
{
    char *out = malloc(n / 3 * 4 + 8);
    assert_non_null(out);
    int len = EVP_EncodeBlock((unsigned char *)out, data, (int)n);
    while (len > 0 && out[len - 1] == '=')
        len--;
    out[len] = '\0';
    for (int i = 0; i < len; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return keep(out);
}

/* ES256 with OpenSSL: DER from EVP_DigestSign, converted to r||s. */
static void es256(EVP_PKEY *key, const char *input, size_t n, uint8_t sig[64])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t der[80];
    size_t derlen = sizeof(der);
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &derlen, (const uint8_t *)input, n), 1);
    EVP_MD_CTX_free(ctx);
    const uint8_t *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)derlen);
    assert_non_null(es);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32), 32);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32), 32);
    ECDSA_SIG_free(es);
}

/* "b64(header).b64(payload)" */
static char *signing_input(const char *header, const char *payload)
{
    const char *h = b64url(header, strlen(header)), *p = b64url(payload, strlen(payload));
    char *s = malloc(strlen(h) + strlen(p) + 2);
    sprintf(s, "%s.%s", h, p);
    return keep(s);
}

static char *with_sig(const char *input, const void *sig, size_t n)
{
    const char *s = b64url(sig, n);
    char *t = malloc(strlen(input) + strlen(s) + 2);
    sprintf(t, "%s.%s", input, s);
    return keep(t);
}

/* A token over these exact header and payload bytes, signed by key. */
static char *token_by(EVP_PKEY *key, const char *header, const char *payload)
{
    char *in = signing_input(header, payload);
    uint8_t sig[64];
    es256(key, in, strlen(in), sig);
    return with_sig(in, sig, sizeof(sig));
}

/* The claims every test starts from: valid for key A under the policy. */
static json_t *base_claims(void)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:[s, s], s:s, s:I}", "iss",
                          "rtc", "aud", "rtc", "sub", "user-1", "iat", (json_int_t)NOW_S - 10,
                          "nbf", (json_int_t)NOW_S - 10, "exp", (json_int_t)NOW_S + 3600, "jti",
                          "jti-1", "room", "room-1", "grants", "join", "list", "name", "Alice",
                          "auth_time", (json_int_t)NOW_S - 60);
    assert_non_null(o);
    return o;
}

/* The base claims with edits applied; edits is JSON text whose members
 * replace the base ones ("__delete__" removes a member). */
static char *payload(const char *edits)
{
    json_t *o = base_claims();
    if (edits) {
        json_error_t err;
        json_t *e = json_loads(edits, 0, &err);
        if (!e)
            fail_msg("bad edits %s: %s", edits, err.text);
        const char *k;
        json_t *v;
        json_object_foreach(e, k, v)
        {
            if (json_is_string(v) && strcmp(json_string_value(v), "__delete__") == 0)
                json_object_del(o, k);
            else
                json_object_set(o, k, v);
        }
        json_decref(e);
    }
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return keep(s);
}

static rtc_jwt_error verify(fixture *f, const char *tok, rtc_jwt_claims *c)
{
    char detail[256];
    rtc_jwt_claims local;
    memset(detail, 'x', sizeof(detail));
    rtc_jwt_error e =
        rtc_jwt_verify(f->ks, tok, strlen(tok), &f->policy, c ? c : &local, detail, sizeof(detail));
    assert_non_null(memchr(detail, '\0', sizeof(detail)));
    if (e != RTC_JWT_OK)
        assert_true(strlen(detail) > 0); /* every refusal says why */
    return e;
}

#define assert_verdict(f, tok, expected)                                                           \
    do {                                                                                           \
        rtc_jwt_error got_ = verify((f), (tok), NULL);                                             \
        if (got_ != (expected))                                                                    \
            fail_msg("%s:%d: expected %s, got %s", __FILE__, __LINE__,                             \
                     rtc_jwt_error_name(expected), rtc_jwt_error_name(got_));                      \
    } while (0)

/* The base token, signed by A: the control for every negative test. */
static char *good(fixture *f)
{
    return token_by(K.a, f->hdr, payload(NULL));
}

static void test_control_token_verifies(void **state)
{
    fixture *f = *state;
    rtc_jwt_claims c;
    assert_int_equal(verify(f, good(f), &c), RTC_JWT_OK);
    assert_string_equal(c.identity, "user-1");
    assert_string_equal(c.key_id, f->kid);
    assert_int_equal(c.grants, RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_LIST);
}

/* ---- shape ------------------------------------------------------------- */

static void test_reject_too_long(void **state)
{
    fixture *f = *state;
    /* Garbage over the cap … */
    char *big = keep(malloc(RTC_JWT_MAX_TOKEN + 2));
    memset(big, 'a', RTC_JWT_MAX_TOKEN + 1);
    big[RTC_JWT_MAX_TOKEN + 1] = '\0';
    assert_verdict(f, big, RTC_JWT_MALFORMED);
    /* … and a correctly signed token over the cap: refused unverified. */
    char pad[7000];
    memset(pad, 'p', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    char *edits = keep(malloc(sizeof(pad) + 32));
    sprintf(edits, "{\"pad\":\"%s\"}", pad);
    char *tok = token_by(K.a, f->hdr, payload(edits));
    assert_true(strlen(tok) > RTC_JWT_MAX_TOKEN);
    assert_verdict(f, tok, RTC_JWT_MALFORMED);
}

static void test_reject_not_three_parts(void **state)
{
    fixture *f = *state;
    const char *tok = good(f);
    const char *dot2 = strrchr(tok, '.');
    char *two = keep(strndup(tok, (size_t)(dot2 - tok))); /* header.payload */
    assert_verdict(f, two, RTC_JWT_MALFORMED);
    char *four = keep(malloc(strlen(tok) + 8));
    sprintf(four, "%s.AAAA", tok);
    assert_verdict(f, four, RTC_JWT_MALFORMED);
    assert_verdict(f, "abc", RTC_JWT_MALFORMED);
    assert_verdict(f, "..", RTC_JWT_MALFORMED);
    assert_verdict(f, "...", RTC_JWT_MALFORMED);
    assert_int_equal(rtc_jwt_verify(f->ks, "", 0, &f->policy, NULL, NULL, 0), RTC_JWT_MALFORMED);
    assert_int_equal(rtc_jwt_verify(f->ks, NULL, 0, &f->policy, NULL, NULL, 0), RTC_JWT_MALFORMED);
}

static void test_reject_bad_base64url(void **state)
{
    fixture *f = *state;
    const char *tok = good(f);
    size_t n = strlen(tok);
    const char *dot1 = strchr(tok, '.');
    /* A foreign character in each part: '+', '/', '=', ' ', '\n'. */
    const char bad[] = {'+', '/', '=', ' ', '\n'};
    size_t where[] = {2, (size_t)(dot1 - tok) + 3, n - 2};
    for (size_t i = 0; i < sizeof(bad); i++) {
        for (size_t j = 0; j < 3; j++) {
            char *t = keep(strdup(tok));
            t[where[j]] = bad[i];
            assert_verdict(f, t, RTC_JWT_MALFORMED);
        }
    }
    /* Padding appended to the signature. */
    char *padded = keep(malloc(n + 4));
    sprintf(padded, "%s==", tok);
    assert_verdict(f, padded, RTC_JWT_MALFORMED);
    /* An embedded NUL inside len. */
    char *nul = keep(strdup(tok));
    nul[5] = '\0';
    assert_int_equal(rtc_jwt_verify(f->ks, nul, n, &f->policy, NULL, NULL, 0), RTC_JWT_MALFORMED);
    /* A length no encoder produces (4k + 1 characters) in the header. */
    size_t hl = (size_t)(dot1 - tok), add = (4 + 1 - hl % 4) % 4;
    char *odd = keep(malloc(n + 8));
    memset(odd, 'A', add);
    strcpy(odd + add, tok);
    assert_int_equal((hl + add) % 4, 1);
    assert_verdict(f, odd, RTC_JWT_MALFORMED);
}

static void test_reject_noncanonical_base64url(void **state)
{
    fixture *f = *state;
    /* The last signature character carries 4 unused bits (86 chars for 64
     * bytes): setting one gives a different string for the same bytes. */
    char *t = keep(strdup(good(f)));
    size_t n = strlen(t);
    assert_int_equal(n - (size_t)(strrchr(t, '.') - t) - 1, 86);
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int v = (int)(strchr(alphabet, t[n - 1]) - alphabet);
    assert_int_equal(v & 15, 0);
    t[n - 1] = alphabet[v | 1];
    assert_verdict(f, t, RTC_JWT_MALFORMED);
}

static void test_reject_header_not_json(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, "not json", payload(NULL)), RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, "{\"alg\":\"ES256\",", payload(NULL)), RTC_JWT_MALFORMED);
    char hdr[300];
    snprintf(hdr, sizeof(hdr), "%s trailing", f->hdr);
    assert_verdict(f, token_by(K.a, hdr, payload(NULL)), RTC_JWT_MALFORMED);
    /* Invalid UTF-8 in a header string. */
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"x\":\"\xff\"}", f->kid);
    assert_verdict(f, token_by(K.a, hdr, payload(NULL)), RTC_JWT_MALFORMED);
}

static void test_reject_header_not_object(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, "[\"ES256\"]", payload(NULL)), RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, "\"ES256\"", payload(NULL)), RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, "42", payload(NULL)), RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, "null", payload(NULL)), RTC_JWT_MALFORMED);
}

/* ---- algorithm ---------------------------------------------------------- */

static const char *header_alg(fixture *f, const char *alg_json)
{
    char *h = keep(malloc(256));
    snprintf(h, 256, "{\"alg\":%s,\"typ\":\"JWT\",\"kid\":\"%s\"}", alg_json, f->kid);
    return h;
}

static void test_reject_alg_none_empty_signature(void **state)
{
    fixture *f = *state;
    char *in = signing_input(header_alg(f, "\"none\""), payload(NULL));
    char *tok = keep(malloc(strlen(in) + 2));
    sprintf(tok, "%s.", in);
    assert_verdict(f, tok, RTC_JWT_UNSUPPORTED_ALGORITHM);
}

static void test_reject_alg_none_with_signature(void **state)
{
    fixture *f = *state;
    /* Even a signature that is valid over these bytes does not help. */
    assert_verdict(f, token_by(K.a, header_alg(f, "\"none\""), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
    assert_verdict(f, token_by(K.a, header_alg(f, "\"None\""), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
}

static void test_reject_hs256_keyed_with_public_key(void **state)
{
    fixture *f = *state;
    /* The classic confusion: HMAC-SHA256 whose secret is the public PEM a
     * verifier trusting the header would use as the "key". */
    rtc_jwt_key_info info;
    assert_int_equal(rtc_jwt_keyset_get(f->ks, 0, &info), 0);
    assert_string_equal(info.public_pem, K.a_pub);
    char *in = signing_input(header_alg(f, "\"HS256\""), payload(NULL));
    uint8_t mac[32];
    unsigned int maclen = 0;
    assert_non_null(HMAC(EVP_sha256(), info.public_pem, (int)strlen(info.public_pem),
                         (const uint8_t *)in, strlen(in), mac, &maclen));
    assert_int_equal(maclen, 32);
    assert_verdict(f, with_sig(in, mac, maclen), RTC_JWT_UNSUPPORTED_ALGORITHM);
}

static void test_reject_alg_es384(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, header_alg(f, "\"ES384\""), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
    assert_verdict(f, token_by(K.a, header_alg(f, "\"RS256\""), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
    assert_verdict(f, token_by(K.a, header_alg(f, "\"es256\""), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
    assert_verdict(f, token_by(K.a, header_alg(f, "\"ES256 \""), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
}

static void test_reject_alg_missing(void **state)
{
    fixture *f = *state;
    char h[200];
    snprintf(h, sizeof(h), "{\"typ\":\"JWT\",\"kid\":\"%s\"}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_UNSUPPORTED_ALGORITHM);
}

static void test_reject_alg_not_string(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, header_alg(f, "256"), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
    assert_verdict(f, token_by(K.a, header_alg(f, "[\"ES256\"]"), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
    assert_verdict(f, token_by(K.a, header_alg(f, "null"), payload(NULL)),
                   RTC_JWT_UNSUPPORTED_ALGORITHM);
}

/* ---- other header members ---------------------------------------------- */

static void test_reject_typ_wrong(void **state)
{
    fixture *f = *state;
    char h[200];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"JWS\",\"kid\":\"%s\"}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_MALFORMED);
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":1,\"kid\":\"%s\"}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_MALFORMED);
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_MALFORMED);
}

static void test_typ_absent_or_any_case_accepted(void **state)
{
    fixture *f = *state;
    char h[200];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_OK);
    snprintf(h, sizeof(h), "{\"kid\":\"%s\",\"typ\":\"jwt\",\"alg\":\"ES256\"}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_OK);
}

static void test_reject_crit_present(void **state)
{
    fixture *f = *state;
    char h[256];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"crit\":[\"b64\"],\"b64\":false}",
             f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_MALFORMED);
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"crit\":[]}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_MALFORMED);
}

static void test_reject_kid_missing(void **state)
{
    fixture *f = *state;
    /* auth.proto: a missing kid is UNKNOWN_KEY. */
    assert_verdict(f, token_by(K.a, "{\"alg\":\"ES256\",\"typ\":\"JWT\"}", payload(NULL)),
                   RTC_JWT_UNKNOWN_KEY);
}

static void test_reject_kid_not_string(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, "{\"alg\":\"ES256\",\"kid\":7}", payload(NULL)),
                   RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, "{\"alg\":\"ES256\",\"kid\":\"\"}", payload(NULL)),
                   RTC_JWT_MALFORMED);
    char h[256], kid[80];
    memset(kid, 'k', 64);
    kid[64] = '\0';
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\"}", kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_MALFORMED);
}

static void test_reject_kid_unknown(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, "{\"alg\":\"ES256\",\"kid\":\"nope\"}", payload(NULL)),
                   RTC_JWT_UNKNOWN_KEY);
    /* A prefix of the real kid is not the kid. */
    char h[256];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%.10s\"}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_UNKNOWN_KEY);
}

/* ---- keys refused ------------------------------------------------------- */

static void test_keyset_rejects_empty(void **state)
{
    fixture *f = *state;
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, "", 0, NULL, 0, NULL), RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, NULL, 10, NULL, 0, NULL), RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, "\n", 1, NULL, 0, NULL), RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_count(f->ks), 1);
}

static void test_keyset_rejects_garbage_pem(void **state)
{
    fixture *f = *state;
    const char *g[] = {
        "hello world",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\nnot base64 at all!\n-----END PRIVATE KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++)
        assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, g[i], strlen(g[i]), NULL, 0, NULL),
                         RTC_EINVAL);
    /* A truncated real key. */
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.b_priv, strlen(K.b_priv) / 2, NULL, 0, NULL),
                     RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_count(f->ks), 1);
}

static void test_keyset_rejects_rsa(void **state)
{
    fixture *f = *state;
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.rsa_priv, strlen(K.rsa_priv), NULL, 0, NULL),
                     RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.rsa_pub, strlen(K.rsa_pub), NULL, 0, NULL),
                     RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_count(f->ks), 1);
}

static void test_keyset_rejects_p384(void **state)
{
    fixture *f = *state;
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.p384_priv, strlen(K.p384_priv), NULL, 0, NULL),
                     RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.p384_pub, strlen(K.p384_pub), NULL, 0, NULL),
                     RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_count(f->ks), 1);
}

static void test_keyset_rejects_encrypted_pem(void **state)
{
    fixture *f = *state;
    /* Refused without prompting on a terminal for the passphrase. */
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(
        PEM_write_bio_PKCS8PrivateKey(bio, K.b, EVP_aes_128_cbc(), "secret", 6, NULL, NULL), 1);
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, data, (size_t)n, NULL, 0, NULL), RTC_EINVAL);
    BIO_free(bio);
}

static void test_keyset_kid_rules(void **state)
{
    fixture *f = *state;
    char kid[64];
    /* The same key twice has the same thumbprint. */
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.a_pub, strlen(K.a_pub), NULL, 0, NULL),
                     RTC_EEXIST);
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.b_priv, strlen(K.b_priv), f->kid, 0, NULL),
                     RTC_EEXIST);
    char long_kid[65];
    memset(long_kid, 'k', 64);
    long_kid[64] = '\0';
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.b_priv, strlen(K.b_priv), long_kid, 0, NULL),
                     RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.b_priv, strlen(K.b_priv), "", 0, NULL),
                     RTC_EINVAL);
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.b_priv, strlen(K.b_priv), "a\nb", 0, NULL),
                     RTC_EINVAL);
    long_kid[63] = '\0';
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.b_priv, strlen(K.b_priv), long_kid, 0, kid),
                     0);
    assert_string_equal(kid, long_kid);
}

/* The PEM shapes keys come in: PKCS#8, SEC1 ("EC PRIVATE KEY", what
 * `openssl ecparam -genkey` writes, after an "EC PARAMETERS" block),
 * SubjectPublicKeyInfo; with a trailing NUL counted in len too. */
static void test_keyset_accepts_pem_forms(void **state)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(BIO_puts(bio, "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n"
                                   "-----END EC PARAMETERS-----\n"),
                     75);
    assert_int_equal(PEM_write_bio_PrivateKey_traditional(bio, K.b, NULL, NULL, 0, NULL, NULL), 1);
    char *sec1 = NULL;
    long n = BIO_get_mem_data(bio, &sec1);
    assert_non_null(strstr(sec1, "BEGIN EC PRIVATE KEY"));

    const struct {
        const char *pem;
        size_t len;
        bool priv;
    } forms[] = {
        {K.b_priv, strlen(K.b_priv), true},
        {sec1, (size_t)n, true},
        {K.a_pub, strlen(K.a_pub), false},
        {K.b_priv, strlen(K.b_priv) + 1, true},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        rtc_jwt_keyset *ks = NULL;
        rtc_jwt_key_info info;
        assert_int_equal(rtc_jwt_keyset_new(&ks), 0);
        assert_int_equal(rtc_jwt_keyset_add_pem(ks, forms[i].pem, forms[i].len, NULL, 0, NULL), 0);
        assert_int_equal(rtc_jwt_keyset_get(ks, 0, &info), 0);
        assert_int_equal(info.has_private, forms[i].priv);
        assert_int_equal(info.signing, forms[i].priv);
        rtc_jwt_keyset_free(ks);
    }
    BIO_free(bio);
}

/* ---- signature ---------------------------------------------------------- */

static void test_reject_signature_wrong_length(void **state)
{
    fixture *f = *state;
    char *in = signing_input(f->hdr, payload(NULL));
    uint8_t sig[66];
    es256(K.a, in, strlen(in), sig);
    sig[64] = sig[65] = 0;
    assert_verdict(f, with_sig(in, sig, 63), RTC_JWT_BAD_SIGNATURE);
    assert_verdict(f, with_sig(in, sig, 65), RTC_JWT_BAD_SIGNATURE);
    assert_verdict(f, with_sig(in, sig, 32), RTC_JWT_BAD_SIGNATURE);
    char *empty = keep(malloc(strlen(in) + 2));
    sprintf(empty, "%s.", in);
    assert_verdict(f, empty, RTC_JWT_BAD_SIGNATURE);
}

static void test_reject_signature_der(void **state)
{
    fixture *f = *state;
    /* What an implementation that forgets the JWS format sends. */
    char *in = signing_input(f->hdr, payload(NULL));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t der[80];
    size_t derlen = sizeof(der);
    assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, K.a), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &derlen, (const uint8_t *)in, strlen(in)), 1);
    EVP_MD_CTX_free(ctx);
    assert_verdict(f, with_sig(in, der, derlen), RTC_JWT_BAD_SIGNATURE);
}

static void test_reject_signature_zero(void **state)
{
    fixture *f = *state;
    char *in = signing_input(f->hdr, payload(NULL));
    uint8_t sig[64];
    memset(sig, 0, sizeof(sig));
    assert_verdict(f, with_sig(in, sig, sizeof(sig)), RTC_JWT_BAD_SIGNATURE);
    memset(sig, 0xff, sizeof(sig)); /* r, s >= n */
    assert_verdict(f, with_sig(in, sig, sizeof(sig)), RTC_JWT_BAD_SIGNATURE);
}

static void test_reject_signature_other_key(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.b, f->hdr, payload(NULL)), RTC_JWT_BAD_SIGNATURE);
}

static void test_reject_tampered_payload(void **state)
{
    fixture *f = *state;
    char *tok = good(f);
    /* Same signature, payload with one claim flipped. */
    const char *sig = strrchr(tok, '.') + 1;
    char *in = signing_input(f->hdr, payload("{\"sub\":\"admin\"}"));
    char *forged = keep(malloc(strlen(in) + strlen(sig) + 2));
    sprintf(forged, "%s.%s", in, sig);
    assert_verdict(f, forged, RTC_JWT_BAD_SIGNATURE);
    in = signing_input(f->hdr, payload("{\"grants\":[\"join\",\"list\",\"admin\"]}"));
    forged = keep(malloc(strlen(in) + strlen(sig) + 2));
    sprintf(forged, "%s.%s", in, sig);
    assert_verdict(f, forged, RTC_JWT_BAD_SIGNATURE);
}

static void test_reject_tampered_header(void **state)
{
    fixture *f = *state;
    char *tok = good(f);
    const char *rest = strchr(tok, '.'); /* ".payload.sig" */
    char h[256];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\",\"x\":1}", f->kid);
    const char *hb = b64url(h, strlen(h));
    char *forged = keep(malloc(strlen(hb) + strlen(rest) + 1));
    sprintf(forged, "%s%s", hb, rest);
    assert_verdict(f, forged, RTC_JWT_BAD_SIGNATURE);
}

/* ---- time --------------------------------------------------------------- */

static char *with_times(fixture *f, int64_t iat, int64_t nbf, int64_t exp)
{
    char e[128];
    snprintf(e, sizeof(e), "{\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}", (long long)iat,
             (long long)nbf, (long long)exp);
    return token_by(K.a, f->hdr, payload(e));
}

static void test_reject_expired(void **state)
{
    fixture *f = *state;
    assert_verdict(f, with_times(f, NOW_S - 3600, NOW_S - 3600, NOW_S - 60), RTC_JWT_EXPIRED);
    f->policy.leeway_ms = 0;
    assert_verdict(f, with_times(f, NOW_S - 3600, NOW_S - 3600, NOW_S), RTC_JWT_EXPIRED);
}

static void test_expired_within_leeway_accepted(void **state)
{
    fixture *f = *state;
    /* 29 s late with 30 s of leeway: accepted; exactly 30 s: refused. */
    rtc_jwt_claims c;
    assert_int_equal(verify(f, with_times(f, NOW_S - 3600, NOW_S - 3600, NOW_S - 29), &c),
                     RTC_JWT_OK);
    assert_int_equal(c.expires_at_ms, (NOW_S - 29) * 1000);
    assert_verdict(f, with_times(f, NOW_S - 3600, NOW_S - 3600, NOW_S - 30), RTC_JWT_EXPIRED);
    /* Fractional NumericDate. */
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"exp\":1699999970.5}")), RTC_JWT_OK);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"exp\":1699999969.5}")), RTC_JWT_EXPIRED);
}

static void test_reject_nbf_in_future(void **state)
{
    fixture *f = *state;
    assert_verdict(f, with_times(f, NOW_S, NOW_S + 60, NOW_S + 3600), RTC_JWT_NOT_YET_VALID);
    /* Within leeway it is fine; so is a token without nbf. */
    assert_verdict(f, with_times(f, NOW_S, NOW_S + 30, NOW_S + 3600), RTC_JWT_OK);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"nbf\":\"__delete__\"}")), RTC_JWT_OK);
}

static void test_reject_iat_in_future(void **state)
{
    fixture *f = *state;
    assert_verdict(f, with_times(f, NOW_S + 120, NOW_S - 10, NOW_S + 3600), RTC_JWT_NOT_YET_VALID);
    assert_verdict(f, with_times(f, NOW_S + 30, NOW_S - 10, NOW_S + 3600), RTC_JWT_OK);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"iat\":\"__delete__\"}")), RTC_JWT_OK);
}

/* ---- issuer and audience ---------------------------------------------- */

static void test_reject_wrong_issuer(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"iss\":\"evil\"}")), RTC_JWT_WRONG_ISSUER);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"iss\":\"RTC\"}")), RTC_JWT_WRONG_ISSUER);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"iss\":\"__delete__\"}")),
                   RTC_JWT_WRONG_ISSUER);
    /* Not checked when the policy does not ask. */
    f->policy.issuer = NULL;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"iss\":\"evil\"}")), RTC_JWT_OK);
}

static void test_reject_wrong_audience_string(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"aud\":\"other\"}")),
                   RTC_JWT_WRONG_AUDIENCE);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"aud\":\"__delete__\"}")),
                   RTC_JWT_WRONG_AUDIENCE);
    f->policy.audience = NULL;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"aud\":\"other\"}")), RTC_JWT_OK);
}

static void test_reject_wrong_audience_array(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"aud\":[\"a\",\"b\"]}")),
                   RTC_JWT_WRONG_AUDIENCE);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"aud\":[]}")), RTC_JWT_WRONG_AUDIENCE);
    rtc_jwt_claims c;
    assert_int_equal(verify(f, token_by(K.a, f->hdr, payload("{\"aud\":[\"a\",\"rtc\"]}")), &c),
                     RTC_JWT_OK);
    assert_int_equal(c.naudience, 2);
    assert_string_equal(c.audience[0], "a");
    assert_string_equal(c.audience[1], "rtc");
}

/* ---- required claims and types ----------------------------------------- */

static void test_reject_missing_sub(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"sub\":\"__delete__\"}")),
                   RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"sub\":\"\"}")), RTC_JWT_MALFORMED);
}

static void test_reject_missing_jti(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"jti\":\"__delete__\"}")),
                   RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"jti\":\"\"}")), RTC_JWT_MALFORMED);
}

static void test_reject_missing_exp(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"exp\":\"__delete__\"}")),
                   RTC_JWT_MALFORMED);
}

static void test_reject_wrong_claim_types(void **state)
{
    fixture *f = *state;
    const char *edits[] = {
        "{\"exp\":\"1700003600\"}",
        "{\"exp\":true}",
        "{\"exp\":null}",
        "{\"exp\":[1700003600]}",
        "{\"exp\":-5}",
        "{\"exp\":1e300}",
        "{\"exp\":99999999999999}",
        "{\"nbf\":\"x\"}",
        "{\"iat\":[]}",
        "{\"iss\":5}",
        "{\"iss\":null}",
        "{\"aud\":5}",
        "{\"aud\":[1]}",
        "{\"aud\":[\"rtc\",null]}",
        "{\"aud\":{\"rtc\":1}}",
        "{\"sub\":5}",
        "{\"sub\":[\"user\"]}",
        "{\"jti\":{}}",
        "{\"room\":1}",
        "{\"name\":false}",
        "{\"grants\":\"join\"}",
        "{\"grants\":[1]}",
        "{\"grants\":{\"join\":true}}",
        "{\"auth_time\":\"x\"}",
        "{\"auth_time\":-1}",
    };
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        rtc_jwt_error e = verify(f, token_by(K.a, f->hdr, payload(edits[i])), NULL);
        if (e != RTC_JWT_MALFORMED)
            fail_msg("%s: expected malformed, got %s", edits[i], rtc_jwt_error_name(e));
    }
}

static void test_reject_payload_not_object(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, f->hdr, "[]"), RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, f->hdr, "not json"), RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, f->hdr, ""), RTC_JWT_MALFORMED);
    /* "\u0000" inside a string would truncate the C copy: refused. */
    char *p = payload(NULL), *at = strstr(p, "user-1");
    assert_non_null(at);
    char *nul = keep(malloc(strlen(p) + 16));
    sprintf(nul, "%.*sadm\\u0000in%s", (int)(at - p), p, at + strlen("user-1"));
    assert_verdict(f, token_by(K.a, f->hdr, nul), RTC_JWT_MALFORMED);
}

static char *repeat(char c, size_t n)
{
    char *s = keep(malloc(n + 1));
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_reject_oversize_field(void **state)
{
    fixture *f = *state;
    struct {
        const char *claim;
        size_t max; /* longest accepted */
    } fields[] = {{"sub", 128}, {"jti", 64}, {"room", 127}, {"name", 128}};
    char e[512];
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        snprintf(e, sizeof(e), "{\"%s\":\"%s\"}", fields[i].claim, repeat('x', fields[i].max));
        assert_verdict(f, token_by(K.a, f->hdr, payload(e)), RTC_JWT_OK);
        snprintf(e, sizeof(e), "{\"%s\":\"%s\"}", fields[i].claim, repeat('x', fields[i].max + 1));
        assert_verdict(f, token_by(K.a, f->hdr, payload(e)), RTC_JWT_MALFORMED);
    }
    /* iss and aud: a 128-byte value is malformed, not a wrong issuer. */
    snprintf(e, sizeof(e), "{\"iss\":\"%s\"}", repeat('x', 128));
    assert_verdict(f, token_by(K.a, f->hdr, payload(e)), RTC_JWT_MALFORMED);
    snprintf(e, sizeof(e), "{\"aud\":[\"rtc\",\"%s\"]}", repeat('x', 128));
    assert_verdict(f, token_by(K.a, f->hdr, payload(e)), RTC_JWT_MALFORMED);
    /* More audiences than rtc_jwt_claims holds. */
    assert_verdict(
        f,
        token_by(K.a, f->hdr,
                 payload("{\"aud\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"rtc\"]}")),
        RTC_JWT_OK);
    assert_verdict(
        f,
        token_by(K.a, f->hdr,
                 payload("{\"aud\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"rtc\"]}")),
        RTC_JWT_MALFORMED);
    /* Multi-byte UTF-8 counts in bytes: 64 × "é" = 128 bytes fit, 129 do not. */
    char name[300] = "{\"name\":\"";
    for (int i = 0; i < 64; i++)
        strcat(name, "\xc3\xa9");
    strcat(name, "\"}");
    assert_verdict(f, token_by(K.a, f->hdr, payload(name)), RTC_JWT_OK);
    strcpy(name, "{\"name\":\"x");
    for (int i = 0; i < 64; i++)
        strcat(name, "\xc3\xa9");
    strcat(name, "\"}");
    assert_verdict(f, token_by(K.a, f->hdr, payload(name)), RTC_JWT_MALFORMED);
}

static void test_reject_unknown_grant(void **state)
{
    fixture *f = *state;
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"grants\":[\"join\",\"root\"]}")),
                   RTC_JWT_MALFORMED);
    assert_verdict(f, token_by(K.a, f->hdr, payload("{\"grants\":[\"JOIN\"]}")), RTC_JWT_MALFORMED);
    rtc_jwt_claims c;
    assert_int_equal(
        verify(f,
               token_by(K.a, f->hdr,
                        payload("{\"grants\":[\"join\",\"create\",\"list\",\"admin\",\"join\"]}")),
               &c),
        RTC_JWT_OK);
    assert_int_equal(c.grants, RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_CREATE | RTC_JWT_GRANT_LIST |
                                   RTC_JWT_GRANT_ADMIN);
    assert_int_equal(verify(f, token_by(K.a, f->hdr, payload("{\"grants\":[]}")), &c), RTC_JWT_OK);
    assert_int_equal(c.grants, 0);
}

static void test_reject_duplicate_json_keys(void **state)
{
    fixture *f = *state;
    /* Two parsers reading "the" sub would disagree: refuse. */
    char *p = payload(NULL);
    char *dup = keep(malloc(strlen(p) + 32));
    sprintf(dup, "{\"sub\":\"admin\",%s", p + 1);
    assert_verdict(f, token_by(K.a, f->hdr, dup), RTC_JWT_MALFORMED);
    /* In the header: a second alg. */
    char h[256];
    snprintf(h, sizeof(h), "{\"alg\":\"ES256\",\"kid\":\"%s\",\"alg\":\"none\"}", f->kid);
    assert_verdict(f, token_by(K.a, h, payload(NULL)), RTC_JWT_MALFORMED);
}

/* ---- positive paths ------------------------------------------------------ */

static void full_claims(rtc_jwt_claims *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->issuer, "rtc");
    strcpy(c->audience[0], "rtc");
    strcpy(c->audience[1], "signaling");
    c->naudience = 2;
    strcpy(c->identity, "user-42");
    c->issued_at_ms = NOW_MS - 1000;
    c->not_before_ms = NOW_MS - 1000;
    c->expires_at_ms = NOW_MS + 3600 * 1000;
    strcpy(c->token_id, "jti-42");
    strcpy(c->room_id, "room-9");
    c->grants = RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_ADMIN;
    strcpy(c->display_name, "Zoë \"Z\" O'Brien");
    c->session_started_at_ms = NOW_MS - 123000; /* auth_time has whole seconds */
}

/* The claims writer escapes what JSON requires: quotes, backslashes,
 * control characters; multi-byte UTF-8 passes through; bad UTF-8 is
 * refused. */
static void test_sign_escapes(void **state)
{
    fixture *f = *state;
    rtc_jwt_claims in, out;
    full_claims(&in);
    strcpy(in.identity, "a\"b\\c\x01d\ne\x7f \xe2\x82\xac/");
    strcpy(in.display_name, "\t\"\"\\");
    char *tok = NULL;
    assert_int_equal(rtc_jwt_sign(f->ks, &in, &tok), 0);
    keep(tok);
    assert_int_equal(verify(f, tok, &out), RTC_JWT_OK);
    assert_string_equal(out.identity, in.identity);
    assert_string_equal(out.display_name, in.display_name);
    strcpy(in.identity, "bad \xc3\x28 utf-8");
    tok = NULL;
    assert_int_equal(rtc_jwt_sign(f->ks, &in, &tok), RTC_EINVAL);
    assert_null(tok);
}

static void test_roundtrip_all_claims(void **state)
{
    fixture *f = *state;
    rtc_jwt_claims in, out;
    full_claims(&in);
    char *tok = NULL;
    assert_int_equal(rtc_jwt_sign(f->ks, &in, &tok), 0);
    keep(tok);
    assert_int_equal(verify(f, tok, &out), RTC_JWT_OK);
    strcpy(in.key_id, f->kid); /* filled from the header */
    assert_memory_equal(&in, &out, sizeof(in));

    /* The header and payload as documented. */
    const char *dot1 = strchr(tok, '.');
    char hdr[256];
    size_t hl = (size_t)(dot1 - tok);
    unsigned char raw[256];
    char std[256];
    memcpy(std, tok, hl);
    while (hl % 4)
        std[hl++] = '=';
    std[hl] = '\0';
    for (size_t i = 0; i < hl; i++)
        std[i] = std[i] == '-' ? '+' : std[i] == '_' ? '/' : std[i];
    int n = EVP_DecodeBlock(raw, (unsigned char *)std, (int)hl);
    assert_true(n > 0);
    raw[n] = '\0';
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", f->kid);
    assert_string_equal((char *)raw, hdr); /* padding decodes to trailing NULs: ignored */

    /* One audience is a string, times are rounded down to seconds. */
    in.naudience = 1;
    in.expires_at_ms = NOW_MS + 3600 * 1000 + 999;
    in.issued_at_ms = 0;  /* absent */
    in.not_before_ms = 0; /* absent */
    in.room_id[0] = '\0'; /* absent */
    in.grants = 0;        /* absent */
    in.session_started_at_ms = 0;
    assert_int_equal(rtc_jwt_sign(f->ks, &in, &tok), 0);
    keep(tok);
    assert_int_equal(verify(f, tok, &out), RTC_JWT_OK);
    assert_int_equal(out.naudience, 1);
    assert_int_equal(out.expires_at_ms, NOW_MS + 3600 * 1000);
    assert_int_equal(out.issued_at_ms, 0);
    assert_int_equal(out.not_before_ms, 0);
    assert_string_equal(out.room_id, "");
    assert_int_equal(out.grants, 0);
    assert_int_equal(out.session_started_at_ms, 0);

    /* A token in a buffer of exactly its length (ASan checks the reads). */
    size_t len = strlen(tok);
    char *exact = keep(malloc(len));
    memcpy(exact, tok, len);
    assert_int_equal(rtc_jwt_verify(f->ks, exact, len, &f->policy, NULL, NULL, 0), RTC_JWT_OK);
}

/* Every field at its longest, 8 audiences, a name of control characters
 * (6 bytes each once escaped): the largest payload sign can make still
 * fits the token cap and comes back unchanged. */
static void test_roundtrip_largest_claims(void **state)
{
    fixture *f = *state;
    rtc_jwt_claims in, out;
    full_claims(&in);
    memset(in.issuer, 'i', sizeof(in.issuer) - 1);
    for (size_t i = 0; i < RTC_JWT_MAX_AUDIENCES; i++) {
        memset(in.audience[i], 'a' + (int)i, sizeof(in.audience[i]) - 1);
        in.audience[i][sizeof(in.audience[i]) - 1] = '\0';
    }
    memset(in.audience[3], 0, sizeof(in.audience[3])); /* compared with memcmp */
    strcpy(in.audience[3], "rtc");
    in.naudience = RTC_JWT_MAX_AUDIENCES;
    memset(in.identity, 's', sizeof(in.identity) - 1);
    memset(in.token_id, 'j', sizeof(in.token_id) - 1);
    memset(in.room_id, 'r', sizeof(in.room_id) - 1);
    for (size_t i = 0; i < sizeof(in.display_name) - 1; i++)
        in.display_name[i] = (char)(1 + i % 31);
    in.grants =
        RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_CREATE | RTC_JWT_GRANT_LIST | RTC_JWT_GRANT_ADMIN;
    f->policy.issuer = in.issuer;
    char *tok = NULL;
    assert_int_equal(rtc_jwt_sign(f->ks, &in, &tok), 0);
    keep(tok);
    assert_true(strlen(tok) > 3000);
    assert_true(strlen(tok) <= RTC_JWT_MAX_TOKEN);
    assert_int_equal(verify(f, tok, &out), RTC_JWT_OK);
    strcpy(in.key_id, f->kid);
    assert_memory_equal(&in, &out, sizeof(in));
}

static void test_sign_rejects_bad_claims(void **state)
{
    fixture *f = *state;
    rtc_jwt_claims c;
    char *tok = (char *)"untouched";

    full_claims(&c);
    c.identity[0] = '\0';
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    assert_null(tok);
    full_claims(&c);
    c.token_id[0] = '\0';
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    full_claims(&c);
    c.expires_at_ms = 0;
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    full_claims(&c);
    c.expires_at_ms = INT64_MAX; /* past year 9999: verify would refuse it */
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    full_claims(&c);
    c.issued_at_ms = -1000;
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    full_claims(&c);
    memset(c.display_name, 'x', sizeof(c.display_name)); /* no NUL */
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    full_claims(&c);
    c.grants |= 1u << 9;
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    full_claims(&c);
    c.naudience = RTC_JWT_MAX_AUDIENCES + 1;
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    full_claims(&c);
    strcpy(c.identity, "bad \xff utf-8");
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), RTC_EINVAL);
    full_claims(&c);
    assert_int_equal(rtc_jwt_sign(NULL, &c, &tok), RTC_EINVAL);
    assert_int_equal(rtc_jwt_sign(f->ks, NULL, &tok), RTC_EINVAL);
}

static void test_several_keys_and_rotation(void **state)
{
    fixture *f = *state;
    char kid_b[64], kid_c[64];
    assert_int_equal(rtc_jwt_keyset_add_pem(f->ks, K.b_priv, strlen(K.b_priv), NULL, 2, kid_b), 0);
    assert_int_equal(rtc_jwt_keyset_generate(f->ks, 3, kid_c), 0);
    assert_int_equal(rtc_jwt_keyset_count(f->ks), 3);
    assert_string_equal(rtc_jwt_keyset_signing_kid(f->ks), f->kid); /* the first stays */

    rtc_jwt_claims c, out;
    full_claims(&c);
    char *by_a = NULL, *by_b = NULL;
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &by_a), 0);
    keep(by_a);
    assert_int_equal(verify(f, by_a, &out), RTC_JWT_OK);
    assert_string_equal(out.key_id, f->kid);

    /* A verifier that holds only the public halves accepts it too. */
    rtc_jwt_keyset *pub = NULL;
    assert_int_equal(rtc_jwt_keyset_new(&pub), 0);
    for (size_t i = 0; i < 3; i++) {
        rtc_jwt_key_info info;
        assert_int_equal(rtc_jwt_keyset_get(f->ks, i, &info), 0);
        assert_int_equal(rtc_jwt_keyset_add_pem(pub, info.public_pem, strlen(info.public_pem),
                                                info.kid, info.created_at_ms, NULL),
                         0);
    }
    assert_int_equal(rtc_jwt_verify(pub, by_a, strlen(by_a), &f->policy, NULL, NULL, 0),
                     RTC_JWT_OK);

    /* Rotate to B: new tokens name B, old ones still verify. */
    assert_int_equal(rtc_jwt_keyset_set_signing(f->ks, kid_b), 0);
    assert_string_equal(rtc_jwt_keyset_signing_kid(f->ks), kid_b);
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &by_b), 0);
    keep(by_b);
    assert_int_equal(verify(f, by_b, &out), RTC_JWT_OK);
    assert_string_equal(out.key_id, kid_b);
    assert_int_equal(verify(f, by_a, NULL), RTC_JWT_OK);
    assert_int_equal(rtc_jwt_verify(pub, by_b, strlen(by_b), &f->policy, NULL, NULL, 0),
                     RTC_JWT_OK);

    rtc_jwt_key_info info;
    assert_int_equal(rtc_jwt_keyset_get(f->ks, 1, &info), 0);
    assert_true(info.signing);
    assert_int_equal(info.created_at_ms, 2);
    assert_int_equal(rtc_jwt_keyset_get(f->ks, 0, &info), 0);
    assert_false(info.signing);
    assert_int_equal(rtc_jwt_keyset_get(f->ks, 3, &info), RTC_ENOTFOUND);

    assert_int_equal(rtc_jwt_keyset_set_signing(f->ks, "nope"), RTC_ENOTFOUND);
    assert_int_equal(rtc_jwt_keyset_set_signing(pub, kid_b), RTC_EINVAL); /* public only */

    /* After a clear nothing verifies, nothing signs. */
    rtc_jwt_keyset_clear(f->ks);
    assert_int_equal(rtc_jwt_keyset_count(f->ks), 0);
    assert_null(rtc_jwt_keyset_signing_kid(f->ks));
    assert_verdict(f, by_a, RTC_JWT_UNKNOWN_KEY);
    char *none = NULL;
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &none), RTC_EINVAL);
    rtc_jwt_keyset_free(pub);
}

/* RFC 7638 thumbprint of a key, computed here from OpenSSL's encoded
 * point rather than through the code under test. */
static void thumbprint_of(EVP_PKEY *k, char out[64])
{
    uint8_t pt[65];
    size_t n = 0;
    assert_int_equal(
        EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt, sizeof(pt), &n),
        1);
    assert_int_equal(n, 65);
    assert_int_equal(pt[0], 4);
    char canon[200];
    snprintf(canon, sizeof(canon), "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}",
             b64url(pt + 1, 32), b64url(pt + 33, 32));
    uint8_t d[32];
    assert_int_equal(EVP_Digest(canon, strlen(canon), d, NULL, EVP_sha256(), NULL), 1);
    strcpy(out, b64url(d, 32));
}

static void test_keyset_generate(void **state)
{
    rtc_jwt_keyset *ks = NULL;
    char k1[64], k2[64];
    assert_int_equal(rtc_jwt_keyset_new(&ks), 0);
    assert_null(rtc_jwt_keyset_signing_kid(ks));
    assert_int_equal(rtc_jwt_keyset_generate(ks, 11, k1), 0);
    assert_int_equal(rtc_jwt_keyset_generate(ks, 22, k2), 0);
    assert_string_not_equal(k1, k2);
    assert_int_equal(strlen(k1), 43);
    assert_string_equal(rtc_jwt_keyset_signing_kid(ks), k1);

    rtc_jwt_key_info info;
    assert_int_equal(rtc_jwt_keyset_get(ks, 1, &info), 0);
    assert_string_equal(info.kid, k2);
    assert_true(info.has_private);
    assert_false(info.signing);
    assert_int_equal(info.created_at_ms, 22);
    /* The kid is the thumbprint of the key the PEM holds. */
    BIO *bio = BIO_new_mem_buf(info.public_pem, -1);
    EVP_PKEY *pk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(pk);
    char tp[64];
    thumbprint_of(pk, tp);
    assert_string_equal(tp, k2);
    EVP_PKEY_free(pk);

    /* Tokens of the generated key verify. */
    rtc_jwt_claims c;
    full_claims(&c);
    char *tok = NULL;
    assert_int_equal(rtc_jwt_sign(ks, &c, &tok), 0);
    rtc_jwt_policy p = {"rtc", "rtc", 0, NOW_MS};
    assert_int_equal(rtc_jwt_verify(ks, tok, strlen(tok), &p, NULL, NULL, 0), RTC_JWT_OK);
    free(tok);
    rtc_jwt_keyset_free(ks);
}

static void test_public_only_keyset(void **state)
{
    fixture *f = *state;
    rtc_jwt_keyset *pub = NULL;
    char kid[64];
    assert_int_equal(rtc_jwt_keyset_new(&pub), 0);
    assert_int_equal(rtc_jwt_keyset_add_pem(pub, K.a_pub, strlen(K.a_pub), NULL, 5, kid), 0);
    assert_string_equal(kid, f->kid); /* same key, same thumbprint */
    assert_null(rtc_jwt_keyset_signing_kid(pub));
    rtc_jwt_key_info info;
    assert_int_equal(rtc_jwt_keyset_get(pub, 0, &info), 0);
    assert_false(info.has_private);
    assert_false(info.signing);
    assert_string_equal(info.public_pem, K.a_pub);

    rtc_jwt_claims c;
    full_claims(&c);
    char *tok = NULL;
    assert_int_equal(rtc_jwt_sign(pub, &c, &tok), RTC_EINVAL);
    assert_null(tok);
    const char *tok_a = good(f);
    assert_int_equal(rtc_jwt_verify(pub, tok_a, strlen(tok_a), &f->policy, NULL, NULL, 0),
                     RTC_JWT_OK);
    rtc_jwt_keyset_free(pub);
}

static void test_jwk_and_thumbprint(void **state)
{
    rtc_jwt_keyset *ks = NULL;
    char kid[64];
    assert_int_equal(rtc_jwt_keyset_new(&ks), 0);
    assert_int_equal(
        rtc_jwt_keyset_add_pem(ks, RFC7515_A3_PEM, strlen(RFC7515_A3_PEM), NULL, 0, kid), 0);
    assert_string_equal(kid, RFC7515_A3_THUMBPRINT);

    rtc_jwt_key_info info;
    assert_int_equal(rtc_jwt_keyset_get(ks, 0, &info), 0);
    assert_true(info.has_private);
    assert_string_equal(info.jwk_json,
                        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" RFC7515_A3_X
                        "\",\"y\":\"" RFC7515_A3_Y "\",\"kid\":\"" RFC7515_A3_THUMBPRINT
                        "\",\"alg\":\"ES256\",\"use\":\"sig\"}");
    /* The public PEM is SubjectPublicKeyInfo of the same point. */
    assert_non_null(strstr(info.public_pem, "-----BEGIN PUBLIC KEY-----"));
    BIO *bio = BIO_new_mem_buf(RFC7515_A3_PEM, -1);
    EVP_PKEY *priv = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    bio = BIO_new_mem_buf(info.public_pem, -1);
    EVP_PKEY *pubk = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_int_equal(EVP_PKEY_eq(priv, pubk), 1);
    char tp[64];
    thumbprint_of(pubk, tp);
    assert_string_equal(tp, RFC7515_A3_THUMBPRINT);
    EVP_PKEY_free(priv);
    EVP_PKEY_free(pubk);

    /* A given kid replaces the thumbprint everywhere. */
    rtc_jwt_keyset_clear(ks);
    assert_int_equal(
        rtc_jwt_keyset_add_pem(ks, RFC7515_A3_PEM, strlen(RFC7515_A3_PEM), "k-2024", 0, kid), 0);
    assert_string_equal(kid, "k-2024");
    assert_int_equal(rtc_jwt_keyset_get(ks, 0, &info), 0);
    assert_non_null(strstr(info.jwk_json, "\"kid\":\"k-2024\""));
    rtc_jwt_keyset_free(ks);
}

static void test_names_and_ids(void **state)
{
    assert_string_equal(rtc_jwt_error_name(RTC_JWT_OK), "ok");
    assert_string_equal(rtc_jwt_error_name(RTC_JWT_EXPIRED), "expired");
    assert_string_equal(rtc_jwt_error_name(RTC_JWT_BAD_SIGNATURE), "bad_signature");
    assert_string_equal(rtc_jwt_error_name(RTC_JWT_UNSUPPORTED_ALGORITHM), "unsupported_algorithm");
    assert_string_equal(rtc_jwt_error_name(RTC_JWT_SESSION_EXPIRED), "session_expired");
    assert_string_equal(rtc_jwt_error_name((rtc_jwt_error)99), "unknown");
    for (int e = 0; e <= RTC_JWT_SESSION_EXPIRED; e++)
        assert_string_not_equal(rtc_jwt_error_name((rtc_jwt_error)e), "unknown");

    assert_int_equal(rtc_jwt_grant_from_name("join"), RTC_JWT_GRANT_JOIN);
    assert_int_equal(rtc_jwt_grant_from_name("admin"), RTC_JWT_GRANT_ADMIN);
    assert_int_equal(rtc_jwt_grant_from_name("Admin"), 0);
    assert_int_equal(rtc_jwt_grant_from_name(""), 0);
    assert_int_equal(rtc_jwt_grant_from_name(NULL), 0);
    assert_string_equal(rtc_jwt_grant_name(RTC_JWT_GRANT_CREATE), "create");
    assert_string_equal(rtc_jwt_grant_name(RTC_JWT_GRANT_LIST), "list");
    assert_null(rtc_jwt_grant_name(1));
    assert_null(rtc_jwt_grant_name(RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_LIST));

    char a[23], b[23];
    assert_int_equal(rtc_jwt_new_id(a, sizeof(a)), 0);
    assert_int_equal(rtc_jwt_new_id(b, sizeof(b)), 0);
    assert_int_equal(strlen(a), 22);
    assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     22);
    assert_string_not_equal(a, b);
    assert_int_equal(rtc_jwt_new_id(a, 22), RTC_EINVAL);
}

/* Several threads on one keyset: the per-key contexts are shared under a
 * lock with a private fallback, so every result must still be right. */
typedef struct {
    fixture *f;
    int ok;
} worker;

static void *sign_verify_loop(void *arg)
{
    worker *w = arg;
    rtc_jwt_claims c, out;
    full_claims(&c);
    for (int i = 0; i < 100; i++) {
        char *tok = NULL;
        snprintf(c.token_id, sizeof(c.token_id), "t-%d", i);
        if (rtc_jwt_sign(w->f->ks, &c, &tok) != 0)
            return NULL;
        rtc_jwt_error e = rtc_jwt_verify(w->f->ks, tok, strlen(tok), &w->f->policy, &out, NULL, 0);
        free(tok);
        if (e != RTC_JWT_OK || strcmp(out.token_id, c.token_id) != 0)
            return NULL;
        w->ok++;
    }
    return NULL;
}

static void test_concurrent_sign_verify(void **state)
{
    fixture *f = *state;
    pthread_t t[4];
    worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){f, 0};
        assert_int_equal(pthread_create(&t[i], NULL, sign_verify_loop, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].ok, 100);
    }
}

/* jansson's allocator failing at every step of sign and verify: each call
 * fails cleanly (no crash, no leak under ASan) or succeeds. */
static int json_allocs_left;

static void *failing_malloc(size_t n)
{
    if (json_allocs_left-- <= 0)
        return NULL;
    return malloc(n);
}

static void test_json_allocation_failure(void **state)
{
    fixture *f = *state;
    rtc_jwt_claims c;
    full_claims(&c);
    const char *tok_ok = good(f);
    bool signed_ok = false, verified_ok = false;
    for (int n = 0; n < 200 && !(signed_ok && verified_ok); n++) {
        char *tok = NULL;
        json_allocs_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        int rc = rtc_jwt_sign(f->ks, &c, &tok);
        json_allocs_left = n;
        rtc_jwt_error e = rtc_jwt_verify(f->ks, tok_ok, strlen(tok_ok), &f->policy, NULL, NULL, 0);
        json_set_alloc_funcs(malloc, free);
        assert_true(rc == 0 || rc == RTC_ENOMEM || rc == RTC_EINVAL);
        assert_true(e == RTC_JWT_OK || e == RTC_JWT_MALFORMED);
        if (rc == 0) {
            assert_int_equal(verify(f, tok, NULL), RTC_JWT_OK);
            signed_ok = true;
        } else {
            assert_null(tok);
        }
        verified_ok |= e == RTC_JWT_OK;
        free(tok);
    }
    assert_true(signed_ok && verified_ok);
}

/* ---- cache --------------------------------------------------------------- */

static void claims_for(rtc_jwt_claims *c, const char *jti, int64_t exp_ms)
{
    full_claims(c);
    memset(c->token_id, 0, sizeof(c->token_id)); /* compared with memcmp */
    snprintf(c->token_id, sizeof(c->token_id), "%s", jti);
    c->expires_at_ms = exp_ms;
    strcpy(c->key_id, "kid-1");
}

static void test_cache_put_get(void **state)
{
    rtc_jwt_cache *c = NULL;
    rtc_jwt_claims in, out;
    int64_t checked = -1;
    assert_int_equal(rtc_jwt_cache_new(0, &c), RTC_EINVAL);
    assert_int_equal(rtc_jwt_cache_new(16, &c), 0);
    claims_for(&in, "j1", NOW_MS + 60000);
    assert_false(rtc_jwt_cache_get(c, "tok1", 4, NOW_MS, &out, &checked));
    assert_int_equal(rtc_jwt_cache_put(c, "tok1", 4, &in, 0), 0);
    assert_int_equal(rtc_jwt_cache_size(c), 1);
    assert_true(rtc_jwt_cache_get(c, "tok1", 4, NOW_MS, &out, &checked));
    assert_memory_equal(&in, &out, sizeof(in));
    assert_int_equal(checked, 0);
    /* The key is the whole token: a prefix or a longer string misses. */
    assert_false(rtc_jwt_cache_get(c, "tok", 3, NOW_MS, &out, &checked));
    assert_false(rtc_jwt_cache_get(c, "tok1x", 5, NOW_MS, &out, &checked));
    /* Replace: new claims, still one entry. */
    strcpy(in.identity, "someone-else");
    assert_int_equal(rtc_jwt_cache_put(c, "tok1", 4, &in, NOW_MS), 0);
    assert_int_equal(rtc_jwt_cache_size(c), 1);
    assert_true(rtc_jwt_cache_get(c, "tok1", 4, NOW_MS, &out, NULL));
    assert_string_equal(out.identity, "someone-else");
    assert_true(rtc_jwt_cache_get(c, "tok1", 4, NOW_MS, NULL, &checked));
    assert_int_equal(checked, NOW_MS);
    rtc_jwt_cache_clear(c);
    assert_int_equal(rtc_jwt_cache_size(c), 0);
    assert_false(rtc_jwt_cache_get(c, "tok1", 4, NOW_MS, &out, &checked));
    rtc_jwt_cache_free(c);
}

static void test_cache_expiry(void **state)
{
    rtc_jwt_cache *c = NULL;
    rtc_jwt_claims in, out;
    assert_int_equal(rtc_jwt_cache_new(16, &c), 0);
    claims_for(&in, "j1", NOW_MS + 1000);
    assert_int_equal(rtc_jwt_cache_put(c, "tok1", 4, &in, NOW_MS), 0);
    assert_true(rtc_jwt_cache_get(c, "tok1", 4, NOW_MS + 999, &out, NULL));
    /* At exp it is gone, and dropped. */
    assert_false(rtc_jwt_cache_get(c, "tok1", 4, NOW_MS + 1000, &out, NULL));
    assert_int_equal(rtc_jwt_cache_size(c), 0);
    assert_false(rtc_jwt_cache_get(c, "tok1", 4, NOW_MS, &out, NULL));
    rtc_jwt_cache_free(c);
}

static void test_cache_eviction_at_capacity(void **state)
{
    rtc_jwt_cache *c = NULL;
    rtc_jwt_claims in, out;
    char tok[16];
    assert_int_equal(rtc_jwt_cache_new(4, &c), 0);
    /* t0 (expires soon), t1..t3 (expire late), inserted in that order. */
    claims_for(&in, "j0", NOW_MS + 1000);
    assert_int_equal(rtc_jwt_cache_put(c, "t0", 2, &in, NOW_MS), 0);
    for (int i = 1; i < 4; i++) {
        snprintf(tok, sizeof(tok), "t%d", i);
        claims_for(&in, tok, NOW_MS + 100000 + i);
        assert_int_equal(rtc_jwt_cache_put(c, tok, 2, &in, NOW_MS), 0);
    }
    assert_int_equal(rtc_jwt_cache_size(c), 4);

    /* Full, nothing expired: the oldest (t0) goes. */
    claims_for(&in, "j4", NOW_MS + 100000);
    assert_int_equal(rtc_jwt_cache_put(c, "t4", 2, &in, NOW_MS), 0);
    assert_int_equal(rtc_jwt_cache_size(c), 4);
    assert_false(rtc_jwt_cache_get(c, "t0", 2, NOW_MS, &out, NULL));
    assert_true(rtc_jwt_cache_get(c, "t1", 2, NOW_MS, &out, NULL));

    /* t3 expires early; once the cache has seen a later time it is the
     * victim, though t1 is older. */
    claims_for(&in, "t3", NOW_MS + 2000);
    assert_int_equal(rtc_jwt_cache_put(c, "t3", 2, &in, NOW_MS), 0);
    assert_int_equal(rtc_jwt_cache_size(c), 4);
    assert_true(rtc_jwt_cache_get(c, "t1", 2, NOW_MS + 5000, &out, NULL)); /* clock moves */
    claims_for(&in, "j5", NOW_MS + 100000);
    assert_int_equal(rtc_jwt_cache_put(c, "t5", 2, &in, NOW_MS + 5000), 0);
    assert_int_equal(rtc_jwt_cache_size(c), 4);
    assert_true(rtc_jwt_cache_get(c, "t1", 2, NOW_MS + 5000, &out, NULL));
    assert_true(rtc_jwt_cache_get(c, "t2", 2, NOW_MS + 5000, &out, NULL));
    assert_true(rtc_jwt_cache_get(c, "t4", 2, NOW_MS + 5000, &out, NULL));
    assert_true(rtc_jwt_cache_get(c, "t5", 2, NOW_MS + 5000, &out, NULL));
    rtc_jwt_cache_free(c);
}

static void test_cache_forget_jti(void **state)
{
    rtc_jwt_cache *c = NULL;
    rtc_jwt_claims in, out;
    assert_int_equal(rtc_jwt_cache_new(16, &c), 0);
    /* Two strings of one token id (e.g. re-issued), one of another. */
    claims_for(&in, "revoked", NOW_MS + 60000);
    assert_int_equal(rtc_jwt_cache_put(c, "a", 1, &in, 0), 0);
    assert_int_equal(rtc_jwt_cache_put(c, "b", 1, &in, 0), 0);
    claims_for(&in, "kept", NOW_MS + 60000);
    assert_int_equal(rtc_jwt_cache_put(c, "c", 1, &in, 0), 0);
    rtc_jwt_cache_forget_jti(c, "revoked");
    assert_int_equal(rtc_jwt_cache_size(c), 1);
    assert_false(rtc_jwt_cache_get(c, "a", 1, NOW_MS, &out, NULL));
    assert_false(rtc_jwt_cache_get(c, "b", 1, NOW_MS, &out, NULL));
    assert_true(rtc_jwt_cache_get(c, "c", 1, NOW_MS, &out, NULL));
    rtc_jwt_cache_forget_jti(c, "nothing");
    assert_int_equal(rtc_jwt_cache_size(c), 1);
    rtc_jwt_cache_free(c);
}

static void test_cache_touch(void **state)
{
    rtc_jwt_cache *c = NULL;
    rtc_jwt_claims in, out;
    int64_t checked = 0;
    assert_int_equal(rtc_jwt_cache_new(16, &c), 0);
    claims_for(&in, "j", NOW_MS + 60000);
    assert_int_equal(rtc_jwt_cache_put(c, "tok", 3, &in, NOW_MS), 0);
    rtc_jwt_cache_touch(c, "tok", 3, NOW_MS + 5000);
    assert_true(rtc_jwt_cache_get(c, "tok", 3, NOW_MS + 6000, &out, &checked));
    assert_int_equal(checked, NOW_MS + 5000);
    rtc_jwt_cache_touch(c, "other", 5, NOW_MS + 7000); /* absent: nothing happens */
    assert_int_equal(rtc_jwt_cache_size(c), 1);
    rtc_jwt_cache_free(c);
}

/* The cache against a plain array doing the same thing slowly, under a
 * random mix of operations (checks the hash chains, heap and age list). */
typedef struct {
    int id;
    int64_t exp, seq;
} model_entry;

static void test_cache_matches_model(void **state)
{
    enum { CAP = 32, IDS = 100, OPS = 20000 };
    rtc_jwt_cache *c = NULL;
    model_entry m[CAP];
    size_t mn = 0;
    int64_t clock = NOW_MS, seq = 0;
    rtc_jwt_claims in, out;
    char tok[32], jti[32];
    srand(12345);
    assert_int_equal(rtc_jwt_cache_new(CAP, &c), 0);
    for (int op = 0; op < OPS; op++) {
        int id = rand() % IDS, kind = rand() % 10;
        snprintf(tok, sizeof(tok), "token-%d", id);
        snprintf(jti, sizeof(jti), "jti-%d", id % 50); /* two tokens per jti */
        size_t at = mn;
        for (size_t i = 0; i < mn; i++)
            if (m[i].id == id)
                at = i;
        if (kind < 5) { /* put */
            int64_t exp = clock + (rand() % 4000) * 1000;
            for (size_t i = 0; i < mn; i++) /* unique, so the victim is unambiguous */
                if (m[i].exp == exp) {
                    exp++;
                    i = (size_t)-1;
                }
            claims_for(&in, jti, exp);
            assert_int_equal(rtc_jwt_cache_put(c, tok, strlen(tok), &in, clock), 0);
            if (at == mn && mn == CAP) {
                size_t victim = 0;
                for (size_t i = 1; i < mn; i++)
                    if (m[i].exp < m[victim].exp)
                        victim = i;
                if (m[victim].exp > clock) {
                    victim = 0;
                    for (size_t i = 1; i < mn; i++)
                        if (m[i].seq < m[victim].seq)
                            victim = i;
                }
                m[victim] = m[--mn];
                at = mn;
            }
            if (at == mn)
                mn++;
            m[at] = (model_entry){id, exp, ++seq};
        } else if (kind < 9) { /* get, time moving forward */
            clock += rand() % 300;
            bool hit = rtc_jwt_cache_get(c, tok, strlen(tok), clock, &out, NULL);
            bool want = at < mn && m[at].exp > clock;
            assert_int_equal(hit, want);
            if (hit)
                assert_int_equal(out.expires_at_ms, m[at].exp);
            if (at < mn && !want)
                m[at] = m[--mn];
        } else { /* forget by jti */
            rtc_jwt_cache_forget_jti(c, jti);
            for (size_t i = 0; i < mn;)
                if (m[i].id % 50 == id % 50)
                    m[i] = m[--mn];
                else
                    i++;
        }
        assert_int_equal(rtc_jwt_cache_size(c), mn);
    }
    rtc_jwt_cache_free(c);
}

/* ---- libjwt cross-check --------------------------------------------------- */

static void test_libjwt_accepts_our_token(void **state)
{
    fixture *f = *state;
    rtc_jwt_claims c;
    full_claims(&c);
    char *tok = NULL;
    assert_int_equal(rtc_jwt_sign(f->ks, &c, &tok), 0);
    keep(tok);

    jwt_t *j = NULL;
    assert_int_equal(jwt_decode(&j, tok, (const unsigned char *)K.a_pub, (int)strlen(K.a_pub)), 0);
    assert_int_equal(jwt_get_alg(j), JWT_ALG_ES256);
    assert_string_equal(jwt_get_header(j, "kid"), f->kid);
    assert_string_equal(jwt_get_header(j, "typ"), "JWT");
    assert_string_equal(jwt_get_grant(j, "sub"), "user-42");
    assert_string_equal(jwt_get_grant(j, "jti"), "jti-42");
    assert_string_equal(jwt_get_grant(j, "name"), c.display_name);
    assert_int_equal(jwt_get_grant_int(j, "exp"), c.expires_at_ms / 1000);
    assert_int_equal(jwt_get_grant_int(j, "auth_time"), c.session_started_at_ms / 1000);
    char *aud = jwt_get_grants_json(j, "aud");
    assert_string_equal(aud, "[\"rtc\",\"signaling\"]");
    free(aud);
    jwt_free(j);

    /* libjwt refuses it with another key, so the check above means something. */
    char *b_pub = pem_of(K.b, 0);
    j = NULL;
    assert_int_not_equal(jwt_decode(&j, tok, (const unsigned char *)b_pub, (int)strlen(b_pub)), 0);
    jwt_free(j);
    free(b_pub);
}

static void test_we_accept_libjwt_token(void **state)
{
    fixture *f = *state;
    jwt_t *j = NULL;
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(
        jwt_set_alg(j, JWT_ALG_ES256, (const unsigned char *)K.a_priv, (int)strlen(K.a_priv)), 0);
    assert_int_equal(jwt_add_header(j, "kid", f->kid), 0);
    assert_int_equal(jwt_add_grant(j, "iss", "rtc"), 0);
    assert_int_equal(jwt_add_grant(j, "sub", "from-libjwt"), 0);
    assert_int_equal(jwt_add_grant(j, "jti", "lj-1"), 0);
    assert_int_equal(jwt_add_grant_int(j, "iat", NOW_S - 5), 0);
    assert_int_equal(jwt_add_grant_int(j, "exp", NOW_S + 600), 0);
    assert_int_equal(jwt_add_grants_json(j, "{\"aud\":[\"rtc\"],\"grants\":[\"create\"]}"), 0);
    char *tok = jwt_encode_str(j);
    assert_non_null(tok);
    jwt_free(j);

    rtc_jwt_claims c;
    assert_int_equal(verify(f, tok, &c), RTC_JWT_OK);
    assert_string_equal(c.identity, "from-libjwt");
    assert_string_equal(c.token_id, "lj-1");
    assert_int_equal(c.expires_at_ms, (NOW_S + 600) * 1000);
    assert_int_equal(c.issued_at_ms, (NOW_S - 5) * 1000);
    assert_int_equal(c.grants, RTC_JWT_GRANT_CREATE);
    assert_string_equal(c.key_id, f->kid);

    /* And a libjwt token signed with B under A's kid is refused. */
    assert_int_equal(jwt_new(&j), 0);
    assert_int_equal(
        jwt_set_alg(j, JWT_ALG_ES256, (const unsigned char *)K.b_priv, (int)strlen(K.b_priv)), 0);
    assert_int_equal(jwt_add_header(j, "kid", f->kid), 0);
    assert_int_equal(jwt_add_grant(j, "iss", "rtc"), 0);
    assert_int_equal(jwt_add_grant(j, "aud", "rtc"), 0);
    assert_int_equal(jwt_add_grant(j, "sub", "x"), 0);
    assert_int_equal(jwt_add_grant(j, "jti", "y"), 0);
    assert_int_equal(jwt_add_grant_int(j, "exp", NOW_S + 600), 0);
    char *bad = jwt_encode_str(j);
    jwt_free(j);
    assert_verdict(f, bad, RTC_JWT_BAD_SIGNATURE);
    free(bad);
    free(tok);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_control_token_verifies),
        /* shape */
        T(test_reject_too_long),
        T(test_reject_not_three_parts),
        T(test_reject_bad_base64url),
        T(test_reject_noncanonical_base64url),
        T(test_reject_header_not_json),
        T(test_reject_header_not_object),
        /* algorithm */
        T(test_reject_alg_none_empty_signature),
        T(test_reject_alg_none_with_signature),
        T(test_reject_hs256_keyed_with_public_key),
        T(test_reject_alg_es384),
        T(test_reject_alg_missing),
        T(test_reject_alg_not_string),
        /* header */
        T(test_reject_typ_wrong),
        T(test_typ_absent_or_any_case_accepted),
        T(test_reject_crit_present),
        T(test_reject_kid_missing),
        T(test_reject_kid_not_string),
        T(test_reject_kid_unknown),
        /* keys */
        T(test_keyset_rejects_empty),
        T(test_keyset_rejects_garbage_pem),
        T(test_keyset_rejects_rsa),
        T(test_keyset_rejects_p384),
        T(test_keyset_rejects_encrypted_pem),
        T(test_keyset_kid_rules),
        T(test_keyset_accepts_pem_forms),
        /* signature */
        T(test_reject_signature_wrong_length),
        T(test_reject_signature_der),
        T(test_reject_signature_zero),
        T(test_reject_signature_other_key),
        T(test_reject_tampered_payload),
        T(test_reject_tampered_header),
        /* claims */
        T(test_reject_expired),
        T(test_expired_within_leeway_accepted),
        T(test_reject_nbf_in_future),
        T(test_reject_iat_in_future),
        T(test_reject_wrong_issuer),
        T(test_reject_wrong_audience_string),
        T(test_reject_wrong_audience_array),
        T(test_reject_missing_sub),
        T(test_reject_missing_jti),
        T(test_reject_missing_exp),
        T(test_reject_wrong_claim_types),
        T(test_reject_payload_not_object),
        T(test_reject_oversize_field),
        T(test_reject_unknown_grant),
        T(test_reject_duplicate_json_keys),
        /* positive */
        T(test_roundtrip_all_claims),
        T(test_sign_escapes),
        T(test_roundtrip_largest_claims),
        T(test_sign_rejects_bad_claims),
        T(test_several_keys_and_rotation),
        T(test_keyset_generate),
        T(test_public_only_keyset),
        T(test_jwk_and_thumbprint),
        T(test_names_and_ids),
        T(test_concurrent_sign_verify),
        T(test_json_allocation_failure),
        /* cache */
        T(test_cache_put_get),
        T(test_cache_expiry),
        T(test_cache_eviction_at_capacity),
        T(test_cache_forget_jti),
        T(test_cache_touch),
        T(test_cache_matches_model),
        /* libjwt */
        T(test_libjwt_accepts_our_token),
        T(test_we_accept_libjwt_token),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

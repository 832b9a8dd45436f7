/* API keys for internal callers: `authorization: Basic base64(id:secret)`.
 *
 * Only SHA-256 digests of secrets are kept. The key id is looked up in
 * plain (ids are not secret); the digest of the presented secret is then
 * compared with CRYPTO_memcmp, so timing reveals nothing about the secret.
 * An unknown id still hashes and compares against a dummy digest so both
 * failures cost the same. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "rtc/authn.h"
#include "rtc/core.h"
#include "rtc/error.h"

#define MAX_KEY_ID 64
#define MIN_SECRET 16
#define MAX_SECRET 512
#define MAX_FILE   (1024 * 1024)
#define MAX_HEADER 2048

typedef struct apikey {
    char id[MAX_KEY_ID + 1];
    uint8_t digest[SHA256_DIGEST_LENGTH];
    uint32_t rights;
} apikey;

struct rtc_apikeys {
    apikey *keys;
    size_t n, cap;
    /* SHA-256 fetched once: a one-shot SHA256() looks the algorithm up on
     * every call (it showed in the API-key check's profile). Used from the
     * loop thread only. */
    EVP_MD *sha256;
    EVP_MD_CTX *ctx;
};

static int digest(const rtc_apikeys *k, const void *data, size_t len, uint8_t *out)
{
    unsigned int n = 0;
    if (EVP_DigestInit_ex2(k->ctx, k->sha256, NULL) != 1 ||
        EVP_DigestUpdate(k->ctx, data, len) != 1 || EVP_DigestFinal_ex(k->ctx, out, &n) != 1 ||
        n != SHA256_DIGEST_LENGTH)
        return RTC_EIO;
    return 0;
}

__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t errlen, const char *fmt,
                                                         ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static bool valid_id(const char *s, size_t n)
{
    if (n == 0 || n > MAX_KEY_ID)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '_' && c != '.' && c != '-')
            return false;
    }
    return true;
}

static int parse_rights(const char *s, size_t n, uint32_t *out, char *bad, size_t badlen)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } names[] = {
        {"issue", RTC_APIKEY_ISSUE},
        {"revoke", RTC_APIKEY_REVOKE},
        {"verify", RTC_APIKEY_VERIFY},
        {"admin", RTC_APIKEY_ADMIN},
    };
    uint32_t rights = 0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != ',')
            j++;
        bool found = false;
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
            if (strlen(names[k].name) == j - i && memcmp(names[k].name, s + i, j - i) == 0) {
                rights |= names[k].bit;
                found = true;
            }
        }
        if (!found) {
            snprintf(bad, badlen, "%.*s", (int)(j - i > 32 ? 32 : j - i), s + i);
            return RTC_EINVAL;
        }
        i = j + 1;
    }
    if (!rights) {
        snprintf(bad, badlen, "(none)");
        return RTC_EINVAL;
    }
    if (rights & RTC_APIKEY_ADMIN)
        rights |= RTC_APIKEY_ISSUE | RTC_APIKEY_REVOKE | RTC_APIKEY_VERIFY;
    *out = rights;
    return 0;
}

/* Split one entry into fields at whitespace and ':'. "sha256" followed by
 * a field is one secret field (a digest). */
typedef struct field {
    const char *p;
    size_t n;
} field;

static int parse_entry(rtc_apikeys *ks, const char *s, size_t n, int lineno, char *err,
                       size_t errlen)
{
    field f[5];
    size_t nf = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (isspace((unsigned char)s[i]) || s[i] == ':'))
            i++;
        if (i >= n)
            break;
        size_t j = i;
        while (j < n && !isspace((unsigned char)s[j]) && s[j] != ':')
            j++;
        if (nf == 5) {
            seterr(err, errlen, "line %d: too many fields (want: <key_id> <secret> <rights>)",
                   lineno);
            return RTC_EINVAL;
        }
        f[nf].p = s + i;
        f[nf].n = j - i;
        nf++;
        i = j;
    }
    if (nf == 0)
        return 0;
    bool hashed = nf == 4 && f[1].n == 6 && memcmp(f[1].p, "sha256", 6) == 0;
    if (nf != 3 && !hashed) {
        seterr(err, errlen, "line %d: want <key_id> <secret> <rights>", lineno);
        return RTC_EINVAL;
    }
    if (!valid_id(f[0].p, f[0].n)) {
        seterr(err, errlen, "line %d: key id must be 1-64 of [A-Za-z0-9_.-]", lineno);
        return RTC_EINVAL;
    }
    apikey k = {0};
    memcpy(k.id, f[0].p, f[0].n);
    for (size_t x = 0; x < ks->n; x++) {
        if (strcmp(ks->keys[x].id, k.id) == 0) {
            seterr(err, errlen, "line %d: duplicate key id '%s'", lineno, k.id);
            return RTC_EINVAL;
        }
    }
    field secret = hashed ? f[2] : f[1];
    field rights = hashed ? f[3] : f[2];
    if (hashed) {
        if (secret.n != 2 * SHA256_DIGEST_LENGTH) {
            seterr(err, errlen, "line %d: sha256 digest must be 64 hex digits", lineno);
            return RTC_EINVAL;
        }
        for (size_t x = 0; x < SHA256_DIGEST_LENGTH; x++) {
            int hi = rtc_hex_digit((unsigned char)secret.p[2 * x]),
                lo = rtc_hex_digit((unsigned char)secret.p[2 * x + 1]);
            if (hi < 0 || lo < 0) {
                seterr(err, errlen, "line %d: sha256 digest must be 64 hex digits", lineno);
                return RTC_EINVAL;
            }
            k.digest[x] = (uint8_t)(hi << 4 | lo);
        }
    } else {
        if (secret.n < MIN_SECRET || secret.n > MAX_SECRET) {
            seterr(err, errlen, "line %d: secret of key '%s' must be %d-%d bytes", lineno, k.id,
                   MIN_SECRET, MAX_SECRET);
            return RTC_EINVAL;
        }
        if (digest(ks, secret.p, secret.n, k.digest) < 0)
            return RTC_EIO;
    }
    char bad[40];
    if (parse_rights(rights.p, rights.n, &k.rights, bad, sizeof(bad)) < 0) {
        seterr(err, errlen, "line %d: unknown right '%s' (issue, revoke, verify, admin)", lineno,
               bad);
        return RTC_EINVAL;
    }
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 8;
        apikey *nk = realloc(ks->keys, cap * sizeof(*nk));
        if (!nk)
            return RTC_ENOMEM;
        ks->keys = nk;
        ks->cap = cap;
    }
    ks->keys[ks->n++] = k;
    return 0;
}

int rtc_apikeys_parse(const char *text, rtc_apikeys **out, char *err, size_t errlen)
{
    *out = NULL;
    rtc_apikeys *ks = calloc(1, sizeof(*ks));
    if (!ks)
        return RTC_ENOMEM;
    ks->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    ks->ctx = EVP_MD_CTX_new();
    if (!ks->sha256 || !ks->ctx) {
        rtc_apikeys_free(ks);
        return RTC_ENOMEM;
    }
    const char *p = text ? text : "";
    int lineno = 1;
    while (*p) {
        size_t n = strcspn(p, "\n;#");
        int rc = parse_entry(ks, p, n, lineno, err, errlen);
        if (rc < 0) {
            rtc_apikeys_free(ks);
            return rc;
        }
        p += n;
        if (*p == '#')
            p += strcspn(p, "\n");
        if (*p == '\n')
            lineno++;
        if (*p)
            p++;
    }
    *out = ks;
    return 0;
}

int rtc_apikeys_load_file(const char *path, rtc_apikeys **out, char *err, size_t errlen)
{
    *out = NULL;
    char *buf;
    size_t n;
    int rc = rtc_read_file(path, MAX_FILE, &buf, &n);
    if (rc < 0) {
        seterr(err, errlen, "%s: %s", path,
               rc == RTC_EIO       ? strerror(errno)
               : rc == RTC_ETOOBIG ? "larger than 1 MiB"
                                   : rtc_strerror(rc));
        return rc;
    }
    if (memchr(buf, '\0', n)) {
        seterr(err, errlen, "%s: contains a NUL byte", path);
        OPENSSL_cleanse(buf, n);
        free(buf);
        return RTC_EINVAL;
    }
    char sub[256];
    rc = rtc_apikeys_parse(buf, out, sub, sizeof(sub));
    OPENSSL_cleanse(buf, n);
    free(buf);
    if (rc < 0)
        seterr(err, errlen, "%s: %s", path, sub);
    return rc;
}

size_t rtc_apikeys_count(const rtc_apikeys *k)
{
    return k ? k->n : 0;
}

void rtc_apikeys_free(rtc_apikeys *k)
{
    if (!k)
        return;
    if (k->keys)
        OPENSSL_cleanse(k->keys, k->cap * sizeof(*k->keys));
    free(k->keys);
    EVP_MD_CTX_free(k->ctx);
    EVP_MD_free(k->sha256);
    free(k);
}

static bool scheme_is(const char *h, const char *scheme, const char **rest)
{
    size_t n = strlen(scheme);
    if (!h || strncasecmp(h, scheme, n) != 0 || h[n] != ' ')
        return false;
    h += n;
    while (*h == ' ')
        h++;
    *rest = h;
    return true;
}

bool rtc_authn_is_basic(const char *authorization)
{
    const char *rest;
    return scheme_is(authorization, "Basic", &rest);
}

bool rtc_authn_bearer(const char *authorization, const char **token, size_t *len)
{
    const char *rest;
    if (!scheme_is(authorization, "Bearer", &rest))
        return false;
    size_t n = strlen(rest);
    while (n && rest[n - 1] == ' ')
        n--;
    if (!n)
        return false;
    *token = rest;
    *len = n;
    return true;
}

/* Strict standard base64 (with padding) → bytes; -1 when invalid. */
static long b64_decode(const char *in, size_t n, uint8_t *out, size_t outcap)
{
    if (n == 0 || n % 4 != 0 || n / 4 * 3 > outcap)
        return -1;
    size_t pad = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '=') {
            if (i < n - 2)
                return -1;
            pad++;
        } else if (pad || !(isalnum(c) || c == '+' || c == '/')) {
            return -1;
        }
    }
    int m = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (m < 0)
        return -1;
    return (long)m - (long)pad;
}

rtc_authn_result rtc_apikeys_check(const rtc_apikeys *k, const char *authorization, uint32_t need,
                                   char *key_id_out)
{
    const char *b64;
    if (!scheme_is(authorization, "Basic", &b64))
        return RTC_AUTHN_UNAUTHENTICATED;
    size_t n = strlen(b64);
    while (n && b64[n - 1] == ' ')
        n--;
    if (n > MAX_HEADER)
        return RTC_AUTHN_UNAUTHENTICATED;
    uint8_t raw[MAX_HEADER];
    long m = b64_decode(b64, n, raw, sizeof(raw) - 1);
    if (m <= 0)
        return RTC_AUTHN_UNAUTHENTICATED;
    uint8_t *colon = memchr(raw, ':', (size_t)m);
    if (!colon)
        goto unauth;
    size_t idn = (size_t)(colon - raw);
    const uint8_t *secret = colon + 1;
    size_t secretn = (size_t)m - idn - 1;

    const apikey *found = NULL;
    if (k && valid_id((const char *)raw, idn)) {
        for (size_t i = 0; i < k->n; i++) {
            if (strlen(k->keys[i].id) == idn && memcmp(k->keys[i].id, raw, idn) == 0)
                found = &k->keys[i];
        }
    }
    static const uint8_t dummy[SHA256_DIGEST_LENGTH] = {0};
    uint8_t got[SHA256_DIGEST_LENGTH];
    bool match = k && digest(k, secret, secretn, got) == 0 &&
                 CRYPTO_memcmp(got, found ? found->digest : dummy, sizeof(got)) == 0;
    OPENSSL_cleanse(raw, sizeof(raw));
    if (!found || !match)
        return RTC_AUTHN_UNAUTHENTICATED;
    if ((found->rights & need) != need)
        return RTC_AUTHN_PERMISSION_DENIED;
    if (key_id_out)
        snprintf(key_id_out, MAX_KEY_ID + 1, "%s", found->id);
    return RTC_AUTHN_OK;
unauth:
    OPENSSL_cleanse(raw, sizeof(raw));
    return RTC_AUTHN_UNAUTHENTICATED;
}

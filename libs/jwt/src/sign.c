/* sign.c — claims to a compact ES256 JWS.
 *
 * The output is what verify.c accepts and nothing more: sign refuses
 * claims that would not come back unchanged (strings without their NUL,
 * unknown grant bits, negative times), so a token we issue always verifies
 * with the same key and policy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt_internal.h"
#include "rtc/error.h"
#include "rtc/utf8.h"

/* True when s is NUL-terminated inside its buffer. */
static bool bounded(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

/* The claims JSON is written directly rather than built and dumped with
 * jansson: for this fixed shape jansson's object building and json_dumpb
 * cost ~10 % of an IssueToken call (measured with perf), as much as all of
 * the gRPC handling. Verification still parses with jansson, and the unit
 * tests check every token we write with jansson, libjwt and the verifier. */
typedef struct jw {
    char *p, *end;
    bool ok;
} jw;

static void jw_raw(jw *w, const char *s, size_t n)
{
    if (!w->ok || (size_t)(w->end - w->p) < n) {
        w->ok = false;
        return;
    }
    memcpy(w->p, s, n);
    w->p += n;
}

/* A JSON string (RFC 8259 §7): quote, backslash and control characters
 * escaped; the bytes must already be valid UTF-8. */
static void jw_str(jw *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    jw_raw(w, "\"", 1);
    for (const char *q = s; *q; q++) {
        unsigned char c = (unsigned char)*q;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            jw_raw(w, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jw_raw(w, e, 6);
        } else {
            jw_raw(w, q, 1);
        }
    }
    jw_raw(w, "\"", 1);
}

static void jw_key(jw *w, const char *k, bool *first)
{
    if (!*first)
        jw_raw(w, ",", 1);
    *first = false;
    jw_str(w, k);
    jw_raw(w, ":", 1);
}

static void jw_int(jw *w, int64_t v)
{
    char b[24];
    int n = snprintf(b, sizeof(b), "%lld", (long long)v);
    jw_raw(w, b, (size_t)n);
}

static bool utf8_ok(const char *s)
{
    return rtc_utf8_valid(s, strlen(s));
}

/* Writes the claims object into [buf, buf+cap); returns its length, or 0
 * when it does not fit or a string is not UTF-8. Member order is fixed. */
static size_t claims_write(const rtc_jwt_claims *c, char *buf, size_t cap)
{
    jw w = {buf, buf + cap, true};
    bool first = true;
    if (!utf8_ok(c->issuer) || !utf8_ok(c->identity) || !utf8_ok(c->token_id) ||
        !utf8_ok(c->room_id) || !utf8_ok(c->display_name))
        return 0;
    for (size_t i = 0; i < c->naudience; i++)
        if (!utf8_ok(c->audience[i]))
            return 0;
    jw_raw(&w, "{", 1);
    if (c->issuer[0]) {
        jw_key(&w, "iss", &first);
        jw_str(&w, c->issuer);
    }
    if (c->naudience == 1) {
        jw_key(&w, "aud", &first);
        jw_str(&w, c->audience[0]);
    } else if (c->naudience > 1) {
        jw_key(&w, "aud", &first);
        jw_raw(&w, "[", 1);
        for (size_t i = 0; i < c->naudience; i++) {
            if (i)
                jw_raw(&w, ",", 1);
            jw_str(&w, c->audience[i]);
        }
        jw_raw(&w, "]", 1);
    }
    jw_key(&w, "sub", &first);
    jw_str(&w, c->identity);
    if (c->issued_at_ms > 0) {
        jw_key(&w, "iat", &first);
        jw_int(&w, c->issued_at_ms / 1000);
    }
    if (c->not_before_ms > 0) {
        jw_key(&w, "nbf", &first);
        jw_int(&w, c->not_before_ms / 1000);
    }
    jw_key(&w, "exp", &first);
    jw_int(&w, c->expires_at_ms / 1000);
    jw_key(&w, "jti", &first);
    jw_str(&w, c->token_id);
    if (c->room_id[0]) {
        jw_key(&w, "room", &first);
        jw_str(&w, c->room_id);
    }
    if (c->grants) {
        jw_key(&w, "grants", &first);
        jw_raw(&w, "[", 1);
        bool any = false;
        for (uint32_t bit = 1; bit != 0; bit <<= 1) {
            if (!(c->grants & bit))
                continue;
            if (any)
                jw_raw(&w, ",", 1);
            jw_str(&w, rtc_jwt_grant_name(bit));
            any = true;
        }
        jw_raw(&w, "]", 1);
    }
    if (c->display_name[0]) {
        jw_key(&w, "name", &first);
        jw_str(&w, c->display_name);
    }
    if (c->session_started_at_ms > 0) {
        jw_key(&w, "auth_time", &first);
        jw_int(&w, c->session_started_at_ms / 1000);
    }
    jw_raw(&w, "}", 1);
    return w.ok ? (size_t)(w.p - buf) : 0;
}

static bool claims_ok(const rtc_jwt_claims *c)
{
    if (!bounded(c->issuer, sizeof(c->issuer)) || !bounded(c->identity, sizeof(c->identity)) ||
        !bounded(c->token_id, sizeof(c->token_id)) || !bounded(c->room_id, sizeof(c->room_id)) ||
        !bounded(c->display_name, sizeof(c->display_name)))
        return false;
    if (c->naudience > RTC_JWT_MAX_AUDIENCES)
        return false;
    for (size_t i = 0; i < c->naudience; i++)
        if (!bounded(c->audience[i], sizeof(c->audience[i])))
            return false;
    if (!c->identity[0] || !c->token_id[0])
        return false;
    /* Times in the range verify accepts; exp must survive the rounding to
     * whole seconds. */
    if (c->expires_at_ms < 1000 || c->expires_at_ms > JWT_MAX_MS || c->issued_at_ms < 0 ||
        c->issued_at_ms > JWT_MAX_MS || c->not_before_ms < 0 || c->not_before_ms > JWT_MAX_MS ||
        c->session_started_at_ms < 0 || c->session_started_at_ms > JWT_MAX_SECONDS * 1000)
        return false;
    uint32_t known =
        RTC_JWT_GRANT_JOIN | RTC_JWT_GRANT_CREATE | RTC_JWT_GRANT_LIST | RTC_JWT_GRANT_ADMIN;
    return (c->grants & ~known) == 0;
}

int rtc_jwt_sign(const rtc_jwt_keyset *ks, const rtc_jwt_claims *claims, char **out)
{
    int rc = RTC_EINVAL;
    /* Every field is bounded by its buffer: 6x for \u00XX escapes. */
    char small[16384], *ps = small, *tok = NULL;
    size_t psl;
    jwt_key *k;

    if (!out)
        return RTC_EINVAL;
    *out = NULL;
    if (!ks || !claims || !(k = jwt_keyset_signer(ks)) || !claims_ok(claims))
        return RTC_EINVAL;
    /* Bad UTF-8 in a claim, or a token too large to be accepted. */
    psl = claims_write(claims, small, sizeof(small));
    if (psl == 0)
        goto out;
    rc = RTC_ENOMEM;

    /* {"alg":"ES256","typ":"JWT","kid":…}, encoded when the key was added. */
    size_t hl = strlen(k->header_b64), pl = jwt_b64url_len(psl);
    size_t sl = jwt_b64url_len(64);
    size_t total = hl + 1 + pl + 1 + sl;
    if (total > RTC_JWT_MAX_TOKEN) {
        rc = RTC_EINVAL; /* we would refuse it ourselves */
        goto out;
    }
    tok = malloc(total + 1);
    if (!tok)
        goto out;
    memcpy(tok, k->header_b64, hl);
    tok[hl] = '.';
    jwt_b64url_encode((const uint8_t *)ps, psl, tok + hl + 1);
    tok[hl + 1 + pl] = '.';

    uint8_t digest[32], sig[64];
    if (jwt_keyset_sha256(ks, tok, hl + 1 + pl, digest) < 0 ||
        jwt_key_sign_digest(k, digest, sig) < 0) {
        rc = RTC_EINVAL;
        goto out;
    }
    jwt_b64url_encode(sig, sizeof(sig), tok + hl + 1 + pl + 1);
    *out = tok;
    tok = NULL;
    rc = 0;
out:
    free(tok);
    return rc;
}

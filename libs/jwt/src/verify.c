/* verify.c — strict ES256 token verification.
 *
 * The order is the defence: the cheap shape checks (length, three parts,
 * alphabet) run before anything is decoded; the header is parsed only to
 * pin the algorithm and find the key; the signature is checked before the
 * claims are even decoded, so unauthenticated bytes never reach the claims
 * parser. The algorithm is never taken from the token: anything but
 * "ES256" is refused, which closes `alg: none` and the HS256-keyed-with-
 * the-public-key confusion. Every type is checked; a claim of the wrong
 * type, a string too long for rtc_jwt_claims or an unknown grant makes the
 * token MALFORMED rather than silently dropped. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "jwt_internal.h"

typedef struct {
    char *buf;
    size_t len;
} detail_out;

__attribute__((format(printf, 3, 4))) static rtc_jwt_error fail(detail_out *d, rtc_jwt_error e,
                                                                const char *fmt, ...)
{
    if (d->buf && d->len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->buf, d->len, fmt, ap);
        va_end(ap);
    }
    return e;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

static int64_t sat_sub(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b > 0 ? INT64_MIN : INT64_MAX;
    return r;
}

/* Parse base64url JSON into an object. NULL + a reason on failure. */
static json_t *decode_object(const char *b64, size_t n, uint8_t *scratch, const char **why)
{
    size_t len = 0;
    if (jwt_b64url_decode(b64, n, scratch, &len) < 0) {
        *why = "is not canonical base64url";
        return NULL;
    }
    json_error_t err;
    json_t *o = json_loadb((const char *)scratch, len, JSON_REJECT_DUPLICATES, &err);
    if (!o) {
        *why = json_error_code(&err) == json_error_duplicate_key ? "has a duplicate key"
                                                                 : "is not valid JSON";
        return NULL;
    }
    if (!json_is_object(o)) {
        json_decref(o);
        *why = "is not a JSON object";
        return NULL;
    }
    return o;
}

/* A NumericDate (seconds, integer or not) as milliseconds. 1 present,
 * 0 absent, -1 wrong type or out of range. */
static int get_time(json_t *o, const char *name, int64_t *ms)
{
    json_t *v = json_object_get(o, name);
    if (!v)
        return 0;
    if (json_is_integer(v)) {
        json_int_t s = json_integer_value(v);
        if (s < 0 || s > JWT_MAX_SECONDS)
            return -1;
        *ms = (int64_t)s * 1000;
        return 1;
    }
    if (json_is_real(v)) {
        double s = json_real_value(v);
        if (!isfinite(s) || s < 0 || s > (double)JWT_MAX_SECONDS)
            return -1;
        *ms = (int64_t)(s * 1000.0);
        return 1;
    }
    return -1;
}

/* Copy a string claim into dst[cap]. 1 present, 0 absent, -1 wrong type
 * or too long. jansson already refuses invalid UTF-8 and "\u0000". */
static int get_string(json_t *v, char *dst, size_t cap)
{
    if (!v)
        return 0;
    if (!json_is_string(v))
        return -1;
    size_t n = json_string_length(v);
    if (n >= cap)
        return -1;
    memcpy(dst, json_string_value(v), n);
    dst[n] = '\0';
    return 1;
}

static rtc_jwt_error parse_claims(json_t *o, rtc_jwt_claims *c, bool *has_iss, bool *has_nbf,
                                  bool *has_iat, detail_out *d)
{
    int r;
    json_t *v;

    if ((r = get_time(o, "exp", &c->expires_at_ms)) <= 0)
        return fail(d, RTC_JWT_MALFORMED, r == 0 ? "exp is missing" : "exp is not a valid date");
    if ((r = get_time(o, "nbf", &c->not_before_ms)) < 0)
        return fail(d, RTC_JWT_MALFORMED, "nbf is not a valid date");
    *has_nbf = r > 0;
    if ((r = get_time(o, "iat", &c->issued_at_ms)) < 0)
        return fail(d, RTC_JWT_MALFORMED, "iat is not a valid date");
    *has_iat = r > 0;

    if ((r = get_string(json_object_get(o, "iss"), c->issuer, sizeof(c->issuer))) < 0)
        return fail(d, RTC_JWT_MALFORMED, "iss is not a string of at most %zu bytes",
                    sizeof(c->issuer) - 1);
    *has_iss = r > 0;

    v = json_object_get(o, "aud");
    if (json_is_array(v)) {
        if (json_array_size(v) > RTC_JWT_MAX_AUDIENCES)
            return fail(d, RTC_JWT_MALFORMED, "aud has more than %d entries",
                        RTC_JWT_MAX_AUDIENCES);
        for (size_t i = 0; i < json_array_size(v); i++)
            if (get_string(json_array_get(v, i), c->audience[i], sizeof(c->audience[i])) <= 0)
                return fail(d, RTC_JWT_MALFORMED, "aud[%zu] is not a string of at most %zu bytes",
                            i, sizeof(c->audience[i]) - 1);
        c->naudience = json_array_size(v);
    } else if (v) {
        if (get_string(v, c->audience[0], sizeof(c->audience[0])) < 0)
            return fail(d, RTC_JWT_MALFORMED,
                        "aud is not a string of at most %zu bytes or an array of them",
                        sizeof(c->audience[0]) - 1);
        c->naudience = 1;
    }

    if ((r = get_string(json_object_get(o, "sub"), c->identity, sizeof(c->identity))) <= 0 ||
        !c->identity[0])
        return fail(d, RTC_JWT_MALFORMED, "sub must be a non-empty string of at most %zu bytes",
                    sizeof(c->identity) - 1);
    if ((r = get_string(json_object_get(o, "jti"), c->token_id, sizeof(c->token_id))) <= 0 ||
        !c->token_id[0])
        return fail(d, RTC_JWT_MALFORMED, "jti must be a non-empty string of at most %zu bytes",
                    sizeof(c->token_id) - 1);
    if (get_string(json_object_get(o, "room"), c->room_id, sizeof(c->room_id)) < 0)
        return fail(d, RTC_JWT_MALFORMED, "room is not a string of at most %zu bytes",
                    sizeof(c->room_id) - 1);
    if (get_string(json_object_get(o, "name"), c->display_name, sizeof(c->display_name)) < 0)
        return fail(d, RTC_JWT_MALFORMED, "name is not a string of at most %zu bytes",
                    sizeof(c->display_name) - 1);

    v = json_object_get(o, "grants");
    if (v) {
        if (!json_is_array(v))
            return fail(d, RTC_JWT_MALFORMED, "grants is not an array");
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *g = json_array_get(v, i);
            uint32_t bit = json_is_string(g) ? rtc_jwt_grant_from_name(json_string_value(g)) : 0;
            if (!bit)
                return fail(d, RTC_JWT_MALFORMED, "grants[%zu] is not a known grant", i);
            c->grants |= bit;
        }
    }

    /* Session start (OIDC auth_time): a NumericDate like iat. */
    if (get_time(o, "auth_time", &c->session_started_at_ms) < 0)
        return fail(d, RTC_JWT_MALFORMED, "auth_time is not a valid NumericDate");
    return RTC_JWT_OK;
}

static rtc_jwt_error check_claims(const rtc_jwt_claims *c, bool has_iss, bool has_nbf, bool has_iat,
                                  const rtc_jwt_policy *p, detail_out *d)
{
    int64_t leeway = p->leeway_ms > 0 ? p->leeway_ms : 0;
    int64_t now = p->now_ms;

    if (sat_add(c->expires_at_ms, leeway) <= now)
        return fail(d, RTC_JWT_EXPIRED, "token expired %lld ms ago",
                    (long long)sat_sub(now, c->expires_at_ms));
    if (has_nbf && sat_sub(c->not_before_ms, leeway) > now)
        return fail(d, RTC_JWT_NOT_YET_VALID, "token not valid for another %lld ms",
                    (long long)sat_sub(c->not_before_ms, now));
    if (has_iat && sat_sub(c->issued_at_ms, leeway) > now)
        return fail(d, RTC_JWT_NOT_YET_VALID, "token issued %lld ms in the future",
                    (long long)sat_sub(c->issued_at_ms, now));
    if (p->issuer && (!has_iss || strcmp(c->issuer, p->issuer) != 0))
        return fail(d, RTC_JWT_WRONG_ISSUER,
                    has_iss ? "issuer is not the expected one" : "iss is missing");
    if (p->audience) {
        bool found = false;
        for (size_t i = 0; i < c->naudience && !found; i++)
            found = strcmp(c->audience[i], p->audience) == 0;
        if (!found)
            return fail(d, RTC_JWT_WRONG_AUDIENCE, "token is not for this audience");
    }
    return RTC_JWT_OK;
}

rtc_jwt_error rtc_jwt_verify(const rtc_jwt_keyset *ks, const char *token, size_t len,
                             const rtc_jwt_policy *policy, rtc_jwt_claims *claims, char *detail,
                             size_t detail_len)
{
    detail_out d = {detail, detail_len};
    rtc_jwt_error e;
    json_t *header = NULL, *payload = NULL;
    const char *why = NULL;
    /* Decoded header, payload and signature, one at a time. */
    uint8_t scratch[RTC_JWT_MAX_TOKEN / 4 * 3 + 3];
    rtc_jwt_claims c;
    bool has_iss = false, has_nbf = false, has_iat = false;

    memset(&c, 0, sizeof(c));
    if (detail && detail_len)
        detail[0] = '\0';
    if (!ks || !policy)
        return fail(&d, RTC_JWT_MALFORMED, "no keyset or policy");
    if (!token || len == 0)
        return fail(&d, RTC_JWT_MALFORMED, "empty token");
    if (len > RTC_JWT_MAX_TOKEN)
        return fail(&d, RTC_JWT_MALFORMED, "token longer than %d bytes", RTC_JWT_MAX_TOKEN);

    /* Shape: header.payload.signature, base64url alphabet only. */
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot2 || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)))
        return fail(&d, RTC_JWT_MALFORMED, "token is not three dot-separated parts");
    size_t hlen = (size_t)(dot1 - token);
    size_t plen = (size_t)(dot2 - dot1 - 1);
    size_t slen = len - (size_t)(dot2 + 1 - token);
    if (!jwt_b64url_charset_ok(token, hlen) || !jwt_b64url_charset_ok(dot1 + 1, plen) ||
        !jwt_b64url_charset_ok(dot2 + 1, slen))
        return fail(&d, RTC_JWT_MALFORMED, "token has characters outside base64url");

    /* Header: pin the algorithm, find the key. */
    header = decode_object(token, hlen, scratch, &why);
    if (!header) {
        e = fail(&d, RTC_JWT_MALFORMED, "header %s", why);
        goto out;
    }
    json_t *alg = json_object_get(header, "alg");
    if (!json_is_string(alg) || strcmp(json_string_value(alg), "ES256") != 0) {
        e = fail(&d, RTC_JWT_UNSUPPORTED_ALGORITHM, "alg must be ES256");
        goto out;
    }
    json_t *typ = json_object_get(header, "typ");
    if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)) {
        e = fail(&d, RTC_JWT_MALFORMED, "typ must be JWT");
        goto out;
    }
    if (json_object_get(header, "crit")) {
        e = fail(&d, RTC_JWT_MALFORMED, "crit header: no extension is supported");
        goto out;
    }
    json_t *kid = json_object_get(header, "kid");
    if (!kid) {
        /* The contract (auth.proto TokenError): a missing kid names no key. */
        e = fail(&d, RTC_JWT_UNKNOWN_KEY, "no kid in the header");
        goto out;
    }
    /* A kid no key could have is malformed rather than unknown, so it
     * never triggers a key refresh in the caller. */
    if (!json_is_string(kid) || !jwt_kid_ok(json_string_value(kid), json_string_length(kid))) {
        e = fail(&d, RTC_JWT_MALFORMED, "kid must be a printable string of 1 to %d bytes",
                 JWT_KID_MAX - 1);
        goto out;
    }
    jwt_key *key = jwt_keyset_find(ks, json_string_value(kid));
    if (!key) {
        e = fail(&d, RTC_JWT_UNKNOWN_KEY, "unknown kid \"%s\"", json_string_value(kid));
        goto out;
    }
    memcpy(c.key_id, json_string_value(kid), json_string_length(kid) + 1);

    /* Signature over "header.payload", before the claims are looked at. */
    size_t siglen = 0;
    if (jwt_b64url_decode(dot2 + 1, slen, scratch, &siglen) < 0) {
        e = fail(&d, RTC_JWT_MALFORMED, "signature is not canonical base64url");
        goto out;
    }
    if (siglen != 64) {
        e = fail(&d, RTC_JWT_BAD_SIGNATURE, "signature is %zu bytes, not 64", siglen);
        goto out;
    }
    uint8_t digest[32];
    if (jwt_keyset_sha256(ks, token, (size_t)(dot2 - token), digest) < 0 ||
        !jwt_key_verify_digest(key, digest, scratch)) {
        e = fail(&d, RTC_JWT_BAD_SIGNATURE, "signature does not verify");
        goto out;
    }

    payload = decode_object(dot1 + 1, plen, scratch, &why);
    if (!payload) {
        e = fail(&d, RTC_JWT_MALFORMED, "payload %s", why);
        goto out;
    }
    e = parse_claims(payload, &c, &has_iss, &has_nbf, &has_iat, &d);
    if (e != RTC_JWT_OK)
        goto out;
    e = check_claims(&c, has_iss, has_nbf, has_iat, policy, &d);
    if (e != RTC_JWT_OK)
        goto out;
    if (claims)
        *claims = c;
out:
    json_decref(header);
    json_decref(payload);
    return e;
}

/* sign.c — claims to a compact ES256 JWS.
 *
 * The output is what verify.c accepts and nothing more: sign refuses
 * claims that would not come back unchanged (strings without their NUL,
 * unknown grant bits, negative times), so a token we issue always verifies
 * with the same key and policy. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "jwt_internal.h"
#include "rtc/error.h"

/* True when s is NUL-terminated inside its buffer. */
static bool bounded(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

/* Set o[name] = v, taking v; false when v is NULL (bad UTF-8, no memory). */
static bool set(json_t *o, const char *name, json_t *v)
{
    return v && json_object_set_new(o, name, v) == 0;
}

static bool set_seconds(json_t *o, const char *name, int64_t ms)
{
    return set(o, name, json_integer((json_int_t)(ms / 1000)));
}

static json_t *claims_json(const rtc_jwt_claims *c)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (c->issuer[0] && !set(o, "iss", json_string(c->issuer)))
        goto fail;
    if (c->naudience == 1) {
        if (!set(o, "aud", json_string(c->audience[0])))
            goto fail;
    } else if (c->naudience > 1) {
        json_t *a = json_array();
        if (!set(o, "aud", a))
            goto fail;
        for (size_t i = 0; i < c->naudience; i++)
            if (json_array_append_new(a, json_string(c->audience[i])) != 0)
                goto fail;
    }
    if (!set(o, "sub", json_string(c->identity)))
        goto fail;
    if (c->issued_at_ms > 0 && !set_seconds(o, "iat", c->issued_at_ms))
        goto fail;
    if (c->not_before_ms > 0 && !set_seconds(o, "nbf", c->not_before_ms))
        goto fail;
    if (!set_seconds(o, "exp", c->expires_at_ms))
        goto fail;
    if (!set(o, "jti", json_string(c->token_id)))
        goto fail;
    if (c->room_id[0] && !set(o, "room", json_string(c->room_id)))
        goto fail;
    if (c->grants) {
        json_t *a = json_array();
        if (!set(o, "grants", a))
            goto fail;
        for (uint32_t bit = 1; bit != 0; bit <<= 1) {
            if (!(c->grants & bit))
                continue;
            if (json_array_append_new(a, json_string(rtc_jwt_grant_name(bit))) != 0)
                goto fail;
        }
    }
    if (c->display_name[0] && !set(o, "name", json_string(c->display_name)))
        goto fail;
    if (c->session_started_at_ms > 0 && !set_seconds(o, "auth_time", c->session_started_at_ms))
        goto fail;
    return o;
fail:
    json_decref(o);
    return NULL;
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
    json_t *payload = NULL;
    char small[2048], *big = NULL, *ps = small, *tok = NULL;
    size_t psl;
    jwt_key *k;

    if (!out)
        return RTC_EINVAL;
    *out = NULL;
    if (!ks || !claims || !(k = jwt_keyset_signer(ks)) || !claims_ok(claims))
        return RTC_EINVAL;

    /* Bad UTF-8 in a claim and a failed allocation look alike here;
     * the caller's input is the likelier culprit. */
    payload = claims_json(claims);
    if (!payload)
        goto out;
    rc = RTC_ENOMEM;
    /* Into a stack buffer when it fits (the usual case): no strbuffer
     * growth, no allocation. */
    psl = json_dumpb(payload, small, sizeof(small), JSON_COMPACT);
    if (psl == 0)
        goto out;
    if (psl > sizeof(small)) {
        ps = big = malloc(psl);
        if (!big || json_dumpb(payload, big, psl, JSON_COMPACT) != psl)
            goto out;
    }

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
    free(big);
    json_decref(payload);
    return rc;
}

/* The bearer-token verifier every service links (see rtc/authn.h).
 *
 * A request moves through at most three steps — keys, signature + claims,
 * revocation — and ends on a "done" list that a zero-delay timer drains,
 * so callbacks never run inside rtc_verifier_verify. Requests that need
 * keys wait on one shared GetSigningKeys call; requests that need a
 * revocation check each send one EXISTS. */
#include <stdlib.h>
#include <string.h>

#include "rtc/auth/v1/auth.pb-c.h"
#include "rtc/authn.h"
#include "rtc/core.h"
#include "rtc/error.h"
#include "rtc/log.h"

#define KEYS_PATH               "/rtc.auth.v1.Auth/GetSigningKeys"
#define KEYS_TIMEOUT_MS         3000
#define KEYS_DEFAULT_MAX_AGE_MS (5 * 60 * 1000)

/* ST_FOLLOW: waiting on another request's revocation check of the same
 * token (one EXISTS for every call that presents it meanwhile). */
typedef enum { ST_NEW, ST_WAIT_KEYS, ST_WAIT_REDIS, ST_FOLLOW, ST_DONE } req_state;

typedef struct req_list {
    struct rtc_verifier_req *head, *tail;
} req_list;

struct rtc_verifier_req {
    rtc_verifier *v;
    rtc_verifier_req *prev, *next;
    req_state state;
    char *token;
    size_t len;
    bool keys_retried;
    rtc_verifier_done_fn fn;
    void *ud;
    rtc_redis_req *redis_req;
    rtc_verifier_req *leader; /* ST_FOLLOW: whose check this waits on */
    req_list followers;       /* ST_WAIT_REDIS: who waits on this check */
    /* Outcome. */
    int err;
    rtc_jwt_error reason;
    rtc_jwt_claims claims;
    char detail[160];
};

struct rtc_verifier {
    uv_loop_t *loop;
    rtc_verifier_options o;
    char *issuer, *audience;
    rtc_jwt_cache *cache;
    /* Remote keys (when o.keys is NULL). */
    rtc_jwt_keyset *fetched;
    int64_t keys_expire_ms; /* wall time after which fetched keys are refreshed */
    uint64_t last_fetch_ms; /* monotonic start of the last fetch */
    rtc_grpc_client_call *fetch;
    req_list wait_keys, wait_redis, done;
    uv_timer_t kick;
    bool closing;
    rtc_metric *m_cached, *m_verified, *m_refused, *m_unavail, *m_key_fetch_ok, *m_key_fetch_fail;
};

static void list_push(req_list *l, rtc_verifier_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static void list_remove(req_list *l, rtc_verifier_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
}

static req_list *list_of(rtc_verifier *v, rtc_verifier_req *r)
{
    switch (r->state) {
    case ST_WAIT_KEYS:
        return &v->wait_keys;
    case ST_WAIT_REDIS:
        return &v->wait_redis;
    case ST_DONE:
        return &v->done;
    default:
        return NULL;
    }
}

static void req_free(rtc_verifier_req *r)
{
    if (r->token) {
        memset(r->token, 0, r->len);
        free(r->token);
    }
    free(r);
}

void rtc_verifier_options_init(rtc_verifier_options *o)
{
    memset(o, 0, sizeof(*o));
    o->issuer = "rtc";
    o->audience = "rtc";
    o->leeway_ms = 30000;
    o->cache_capacity = 100000;
    o->revocation_check_ms = 5000;
    o->keys_refresh_min_ms = 5000;
    o->redis_timeout_ms = 1000;
}

static rtc_metric *result_metric(rtc_metric_family *f, const char *result)
{
    const char *vals[] = {result};
    return f ? rtc_metric_child(f, vals) : NULL;
}

int rtc_verifier_new(uv_loop_t *loop, const rtc_verifier_options *opts, rtc_metrics *metrics,
                     rtc_verifier **out)
{
    *out = NULL;
    if (!opts || (!opts->keys && !opts->auth))
        return RTC_EINVAL;
    rtc_verifier *v = calloc(1, sizeof(*v));
    if (!v)
        return RTC_ENOMEM;
    v->loop = loop;
    v->o = *opts;
    v->issuer = strdup(opts->issuer ? opts->issuer : "rtc");
    v->audience = strdup(opts->audience ? opts->audience : "rtc");
    if (!v->issuer || !v->audience ||
        rtc_jwt_cache_new(opts->cache_capacity ? opts->cache_capacity : 1, &v->cache) < 0)
        goto fail;
    if (!opts->keys && rtc_jwt_keyset_new(&v->fetched) < 0)
        goto fail;
    uv_timer_init(loop, &v->kick);
    v->kick.data = v;
    if (metrics) {
        static const char *const labels[] = {"result"};
        rtc_metric_family *f =
            rtc_metrics_family(metrics, RTC_METRIC_COUNTER, "rtc_authn_verify_total",
                               "Bearer token verifications by outcome (cached = no ECDSA verify).",
                               1, labels, NULL, 0);
        v->m_cached = result_metric(f, "cached");
        v->m_verified = result_metric(f, "verified");
        v->m_refused = result_metric(f, "refused");
        v->m_unavail = result_metric(f, "unavailable");
        rtc_metric_family *k = rtc_metrics_family(
            metrics, RTC_METRIC_COUNTER, "rtc_authn_key_fetches_total",
            "GetSigningKeys calls made by the verifier, by outcome.", 1, labels, NULL, 0);
        v->m_key_fetch_ok = result_metric(k, "ok");
        v->m_key_fetch_fail = result_metric(k, "error");
    }
    *out = v;
    return 0;
fail:
    rtc_jwt_cache_free(v->cache);
    free(v->issuer);
    free(v->audience);
    free(v);
    return RTC_ENOMEM;
}

static void on_kick_closed(uv_handle_t *h)
{
    free(h->data);
}

static void finish_all(rtc_verifier *v, req_list *l, int err)
{
    while (l->head) {
        rtc_verifier_req *r = l->head;
        list_remove(l, r);
        if (r->followers.head)
            finish_all(v, &r->followers, err);
        if (r->redis_req)
            rtc_redis_req_abandon(r->redis_req);
        if (l != &v->done) {
            r->err = err;
            r->reason = RTC_JWT_OK;
            snprintf(r->detail, sizeof(r->detail), "verifier closed");
        }
        r->fn(r->ud, r->err, r->reason, r->err || r->reason ? NULL : &r->claims, r->detail);
        req_free(r);
    }
}

void rtc_verifier_free(rtc_verifier *v)
{
    if (!v || v->closing)
        return;
    v->closing = true;
    if (v->fetch) {
        rtc_grpc_client_call_cancel(v->fetch);
        v->fetch = NULL;
    }
    finish_all(v, &v->done, 0);
    finish_all(v, &v->wait_keys, RTC_ECLOSED);
    finish_all(v, &v->wait_redis, RTC_ECLOSED);
    rtc_jwt_cache_free(v->cache);
    rtc_jwt_keyset_free(v->fetched);
    free(v->issuer);
    free(v->audience);
    uv_close((uv_handle_t *)&v->kick, on_kick_closed);
}

/* ---- completion ---------------------------------------------------------- */

static void on_kick(uv_timer_t *t)
{
    rtc_verifier *v = t->data;
    /* Take the current list: callbacks may queue new requests. */
    req_list l = v->done;
    v->done.head = v->done.tail = NULL;
    while (l.head) {
        rtc_verifier_req *r = l.head;
        list_remove(&l, r);
        if (r->err)
            rtc_metric_inc(v->m_unavail, 1);
        else if (r->reason)
            rtc_metric_inc(v->m_refused, 1);
        r->fn(r->ud, r->err, r->reason, r->err || r->reason ? NULL : &r->claims, r->detail);
        req_free(r);
    }
}

static void complete(rtc_verifier *v, rtc_verifier_req *r, int err, rtc_jwt_error reason,
                     const char *detail)
{
    req_list *l = list_of(v, r);
    if (l)
        list_remove(l, r);
    r->err = err;
    r->reason = reason;
    if (detail)
        snprintf(r->detail, sizeof(r->detail), "%s", detail);
    r->state = ST_DONE;
    list_push(&v->done, r);
    if (!uv_is_active((uv_handle_t *)&v->kick))
        uv_timer_start(&v->kick, on_kick, 0, 0);
}

/* ---- revocation --------------------------------------------------------- */

int rtc_authn_revoked_key(const char *jti, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "rtc:auth:revoked:%s", jti);
    return n < 0 || (size_t)n >= outlen ? RTC_ETOOBIG : 0;
}

static void on_exists(void *ud, int err, const redisReply *reply)
{
    rtc_verifier_req *r = ud;
    rtc_verifier *v = r->v;
    r->redis_req = NULL;
    int e = 0;
    rtc_jwt_error reason = RTC_JWT_OK;
    const char *detail = NULL;
    if (err) {
        e = RTC_EUNAVAIL;
        detail = "revocation store unavailable";
    } else if (!reply || reply->type != REDIS_REPLY_INTEGER) {
        e = RTC_EUNAVAIL;
        detail = "revocation store error";
    } else if (reply->integer != 0) {
        rtc_jwt_cache_forget_jti(v->cache, r->claims.token_id);
        reason = RTC_JWT_REVOKED;
        detail = "token revoked";
    } else {
        rtc_jwt_cache_put(v->cache, r->token, r->len, &r->claims, rtc_wall_ms());
    }
    req_list f = r->followers;
    r->followers.head = r->followers.tail = NULL;
    complete(v, r, e, reason, detail);
    while (f.head) {
        rtc_verifier_req *x = f.head;
        list_remove(&f, x);
        x->leader = NULL;
        complete(v, x, e, reason, detail);
    }
}

/* A check of the same token already on its way to Redis, or NULL. */
static rtc_verifier_req *inflight_check(rtc_verifier *v, const rtc_verifier_req *r)
{
    for (rtc_verifier_req *x = v->wait_redis.head; x; x = x->next)
        if (x->len == r->len && memcmp(x->token, r->token, r->len) == 0)
            return x;
    return NULL;
}

static void check_revocation(rtc_verifier *v, rtc_verifier_req *r)
{
    if (!v->o.redis) {
        rtc_jwt_cache_put(v->cache, r->token, r->len, &r->claims, rtc_wall_ms());
        complete(v, r, 0, RTC_JWT_OK, NULL);
        return;
    }
    char key[128];
    if (rtc_authn_revoked_key(r->claims.token_id, key, sizeof(key)) < 0) {
        complete(v, r, 0, RTC_JWT_MALFORMED, "token id too long");
        return;
    }
    req_list *l = list_of(v, r);
    if (l)
        list_remove(l, r);
    rtc_verifier_req *leader = inflight_check(v, r);
    if (leader) {
        r->state = ST_FOLLOW;
        r->leader = leader;
        list_push(&leader->followers, r);
        return;
    }
    r->state = ST_WAIT_REDIS;
    list_push(&v->wait_redis, r);
    int rc = rtc_redis_command(v->o.redis, on_exists, r, v->o.redis_timeout_ms, &r->redis_req,
                               "EXISTS %s", key);
    if (rc < 0)
        complete(v, r, RTC_EUNAVAIL, RTC_JWT_OK, "revocation store busy");
}

/* ---- keys --------------------------------------------------------------- */

static const rtc_jwt_keyset *keys_of(const rtc_verifier *v)
{
    return v->o.keys ? v->o.keys : v->fetched;
}

static void fetch_keys(rtc_verifier *v);
static void verify_now(rtc_verifier *v, rtc_verifier_req *r);

/* Requests waiting for keys go on (keys now known) or fail UNAVAILABLE.
 * The list is taken first: a retry may queue a request again. */
static void release_key_waiters(rtc_verifier *v, bool have)
{
    req_list l = v->wait_keys;
    v->wait_keys.head = v->wait_keys.tail = NULL;
    while (l.head) {
        rtc_verifier_req *r = l.head;
        list_remove(&l, r);
        r->state = ST_NEW;
        if (have)
            verify_now(v, r);
        else
            complete(v, r, RTC_EUNAVAIL, RTC_JWT_OK, "signing keys unavailable");
    }
}

static void on_keys(void *ud, int status, const char *message, ProtobufCMessage *msg)
{
    rtc_verifier *v = ud;
    v->fetch = NULL;
    bool ok = false;
    if (status == RTC_GRPC_OK && msg) {
        const Rtc__Auth__V1__GetSigningKeysResponse *resp = (const void *)msg;
        rtc_jwt_keyset *ks = NULL;
        if (rtc_jwt_keyset_new(&ks) == 0) {
            size_t added = 0;
            for (size_t i = 0; i < resp->n_keys; i++) {
                const Rtc__Auth__V1__SigningKey *k = resp->keys[i];
                if (strcmp(k->algorithm, "ES256") != 0)
                    continue;
                if (rtc_jwt_keyset_add_pem(ks, k->public_key_pem, strlen(k->public_key_pem),
                                           k->key_id, k->created_at_ms, NULL) == 0)
                    added++;
                else
                    rtc_warn("signing key from auth refused", "kid", k->key_id);
            }
            if (added) {
                rtc_jwt_keyset_free(v->fetched);
                v->fetched = ks;
                int64_t age = resp->max_age_ms > 0 ? resp->max_age_ms : KEYS_DEFAULT_MAX_AGE_MS;
                v->keys_expire_ms = rtc_wall_ms() + age;
                ok = true;
            } else {
                rtc_jwt_keyset_free(ks);
                message = "no usable ES256 key";
            }
        }
    }
    rtc_metric_inc(ok ? v->m_key_fetch_ok : v->m_key_fetch_fail, 1);
    if (!ok)
        rtc_warn("cannot fetch signing keys", "status", rtc_grpc_status_name(status), "error",
                 message ? message : "");
    release_key_waiters(v, rtc_jwt_keyset_count(v->fetched) > 0);
}

static void fetch_keys(rtc_verifier *v)
{
    if (v->fetch || v->closing)
        return;
    v->last_fetch_ms = rtc_now_ms();
    Rtc__Auth__V1__GetSigningKeysRequest req = RTC__AUTH__V1__GET_SIGNING_KEYS_REQUEST__INIT;
    rtc_grpc_call_options co = {.timeout_ms = KEYS_TIMEOUT_MS};
    int rc = rtc_grpc_channel_unary(v->o.auth, KEYS_PATH, &req.base,
                                    &rtc__auth__v1__get_signing_keys_response__descriptor, &co,
                                    on_keys, v, &v->fetch);
    if (rc < 0) {
        v->fetch = NULL;
        rtc_warn("cannot call GetSigningKeys", "error", rtc_strerror(rc));
        release_key_waiters(v, false); /* answered from the loop, as if the call had failed */
    }
}

static void wait_for_keys(rtc_verifier *v, rtc_verifier_req *r)
{
    req_list *l = list_of(v, r);
    if (l)
        list_remove(l, r);
    r->state = ST_WAIT_KEYS;
    list_push(&v->wait_keys, r);
    fetch_keys(v);
}

/* ---- verification --------------------------------------------------------- */

static void verify_now(rtc_verifier *v, rtc_verifier_req *r)
{
    const rtc_jwt_keyset *ks = keys_of(v);
    if (!v->o.keys) {
        bool have = rtc_jwt_keyset_count(ks) > 0;
        bool stale = rtc_wall_ms() >= v->keys_expire_ms;
        if (!have) {
            wait_for_keys(v, r);
            return;
        }
        if (stale && rtc_now_ms() - v->last_fetch_ms >= v->o.keys_refresh_min_ms)
            fetch_keys(v); /* refresh in the background; stale keys still verify */
    }
    rtc_jwt_policy pol = {
        .issuer = v->issuer,
        .audience = v->audience,
        .leeway_ms = v->o.leeway_ms,
        .now_ms = rtc_wall_ms(),
    };
    char detail[160];
    rtc_jwt_error e =
        rtc_jwt_verify(ks, r->token, r->len, &pol, &r->claims, detail, sizeof(detail));
    if (e == RTC_JWT_UNKNOWN_KEY && !v->o.keys && !r->keys_retried &&
        rtc_now_ms() - v->last_fetch_ms >= v->o.keys_refresh_min_ms) {
        /* A key we have not seen: rotated in since the last fetch? */
        r->keys_retried = true;
        wait_for_keys(v, r);
        return;
    }
    if (e != RTC_JWT_OK) {
        complete(v, r, 0, e, detail);
        return;
    }
    rtc_metric_inc(v->m_verified, 1);
    check_revocation(v, r);
}

typedef enum { CACHE_MISS, CACHE_FRESH, CACHE_RECHECK } cache_state;

/* The cache's view of a token: absent (or expired), valid and recently
 * confirmed not revoked, or valid with its revocation check due. */
static cache_state cache_lookup(rtc_verifier *v, const char *token, size_t len,
                                rtc_jwt_claims *claims)
{
    int64_t now = rtc_wall_ms();
    int64_t checked = 0;
    if (!rtc_jwt_cache_get(v->cache, token, len, now, claims, &checked))
        return CACHE_MISS;
    if (v->o.redis && now - checked >= (int64_t)v->o.revocation_check_ms)
        return CACHE_RECHECK;
    rtc_metric_inc(v->m_cached, 1);
    return CACHE_FRESH;
}

bool rtc_verifier_verify_cached(rtc_verifier *v, const char *token, size_t len,
                                rtc_jwt_claims *claims)
{
    /* Answers already decided wait for the kick timer: a call answered now
     * would overtake them (a check that just came back cached the token
     * while the calls that waited on it are not yet told). Go the queued
     * way meanwhile, so answers keep call order. */
    if (v->done.head)
        return false;
    return cache_lookup(v, token, len, claims) == CACHE_FRESH;
}

int rtc_verifier_verify(rtc_verifier *v, const char *token, size_t len, rtc_verifier_done_fn fn,
                        void *ud, rtc_verifier_req **out)
{
    if (out)
        *out = NULL;
    if (!v || !fn || v->closing)
        return RTC_EINVAL;
    rtc_verifier_req *r = calloc(1, sizeof(*r));
    if (!r)
        return RTC_ENOMEM;
    r->v = v;
    r->fn = fn;
    r->ud = ud;
    r->state = ST_NEW;
    if (out)
        *out = r;
    if (!token || len == 0 || len > RTC_JWT_MAX_TOKEN) {
        complete(v, r, 0, RTC_JWT_MALFORMED, len ? "token too long" : "empty token");
        return 0;
    }
    r->token = malloc(len + 1);
    if (!r->token) {
        free(r);
        if (out)
            *out = NULL;
        return RTC_ENOMEM;
    }
    memcpy(r->token, token, len);
    r->token[len] = '\0';
    r->len = len;

    switch (cache_lookup(v, token, len, &r->claims)) {
    case CACHE_FRESH:
        complete(v, r, 0, RTC_JWT_OK, NULL);
        break;
    case CACHE_RECHECK:
        check_revocation(v, r);
        break;
    case CACHE_MISS:
        verify_now(v, r);
        break;
    }
    return 0;
}

void rtc_verifier_req_cancel(rtc_verifier_req *r)
{
    if (!r)
        return;
    rtc_verifier *v = r->v;
    if (r->state == ST_FOLLOW) {
        list_remove(&r->leader->followers, r);
        req_free(r);
        return;
    }
    req_list *l = list_of(v, r);
    if (l)
        list_remove(l, r);
    if (r->redis_req)
        rtc_redis_req_abandon(r->redis_req);
    /* Those waiting on this check send their own (the first leads). */
    req_list f = r->followers;
    req_free(r);
    while (f.head) {
        rtc_verifier_req *x = f.head;
        list_remove(&f, x);
        x->leader = NULL;
        x->state = ST_NEW;
        check_revocation(v, x);
    }
}

void rtc_verifier_forget(rtc_verifier *v, const char *jti)
{
    rtc_jwt_cache_forget_jti(v->cache, jti);
}

/* test_authn.c — API keys, bearer parsing, and the verifier.
 *
 * The verifier runs on a private uv loop. For the "keys from rtc-auth"
 * path an in-process rtc_grpc server answers GetSigningKeys from a keyset
 * the test controls, so key rotation and an unreachable auth service are
 * exercised over real HTTP/2 on loopback. Revocation runs against a real
 * redis-server started by the fixture. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "rtc/auth/v1/auth.pb-c.h"
#include "rtc/authn.h"
#include "rtc/core.h"
#include "rtc/error.h"
#include "rtc/jwt.h"
#include "rtc/redis.h"
#include "support/redis_server.h"

/* ---- API keys ------------------------------------------------------------- */

static char *basic(const char *id, const char *secret)
{
    char raw[512];
    snprintf(raw, sizeof(raw), "%s:%s", id, secret);
    static char out[1024];
    strcpy(out, "Basic ");
    EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)raw, (int)strlen(raw));
    return out;
}

static rtc_apikeys *parse_ok(const char *text)
{
    rtc_apikeys *k = NULL;
    char err[256] = "";
    int rc = rtc_apikeys_parse(text, &k, err, sizeof(err));
    if (rc != 0)
        fail_msg("parse failed: %s", err);
    return k;
}

static void parse_fails(const char *text, const char *want)
{
    rtc_apikeys *k = NULL;
    char err[256] = "";
    assert_int_equal(rtc_apikeys_parse(text, &k, err, sizeof(err)), RTC_EINVAL);
    assert_null(k);
    if (!strstr(err, want))
        fail_msg("error '%s' does not mention '%s'", err, want);
}

static void test_apikeys_parse(void **state)
{
    (void)state;
    rtc_apikeys *k = parse_ok("# internal callers\n"
                              "backend  s3cret-s3cret-s3cret  issue,revoke\n"
                              "\n"
                              "ops:0123456789abcdef0123:admin   # comment\n"
                              "viewer sha256:" /* a digest, not the secret */
                              "0000000000000000000000000000000000000000000000000000000000000000 "
                              "verify");
    assert_int_equal(rtc_apikeys_count(k), 3);
    rtc_apikeys_free(k);
    k = parse_ok("a 0123456789abcdef issue; b 0123456789abcdef verify");
    assert_int_equal(rtc_apikeys_count(k), 2);
    rtc_apikeys_free(k);
    k = parse_ok("");
    assert_int_equal(rtc_apikeys_count(k), 0);
    rtc_apikeys_free(k);
}

static void test_apikeys_parse_errors(void **state)
{
    (void)state;
    parse_fails("backend short issue", "secret");
    parse_fails("backend 0123456789abcdef", "want");
    parse_fails("backend 0123456789abcdef issue extra stuff", "want");
    parse_fails("backend 0123456789abcdef issue extra stuff more", "too many fields");
    parse_fails("back/end 0123456789abcdef issue", "key id");
    parse_fails("backend 0123456789abcdef fly", "unknown right 'fly'");
    parse_fails("a 0123456789abcdef issue\na 0123456789abcdef verify", "line 2: duplicate");
    parse_fails("a sha256:abcd issue", "64 hex");
    parse_fails("a sha256:zz00000000000000000000000000000000000000000000000000000000000000 issue",
                "64 hex");
    char id[80];
    memset(id, 'x', 65);
    id[65] = '\0';
    char line[200];
    snprintf(line, sizeof(line), "%s 0123456789abcdef issue", id);
    parse_fails(line, "key id");
}

static void test_apikeys_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/rtc-apikeys-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "backend 0123456789abcdef0123 issue\nbad line here extra extra\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    rtc_apikeys *k = NULL;
    char err[256];
    assert_int_equal(rtc_apikeys_load_file(path, &k, err, sizeof(err)), RTC_EINVAL);
    assert_non_null(strstr(err, "line 2"));
    assert_non_null(strstr(err, path));
    unlink(path);
    assert_int_equal(rtc_apikeys_load_file(path, &k, err, sizeof(err)), RTC_EIO);
    assert_non_null(strstr(err, "No such file"));
}

static void test_apikeys_check(void **state)
{
    (void)state;
    char digest_line[200];
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)"viewer-secret-12345", 19, d);
    int n = snprintf(digest_line, sizeof(digest_line), "viewer sha256:");
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        n += snprintf(digest_line + n, sizeof(digest_line) - (size_t)n, "%02x", d[i]);
    snprintf(digest_line + n, sizeof(digest_line) - (size_t)n, " verify");
    char text[512];
    snprintf(text, sizeof(text),
             "backend s3cret-s3cret-s3cret issue,revoke\nops 0123456789abcdef0123 admin\n%s",
             digest_line);
    rtc_apikeys *k = parse_ok(text);
    char id[65];

    assert_int_equal(
        rtc_apikeys_check(k, basic("backend", "s3cret-s3cret-s3cret"), RTC_APIKEY_ISSUE, id),
        RTC_AUTHN_OK);
    assert_string_equal(id, "backend");
    /* The scheme is case-insensitive. */
    char *h = basic("backend", "s3cret-s3cret-s3cret");
    memcpy(h, "basic", 5);
    assert_int_equal(rtc_apikeys_check(k, h, RTC_APIKEY_ISSUE, NULL), RTC_AUTHN_OK);
    /* admin implies every right; a hashed secret works. */
    assert_int_equal(rtc_apikeys_check(k, basic("ops", "0123456789abcdef0123"),
                                       RTC_APIKEY_VERIFY | RTC_APIKEY_ISSUE, NULL),
                     RTC_AUTHN_OK);
    assert_int_equal(
        rtc_apikeys_check(k, basic("viewer", "viewer-secret-12345"), RTC_APIKEY_VERIFY, NULL),
        RTC_AUTHN_OK);
    rtc_apikeys_free(k);
}

static void test_apikeys_check_missing(void **state)
{
    (void)state;
    rtc_apikeys *k = parse_ok("backend s3cret-s3cret-s3cret issue");
    assert_int_equal(rtc_apikeys_check(k, NULL, RTC_APIKEY_ISSUE, NULL), RTC_AUTHN_UNAUTHENTICATED);
    assert_int_equal(rtc_apikeys_check(k, "", RTC_APIKEY_ISSUE, NULL), RTC_AUTHN_UNAUTHENTICATED);
    rtc_apikeys_free(k);
}

static void test_apikeys_check_wrong_secret(void **state)
{
    (void)state;
    rtc_apikeys *k = parse_ok("backend s3cret-s3cret-s3cret issue");
    assert_int_equal(
        rtc_apikeys_check(k, basic("backend", "s3cret-s3cret-s3creT"), RTC_APIKEY_ISSUE, NULL),
        RTC_AUTHN_UNAUTHENTICATED);
    assert_int_equal(rtc_apikeys_check(k, basic("backend", ""), RTC_APIKEY_ISSUE, NULL),
                     RTC_AUTHN_UNAUTHENTICATED);
    rtc_apikeys_free(k);
}

static void test_apikeys_check_unknown_key(void **state)
{
    (void)state;
    rtc_apikeys *k = parse_ok("backend s3cret-s3cret-s3cret issue");
    assert_int_equal(
        rtc_apikeys_check(k, basic("nobody", "s3cret-s3cret-s3cret"), RTC_APIKEY_ISSUE, NULL),
        RTC_AUTHN_UNAUTHENTICATED);
    rtc_apikeys *empty = parse_ok("");
    assert_int_equal(
        rtc_apikeys_check(empty, basic("backend", "s3cret-s3cret-s3cret"), RTC_APIKEY_ISSUE, NULL),
        RTC_AUTHN_UNAUTHENTICATED);
    rtc_apikeys_free(empty);
    rtc_apikeys_free(k);
}

static void test_apikeys_check_malformed(void **state)
{
    (void)state;
    rtc_apikeys *k = parse_ok("backend s3cret-s3cret-s3cret issue");
    const char *bad[] = {
        "Basic",                   /* no credentials */
        "Basic ",                  /* empty */
        "Basic !!!!",              /* not base64 */
        "Basic YmFja2VuZA==",      /* "backend": no colon */
        "Basic YmFja2VuZDpz=A==",  /* padding in the middle */
        "Bearer abc.def.ghi",      /* other scheme */
        "Basicx YmFja2VuZDp4",     /* scheme glued */
        "Digest username=backend", /* other scheme */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(rtc_apikeys_check(k, bad[i], RTC_APIKEY_ISSUE, NULL),
                         RTC_AUTHN_UNAUTHENTICATED);
    /* Oversized header. */
    char *big = malloc(10000);
    memcpy(big, "Basic ", 6);
    memset(big + 6, 'A', 9990);
    big[9996] = '\0';
    assert_int_equal(rtc_apikeys_check(k, big, RTC_APIKEY_ISSUE, NULL), RTC_AUTHN_UNAUTHENTICATED);
    free(big);
    rtc_apikeys_free(k);
}

static void test_apikeys_check_denied(void **state)
{
    (void)state;
    rtc_apikeys *k = parse_ok("viewer 0123456789abcdef0123 verify");
    assert_int_equal(
        rtc_apikeys_check(k, basic("viewer", "0123456789abcdef0123"), RTC_APIKEY_ISSUE, NULL),
        RTC_AUTHN_PERMISSION_DENIED);
    assert_int_equal(rtc_apikeys_check(k, basic("viewer", "0123456789abcdef0123"),
                                       RTC_APIKEY_VERIFY | RTC_APIKEY_REVOKE, NULL),
                     RTC_AUTHN_PERMISSION_DENIED);
    rtc_apikeys_free(k);
}

static void test_bearer(void **state)
{
    (void)state;
    const char *t;
    size_t n;
    assert_true(rtc_authn_bearer("Bearer abc.def.ghi", &t, &n));
    assert_int_equal(n, 11);
    assert_memory_equal(t, "abc.def.ghi", 11);
    assert_true(rtc_authn_bearer("bearer   abc ", &t, &n));
    assert_int_equal(n, 3);
    assert_false(rtc_authn_bearer(NULL, &t, &n));
    assert_false(rtc_authn_bearer("Bearer", &t, &n));
    assert_false(rtc_authn_bearer("Bearer    ", &t, &n));
    assert_false(rtc_authn_bearer("Basic abc", &t, &n));
    assert_false(rtc_authn_bearer("Bearerabc", &t, &n));
    assert_true(rtc_authn_is_basic("Basic x"));
    assert_false(rtc_authn_is_basic("Bearer x"));
    char key[64];
    assert_int_equal(rtc_authn_revoked_key("abc", key, sizeof(key)), 0);
    assert_string_equal(key, "rtc:auth:revoked:abc");
    assert_int_equal(rtc_authn_revoked_key("abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
                                           key, sizeof(key)),
                     RTC_ETOOBIG);
}

/* ---- verifier --------------------------------------------------------------- */

struct vfix {
    uv_loop_t loop;
    pid_t redis_pid;
    uint16_t redis_port;
    rtc_redis *redis;
    rtc_jwt_keyset *signer; /* what the test signs with */
    rtc_jwt_keyset *served; /* what the in-process auth serves */
    rtc_grpc_server *server;
    rtc_grpc_channel *channel;
    rtc_verifier *v;
    int key_fetches;
};

struct outcome {
    bool done;
    unsigned seq; /* order of answers (from 1) */
    int err;
    rtc_jwt_error reason;
    rtc_jwt_claims claims;
    char detail[200];
};

static void on_done(void *ud, int err, rtc_jwt_error reason, const rtc_jwt_claims *claims,
                    const char *detail)
{
    static unsigned answers;
    struct outcome *o = ud;
    o->done = true;
    o->seq = ++answers;
    o->err = err;
    o->reason = reason;
    if (claims)
        o->claims = *claims;
    snprintf(o->detail, sizeof(o->detail), "%s", detail ? detail : "");
}

static void tick(uv_timer_t *t)
{
    (void)t;
}

/* Run the loop until *flag or 20 s. A ticking timer bounds each poll:
 * UV_RUN_ONCE runs due timers and then still blocks in poll, so a flag set
 * by a timer callback would otherwise be seen only at the next I/O. */
static void run_until(uv_loop_t *loop, bool *flag)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick, 10, 10);
    uint64_t deadline = rtc_now_ms() + 20000;
    while (!*flag && rtc_now_ms() < deadline)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_true(*flag);
}

static char *sign(rtc_jwt_keyset *ks, const char *jti, int64_t exp_in_ms)
{
    rtc_jwt_claims c = {0};
    strcpy(c.issuer, "rtc");
    strcpy(c.audience[0], "rtc");
    c.naudience = 1;
    strcpy(c.identity, "alice");
    strcpy(c.room_id, "room-1");
    strcpy(c.token_id, jti);
    int64_t now = rtc_wall_ms();
    c.issued_at_ms = now;
    c.not_before_ms = now;
    c.expires_at_ms = now + exp_in_ms;
    c.grants = RTC_JWT_GRANT_JOIN;
    char *tok = NULL;
    assert_int_equal(rtc_jwt_sign(ks, &c, &tok), 0);
    return tok;
}

static struct outcome verify(struct vfix *f, const char *tok)
{
    struct outcome o = {0};
    assert_int_equal(rtc_verifier_verify(f->v, tok, strlen(tok), on_done, &o, NULL), 0);
    /* Never inside the call. */
    assert_false(o.done);
    run_until(&f->loop, &o.done);
    return o;
}

static void serve_keys(rtc_grpc_call *call, const ProtobufCMessage *req, void *ud)
{
    (void)req;
    struct vfix *f = ud;
    f->key_fetches++;
    size_t n = rtc_jwt_keyset_count(f->served);
    Rtc__Auth__V1__SigningKey keys[8];
    Rtc__Auth__V1__SigningKey *ptrs[8];
    for (size_t i = 0; i < n && i < 8; i++) {
        rtc_jwt_key_info info;
        rtc_jwt_keyset_get(f->served, i, &info);
        rtc__auth__v1__signing_key__init(&keys[i]);
        keys[i].key_id = (char *)info.kid;
        keys[i].algorithm = "ES256";
        keys[i].public_key_pem = (char *)info.public_pem;
        ptrs[i] = &keys[i];
    }
    Rtc__Auth__V1__GetSigningKeysResponse resp = RTC__AUTH__V1__GET_SIGNING_KEYS_RESPONSE__INIT;
    resp.keys = ptrs;
    resp.n_keys = n;
    resp.max_age_ms = 60000;
    rtc_grpc_call_reply(call, &resp.base);
}

static int vsetup_common(void **state, bool remote)
{
    struct vfix *f = calloc(1, sizeof(*f));
    if (!f || uv_loop_init(&f->loop) != 0)
        return -1;
    if (rtc_jwt_keyset_new(&f->signer) < 0 || rtc_jwt_keyset_generate(f->signer, 0, NULL) < 0)
        return -1;
    rtc_verifier_options o;
    rtc_verifier_options_init(&o);
    o.keys_refresh_min_ms = 0;
    if (remote) {
        /* The served keyset holds the signer's public key. */
        if (rtc_jwt_keyset_new(&f->served) < 0)
            return -1;
        rtc_jwt_key_info info;
        rtc_jwt_keyset_get(f->signer, 0, &info);
        if (rtc_jwt_keyset_add_pem(f->served, info.public_pem, strlen(info.public_pem), info.kid, 0,
                                   NULL) < 0)
            return -1;
        rtc_grpc_server_options so;
        rtc_grpc_server_options_init(&so);
        if (rtc_grpc_server_new(&f->loop, &so, NULL, &f->server) < 0 ||
            rtc_grpc_server_add_service(f->server, &rtc__auth__v1__auth__descriptor) < 0 ||
            rtc_grpc_server_handle(f->server, &rtc__auth__v1__auth__descriptor, "GetSigningKeys",
                                   RTC_GRPC_UNARY, serve_keys, f) < 0 ||
            rtc_grpc_server_listen(f->server, "127.0.0.1", 0) < 0)
            return -1;
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%u", rtc_grpc_server_port(f->server));
        rtc_grpc_channel_options co;
        rtc_grpc_channel_options_init(&co);
        co.targets = target;
        co.backoff_initial_ms = 50;
        co.backoff_max_ms = 200;
        if (rtc_grpc_channel_new(&f->loop, &co, NULL, &f->channel) < 0)
            return -1;
        o.auth = f->channel;
    } else {
        o.keys = f->signer;
    }
    if (rtc_verifier_new(&f->loop, &o, NULL, &f->v) < 0)
        return -1;
    *state = f;
    return 0;
}

static int vsetup_local(void **state)
{
    return vsetup_common(state, false);
}

static int vsetup_remote(void **state)
{
    return vsetup_common(state, true);
}

static void server_done(void *ud)
{
    *(bool *)ud = true;
}

static int vteardown(void **state)
{
    struct vfix *f = *state;
    rtc_verifier_free(f->v);
    if (f->redis)
        rtc_redis_close(f->redis);
    rtc_test_redis_kill(f->redis_pid);
    if (f->channel)
        rtc_grpc_channel_close(f->channel);
    if (f->server) {
        bool done = false;
        rtc_grpc_server_shutdown(f->server, 0, server_done, &done);
        run_until(&f->loop, &done);
        rtc_grpc_server_free(f->server);
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    rtc_jwt_keyset_free(f->signer);
    rtc_jwt_keyset_free(f->served);
    free(f);
    return 0;
}

static void test_verifier_local(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-1", 60000);
    rtc_jwt_claims c;
    assert_false(rtc_verifier_verify_cached(f->v, tok, strlen(tok), &c));
    struct outcome o = verify(f, tok);
    assert_int_equal(o.err, 0);
    assert_int_equal(o.reason, RTC_JWT_OK);
    assert_string_equal(o.claims.identity, "alice");
    /* Now cached: the synchronous path answers. */
    memset(&c, 0, sizeof(c));
    assert_true(rtc_verifier_verify_cached(f->v, tok, strlen(tok), &c));
    assert_string_equal(c.token_id, "jti-1");
    /* Forgetting the jti drops it from the cache. */
    rtc_verifier_forget(f->v, "jti-1");
    assert_false(rtc_verifier_verify_cached(f->v, tok, strlen(tok), &c));
    free(tok);
}

static void test_verifier_refuses(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-2", -120000); /* expired two minutes ago */
    struct outcome o = verify(f, tok);
    assert_int_equal(o.err, 0);
    assert_int_equal(o.reason, RTC_JWT_EXPIRED);
    rtc_jwt_claims c;
    assert_false(rtc_verifier_verify_cached(f->v, tok, strlen(tok), &c));
    free(tok);
    o = verify(f, "not-a-token");
    assert_int_equal(o.reason, RTC_JWT_MALFORMED);
    o = (struct outcome){0};
    assert_int_equal(rtc_verifier_verify(f->v, "", 0, on_done, &o, NULL), 0);
    run_until(&f->loop, &o.done);
    assert_int_equal(o.reason, RTC_JWT_MALFORMED);
}

static void test_verifier_cancel(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-3", 60000);
    struct outcome o = {0};
    rtc_verifier_req *req = NULL;
    assert_int_equal(rtc_verifier_verify(f->v, tok, strlen(tok), on_done, &o, &req), 0);
    rtc_verifier_req_cancel(req);
    for (int i = 0; i < 10; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_false(o.done);
    free(tok);
}

static void test_verifier_remote_keys(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-4", 60000);
    struct outcome o = verify(f, tok);
    assert_int_equal(o.err, 0);
    assert_int_equal(o.reason, RTC_JWT_OK);
    assert_int_equal(f->key_fetches, 1);
    free(tok);
    /* A second token: keys are cached, no new fetch. */
    tok = sign(f->signer, "jti-5", 60000);
    o = verify(f, tok);
    assert_int_equal(o.reason, RTC_JWT_OK);
    assert_int_equal(f->key_fetches, 1);
    free(tok);
}

static void test_verifier_remote_rotation(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-6", 60000);
    assert_int_equal(verify(f, tok).reason, RTC_JWT_OK);
    free(tok);
    /* Auth rotates in a new key: a token with its kid makes the verifier
     * refetch once and then accept. */
    char kid[64];
    assert_int_equal(rtc_jwt_keyset_generate(f->signer, 0, kid), 0);
    assert_int_equal(rtc_jwt_keyset_set_signing(f->signer, kid), 0);
    size_t n = rtc_jwt_keyset_count(f->signer);
    rtc_jwt_key_info info;
    for (size_t i = 0; i < n; i++) {
        rtc_jwt_keyset_get(f->signer, i, &info);
        if (strcmp(info.kid, kid) == 0)
            break;
    }
    assert_int_equal(rtc_jwt_keyset_add_pem(f->served, info.public_pem, strlen(info.public_pem),
                                            info.kid, 0, NULL),
                     0);
    tok = sign(f->signer, "jti-7", 60000);
    struct outcome o = verify(f, tok);
    assert_int_equal(o.reason, RTC_JWT_OK);
    assert_int_equal(f->key_fetches, 2);
    free(tok);
    /* A kid auth does not know stays UNKNOWN_KEY (after one refetch). */
    rtc_jwt_keyset *stranger;
    assert_int_equal(rtc_jwt_keyset_new(&stranger), 0);
    assert_int_equal(rtc_jwt_keyset_generate(stranger, 0, NULL), 0);
    tok = sign(stranger, "jti-8", 60000);
    o = verify(f, tok);
    assert_int_equal(o.reason, RTC_JWT_UNKNOWN_KEY);
    assert_int_equal(f->key_fetches, 3);
    free(tok);
    rtc_jwt_keyset_free(stranger);
}

static void test_verifier_auth_down(void **state)
{
    struct vfix *f = *state;
    /* Stop the in-process auth before any key was fetched. */
    bool done = false;
    rtc_grpc_server_shutdown(f->server, 0, server_done, &done);
    run_until(&f->loop, &done);
    rtc_grpc_server_free(f->server);
    f->server = NULL;
    char *tok = sign(f->signer, "jti-9", 60000);
    struct outcome o = verify(f, tok);
    assert_int_equal(o.err, RTC_EUNAVAIL);
    free(tok);
}

static void test_verifier_free_pending(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-10", 60000);
    struct outcome o = {0};
    assert_int_equal(rtc_verifier_verify(f->v, tok, strlen(tok), on_done, &o, NULL), 0);
    rtc_verifier_free(f->v); /* waiting for keys: told RTC_ECLOSED */
    f->v = NULL;
    assert_true(o.done);
    assert_int_equal(o.err, RTC_ECLOSED);
    free(tok);
}

/* ---- revocation against a real Redis ---------------------------------------- */

static void on_redis_state(void *ud, bool up, const char *reason)
{
    (void)reason;
    *(bool *)ud = up;
}

/* Local keys, a real Redis, revocation rechecked every check_ms. */
static int vsetup_redis_check(void **state, uint64_t check_ms)
{
    struct vfix *f = calloc(1, sizeof(*f));
    if (!f || uv_loop_init(&f->loop) != 0)
        return -1;
    if (rtc_jwt_keyset_new(&f->signer) < 0 || rtc_jwt_keyset_generate(f->signer, 0, NULL) < 0)
        return -1;
    f->redis_port = rtc_test_free_port();
    f->redis_pid = rtc_test_redis_start(f->redis_port, NULL, 20000);
    if (f->redis_pid <= 0)
        return -1;
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%u", f->redis_port);
    rtc_redis_options ro;
    rtc_redis_options_init(&ro);
    ro.url = url;
    ro.backoff_initial_ms = 20;
    ro.backoff_max_ms = 100;
    if (rtc_redis_new(&f->loop, &ro, NULL, &f->redis) < 0)
        return -1;
    bool up = false;
    rtc_redis_on_state(f->redis, on_redis_state, &up);
    *state = f; /* teardown cleans up if the wait below fails */
    run_until(&f->loop, &up);
    rtc_redis_on_state(f->redis, NULL, NULL);
    rtc_verifier_options o;
    rtc_verifier_options_init(&o);
    o.keys = f->signer;
    o.redis = f->redis;
    o.revocation_check_ms = check_ms;
    return rtc_verifier_new(&f->loop, &o, NULL, &f->v) < 0 ? -1 : 0;
}

/* Revocation rechecked on every call (0 ms). */
static int vsetup_redis(void **state)
{
    return vsetup_redis_check(state, 0);
}

static int vsetup_redis_1ms(void **state)
{
    return vsetup_redis_check(state, 1);
}

static long long redis_int(struct vfix *f, const char *cmd, const char *arg)
{
    redisContext *c = rtc_test_redis_connect(f->redis_port, NULL);
    assert_non_null(c);
    redisReply *rep = arg ? redisCommand(c, "%s %s", cmd, arg) : redisCommand(c, cmd);
    assert_non_null(rep);
    long long v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    if (rep->type == REDIS_REPLY_STRING || rep->type == REDIS_REPLY_STATUS) {
        /* INFO commandstats: calls of EXISTS. */
        const char *p = strstr(rep->str, "cmdstat_exists:calls=");
        v = p ? atoll(p + strlen("cmdstat_exists:calls=")) : 0;
    }
    freeReplyObject(rep);
    redisFree(c);
    return v;
}

static void test_verifier_revoked(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-r1", 60000);
    assert_int_equal(verify(f, tok).reason, RTC_JWT_OK);
    redis_int(f, "SET rtc:auth:revoked:jti-r1 1", NULL); /* as RevokeToken does */
    struct outcome o = verify(f, tok);
    assert_int_equal(o.err, 0);
    assert_int_equal(o.reason, RTC_JWT_REVOKED);
    /* Dropped from the cache: the synchronous path does not answer. */
    rtc_jwt_claims c;
    assert_false(rtc_verifier_verify_cached(f->v, tok, strlen(tok), &c));
    free(tok);
}

/* Calls that present the same token while its check is in flight share
 * one EXISTS, and all get its answer. */
static void test_verifier_coalesces_checks(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-r2", 60000);
    assert_int_equal(verify(f, tok).reason, RTC_JWT_OK);
    long long before = redis_int(f, "INFO commandstats", NULL);
    enum { N = 20 };
    struct outcome o[N];
    memset(o, 0, sizeof(o));
    for (int i = 0; i < N; i++)
        assert_int_equal(rtc_verifier_verify(f->v, tok, strlen(tok), on_done, &o[i], NULL), 0);
    for (int i = 0; i < N; i++) {
        run_until(&f->loop, &o[i].done);
        assert_int_equal(o[i].err, 0);
        assert_int_equal(o[i].reason, RTC_JWT_OK);
        assert_string_equal(o[i].claims.token_id, "jti-r2");
    }
    assert_int_equal(redis_int(f, "INFO commandstats", NULL) - before, 1);
    free(tok);
}

struct order_probe {
    struct vfix *f;
    const char *tok;
    struct outcome *first, later;
    bool fired, overtook;
};

static void on_probe_ping(void *ud, int err, const redisReply *reply)
{
    (void)err;
    (void)reply;
    struct order_probe *p = ud;
    p->fired = true;
    /* Runs right after the EXISTS reply (same read), before the verifier
     * has delivered the first call's answer: a call made now must not be
     * answered ahead of it. */
    rtc_jwt_claims c;
    if (!p->first->done && rtc_verifier_verify_cached(p->f->v, p->tok, strlen(p->tok), &c))
        p->overtook = true;
    assert_int_equal(rtc_verifier_verify(p->f->v, p->tok, strlen(p->tok), on_done, &p->later, NULL),
                     0);
}

/* A call whose revocation check went to Redis is answered before any call
 * for the same token made after the check came back, even one that finds
 * the token freshly cached: callers that act in answer order (a signaling
 * session's messages) keep their order. */
static void test_verifier_keeps_order(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-r4", 60000);
    assert_int_equal(verify(f, tok).reason, RTC_JWT_OK);
    int64_t t0 = rtc_wall_ms();
    while (rtc_wall_ms() <= t0) /* the 1 ms recheck period passes */
        ;
    struct outcome first = {0};
    struct order_probe p = {.f = f, .tok = tok, .first = &first};
    assert_int_equal(rtc_verifier_verify(f->v, tok, strlen(tok), on_done, &first, NULL), 0);
    assert_int_equal(rtc_redis_command(f->redis, on_probe_ping, &p, 0, NULL, "PING"), 0);
    run_until(&f->loop, &p.fired);
    assert_false(p.overtook);
    run_until(&f->loop, &p.later.done);
    assert_true(first.done);
    assert_int_equal(first.reason, RTC_JWT_OK);
    assert_int_equal(p.later.reason, RTC_JWT_OK);
    assert_true(first.seq < p.later.seq);
    free(tok);
}

/* Cancelling the call whose check the others wait on: they still get an
 * answer (one of them sends the check again). */
static void test_verifier_cancel_leader(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-r3", 60000);
    assert_int_equal(verify(f, tok).reason, RTC_JWT_OK);
    struct outcome lead = {0}, o[3];
    memset(o, 0, sizeof(o));
    rtc_verifier_req *leader = NULL, *follower = NULL;
    assert_int_equal(rtc_verifier_verify(f->v, tok, strlen(tok), on_done, &lead, &leader), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(
            rtc_verifier_verify(f->v, tok, strlen(tok), on_done, &o[i], i == 1 ? &follower : NULL),
            0);
    rtc_verifier_req_cancel(leader);
    rtc_verifier_req_cancel(follower); /* a follower can go too */
    run_until(&f->loop, &o[0].done);
    run_until(&f->loop, &o[2].done);
    assert_int_equal(o[0].reason, RTC_JWT_OK);
    assert_int_equal(o[2].reason, RTC_JWT_OK);
    assert_false(lead.done);
    assert_false(o[1].done);
    free(tok);
}

/* Redis gone: a check that is due fails closed with RTC_EUNAVAIL. */
static void test_verifier_redis_down(void **state)
{
    struct vfix *f = *state;
    char *tok = sign(f->signer, "jti-r4", 60000);
    assert_int_equal(verify(f, tok).reason, RTC_JWT_OK);
    rtc_test_redis_kill(f->redis_pid);
    f->redis_pid = 0;
    struct outcome o = verify(f, tok);
    assert_int_equal(o.err, RTC_EUNAVAIL);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apikeys_parse),
        cmocka_unit_test(test_apikeys_parse_errors),
        cmocka_unit_test(test_apikeys_load_file),
        cmocka_unit_test(test_apikeys_check),
        cmocka_unit_test(test_apikeys_check_missing),
        cmocka_unit_test(test_apikeys_check_wrong_secret),
        cmocka_unit_test(test_apikeys_check_unknown_key),
        cmocka_unit_test(test_apikeys_check_malformed),
        cmocka_unit_test(test_apikeys_check_denied),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test_setup_teardown(test_verifier_local, vsetup_local, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_refuses, vsetup_local, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_cancel, vsetup_local, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_remote_keys, vsetup_remote, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_remote_rotation, vsetup_remote, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_auth_down, vsetup_remote, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_free_pending, vsetup_remote, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_revoked, vsetup_redis, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_coalesces_checks, vsetup_redis, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_keeps_order, vsetup_redis_1ms, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_cancel_leader, vsetup_redis, vteardown),
        cmocka_unit_test_setup_teardown(test_verifier_redis_down, vsetup_redis, vteardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

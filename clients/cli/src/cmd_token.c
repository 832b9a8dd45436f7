/* cmd_token.c — `rtcctl token issue|verify|revoke`: rtc.auth.v1.Auth. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rtc/auth/v1/auth.pb-c.h"

#include "cli_int.h"

#define AUTH_PATH(m) "/rtc.auth.v1.Auth/" m

/* "join" for GRANT_JOIN: the spelling of --grant and of the JWT claim. */
static void grant_text(int g, char *out, size_t outlen)
{
    char num[16];
    const char *name = cli_enum_name(&rtc__auth__v1__grant__descriptor, g, num, sizeof(num));
    if (strncmp(name, "GRANT_", 6) == 0)
        name += 6;
    size_t i = 0;
    for (; name[i] && i + 1 < outlen; i++)
        out[i] = (char)tolower((unsigned char)name[i]);
    out[i] = '\0';
}

/* --grant "join,create" → grants; a one-line reason in err on failure. */
static int parse_grants(const char *s, Rtc__Auth__V1__Grant *out, size_t max, size_t *n, char *err,
                        size_t errlen)
{
    *n = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        const ProtobufCEnumValue *v = NULL;
        for (unsigned i = 0; i < rtc__auth__v1__grant__descriptor.n_values && !v; i++) {
            const ProtobufCEnumValue *e = &rtc__auth__v1__grant__descriptor.values[i];
            char g[32];
            grant_text(e->value, g, sizeof(g));
            if (e->value != 0 && strlen(g) == len && strncasecmp(g, s, len) == 0)
                v = e;
        }
        if (!v || *n == max) {
            snprintf(err, errlen, "--grant: '%.*s' is not a grant (join, create, list, admin)",
                     (int)(len > 32 ? 32 : len), s);
            return RTC_EINVAL;
        }
        out[(*n)++] = (Rtc__Auth__V1__Grant)v->value;
        s += len;
        if (*s == ',')
            s++;
    }
    if (*n == 0) {
        snprintf(err, errlen, "--grant: at least one of join, create, list, admin");
        return RTC_EINVAL;
    }
    return 0;
}

/* ---- issue ------------------------------------------------------------------ */

typedef struct issue {
    Rtc__Auth__V1__IssueTokenRequest req;
    Rtc__Auth__V1__Grant grants[8];
} issue;

static void issue_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    free(ud);
    if (!cli_call_ok(c, status, message) || cli_json_reply(c, resp))
        return;
    const Rtc__Auth__V1__IssueTokenResponse *r = (const Rtc__Auth__V1__IssueTokenResponse *)resp;
    char exp[40];
    cli_fmt_time(r->expires_at_ms, exp, sizeof(exp));
    cli_table t;
    cli_table_init(&t, 2, NULL);
    cli_table_kv(&t, "access_token", "%s", r->access_token);
    cli_table_kv(&t, "token_id", "%s", r->token_id);
    cli_table_kv(&t, "expires_at", "%s", exp);
    cli_table_print(&t, c->out);
    cli_table_free(&t);
    cli_finish(c, RTC_CLI_EXIT_OK);
}

void cli_cmd_token_issue(cli *c)
{
    char err[128];
    if (!c->v.identity) {
        cli_usage_error(c, "--identity is required");
        return;
    }
    issue *s = cli_calloc(c, sizeof(*s));
    if (!s)
        return;
    rtc__auth__v1__issue_token_request__init(&s->req);
    if (parse_grants(c->v.grant, s->grants, 8, &s->req.n_grants, err, sizeof(err)) < 0) {
        free(s);
        cli_usage_error(c, "%s", err);
        return;
    }
    s->req.grants = s->grants;
    s->req.identity = c->v.identity;
    s->req.room_id = c->v.room ? c->v.room : "";
    s->req.display_name = c->v.name ? c->v.name : "";
    s->req.ttl_ms = (int64_t)c->v.ttl_ms;
    cli_unary(c, &c->auth, AUTH_PATH("IssueToken"), &s->req.base,
              &rtc__auth__v1__issue_token_response__descriptor, cli_admin_authz(c), issue_done, s);
}

/* ---- verify ------------------------------------------------------------------- */

static void print_claims(cli *c, const Rtc__Auth__V1__Claims *k)
{
    char t1[40], t2[40], t3[40], t4[40];
    rtc_buf grants = RTC_BUF_INIT, aud = RTC_BUF_INIT;
    for (size_t i = 0; i < k->n_grants; i++) {
        char g[32];
        grant_text(k->grants[i], g, sizeof(g));
        rtc_buf_printf(&grants, "%s%s", i ? "," : "", g);
    }
    for (size_t i = 0; i < k->n_audience; i++)
        rtc_buf_printf(&aud, "%s%s", i ? "," : "", k->audience[i]);
    cli_fmt_time(k->issued_at_ms, t1, sizeof(t1));
    cli_fmt_time(k->not_before_ms, t2, sizeof(t2));
    cli_fmt_time(k->expires_at_ms, t3, sizeof(t3));
    cli_fmt_time(k->session_started_at_ms, t4, sizeof(t4));
    cli_table t;
    cli_table_init(&t, 2, NULL);
    cli_table_kv(&t, "valid", "yes");
    cli_table_kv(&t, "identity", "%s", k->identity);
    cli_table_kv(&t, "room", "%s", k->room_id);
    cli_table_kv(&t, "grants", "%s", grants.len ? (const char *)grants.data : "");
    cli_table_kv(&t, "display_name", "%s", k->display_name);
    cli_table_kv(&t, "token_id", "%s", k->token_id);
    cli_table_kv(&t, "issued_at", "%s", t1);
    cli_table_kv(&t, "not_before", "%s", t2);
    cli_table_kv(&t, "expires_at", "%s", t3);
    cli_table_kv(&t, "session_start", "%s", t4);
    cli_table_kv(&t, "issuer", "%s", k->issuer);
    cli_table_kv(&t, "audience", "%s", aud.len ? (const char *)aud.data : "");
    cli_table_kv(&t, "key_id", "%s", k->key_id);
    cli_table_print(&t, c->out);
    cli_table_free(&t);
    rtc_buf_free(&grants);
    rtc_buf_free(&aud);
}

static void verify_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    free(ud);
    if (!cli_call_ok(c, status, message))
        return;
    const Rtc__Auth__V1__VerifyTokenResponse *r = (const Rtc__Auth__V1__VerifyTokenResponse *)resp;
    bool valid = r->result_case == RTC__AUTH__V1__VERIFY_TOKEN_RESPONSE__RESULT_CLAIMS && r->claims;
    char num[16];
    const char *why =
        valid ? ""
              : cli_enum_name(&rtc__auth__v1__token_error__descriptor, r->error, num, sizeof(num));
    if (c->json) {
        if (cli_print_json(c, resp) < 0)
            return;
    } else if (valid) {
        print_claims(c, r->claims);
    } else {
        cli_table t;
        cli_table_init(&t, 2, NULL);
        cli_table_kv(&t, "valid", "no");
        cli_table_kv(&t, "error", "%s", why);
        cli_table_kv(&t, "detail", "%s", r->detail);
        cli_table_print(&t, c->out);
        cli_table_free(&t);
    }
    if (valid) {
        cli_finish(c, RTC_CLI_EXIT_OK);
        return;
    }
    fflush(c->out);
    cli_fail(c, RTC_CLI_EXIT_DENIED, "the token is refused: %s%s%.200s", why,
             r->detail[0] ? ": " : "", r->detail);
}

void cli_cmd_token_verify(cli *c)
{
    Rtc__Auth__V1__VerifyTokenRequest *req = cli_calloc(c, sizeof(*req));
    if (!req)
        return;
    rtc__auth__v1__verify_token_request__init(req);
    req->access_token = c->args[0];
    cli_unary(c, &c->auth, AUTH_PATH("VerifyToken"), &req->base,
              &rtc__auth__v1__verify_token_response__descriptor, cli_admin_authz(c), verify_done,
              req);
}

/* ---- revoke --------------------------------------------------------------------- */

static void revoke_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    Rtc__Auth__V1__RevokeTokenRequest *req = ud;
    if (cli_call_ok(c, status, message) && !cli_json_reply(c, resp)) {
        char exp[40];
        cli_fmt_time(req->expires_at_ms, exp, sizeof(exp));
        fprintf(c->out, "revoked token %s%s%s\n", req->token_id,
                req->expires_at_ms ? " until " : "", req->expires_at_ms ? exp : "");
        cli_finish(c, RTC_CLI_EXIT_OK);
    }
    free(req);
}

void cli_cmd_token_revoke(cli *c)
{
    Rtc__Auth__V1__RevokeTokenRequest *req = cli_calloc(c, sizeof(*req));
    if (!req)
        return;
    rtc__auth__v1__revoke_token_request__init(req);
    req->token_id = c->args[0];
    req->expires_at_ms = c->v.expires_at_ms;
    cli_unary(c, &c->auth, AUTH_PATH("RevokeToken"), &req->base,
              &rtc__auth__v1__revoke_token_response__descriptor, cli_admin_authz(c), revoke_done,
              req);
}

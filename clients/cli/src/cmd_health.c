/* cmd_health.c — `rtcctl health`: grpc.health.v1.Health/Check of every
 * service on every endpoint, all at once, each under the deadline; one
 * table (or one JSON object per check) once every answer is in.
 *
 * Exit 0 only if every check says SERVING; 3 if an endpoint could not be
 * reached (that is what a closed port or a dead pod looks like); else 7
 * (up but some service NOT_SERVING, e.g. a pod whose Redis is away). */
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"

#include "cli_int.h"

static const char *const AUTH_SERVICES[] = {"", "rtc.auth.v1.Auth"};
static const char *const SIG_SERVICES[] = {"", "rtc.signaling.v1.Signaling",
                                           "rtc.signaling.v1.SignalingAdmin"};

typedef struct health health;

typedef struct check {
    health *h;
    cli_group *g;
    size_t epi; /* endpoint index in g */
    const cli_endpoint *ep;
    Grpc__Health__V1__HealthCheckRequest req;
    int status;  /* gRPC status of the call */
    int serving; /* HealthCheckResponse.status when status is OK */
    char message[256];
    json_t *json; /* --json: the response as JSON */
} check;

struct health {
    check *checks;
    size_t n, pending;
};

static void health_free(health *h)
{
    for (size_t i = 0; i < h->n; i++)
        json_decref(h->checks[i].json);
    free(h->checks);
    free(h);
}

static const char *serving_name(int v, char *buf, size_t len)
{
    return cli_enum_name(&grpc__health__v1__health_check_response__serving_status__descriptor, v,
                         buf, len);
}

static int print_json(cli *c, const check *k)
{
    json_t *o = json_pack("{ssss}", "endpoint", k->ep->name, "service", k->req.service);
    if (!o)
        return RTC_ENOMEM;
    if (k->status == RTC_GRPC_OK && k->json)
        json_object_update(o, k->json);
    else if (k->status != RTC_GRPC_OK)
        json_object_set_new(
            o, "error",
            json_pack("{ssss}", "code", rtc_grpc_status_name(k->status), "message", k->message));
    int rc = cli_print_json_value(c, o);
    json_decref(o);
    return rc;
}

static void report(cli *c, health *h)
{
    static const char *const headers[4] = {"ENDPOINT", "SERVICE", "STATUS", "DETAIL"};
    bool unreachable = false, not_serving = false;
    cli_table t;
    int rc = c->json ? 0 : cli_table_init(&t, 4, headers);
    for (size_t i = 0; i < h->n && rc == 0; i++) {
        const check *k = &h->checks[i];
        char num[16];
        const char *st = k->status == RTC_GRPC_OK ? serving_name(k->serving, num, sizeof(num))
                                                  : rtc_grpc_status_name(k->status);
        unreachable |= cli_status_unreachable(k->status);
        not_serving |=
            k->status != RTC_GRPC_OK ||
            k->serving != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
        if (c->json) {
            rc = print_json(c, k);
            continue;
        }
        const char *cells[4] = {k->ep->name, k->req.service[0] ? k->req.service : "\"\"", st,
                                k->message};
        rc = cli_table_add(&t, cells);
    }
    if (!c->json) {
        if (rc == 0)
            cli_table_print(&t, c->out);
        cli_table_free(&t);
    }
    if (rc < 0)
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "cannot print the result: %s", rtc_strerror(rc));
    cli_finish(c, unreachable   ? RTC_CLI_EXIT_UNREACHABLE
                  : not_serving ? RTC_CLI_EXIT_NOT_SERVING
                                : RTC_CLI_EXIT_OK);
}

static void check_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    check *k = ud;
    health *h = k->h;
    k->status = status;
    snprintf(k->message, sizeof(k->message), "%s", message ? message : "");
    if (status == RTC_GRPC_OK) {
        k->serving = ((const Grpc__Health__V1__HealthCheckResponse *)resp)->status;
        if (c->json && !c->finished)
            k->json = cli_to_json(c, resp);
    }
    if (--h->pending > 0)
        return;
    if (!c->finished)
        report(c, h);
    health_free(h);
}

void cli_cmd_health(cli *c)
{
    size_t per_auth = sizeof(AUTH_SERVICES) / sizeof(AUTH_SERVICES[0]);
    size_t per_sig = sizeof(SIG_SERVICES) / sizeof(SIG_SERVICES[0]);
    health *h = cli_calloc(c, sizeof(*h));
    if (!h)
        return;
    h->n = c->auth.n * per_auth + c->sig.n * per_sig;
    if (!(h->checks = cli_calloc(c, h->n * sizeof(check)))) {
        free(h);
        return;
    }
    size_t k = 0;
    const struct {
        cli_group *g;
        const char *const *services;
        size_t n;
    } plan[2] = {{&c->auth, AUTH_SERVICES, per_auth}, {&c->sig, SIG_SERVICES, per_sig}};
    for (size_t p = 0; p < 2; p++)
        for (size_t e = 0; e < plan[p].g->n; e++)
            for (size_t s = 0; s < plan[p].n; s++, k++) {
                check *ck = &h->checks[k];
                ck->h = h;
                ck->g = plan[p].g;
                ck->epi = e;
                ck->ep = &plan[p].g->eps[e];
                grpc__health__v1__health_check_request__init(&ck->req);
                ck->req.service = (char *)plan[p].services[s];
            }
    /* pending covers every check before any starts, and the loop keeps its
     * own copies: the last check to end frees h. */
    size_t n = h->n;
    check *checks = h->checks;
    h->pending = n;
    for (k = 0; k < n; k++)
        cli_unary_at(c, checks[k].g, checks[k].epi, "/grpc.health.v1.Health/Check",
                     &checks[k].req.base, &grpc__health__v1__health_check_response__descriptor,
                     NULL, check_done, &checks[k]);
}

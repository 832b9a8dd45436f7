/* call.c — rtcctl's calls: one channel per endpoint, made on first use;
 * unary calls with ordered failover under one deadline; and the mapping
 * of a final status to a message and an exit status.
 *
 * Failover is ordered rather than round robin: an operator who lists
 * `--signaling a,b` expects a to be asked and b only when a cannot answer.
 * Only UNAVAILABLE moves a call on (the endpoint is down, refused the
 * connection or is not ready, e.g. its Redis is away); any other status is
 * the service's answer and is final. */
#include <stdlib.h>
#include <string.h>

#include "cli_int.h"

/* The channel's own connect attempt gives up after this, so that a
 * black-holed endpoint leaves time to try the next one. */
#define CONNECT_TIMEOUT_MS 5000
/* Long Subscribe streams notice a silently dead connection. */
#define KEEPALIVE_MS 30000

int rtc_cli_exit_status(int grpc_status)
{
    switch (grpc_status) {
    case RTC_GRPC_OK:
        return RTC_CLI_EXIT_OK;
    case RTC_GRPC_UNAVAILABLE:
    case RTC_GRPC_DEADLINE_EXCEEDED:
        return RTC_CLI_EXIT_UNREACHABLE;
    case RTC_GRPC_NOT_FOUND:
        return RTC_CLI_EXIT_NOT_FOUND;
    case RTC_GRPC_ALREADY_EXISTS:
    case RTC_GRPC_FAILED_PRECONDITION:
        return RTC_CLI_EXIT_CONFLICT;
    case RTC_GRPC_UNAUTHENTICATED:
    case RTC_GRPC_PERMISSION_DENIED:
        return RTC_CLI_EXIT_DENIED;
    case RTC_GRPC_INVALID_ARGUMENT:
        return RTC_CLI_EXIT_INVALID;
    default:
        return RTC_CLI_EXIT_FAILURE;
    }
}

bool cli_status_unreachable(int status)
{
    return rtc_cli_exit_status(status) == RTC_CLI_EXIT_UNREACHABLE;
}

void cli_report_status(cli *c, const char *what, int status, const char *message)
{
    const char *name = rtc_grpc_status_name(status);
    /* One line whatever the server put in grpc-message. */
    char msg[512];
    size_t n = 0;
    for (const char *p = message ? message : ""; *p && n + 1 < sizeof(msg); p++)
        msg[n++] = (unsigned char)*p < 0x20 || *p == 0x7f ? ' ' : *p;
    msg[n] = '\0';
    fprintf(c->err, "rtcctl: %s: %s%s%s\n", what, name ? name : "UNKNOWN", n ? ": " : "", msg);
    fflush(c->err);
}

bool cli_call_ok(cli *c, int status, const char *message)
{
    if (c->finished)
        return false;
    if (status != RTC_GRPC_OK) {
        cli_fail_status(c, c->what, status, message);
        return false;
    }
    return true;
}

void cli_fail_status(cli *c, const char *what, int status, const char *message)
{
    if (c->finished)
        return;
    cli_report_status(c, what, status, message);
    cli_finish(c, rtc_cli_exit_status(status));
}

rtc_grpc_channel *cli_channel(cli *c, cli_group *g, size_t i)
{
    if (c->finished || i >= g->n)
        return NULL;
    cli_endpoint *ep = &g->eps[i];
    if (ep->ch)
        return ep->ch;
    rtc_grpc_channel_options o;
    rtc_grpc_channel_options_init(&o);
    o.targets = ep->name;
    o.connect_timeout_ms = c->timeout_ms < CONNECT_TIMEOUT_MS ? c->timeout_ms : CONNECT_TIMEOUT_MS;
    o.keepalive_ms = KEEPALIVE_MS;
    if (rtc_grpc_channel_new(&c->loop, &o, NULL, &ep->ch) < 0) {
        ep->ch = NULL;
        return NULL;
    }
    return ep->ch;
}

void cli_group_close(cli_group *g)
{
    for (size_t i = 0; i < g->n; i++) {
        if (g->eps[i].ch) {
            rtc_grpc_channel_close(g->eps[i].ch);
            g->eps[i].ch = NULL;
        }
    }
}

/* ---- unary calls with failover --------------------------------------------- */

typedef struct ucall {
    cli *c;
    cli_group *g;
    const char *path;
    const ProtobufCMessage *req;
    const ProtobufCMessageDescriptor *desc;
    const char *authz;
    cli_done_fn done;
    void *ud;
    uint64_t deadline; /* uv_now() time */
    size_t ep, tries;
    bool failover;
    char message[512]; /* of the last UNAVAILABLE when several were tried */
} ucall;

static int attempt(ucall *u);

static void complete(ucall *u, int status, const char *message, ProtobufCMessage *resp)
{
    u->done(u->c, u->ud, status, message, resp);
    free(u);
}

static void on_done(void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    ucall *u = ud;
    cli *c = u->c;
    if (status == RTC_GRPC_UNAVAILABLE && u->g->n > 1) {
        /* Name the endpoint: the next attempt's failure replaces this one. */
        const char *name = u->g->eps[u->ep].name;
        if (!strstr(message, name))
            snprintf(u->message, sizeof(u->message), "%s: %s", name, message);
        else
            snprintf(u->message, sizeof(u->message), "%s", message);
        message = u->message;
    }
    if (status == RTC_GRPC_UNAVAILABLE && u->failover && !c->finished && u->tries < u->g->n) {
        u->ep = (u->ep + 1) % u->g->n;
        int rc = attempt(u);
        if (rc < 0)
            complete(u, c->finished ? RTC_GRPC_CANCELLED : RTC_GRPC_INTERNAL, rtc_strerror(rc),
                     NULL);
        return;
    }
    if (status != RTC_GRPC_UNAVAILABLE && status != RTC_GRPC_CANCELLED)
        u->g->cur = u->ep;
    complete(u, status, message, resp);
}

static int attempt(ucall *u)
{
    cli *c = u->c;
    uv_update_time(&c->loop);
    uint64_t now = uv_now(&c->loop);
    rtc_grpc_channel *ch = cli_channel(c, u->g, u->ep);
    if (!ch)
        return c->finished ? RTC_ECLOSED : RTC_ENOMEM;
    rtc_grpc_metadata md = {"authorization", u->authz};
    rtc_grpc_call_options o = {
        .metadata = u->authz ? &md : NULL,
        .nmetadata = u->authz ? 1 : 0,
        /* The deadline of the whole call; a late attempt gets at least 1 ms
         * and so ends DEADLINE_EXCEEDED from the loop. */
        .timeout_ms = u->deadline > now ? u->deadline - now : 1,
    };
    u->tries++;
    return rtc_grpc_channel_unary(ch, u->path, u->req, u->desc, &o, on_done, u, NULL);
}

static void start(cli *c, cli_group *g, size_t first, bool failover, const char *path,
                  const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                  const char *authz, cli_done_fn done, void *ud)
{
    ucall *u = first < g->n ? calloc(1, sizeof(*u)) : NULL;
    if (!u) {
        done(c, ud, RTC_GRPC_INTERNAL, first < g->n ? "out of memory" : "no endpoint", NULL);
        return;
    }
    uv_update_time(&c->loop);
    *u = (ucall){.c = c,
                 .g = g,
                 .path = path,
                 .req = req,
                 .desc = resp_desc,
                 .authz = authz,
                 .done = done,
                 .ud = ud,
                 .deadline = uv_now(&c->loop) + c->timeout_ms,
                 .ep = first,
                 .failover = failover};
    int rc = attempt(u);
    if (rc < 0)
        complete(u, c->finished ? RTC_GRPC_CANCELLED : RTC_GRPC_INTERNAL, rtc_strerror(rc), NULL);
}

void cli_unary(cli *c, cli_group *g, const char *path, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *resp_desc, const char *authz, cli_done_fn done,
               void *ud)
{
    start(c, g, g->cur, true, path, req, resp_desc, authz, done, ud);
}

void cli_unary_at(cli *c, cli_group *g, size_t i, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, const char *authz, cli_done_fn done,
                  void *ud)
{
    start(c, g, i, false, path, req, resp_desc, authz, done, ud);
}

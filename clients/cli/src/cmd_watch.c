/* cmd_watch.c — `rtcctl watch`: join a room as a participant and print
 * its event stream.
 *
 * The steps run one after the other, so exactly one call is outstanding at
 * any time and the callback of the last one frees the state:
 *   IssueToken (auth, API key; skipped with --token) → Join → Subscribe
 *   (a server stream, no deadline) → on SIGINT/SIGTERM: Leave → exit 0.
 * A stream the server ends with OK means the session is over (kicked, room
 * closed): exit 0 without Leave. A stream lost with UNAVAILABLE (its pod
 * died or lost Redis) is opened again on the next --signaling endpoint
 * after the last event printed, so nothing is missed or printed twice. */
#include <stdlib.h>
#include <string.h>

#include "rtc/auth/v1/auth.pb-c.h"
#include "rtc/signaling/v1/signaling.pb-c.h"

#include "cli_int.h"

#define SIG_PATH(m) "/rtc.signaling.v1.Signaling/" m

typedef enum { W_ISSUE, W_JOIN, W_STREAM, W_LEAVE } phase;

typedef struct watch {
    cli *c;
    phase phase;
    Rtc__Auth__V1__IssueTokenRequest ireq;
    Rtc__Auth__V1__Grant grants[2];
    Rtc__Signaling__V1__JoinRequest jreq;
    Rtc__Signaling__V1__LeaveRequest lreq;
    char *authz; /* "Bearer <participant token>" (owned) */
    char *session_id, *participant_id, *room_id;
    char *last_id; /* the last event printed (or --after) */
    size_t ep;     /* the endpoint of the stream */
    size_t lost;   /* streams lost (UNAVAILABLE) in a row without an event */
    rtc_grpc_client_call *stream;
    bool stop;      /* SIGINT/SIGTERM: leave as soon as joined */
    int end_status; /* the exit status once Leave is done */
    char what[128]; /* "watch demo: Join" */
    rtc_buf line;
} watch;

static void watch_free(watch *w)
{
    if (w->c->state == w) {
        w->c->state = NULL;
        w->c->on_signal = NULL;
    }
    cli_free_secret(w->authz);
    free(w->session_id);
    free(w->participant_id);
    free(w->room_id);
    free(w->last_id);
    rtc_buf_free(&w->line);
    free(w);
}

static const char *step(watch *w, const char *rpc)
{
    snprintf(w->what, sizeof(w->what), "%s: %s", w->c->what, rpc);
    return w->what;
}

/* The end: finish with status and free everything (no call outstanding). */
static void watch_end(watch *w, int status)
{
    cli_finish(w->c, status);
    watch_free(w);
}

/* The start of a step's callback: true to go on; else the watch is over
 * (the command finished, or the step failed: reported) and w is freed. */
static bool step_ok(watch *w, int status, const char *message, const char *rpc)
{
    cli *c = w->c;
    if (c->finished) {
        watch_free(w);
        return false;
    }
    if (status != RTC_GRPC_OK) {
        cli_report_status(c, step(w, rpc), status, message);
        watch_end(w, rtc_cli_exit_status(status));
        return false;
    }
    return true;
}

static int set_str(char **dst, const char *s)
{
    free(*dst);
    *dst = strdup(s ? s : "");
    return *dst ? 0 : RTC_ENOMEM;
}

/* ---- printing events --------------------------------------------------------- */

/* The enum name without its prefix, lower case ("SDP_TYPE_OFFER" → "offer"). */
static void short_name(const ProtobufCEnumDescriptor *d, int v, const char *prefix, rtc_buf *out,
                       bool lower)
{
    char num[16];
    const char *name = cli_enum_name(d, v, num, sizeof(num));
    if (strncmp(name, prefix, strlen(prefix)) == 0)
        name += strlen(prefix);
    for (; *name; name++) {
        char ch = lower && *name >= 'A' && *name <= 'Z' ? (char)(*name - 'A' + 'a') : *name;
        rtc_buf_append(out, &ch, 1);
    }
}

static void quoted(rtc_buf *out, const char *key, const void *data, size_t len)
{
    rtc_buf q = RTC_BUF_INIT;
    if (cli_fmt_bytes(data, len, &q) == 0)
        rtc_buf_printf(out, " %s%s%.*s", key, key[0] ? "=" : "", (int)q.len, (const char *)q.data);
    rtc_buf_free(&q);
}

static void participant(rtc_buf *out, const Rtc__Signaling__V1__Participant *p)
{
    if (!p)
        return;
    rtc_buf_printf(out, " %s", p->id);
    quoted(out, "identity", p->identity, strlen(p->identity));
    quoted(out, "name", p->display_name, strlen(p->display_name));
}

static void signal_text(rtc_buf *out, const Rtc__Signaling__V1__SignalPayload *p)
{
    if (!p)
        return;
    switch (p->kind_case) {
    case RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DESCRIPTION:
        rtc_buf_append_str(out, " ");
        short_name(&rtc__signaling__v1__sdp_type__descriptor, p->description->type, "SDP_TYPE_",
                   out, true);
        rtc_buf_printf(out, " sdp=%zuB", strlen(p->description->sdp));
        break;
    case RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_CANDIDATE:
        rtc_buf_append_str(out, " candidate");
        quoted(out, "", p->candidate->candidate, strlen(p->candidate->candidate));
        break;
    case RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_END_OF_CANDIDATES:
        rtc_buf_append_str(out, " end_of_candidates");
        break;
    case RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DATA:
        rtc_buf_append_str(out, " data");
        quoted(out, "", p->data.data, p->data.len);
        break;
    default:
        rtc_buf_append_str(out, " (unknown payload)");
    }
}

/* `<time> <id> <kind> <details>`: one line per event. */
static void event_text(rtc_buf *out, const Rtc__Signaling__V1__Event *ev)
{
    char t[40];
    cli_fmt_time(ev->timestamp_ms, t, sizeof(t));
    rtc_buf_printf(out, "%s %s ", t, ev->id);
    switch (ev->kind_case) {
    case RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_JOINED:
        rtc_buf_append_str(out, "participant_joined");
        participant(out, ev->participant_joined->participant);
        break;
    case RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_LEFT:
        rtc_buf_append_str(out, "participant_left");
        participant(out, ev->participant_left->participant);
        rtc_buf_append_str(out, " reason=");
        short_name(&rtc__signaling__v1__leave_reason__descriptor, ev->participant_left->reason,
                   "LEAVE_REASON_", out, false);
        break;
    case RTC__SIGNALING__V1__EVENT__KIND_SIGNAL:
        rtc_buf_printf(out, "signal from=%s", ev->signal->from_participant_id);
        signal_text(out, ev->signal->payload);
        break;
    case RTC__SIGNALING__V1__EVENT__KIND_DATA:
        rtc_buf_printf(out, "data from=%s",
                       ev->data->from_participant_id[0] ? ev->data->from_participant_id : "-");
        quoted(out, "", ev->data->data.data, ev->data->data.len);
        break;
    case RTC__SIGNALING__V1__EVENT__KIND_ROOM_CLOSED:
        rtc_buf_append_str(out, "room_closed");
        quoted(out, "reason", ev->room_closed->reason, strlen(ev->room_closed->reason));
        break;
    case RTC__SIGNALING__V1__EVENT__KIND_KICKED:
        rtc_buf_append_str(out, "kicked");
        quoted(out, "reason", ev->kicked->reason, strlen(ev->kicked->reason));
        break;
    default:
        rtc_buf_append_str(out, "unknown_event");
    }
    rtc_buf_append_str(out, "\n");
}

/* ---- the steps ------------------------------------------------------------------ */

static void leave(watch *w, int end_status);
static void subscribe(watch *w);

static void leave_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    watch *w = ud;
    (void)resp;
    if (c->finished) {
        watch_free(w);
        return;
    }
    int end = w->end_status;
    if (status != RTC_GRPC_OK && status != RTC_GRPC_NOT_FOUND) {
        cli_report_status(c, step(w, "Leave"), status, message);
        if (end == RTC_CLI_EXIT_OK)
            end = rtc_cli_exit_status(status);
    }
    watch_end(w, end);
}

static void leave(watch *w, int end_status)
{
    cli *c = w->c;
    w->phase = W_LEAVE;
    w->end_status = end_status;
    rtc__signaling__v1__leave_request__init(&w->lreq);
    w->lreq.session_id = w->session_id;
    cli_unary(c, &c->sig, SIG_PATH("Leave"), &w->lreq.base,
              &rtc__signaling__v1__leave_response__descriptor, w->authz, leave_done, w);
}

static int stream_on_message(void *ud, const uint8_t *data, size_t len)
{
    watch *w = ud;
    cli *c = w->c;
    Rtc__Signaling__V1__Event *ev = rtc__signaling__v1__event__unpack(NULL, len, data);
    if (!ev) {
        fprintf(c->err, "rtcctl: %s: skipped an event that does not parse\n", c->what);
        return 0;
    }
    w->lost = 0;
    int rc = set_str(&w->last_id, ev->id);
    if (rc == 0 && c->json) {
        rc = cli_print_json(c, &ev->base);
    } else if (rc == 0) {
        rtc_buf_reset(&w->line);
        event_text(&w->line, ev);
        if (fwrite(w->line.data, 1, w->line.len, c->out) != w->line.len)
            rc = RTC_EIO;
    }
    rtc__signaling__v1__event__free_unpacked(ev, NULL);
    if (rc == 0 && fflush(c->out) != 0)
        rc = RTC_EIO;
    if (rc < 0) {
        /* Nowhere to print (EPIPE: the reader went away): leave the room
         * rather than stay in it unseen. */
        w->stop = true;
        w->end_status = RTC_CLI_EXIT_FAILURE;
        return 1;
    }
    return 0;
}

/* Calls that end the session (or cannot be helped by Leave) skip it. */
static bool leave_after(int status)
{
    switch (status) {
    case RTC_GRPC_ABORTED: /* a newer Subscribe took the session over: it is not ours */
    case RTC_GRPC_NOT_FOUND:
    case RTC_GRPC_UNAVAILABLE:
    case RTC_GRPC_UNAUTHENTICATED:
    case RTC_GRPC_PERMISSION_DENIED:
        return false;
    default:
        return true;
    }
}

static void stream_on_close(void *ud, int status, const char *message,
                            const rtc_grpc_metadata *trailers, size_t ntrailers)
{
    watch *w = ud;
    cli *c = w->c;
    (void)trailers;
    (void)ntrailers;
    w->stream = NULL;
    if (c->finished) {
        watch_free(w);
        return;
    }
    if (w->stop) { /* our own cancel after a failed write */
        if (w->end_status != RTC_CLI_EXIT_OK)
            fprintf(c->err, "rtcctl: %s: cannot write the output; leaving\n", c->what);
        leave(w, w->end_status);
        return;
    }
    if (status == RTC_GRPC_OK) { /* kicked, room closed: the session is over */
        watch_end(w, RTC_CLI_EXIT_OK);
        return;
    }
    if (status == RTC_GRPC_UNAVAILABLE && ++w->lost < c->sig.n) {
        size_t next = (w->ep + 1) % c->sig.n;
        fprintf(c->err, "rtcctl: %s: stream lost on %s (%.200s); resuming on %s\n", c->what,
                c->sig.eps[w->ep].name, message, c->sig.eps[next].name);
        w->ep = next;
        subscribe(w);
        return;
    }
    cli_report_status(c, step(w, "Subscribe"), status, message);
    if (leave_after(status))
        leave(w, rtc_cli_exit_status(status));
    else
        watch_end(w, rtc_cli_exit_status(status));
}

static void subscribe(watch *w)
{
    cli *c = w->c;
    w->phase = W_STREAM;
    Rtc__Signaling__V1__SubscribeRequest req = RTC__SIGNALING__V1__SUBSCRIBE_REQUEST__INIT;
    req.session_id = w->session_id;
    req.after_event_id = w->last_id ? w->last_id : "";
    uint8_t *buf = malloc(rtc__signaling__v1__subscribe_request__get_packed_size(&req) + 1);
    rtc_grpc_channel *ch = cli_channel(c, &c->sig, w->ep);
    int rc = buf && ch ? 0 : RTC_ENOMEM;
    if (rc == 0) {
        size_t len = rtc__signaling__v1__subscribe_request__pack(&req, buf);
        rtc_grpc_metadata md = {"authorization", w->authz};
        rtc_grpc_call_options o = {.metadata = &md, .nmetadata = 1}; /* no deadline: a stream */
        rtc_grpc_call_callbacks cb = {.on_message = stream_on_message, .on_close = stream_on_close};
        rc = rtc_grpc_channel_call(ch, SIG_PATH("Subscribe"), buf, len, &o, &cb, w, &w->stream);
    }
    free(buf);
    if (rc < 0) {
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "cannot start Subscribe: %s", rtc_strerror(rc));
        watch_free(w);
    }
}

static void join_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    watch *w = ud;
    if (!step_ok(w, status, message, "Join"))
        return;
    const Rtc__Signaling__V1__JoinResponse *r = (const Rtc__Signaling__V1__JoinResponse *)resp;
    if (set_str(&w->session_id, r->session_id) < 0 ||
        set_str(&w->participant_id, r->participant ? r->participant->id : "") < 0 ||
        set_str(&w->room_id, r->room ? r->room->id : "") < 0) {
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
        watch_free(w);
        return;
    }
    /* Who I am and who was there, for the person watching (stderr: stdout
     * carries only events). The response's resume token and TURN
     * credentials are secrets and are not shown. */
    rtc_buf others = RTC_BUF_INIT;
    for (size_t i = 0; i < r->n_participants && i < 10; i++)
        rtc_buf_printf(&others, "%s%s (%.64s)", i ? ", " : ": ", r->participants[i]->id,
                       r->participants[i]->identity);
    fprintf(c->err, "rtcctl: watch: joined room %s as participant %s; %zu other%s%.*s%s\n",
            w->room_id, w->participant_id, r->n_participants, r->n_participants == 1 ? "" : "s",
            (int)others.len, others.data ? (const char *)others.data : "",
            r->n_participants > 10 ? ", ..." : "");
    fflush(c->err);
    rtc_buf_free(&others);
    w->ep = c->sig.cur;
    if (w->stop)
        leave(w, RTC_CLI_EXIT_OK);
    else
        subscribe(w);
}

static void join(watch *w)
{
    cli *c = w->c;
    w->phase = W_JOIN;
    rtc__signaling__v1__join_request__init(&w->jreq);
    w->jreq.metadata = c->v.metadata ? c->v.metadata : "";
    cli_unary(c, &c->sig, SIG_PATH("Join"), &w->jreq.base,
              &rtc__signaling__v1__join_response__descriptor, w->authz, join_done, w);
}

static void issue_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    watch *w = ud;
    if (!step_ok(w, status, message, "IssueToken"))
        return;
    const char *tok = ((const Rtc__Auth__V1__IssueTokenResponse *)resp)->access_token;
    size_t n = strlen(tok) + 8;
    if (!(w->authz = malloc(n))) {
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
        watch_free(w);
        return;
    }
    snprintf(w->authz, n, "Bearer %s", tok);
    join(w);
}

/* SIGINT/SIGTERM (a second one exits at once, see rtc_signals_start). */
static void on_signal(cli *c)
{
    watch *w = c->state;
    switch (w->phase) {
    case W_ISSUE: /* no session yet: nothing to leave */
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "interrupted before joining");
        break;
    case W_JOIN: /* the session may exist once Join answers: leave then */
        w->stop = true;
        break;
    case W_STREAM:
        w->stop = true;
        if (w->stream) {
            rtc_grpc_client_call_cancel(w->stream); /* no callback after this */
            w->stream = NULL;
        }
        leave(w, RTC_CLI_EXIT_OK);
        break;
    case W_LEAVE:
        break;
    }
}

void cli_cmd_watch(cli *c)
{
    if (c->token && c->v.identity) {
        cli_usage_error(c, "--identity issues a token; with --token the token says who joins");
        return;
    }
    if (!c->token && (!c->v.identity || c->nargs == 0 || !c->basic)) {
        cli_usage_error(c, "give ROOM, --identity and an API key (--api-key or --api-key-file) "
                           "to have a join token issued, or --token");
        return;
    }
    watch *w = cli_calloc(c, sizeof(*w));
    if (!w)
        return;
    w->c = c;
    if (c->v.after && set_str(&w->last_id, c->v.after) < 0) {
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
        watch_free(w);
        return;
    }
    c->state = w;
    c->on_signal = on_signal;
    if (c->token) {
        if (c->nargs > 0)
            fprintf(c->err, "rtcctl: watch: with --token, the token's room is joined (ROOM "
                            "is not used)\n");
        if (set_str(&w->authz, c->bearer) < 0) {
            cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
            watch_free(w);
            return;
        }
        join(w);
        return;
    }
    w->phase = W_ISSUE;
    rtc__auth__v1__issue_token_request__init(&w->ireq);
    w->grants[0] = RTC__AUTH__V1__GRANT__GRANT_JOIN;
    w->grants[1] = RTC__AUTH__V1__GRANT__GRANT_CREATE;
    w->ireq.grants = w->grants;
    w->ireq.n_grants = c->v.create ? 2 : 1;
    w->ireq.identity = c->v.identity;
    w->ireq.room_id = c->args[0];
    w->ireq.display_name = c->v.name ? c->v.name : "";
    cli_unary(c, &c->auth, "/rtc.auth.v1.Auth/IssueToken", &w->ireq.base,
              &rtc__auth__v1__issue_token_response__descriptor, c->basic, issue_done, w);
}

/* bench_signaling.c — load generator for rtc-signaling: P pairs of
 * participants ping-ponging offer/answer-sized signals across two pods.
 *
 * Participant A of pair i joins room <prefix><i> on pod 1 and streams its
 * mailbox there; B joins the same room on pod 2 and streams on pod 2. A
 * Signals B an offer through pod 1; B's stream is on pod 2, so the event
 * crosses pods through Redis. B answers through pod 2, A receives on pod 1.
 * With --window W each pair keeps W offers in flight (1 = strict
 * ping-pong). A relayed message is one signal event received on a stream.
 *
 * Phases: IssueToken for the 2P identities (rtc-auth, API key), Join all 2P
 * (timed: joins/s), Subscribe all 2P and wait until each pair has seen its
 * participant_joined, warm up, measure (relayed messages/s, RTT of offer →
 * answer with p50/p99), drain, Leave all. Around the measured window it
 * reads the pods' /metrics (--metrics) and the CPU time of --cpu-pids, so
 * Redis commands and CPU per relayed message cover exactly that window.
 *
 * Every event is checked: each signal arrives once, in order per pair
 * (the SDP's o= line carries pair and sequence number), byte for byte as
 * sent, from the right sender; any loss, duplicate, unexpected event or
 * non-OK status ends the run with exit status 1.
 *
 * One libuv loop, one channel per target, all on one thread (the project's
 * style). Output: a readable report and one "RESULT key=value ..." line for
 * scripts (bench/signaling/run). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "bench_common.h"
#include "rtc/auth/v1/auth.pb-c.h"
#include "rtc/buf.h"
#include "rtc/config.h"
#include "rtc/core.h"
#include "rtc/grpc.h"
#include "rtc/log.h"
#include "rtc/signaling/v1/signaling.pb-c.h"

#define ISSUE_PATH     "/rtc.auth.v1.Auth/IssueToken"
#define JOIN_PATH      "/rtc.signaling.v1.Signaling/Join"
#define LEAVE_PATH     "/rtc.signaling.v1.Signaling/Leave"
#define SIGNAL_PATH    "/rtc.signaling.v1.Signaling/Signal"
#define SUBSCRIBE_PATH "/rtc.signaling.v1.Signaling/Subscribe"
#define TOKEN_TTL_MS   3600000
#define MAX_CPU_PIDS   8
/* Signals may arrive at most this far ahead of the oldest missing one
 * (reordered); beyond, the missing one counts as lost. */
#define REORDER_SPAN 64
/* Offers in flight span at most window + REORDER_SPAN sequence numbers. */
#define RING(w) ((uint64_t)(w) + REORDER_SPAN + 1)

/* ---- state ---------------------------------------------------------------- */

typedef struct gen gen;
typedef struct pair pair;

typedef struct side {
    pair *pair;
    bool is_b;
    char *authz; /* "Bearer <jwt>" */
    char *session_id;
    char *participant_id;
    rtc_grpc_client_call *stream;
    bool stream_open;
    uint64_t next_seq; /* lowest sequence number not yet received on my stream */
    uint64_t early;    /* bit k: next_seq + 1 + k already received (out of order) */
    unsigned joined_events;
    char last_event_id[80];
} side;

struct pair {
    gen *g;
    unsigned idx;
    char room[80];
    side a, b;
    uint64_t next_send;   /* A: sequence number of the next offer */
    uint64_t next_answer; /* A: answers received (= next answer expected) */
    uint64_t *sent_ns;    /* A: send time of offer seq, at [seq % RING(window)] */
    bool ready;           /* participant_joined seen */
};

typedef enum {
    PH_ISSUE,
    PH_JOIN,
    PH_SUBSCRIBE,
    PH_WARMUP,
    PH_MEASURE,
    PH_DRAIN,
    PH_LEAVE,
    PH_DONE,
} phase;

static const char *const phase_names[] = {"IssueToken", "Join",  "Subscribe", "warm-up",
                                          "measure",    "drain", "Leave",     "done"};

/* What is read around the measured window. */
typedef struct snapshot {
    uint64_t ns;
    double redis_cmds;        /* rtc_redis_commands_total{client=<label>} */
    double redis_bad;         /* the same, result != ok */
    double redis_all;         /* every client of the pods */
    double signal_ok;         /* rtc_grpc_server_calls_total Signal OK */
    double calls_not_ok;      /* rtc_grpc_server_calls_total code != OK */
    double events_direct;     /* rtc_signaling_events_total{path="direct"} */
    double events_fill;       /* rtc_signaling_events_total{path="fill"} */
    double pod_cpu;           /* process_cpu_seconds_total, summed */
    double cpu[MAX_CPU_PIDS]; /* seconds, per --cpu-pids entry */
    double self_cpu;          /* this process */
    double machine_busy;      /* seconds of non-idle CPU time, all CPUs (/proc/stat) */
    uint64_t relayed;
} snapshot;

typedef struct cpu_pid {
    char name[32];
    int pid;
} cpu_pid;

struct gen {
    uv_loop_t *loop;
    /* options */
    rtc_hostport pod1, pod2, auth;
    char *api_key, *metrics, *cpu_pids_s, *room_prefix, *redis_client;
    int64_t pairs, window, seconds, warmup, join_conc;
    uint64_t size, timeout_ms;
    cpu_pid cpu_pids[MAX_CPU_PIDS];
    int ncpu_pids;

    rtc_grpc_channel *ch_auth, *ch_pod1, *ch_pod2;
    char *basic; /* "Basic base64(api key)" */
    pair *p;

    phase ph;
    uint64_t ph_start_ns;
    uv_timer_t ph_timer;   /* warm-up / measure end */
    uv_timer_t dl_timer;   /* setup phase deadline */
    uv_timer_t stop_timer; /* deferred teardown */
    bool stopping;         /* teardown scheduled: ignore callbacks */
    bool failed;

    /* batch of unary calls (issue, join, leave) with bounded concurrency */
    size_t batch_total, batch_next, batch_done, batch_inflight;
    void (*batch_start)(gen *g, size_t i);

    size_t ready_pairs;
    size_t signals_inflight;
    bool measuring;
    uint64_t relayed;   /* signal events received while measuring */
    uint64_t reordered; /* signals that arrived before an earlier one */
    char first_reorder[160];
    bench_hist rtt;

    double join_seconds;
    snapshot s0, s1;

    rtc_buf sdp, expect, pack;
};

static void phase_next(gen *g);
static void send_offer(pair *p);

/* ---- helpers ------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        fprintf(stderr, "bench_signaling: out of memory\n");
        exit(1);
    }
    return d;
}

static void teardown_cb(uv_timer_t *t);

/* First failure wins: print it, then tear everything down from the loop
 * (never inside a channel callback). */
__attribute__((format(printf, 2, 3))) static void fail(gen *g, const char *fmt, ...)
{
    if (g->failed || g->stopping)
        return;
    g->failed = true;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_signaling: FAIL (%s phase): ", phase_names[g->ph]);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    g->stopping = true;
    uv_timer_start(&g->stop_timer, teardown_cb, 0, 0);
}

static const char *status_name(int status)
{
    const char *n = rtc_grpc_status_name(status);
    return n ? n : "?";
}

static void side_name(const side *s, char *out, size_t n)
{
    snprintf(out, n, "pair %u %s", s->pair->idx, s->is_b ? "B (pod 2)" : "A (pod 1)");
}

static char *base64(const char *in)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t len = strlen(in), o = 0;
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)(uint8_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)(uint8_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= (uint8_t)in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

/* ---- metrics over HTTP/1.1 and CPU time ------------------------------------ */

/* Sum of the samples of `name` (exact family name) whose label text holds
 * every string of `want` (NULL-terminated) and none of `unless` (may be
 * NULL). */
static double metric_sum(const char *text, const char *name, const char *const *want,
                         const char *unless)
{
    double v = 0;
    size_t nl = strlen(name);
    for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
        if (strncmp(l, name, nl) != 0 || (l[nl] != '{' && l[nl] != ' '))
            continue;
        const char *eol = strchr(l, '\n');
        size_t len = eol ? (size_t)(eol - l) : strlen(l);
        char line[1024];
        if (len >= sizeof(line))
            continue;
        memcpy(line, l, len);
        line[len] = '\0';
        bool ok = true;
        for (size_t i = 0; want && want[i]; i++)
            if (!strstr(line, want[i]))
                ok = false;
        if (unless && strstr(line, unless))
            ok = false;
        const char *sp = strrchr(line, ' ');
        if (ok && sp)
            v += strtod(sp + 1, NULL);
    }
    return v;
}

static int take_snapshot(gen *g, snapshot *s)
{
    rtc_buf text = RTC_BUF_INIT;
    int rc = 0;
    memset(s, 0, sizeof(*s));
    s->ns = now_ns();
    s->relayed = g->relayed;
    s->self_cpu = bench_self_cpu();
    s->machine_busy = bench_machine_busy(NULL);
    for (int i = 0; i < g->ncpu_pids; i++)
        s->cpu[i] = bench_proc_cpu(g->cpu_pids[i].pid);
    if (g->metrics && g->metrics[0]) {
        char *list = xstrdup(g->metrics), *save = NULL;
        for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (bench_http_get_metrics("bench_signaling", t, &text) < 0)
                rc = -1;
        free(list);
        if (rtc_buf_append(&text, "", 1) < 0)
            rc = -1;
        if (rc == 0) {
            const char *t = (const char *)text.data;
            char client[160];
            snprintf(client, sizeof(client), "client=\"%s\"", g->redis_client);
            const char *w_client[] = {client, NULL};
            const char *w_sig[] = {"method=\"" SIGNAL_PATH "\"", "code=\"OK\"", NULL};
            const char *w_direct[] = {"path=\"direct\"", NULL};
            const char *w_fill[] = {"path=\"fill\"", NULL};
            s->redis_cmds = metric_sum(t, "rtc_redis_commands_total", w_client, NULL);
            s->redis_bad = metric_sum(t, "rtc_redis_commands_total", w_client, "result=\"ok\"");
            s->redis_all = metric_sum(t, "rtc_redis_commands_total", NULL, NULL);
            s->signal_ok = metric_sum(t, "rtc_grpc_server_calls_total", w_sig, NULL);
            s->calls_not_ok = metric_sum(t, "rtc_grpc_server_calls_total", NULL, "code=\"OK\"");
            s->events_direct = metric_sum(t, "rtc_signaling_events_total", w_direct, NULL);
            s->events_fill = metric_sum(t, "rtc_signaling_events_total", w_fill, NULL);
            s->pod_cpu = metric_sum(t, "process_cpu_seconds_total", NULL, NULL);
        }
    }
    rtc_buf_free(&text);
    return rc;
}

/* ---- batches of unary calls ------------------------------------------------ */

static void batch_fill(gen *g)
{
    while (!g->stopping && g->batch_next < g->batch_total &&
           g->batch_inflight < (size_t)g->join_conc) {
        g->batch_inflight++;
        g->batch_start(g, g->batch_next++);
    }
}

static void batch_run(gen *g, size_t total, void (*start)(gen *g, size_t i))
{
    g->batch_total = total;
    g->batch_next = g->batch_done = g->batch_inflight = 0;
    g->batch_start = start;
    if (total == 0)
        phase_next(g);
    else
        batch_fill(g);
}

static void batch_one_done(gen *g)
{
    g->batch_inflight--;
    g->batch_done++;
    if (g->stopping)
        return;
    if (g->batch_done == g->batch_total)
        phase_next(g);
    else
        batch_fill(g);
}

/* item i of a 2P batch: A of every pair first, then B of every pair */
static side *batch_side(gen *g, size_t i)
{
    pair *p = &g->p[i % (size_t)g->pairs];
    return i < (size_t)g->pairs ? &p->a : &p->b;
}

static int unary(gen *g, rtc_grpc_channel *ch, const char *path, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *resp, const char *authz,
                 rtc_grpc_unary_done_fn done, void *ud)
{
    rtc_grpc_metadata md = {"authorization", authz};
    rtc_grpc_call_options o = {
        .metadata = &md,
        .nmetadata = 1,
        .timeout_ms = g->timeout_ms,
    };
    return rtc_grpc_channel_unary(ch, path, req, resp, &o, done, ud, NULL);
}

/* ---- IssueToken ------------------------------------------------------------ */

/* The common start of a setup call's answer: false when the run is
 * stopping or the call failed (the run then fails, naming rpc and side). */
static bool side_call_ok(side *s, const char *rpc, int status, const char *message, char *who,
                         size_t wholen)
{
    gen *g = s->pair->g;
    if (g->stopping)
        return false;
    side_name(s, who, wholen);
    if (status != RTC_GRPC_OK) {
        fail(g, "%s of %s: %s: %s", rpc, who, status_name(status), message);
        return false;
    }
    return true;
}

static void issue_done(void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    side *s = ud;
    gen *g = s->pair->g;
    char who[64];
    if (!side_call_ok(s, "IssueToken", status, message, who, sizeof(who)))
        return;
    const Rtc__Auth__V1__IssueTokenResponse *r = (const Rtc__Auth__V1__IssueTokenResponse *)resp;
    size_t n = strlen(r->access_token) + 8;
    s->authz = malloc(n);
    if (!s->authz) {
        fail(g, "out of memory");
        return;
    }
    snprintf(s->authz, n, "Bearer %s", r->access_token);
    batch_one_done(g);
}

static void issue_start(gen *g, size_t i)
{
    side *s = batch_side(g, i);
    char identity[96];
    Rtc__Auth__V1__Grant grants[] = {RTC__AUTH__V1__GRANT__GRANT_JOIN,
                                     RTC__AUTH__V1__GRANT__GRANT_CREATE};
    Rtc__Auth__V1__IssueTokenRequest req = RTC__AUTH__V1__ISSUE_TOKEN_REQUEST__INIT;
    snprintf(identity, sizeof(identity), "%s%u-%c", g->room_prefix, s->pair->idx,
             s->is_b ? 'b' : 'a');
    req.identity = identity;
    req.room_id = s->pair->room;
    req.n_grants = 2;
    req.grants = grants;
    req.ttl_ms = TOKEN_TTL_MS;
    int rc = unary(g, g->ch_auth, ISSUE_PATH, &req.base,
                   &rtc__auth__v1__issue_token_response__descriptor, g->basic, issue_done, s);
    if (rc < 0)
        fail(g, "cannot start IssueToken: %s", rtc_strerror(rc));
}

/* ---- Join -------------------------------------------------------------------- */

static void join_done(void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    side *s = ud;
    gen *g = s->pair->g;
    char who[64];
    if (!side_call_ok(s, "Join", status, message, who, sizeof(who)))
        return;
    const Rtc__Signaling__V1__JoinResponse *r = (const Rtc__Signaling__V1__JoinResponse *)resp;
    if (!r->session_id[0] || !r->participant || !r->participant->id[0]) {
        fail(g, "Join of %s: OK without session_id or participant id", who);
        return;
    }
    s->session_id = xstrdup(r->session_id);
    s->participant_id = xstrdup(r->participant->id);
    batch_one_done(g);
}

static void join_start(gen *g, size_t i)
{
    side *s = batch_side(g, i);
    Rtc__Signaling__V1__JoinRequest req = RTC__SIGNALING__V1__JOIN_REQUEST__INIT;
    int rc = unary(g, s->is_b ? g->ch_pod2 : g->ch_pod1, JOIN_PATH, &req.base,
                   &rtc__signaling__v1__join_response__descriptor, s->authz, join_done, s);
    if (rc < 0)
        fail(g, "cannot start Join: %s", rtc_strerror(rc));
}

/* ---- Leave ----------------------------------------------------------------- */

static void leave_done(void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    side *s = ud;
    gen *g = s->pair->g;
    char who[64];
    if (!side_call_ok(s, "Leave", status, message, who, sizeof(who)))
        return;
    batch_one_done(g);
}

static void leave_start(gen *g, size_t i)
{
    side *s = batch_side(g, i);
    Rtc__Signaling__V1__LeaveRequest req = RTC__SIGNALING__V1__LEAVE_REQUEST__INIT;
    req.session_id = s->session_id;
    int rc = unary(g, s->is_b ? g->ch_pod2 : g->ch_pod1, LEAVE_PATH, &req.base,
                   &rtc__signaling__v1__leave_response__descriptor, s->authz, leave_done, s);
    if (rc < 0)
        fail(g, "cannot start Leave: %s", rtc_strerror(rc));
}

/* ---- Signal ------------------------------------------------------------------ */

static int signal_on_message(void *ud, const uint8_t *data, size_t len)
{
    return 0;
}

static void signal_on_close(void *ud, int status, const char *message,
                            const rtc_grpc_metadata *trailers, size_t ntrailers)
{
    side *s = ud;
    gen *g = s->pair->g;
    char who[64];
    g->signals_inflight--;
    if (g->stopping)
        return;
    if (status != RTC_GRPC_OK) {
        side_name(s, who, sizeof(who));
        fail(g, "Signal from %s: %s: %s", who, status_name(status), message);
        return;
    }
    if (g->ph == PH_DRAIN)
        phase_next(g); /* checks whether everything has arrived */
}

/* from sends offer (A) or answer (B) number seq to its peer. */
static void send_signal(side *from, uint64_t seq)
{
    pair *p = from->pair;
    gen *g = p->g;
    side *to = from->is_b ? &p->a : &p->b;
    if (bench_make_sdp(&g->sdp, from->is_b, p->idx, seq, (size_t)g->size) < 0) {
        fail(g, "cannot build the SDP");
        return;
    }
    Rtc__Signaling__V1__SessionDescription desc = RTC__SIGNALING__V1__SESSION_DESCRIPTION__INIT;
    desc.type = from->is_b ? RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ANSWER
                           : RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER;
    desc.sdp = (char *)g->sdp.data;
    Rtc__Signaling__V1__SignalPayload pl = RTC__SIGNALING__V1__SIGNAL_PAYLOAD__INIT;
    pl.kind_case = RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DESCRIPTION;
    pl.description = &desc;
    Rtc__Signaling__V1__SignalRequest req = RTC__SIGNALING__V1__SIGNAL_REQUEST__INIT;
    req.session_id = from->session_id;
    req.to_participant_id = to->participant_id;
    req.payload = &pl;
    size_t len = protobuf_c_message_get_packed_size(&req.base);
    rtc_buf_reset(&g->pack);
    if (rtc_buf_reserve(&g->pack, len) < 0) {
        fail(g, "out of memory");
        return;
    }
    protobuf_c_message_pack(&req.base, g->pack.data);
    rtc_grpc_metadata md = {"authorization", from->authz};
    rtc_grpc_call_options o = {.metadata = &md, .nmetadata = 1, .timeout_ms = g->timeout_ms};
    rtc_grpc_call_callbacks cb = {.on_message = signal_on_message, .on_close = signal_on_close};
    int rc = rtc_grpc_channel_call(from->is_b ? g->ch_pod2 : g->ch_pod1, SIGNAL_PATH, g->pack.data,
                                   len, &o, &cb, from, NULL);
    if (rc < 0) {
        fail(g, "cannot start Signal: %s", rtc_strerror(rc));
        return;
    }
    g->signals_inflight++;
}

static void send_offer(pair *p)
{
    gen *g = p->g;
    uint64_t seq = p->next_send++;
    p->sent_ns[seq % RING(g->window)] = now_ns();
    send_signal(&p->a, seq);
}

/* ---- Subscribe: the events ----------------------------------------------------- */

static void on_signal_event(side *s, const Rtc__Signaling__V1__SignalEvent *ev)
{
    pair *p = s->pair;
    gen *g = p->g;
    side *peer = s->is_b ? &p->a : &p->b;
    char who[64];
    side_name(s, who, sizeof(who));
    if (g->ph < PH_WARMUP) {
        fail(g, "%s: signal event before any was sent", who);
        return;
    }
    if (strcmp(ev->from_participant_id, peer->participant_id) != 0) {
        fail(g, "%s: signal from '%s', expected the peer '%s'", who, ev->from_participant_id,
             peer->participant_id);
        return;
    }
    const Rtc__Signaling__V1__SignalPayload *pl = ev->payload;
    Rtc__Signaling__V1__SdpType want = s->is_b ? RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER
                                               : RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ANSWER;
    if (!pl || pl->kind_case != RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DESCRIPTION ||
        !pl->description || pl->description->type != want) {
        fail(g, "%s: signal payload is not the expected %s", who, s->is_b ? "offer" : "answer");
        return;
    }
    const char *sdp = pl->description->sdp;
    static const char hdr[] = "v=0\r\no=bench ";
    char *end = NULL;
    unsigned long idx = ULONG_MAX;
    uint64_t seq = 0;
    if (strncmp(sdp, hdr, sizeof(hdr) - 1) == 0) {
        idx = strtoul(sdp + sizeof(hdr) - 1, &end, 10);
        if (*end == ' ')
            seq = strtoull(end + 1, &end, 10);
    }
    if (idx != p->idx || !end || *end != ' ') {
        fail(g, "%s: SDP without this pair's o= line", who);
        return;
    }
    const char *what = s->is_b ? "offer" : "answer";
    uint64_t ahead = seq > s->next_seq ? seq - s->next_seq - 1 : 0;
    if (seq < s->next_seq ||
        (seq > s->next_seq && ahead < REORDER_SPAN && ((s->early >> ahead) & 1))) {
        fail(g, "%s: got %s #%" PRIu64 " twice", who, what, seq);
        return;
    }
    if (ahead >= REORDER_SPAN) {
        fail(g, "%s: got %s #%" PRIu64 " while #%" PRIu64 " never came (lost)", who, what, seq,
             s->next_seq);
        return;
    }
    if (bench_make_sdp(&g->expect, !s->is_b, p->idx, seq, (size_t)g->size) < 0 ||
        strlen(sdp) != g->expect.len || memcmp(sdp, g->expect.data, g->expect.len) != 0) {
        fail(g, "%s: SDP of #%" PRIu64 " differs from what was sent (%zu bytes, sent %zu)", who,
             seq, strlen(sdp), g->expect.len);
        return;
    }
    if (seq == s->next_seq) {
        s->next_seq++;
        while (s->early & 1) { /* bit 0 now stands for next_seq itself */
            s->early >>= 1;
            s->next_seq++;
        }
        s->early >>= 1;
    } else {
        /* In order per sender is the contract: count it, fail at the end
         * (after checking that nothing was lost). */
        s->early |= 1ULL << ahead;
        if (g->reordered++ == 0)
            snprintf(g->first_reorder, sizeof(g->first_reorder),
                     "%s got %s #%" PRIu64 " before #%" PRIu64 " (%s phase)", who, what, seq,
                     s->next_seq, phase_names[g->ph]);
    }
    if (g->measuring)
        g->relayed++;
    if (s->is_b) {
        send_signal(s, seq); /* the answer */
        return;
    }
    /* A: the answer to offer seq */
    if (seq >= p->next_send) {
        fail(g, "%s: answer #%" PRIu64 " to an offer never sent", who, seq);
        return;
    }
    if (g->measuring) {
        uint64_t ns = now_ns() - p->sent_ns[seq % RING(g->window)];
        bench_hist_add(&g->rtt, ns / 1000);
    }
    p->next_answer++;
    if (g->ph == PH_WARMUP || g->ph == PH_MEASURE)
        send_offer(p);
    else if (g->ph == PH_DRAIN)
        phase_next(g);
}

static void on_joined_event(side *s, const Rtc__Signaling__V1__ParticipantJoinedEvent *ev)
{
    pair *p = s->pair;
    gen *g = p->g;
    side *peer = s->is_b ? &p->a : &p->b;
    char who[64];
    side_name(s, who, sizeof(who));
    if (!ev->participant || strcmp(ev->participant->id, peer->participant_id) != 0) {
        fail(g, "%s: participant_joined about '%s', expected only the peer '%s'", who,
             ev->participant ? ev->participant->id : "(none)", peer->participant_id);
        return;
    }
    s->joined_events++;
    /* Join is one atomic change: whichever of the two joined second is
     * announced to the other, exactly once. */
    if (p->a.joined_events + p->b.joined_events > 1) {
        fail(g, "pair %u: participant_joined delivered %u times to A, %u to B (want 1 in all)",
             p->idx, p->a.joined_events, p->b.joined_events);
        return;
    }
    p->ready = true;
    g->ready_pairs++;
    if (g->ph == PH_SUBSCRIBE && g->ready_pairs == (size_t)g->pairs)
        phase_next(g);
}

static int stream_on_message(void *ud, const uint8_t *data, size_t len)
{
    side *s = ud;
    gen *g = s->pair->g;
    char who[64];
    if (g->stopping)
        return 1;
    Rtc__Signaling__V1__Event *ev = (Rtc__Signaling__V1__Event *)protobuf_c_message_unpack(
        &rtc__signaling__v1__event__descriptor, NULL, len, data);
    side_name(s, who, sizeof(who));
    if (!ev) {
        fail(g, "%s: cannot parse an Event (%zu bytes)", who, len);
        return 1;
    }
    if (!ev->id[0] || strcmp(ev->id, s->last_event_id) == 0 ||
        strlen(ev->id) >= sizeof(s->last_event_id)) {
        fail(g, "%s: event id '%s' empty, repeated or too long", who, ev->id);
    } else {
        memcpy(s->last_event_id, ev->id, strlen(ev->id) + 1);
        switch (ev->kind_case) {
        case RTC__SIGNALING__V1__EVENT__KIND_SIGNAL:
            on_signal_event(s, ev->signal);
            break;
        case RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_JOINED:
            on_joined_event(s, ev->participant_joined);
            break;
        default:
            fail(g, "%s: unexpected event kind %d (id %s)", who, (int)ev->kind_case, ev->id);
            break;
        }
    }
    protobuf_c_message_free_unpacked(&ev->base, NULL);
    return g->stopping ? 1 : 0;
}

static void stream_on_close(void *ud, int status, const char *message,
                            const rtc_grpc_metadata *trailers, size_t ntrailers)
{
    side *s = ud;
    gen *g = s->pair->g;
    char who[64];
    s->stream_open = false;
    s->stream = NULL;
    if (g->stopping)
        return;
    side_name(s, who, sizeof(who));
    fail(g, "Subscribe stream of %s ended: %s: %s", who, status_name(status), message);
}

static int subscribe(gen *g, side *s)
{
    Rtc__Signaling__V1__SubscribeRequest req = RTC__SIGNALING__V1__SUBSCRIBE_REQUEST__INIT;
    req.session_id = s->session_id;
    uint8_t buf[256];
    size_t len = protobuf_c_message_get_packed_size(&req.base);
    if (len > sizeof(buf))
        return RTC_ETOOBIG;
    protobuf_c_message_pack(&req.base, buf);
    rtc_grpc_metadata md = {"authorization", s->authz};
    rtc_grpc_call_options o = {
        .metadata = &md,
        .nmetadata = 1,
    };
    rtc_grpc_call_callbacks cb = {.on_message = stream_on_message, .on_close = stream_on_close};
    int rc = rtc_grpc_channel_call(s->is_b ? g->ch_pod2 : g->ch_pod1, SUBSCRIBE_PATH, buf, len, &o,
                                   &cb, s, &s->stream);
    if (rc == 0)
        s->stream_open = true;
    return rc;
}

/* ---- phases ------------------------------------------------------------------- */

static void deadline_cb(uv_timer_t *t)
{
    gen *g = t->data;
    if (g->ph == PH_SUBSCRIBE)
        fail(g, "only %zu of %" PRId64 " pairs saw their participant_joined within %" PRIu64 " ms",
             g->ready_pairs, g->pairs, g->timeout_ms);
    else if (g->ph == PH_DRAIN) {
        uint64_t missing = 0;
        for (int64_t i = 0; i < g->pairs; i++)
            missing += g->p[i].next_send - g->p[i].next_answer;
        fail(g,
             "%" PRIu64 " offers still without an answer (and %zu Signal calls open) %" PRIu64
             " ms after the end",
             missing, g->signals_inflight, g->timeout_ms);
    } else
        fail(g, "%zu of %zu calls done after %" PRIu64 " ms", g->batch_done, g->batch_total,
             g->timeout_ms);
}

static void phase_timer_cb(uv_timer_t *t)
{
    phase_next(t->data);
}

static void teardown_cb(uv_timer_t *t)
{
    gen *g = t->data;
    g->stopping = true;
    for (int64_t i = 0; g->p && i < g->pairs; i++) {
        side *ss[2] = {&g->p[i].a, &g->p[i].b};
        for (int k = 0; k < 2; k++)
            if (ss[k]->stream_open) {
                rtc_grpc_client_call_cancel(ss[k]->stream);
                ss[k]->stream_open = false;
                ss[k]->stream = NULL;
            }
    }
    if (g->ch_auth)
        rtc_grpc_channel_close(g->ch_auth);
    if (g->ch_pod1)
        rtc_grpc_channel_close(g->ch_pod1);
    if (g->ch_pod2)
        rtc_grpc_channel_close(g->ch_pod2);
    g->ch_auth = g->ch_pod1 = g->ch_pod2 = NULL;
    uv_close((uv_handle_t *)&g->ph_timer, NULL);
    uv_close((uv_handle_t *)&g->dl_timer, NULL);
    uv_close((uv_handle_t *)&g->stop_timer, NULL);
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static void enter(gen *g, phase ph)
{
    uint64_t t = now_ns();
    if (g->ph != PH_WARMUP && g->ph != PH_MEASURE && g->ph != PH_DRAIN)
        printf("  %-10s %8.3f s\n", phase_names[g->ph], secs(t - g->ph_start_ns));
    fflush(stdout);
    g->ph = ph;
    g->ph_start_ns = t;
    uv_timer_stop(&g->dl_timer);
    if (ph == PH_ISSUE || ph == PH_JOIN || ph == PH_SUBSCRIBE || ph == PH_DRAIN || ph == PH_LEAVE)
        uv_timer_start(&g->dl_timer, deadline_cb, g->timeout_ms, 0);
}

/* Moves on when the current phase is complete; called whenever something
 * that may complete it happened. */
static void phase_next(gen *g)
{
    if (g->stopping)
        return;
    switch (g->ph) {
    case PH_ISSUE:
        enter(g, PH_JOIN);
        batch_run(g, 2 * (size_t)g->pairs, join_start);
        break;
    case PH_JOIN:
        g->join_seconds = secs(now_ns() - g->ph_start_ns);
        enter(g, PH_SUBSCRIBE);
        for (int64_t i = 0; i < g->pairs && !g->stopping; i++) {
            int rc = subscribe(g, &g->p[i].a);
            if (rc == 0)
                rc = subscribe(g, &g->p[i].b);
            if (rc < 0)
                fail(g, "cannot start Subscribe: %s", rtc_strerror(rc));
        }
        break;
    case PH_SUBSCRIBE:
        if (g->ready_pairs < (size_t)g->pairs)
            break;
        enter(g, PH_WARMUP);
        for (int64_t i = 0; i < g->pairs; i++)
            for (int64_t w = 0; w < g->window && !g->stopping; w++)
                send_offer(&g->p[i]);
        uv_timer_start(&g->ph_timer, phase_timer_cb, (uint64_t)g->warmup * 1000, 0);
        break;
    case PH_WARMUP:
        if (take_snapshot(g, &g->s0) < 0) {
            fail(g, "cannot read the metrics at the start of the window");
            break;
        }
        enter(g, PH_MEASURE);
        g->relayed = 0;
        g->s0.relayed = 0;
        g->measuring = true;
        uv_timer_start(&g->ph_timer, phase_timer_cb, (uint64_t)g->seconds * 1000, 0);
        break;
    case PH_MEASURE:
        g->measuring = false;
        if (take_snapshot(g, &g->s1) < 0) {
            fail(g, "cannot read the metrics at the end of the window");
            break;
        }
        enter(g, PH_DRAIN);
        /* maybe nothing is in flight */
        /* fall through */
    case PH_DRAIN:
        if (g->signals_inflight > 0)
            break;
        for (int64_t i = 0; i < g->pairs; i++) {
            pair *p = &g->p[i];
            if (p->next_answer != p->next_send)
                return;
            if (p->b.next_seq != p->next_send || p->a.next_seq != p->next_send || p->a.early ||
                p->b.early) {
                fail(g, "pair %u: B got %" PRIu64 " offers, A sent %" PRIu64, p->idx, p->b.next_seq,
                     p->next_send);
                return;
            }
        }
        /* All answered. Close the streams first so that the Leaves do not
         * produce events nobody waits for. */
        for (int64_t i = 0; i < g->pairs; i++) {
            side *ss[2] = {&g->p[i].a, &g->p[i].b};
            for (int k = 0; k < 2; k++)
                if (ss[k]->stream_open) {
                    rtc_grpc_client_call_cancel(ss[k]->stream);
                    ss[k]->stream_open = false;
                    ss[k]->stream = NULL;
                }
        }
        enter(g, PH_LEAVE);
        batch_run(g, 2 * (size_t)g->pairs, leave_start);
        break;
    case PH_LEAVE:
        enter(g, PH_DONE);
        g->stopping = true;
        uv_timer_start(&g->stop_timer, teardown_cb, 0, 0);
        break;
    case PH_DONE:
        break;
    }
}

/* ---- report ------------------------------------------------------------------- */

static void report(gen *g)
{
    const snapshot *a = &g->s0, *b = &g->s1;
    double wall = secs(b->ns - a->ns);
    uint64_t relayed = b->relayed;
    double rate = wall > 0 ? (double)relayed / wall : 0;
    double joins = g->join_seconds > 0 ? 2.0 * (double)g->pairs / g->join_seconds : 0;
    double p50 = bench_hist_quantile(&g->rtt, 0.50) / 1000,
           p99 = bench_hist_quantile(&g->rtt, 0.99) / 1000;
    double mean = g->rtt.n ? (double)g->rtt.sum / (double)g->rtt.n / 1000 : 0;
    bool have_metrics = g->metrics && g->metrics[0];
    double cmds = b->redis_cmds - a->redis_cmds;
    double per_msg = relayed ? cmds / (double)relayed : 0;
    double gen_cpu = b->self_cpu - a->self_cpu;

    printf("  joins:   %" PRId64 " in %.3f s = %.0f joins/s (concurrency %" PRId64 ")\n",
           2 * g->pairs, g->join_seconds, joins, g->join_conc);
    printf("  relayed: %" PRIu64 " signal events in %.3f s = %.0f msgs/s\n", relayed, wall, rate);
    printf("  RTT offer -> answer: p50 %.2f ms, p99 %.2f ms, mean %.2f ms, max %.2f ms (%" PRIu64
           " round trips)\n",
           p50, p99, mean, (double)g->rtt.max / 1000, g->rtt.n);
    if (have_metrics) {
        printf("  redis commands (client=\"%s\", every result): %.0f = %.3f per relayed msg "
               "(not ok: %.0f; all clients: %.0f)\n",
               g->redis_client, cmds, per_msg, b->redis_bad - a->redis_bad,
               b->redis_all - a->redis_all);
        printf("  pods: %.0f Signal calls OK, %.0f calls not OK, events streamed direct %.0f / "
               "fill %.0f, CPU %.2f s = %.1f us per relayed msg\n",
               b->signal_ok - a->signal_ok, b->calls_not_ok - a->calls_not_ok,
               b->events_direct - a->events_direct, b->events_fill - a->events_fill,
               b->pod_cpu - a->pod_cpu,
               relayed ? (b->pod_cpu - a->pod_cpu) * 1e6 / (double)relayed : 0);
    }
    double known = gen_cpu, mach = b->machine_busy - a->machine_busy;
    for (int i = 0; i < g->ncpu_pids; i++)
        if (a->cpu[i] >= 0 && b->cpu[i] >= 0)
            known += b->cpu[i] - a->cpu[i];
    double other = a->machine_busy >= 0 && b->machine_busy >= 0 && mach > known ? mach - known : 0;
    printf("  CPU in the window (busy = CPU s / wall s, 100%% = one of %ld CPUs; us per relayed "
           "msg):\n",
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("    %-10s %5.0f%%  %6.1f us\n", "generator", wall > 0 ? gen_cpu * 100 / wall : 0,
           relayed ? gen_cpu * 1e6 / (double)relayed : 0);
    for (int i = 0; i < g->ncpu_pids; i++) {
        double c = b->cpu[i] - a->cpu[i];
        if (a->cpu[i] < 0 || b->cpu[i] < 0)
            printf("    %-10s (pid %d not readable)\n", g->cpu_pids[i].name, g->cpu_pids[i].pid);
        else
            printf("    %-10s %5.0f%%  %6.1f us\n", g->cpu_pids[i].name,
                   wall > 0 ? c * 100 / wall : 0, relayed ? c * 1e6 / (double)relayed : 0);
    }
    printf("    %-10s %5.0f%%  %6.1f us   (every other process, from /proc/stat)\n", "other",
           wall > 0 ? other * 100 / wall : 0, relayed ? other * 1e6 / (double)relayed : 0);
    if (g->reordered)
        printf("  checks: every signal received once, as sent, from the peer; every call OK; "
               "but %" PRIu64 " arrived out of order (first: %s)\n",
               g->reordered, g->first_reorder);
    else
        printf("  checks: every signal received once, in order, as sent, from the peer; "
               "every call OK\n");

    printf("RESULT pairs=%" PRId64 " size=%" PRIu64 " window=%" PRId64 " seconds=%.3f"
           " relayed=%" PRIu64 " msgs_per_s=%.0f rtt_p50_ms=%.3f rtt_p99_ms=%.3f"
           " rtt_mean_ms=%.3f joins=%" PRId64 " join_s=%.4f joins_per_s=%.0f reordered=%" PRIu64,
           g->pairs, g->size, g->window, wall, relayed, rate, p50, p99, mean, 2 * g->pairs,
           g->join_seconds, joins, g->reordered);
    if (have_metrics)
        printf(" redis_cmds=%.0f redis_per_msg=%.4f redis_not_ok=%.0f events_direct=%.0f"
               " events_fill=%.0f calls_not_ok=%.0f pod_cpu_us_per_msg=%.2f",
               cmds, per_msg, b->redis_bad - a->redis_bad, b->events_direct - a->events_direct,
               b->events_fill - a->events_fill, b->calls_not_ok - a->calls_not_ok,
               relayed ? (b->pod_cpu - a->pod_cpu) * 1e6 / (double)relayed : 0);
    printf(" busy_generator=%.0f busy_other=%.0f", wall > 0 ? gen_cpu * 100 / wall : 0,
           wall > 0 ? other * 100 / wall : 0);
    for (int i = 0; i < g->ncpu_pids; i++)
        if (a->cpu[i] >= 0 && b->cpu[i] >= 0)
            printf(" busy_%s=%.0f", g->cpu_pids[i].name,
                   wall > 0 ? (b->cpu[i] - a->cpu[i]) * 100 / wall : 0);
    printf("\n");
}

/* ---- main ------------------------------------------------------------------- */

static int parse_cpu_pids(gen *g)
{
    if (!g->cpu_pids_s || !g->cpu_pids_s[0])
        return 0;
    char *list = xstrdup(g->cpu_pids_s), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        char *end = NULL;
        long pid = eq ? strtol(eq + 1, &end, 10) : 0;
        if (!eq || eq == t || (size_t)(eq - t) >= sizeof(g->cpu_pids[0].name) || pid <= 0 || *end ||
            g->ncpu_pids == MAX_CPU_PIDS) {
            fprintf(stderr,
                    "bench_signaling: --cpu-pids: expected NAME=PID[,...] (at most %d), "
                    "got '%s'\n",
                    MAX_CPU_PIDS, t);
            rc = -1;
            break;
        }
        cpu_pid *c = &g->cpu_pids[g->ncpu_pids++];
        memcpy(c->name, t, (size_t)(eq - t));
        c->name[eq - t] = '\0';
        c->pid = (int)pid;
    }
    free(list);
    return rc;
}

static int new_channel(gen *g, const rtc_hostport *hp, rtc_grpc_channel **out)
{
    char target[300];
    rtc_hostport_format(hp, target, sizeof(target));
    rtc_grpc_channel_options o;
    rtc_grpc_channel_options_init(&o);
    o.targets = target;
    return rtc_grpc_channel_new(g->loop, &o, NULL, out);
}

int main(int argc, char **argv)
{
    static gen G;
    gen *g = &G;
    int status = 1;
    const rtc_option opts[] = {
        {"pod1", RTC_OPT_HOSTPORT, "127.0.0.1:50051", "rtc-signaling pod 1 (A side)", &g->pod1, 0,
         0},
        {"pod2", RTC_OPT_HOSTPORT, "127.0.0.1:50052", "rtc-signaling pod 2 (B side)", &g->pod2, 0,
         0},
        {"auth", RTC_OPT_HOSTPORT, "127.0.0.1:8081", "rtc-auth, for IssueToken", &g->auth, 0, 0},
        {"api-key", RTC_OPT_STRING, NULL,
         "KEY_ID:SECRET of an rtc-auth API key with issue (required)", &g->api_key, 0, 0},
        {"pairs", RTC_OPT_INT, "100", "pairs of participants P (2P sessions, P rooms)", &g->pairs,
         1, 100000},
        {"size", RTC_OPT_SIZE, "1024", "bytes of each offer / answer SDP", &g->size, 128, 65536},
        {"window", RTC_OPT_INT, "1", "offers in flight per pair (1 = strict ping-pong)", &g->window,
         1, 1000},
        {"seconds", RTC_OPT_INT, "10", "seconds measured", &g->seconds, 1, 3600},
        {"warmup", RTC_OPT_INT, "2", "seconds of ping-pong before the measurement", &g->warmup, 0,
         3600},
        {"join-concurrency", RTC_OPT_INT, "64", "IssueToken / Join / Leave calls in flight at once",
         &g->join_conc, 1, 100000},
        {"metrics", RTC_OPT_STRING, "",
         "HOST:PORT[,HOST:PORT] admin endpoints of the pods: /metrics read at the window's edges",
         &g->metrics, 0, 0},
        {"redis-client", RTC_OPT_STRING, "rtc-signaling",
         "client label of rtc_redis_commands_total counted as the service's commands",
         &g->redis_client, 0, 0},
        {"cpu-pids", RTC_OPT_STRING, "",
         "NAME=PID[,NAME=PID] processes whose CPU time in the window is reported", &g->cpu_pids_s,
         0, 0},
        {"room-prefix", RTC_OPT_STRING, "bench-",
         "rooms are <prefix><i>, identities <prefix><i>-a / -b", &g->room_prefix, 0, 0},
        {"timeout", RTC_OPT_DURATION, "30s",
         "deadline of each call and of each setup / drain phase", &g->timeout_ms, 100, 3600000},
    };
    const size_t nopts = sizeof(opts) / sizeof(opts[0]);
    int rc = rtc_config_main(opts, nopts, argc, argv, "bench_signaling",
                             "Load generator for rtc-signaling: P pairs ping-pong offer/answer "
                             "signals across two pods (see bench/signaling/README.md).");
    if (rc >= 0)
        return rc;
    if (!g->api_key || !strchr(g->api_key, ':')) {
        fprintf(stderr, "bench_signaling: --api-key KEY_ID:SECRET is required\n");
        goto out;
    }
    if (strlen(g->room_prefix) > 40) {
        fprintf(stderr, "bench_signaling: --room-prefix: at most 40 bytes\n");
        goto out;
    }
    if (parse_cpu_pids(g) < 0)
        goto out;
    rtc_log_init("bench_signaling", RTC_LOG_WARN);

    g->loop = uv_default_loop();
    char *b64 = base64(g->api_key);
    if (!b64)
        goto out;
    size_t n = strlen(b64) + 8;
    g->basic = malloc(n);
    if (!g->basic) {
        free(b64);
        goto out;
    }
    snprintf(g->basic, n, "Basic %s", b64);
    free(b64);

    g->p = calloc((size_t)g->pairs, sizeof(pair));
    if (!g->p)
        goto out;
    for (int64_t i = 0; i < g->pairs; i++) {
        pair *p = &g->p[i];
        p->g = g;
        p->idx = (unsigned)i;
        snprintf(p->room, sizeof(p->room), "%s%u", g->room_prefix, p->idx);
        p->a.pair = p->b.pair = p;
        p->b.is_b = true;
        p->sent_ns = calloc((size_t)RING(g->window), sizeof(uint64_t));
        if (!p->sent_ns)
            goto out;
    }
    if (new_channel(g, &g->auth, &g->ch_auth) < 0 || new_channel(g, &g->pod1, &g->ch_pod1) < 0 ||
        new_channel(g, &g->pod2, &g->ch_pod2) < 0) {
        fprintf(stderr, "bench_signaling: cannot create the gRPC channels\n");
        goto out;
    }
    uv_timer_init(g->loop, &g->ph_timer);
    uv_timer_init(g->loop, &g->dl_timer);
    uv_timer_init(g->loop, &g->stop_timer);
    g->ph_timer.data = g->dl_timer.data = g->stop_timer.data = g;

    char t1[300], t2[300];
    rtc_hostport_format(&g->pod1, t1, sizeof(t1));
    rtc_hostport_format(&g->pod2, t2, sizeof(t2));
    printf("bench_signaling: %" PRId64 " pairs (A on %s, B on %s), %" PRId64
           "-byte SDP, window %" PRId64 ", %" PRId64 " s warm-up, %" PRId64 " s measured\n",
           g->pairs, t1, t2, g->size, g->window, g->warmup, g->seconds);
    g->ph = PH_ISSUE;
    g->ph_start_ns = now_ns();
    uv_timer_start(&g->dl_timer, deadline_cb, g->timeout_ms, 0);
    batch_run(g, 2 * (size_t)g->pairs, issue_start);
    uv_run(g->loop, UV_RUN_DEFAULT);
    if (!g->failed && g->ph == PH_DONE) {
        report(g);
        fflush(stdout);
        status = 0;
        if (g->reordered) {
            fprintf(stderr,
                    "bench_signaling: FAIL: %" PRIu64 " signals arrived out of order (none lost "
                    "or duplicated); first: %s\n",
                    g->reordered, g->first_reorder);
            status = 1;
        }
    }
out:
    if (g->loop)
        uv_loop_close(g->loop);
    for (int64_t i = 0; g->p && i < g->pairs; i++) {
        side *ss[2] = {&g->p[i].a, &g->p[i].b};
        for (int k = 0; k < 2; k++) {
            free(ss[k]->authz);
            free(ss[k]->session_id);
            free(ss[k]->participant_id);
        }
        free(g->p[i].sent_ns);
    }
    free(g->p);
    free(g->basic);
    rtc_buf_free(&g->sdp);
    rtc_buf_free(&g->expect);
    rtc_buf_free(&g->pack);
    rtc_config_free(opts, nopts);
    return status;
}

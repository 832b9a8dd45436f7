/* rtc-grpc-testserver: rtc's gRPC server running rtc.test.v1.Test (and the
 * built-in grpc.health.v1.Health) for interop tests driven by clients
 * nobody here wrote: grpcio, grpc-js, raw HTTP/2.
 *
 *   rtc-grpc-testserver --listen 127.0.0.1:0 [--max-message N]
 *       [--max-send-message N] [--max-streams N] [--max-header-list N]
 *       [--drain-ms N] [--log-level debug|info|warn|error]
 *
 * Prints "PORT <n>" on stdout once listening (the tests parse it), and exits
 * 0 after a graceful shutdown on SIGTERM/SIGINT. Sizes accept a k/m suffix
 * (KiB/MiB).
 *
 * Handlers count what they observe (cancellations, deadlines) in
 * process-wide counters that the Stats method reports, so a test can check
 * that a client's cancel or deadline actually reached the handler. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/core.h"
#include "rtc/grpc.h"
#include "rtc/log.h"
#include "rtc/test/v1/test.pb-c.h"

/* Stream producers stop queueing above this and wait for on_drain. */
#define STREAM_HIGH_WATER (256 * 1024)

typedef struct stats {
    int64_t cancelled_calls;
    int64_t deadline_calls;
    int64_t sleep_cancelled;
    int64_t stream_cancelled;
    int64_t active_calls;
    int64_t completed_calls;
    int64_t sleep_completed;
} stats;

typedef struct app {
    uv_loop_t *loop;
    rtc_grpc_server *server;
    rtc_signals *signals;
    uint64_t drain_ms;
    bool stopping;
    stats st;
} app;

/* ---- shared per-call state for the asynchronous handlers --------------- */

/* One Sleep or Stream call in progress. The timer lives here; the struct is
 * freed from the timer's close callback, after the call was completed. */
typedef struct pending_call {
    app *app;
    rtc_grpc_call *call;
    uv_timer_t timer;
    bool cancelled;
    bool completed;
    bool closing;
    /* Stream */
    int32_t count, size, interval_ms, next_seq;
    uint8_t *payload;
    bool waiting_drain;
} pending_call;

static void pending_free_cb(uv_handle_t *h)
{
    pending_call *p = h->data;
    free(p->payload);
    free(p);
}

/* Complete the call exactly once, then release the state. */
static void pending_finish(pending_call *p, int status, const char *message)
{
    if (p->completed)
        return;
    p->completed = true;
    uv_timer_stop(&p->timer);
    rtc_grpc_call_finish(p->call, status, message);
    p->call = NULL;
    p->app->st.active_calls--;
    p->app->st.completed_calls++;
    if (!p->closing) {
        p->closing = true;
        uv_close((uv_handle_t *)&p->timer, pending_free_cb);
    }
}

static pending_call *pending_new(app *a, rtc_grpc_call *call)
{
    pending_call *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->app = a;
    p->call = call;
    uv_timer_init(a->loop, &p->timer);
    p->timer.data = p;
    a->st.active_calls++;
    return p;
}

/* Counts the cancellation; the caller decides how to complete. */
static void count_cancel(app *a, rtc_grpc_call *call)
{
    a->st.cancelled_calls++;
    uint64_t deadline = rtc_grpc_call_deadline(call);
    uint64_t now = rtc_now_ms();
    if (deadline != 0 && now >= deadline) {
        a->st.deadline_calls++;
    } else if (deadline != 0 && deadline - now < 1000) {
        /* Shown in test failures: a deadline cancel that came early. */
        char early[32];
        snprintf(early, sizeof(early), "%" PRIu64, deadline - now);
        rtc_warn("call cancelled shortly before its deadline", "ms_early", early);
    }
}

/* ---- Echo -------------------------------------------------------------- */

static void handle_echo(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    const Rtc__Test__V1__EchoRequest *req = (const Rtc__Test__V1__EchoRequest *)msg;
    (void)ud;
    if (req->fail_code != 0) {
        rtc_grpc_call_finish(call, req->fail_code, req->fail_message);
        return;
    }
    Rtc__Test__V1__EchoResponse resp = RTC__TEST__V1__ECHO_RESPONSE__INIT;
    resp.message = req->message;
    resp.payload = req->payload;
    int rc = rtc_grpc_call_reply(call, &resp.base);
    if (rc == RTC_ETOOBIG)
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, "response too large");
    else if (rc != 0)
        rtc_grpc_call_finish(call, RTC_GRPC_INTERNAL, rtc_strerror(rc));
}

/* ---- Sleep: completes from the on_cancel callback itself --------------- */

static void sleep_on_cancel(rtc_grpc_call *call, void *ud)
{
    pending_call *p = ud;
    count_cancel(p->app, call);
    p->app->st.sleep_cancelled++;
    p->cancelled = true;
    pending_finish(p, RTC_GRPC_CANCELLED, "sleep cancelled");
}

static void sleep_on_timer(uv_timer_t *t)
{
    pending_call *p = t->data;
    Rtc__Test__V1__SleepResponse resp = RTC__TEST__V1__SLEEP_RESPONSE__INIT;
    resp.cancelled = p->cancelled;
    p->app->st.sleep_completed++;
    int rc = rtc_grpc_call_reply(p->call, &resp.base);
    if (rc != 0) {
        pending_finish(p, RTC_GRPC_INTERNAL, rtc_strerror(rc));
        return;
    }
    /* reply completed the call */
    p->completed = true;
    p->call = NULL;
    p->app->st.active_calls--;
    p->app->st.completed_calls++;
    p->closing = true;
    uv_close((uv_handle_t *)&p->timer, pending_free_cb);
}

static void handle_sleep(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    const Rtc__Test__V1__SleepRequest *req = (const Rtc__Test__V1__SleepRequest *)msg;
    pending_call *p = pending_new(ud, call);
    if (p == NULL) {
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    rtc_grpc_call_on_cancel(call, sleep_on_cancel, p);
    uv_timer_start(&p->timer, sleep_on_timer, req->ms > 0 ? (uint64_t)req->ms : 0, 0);
}

/* ---- Stream: on_cancel defers completion to a zero timer --------------- */

static void stream_pump(pending_call *p);

static void stream_on_timer(uv_timer_t *t)
{
    pending_call *p = t->data;
    if (p->cancelled) {
        pending_finish(p, RTC_GRPC_CANCELLED, "stream cancelled");
        return;
    }
    stream_pump(p);
}

static void stream_on_drain(rtc_grpc_call *call, void *ud)
{
    pending_call *p = ud;
    (void)call;
    if (!p->waiting_drain || p->completed || p->cancelled)
        return;
    p->waiting_drain = false;
    stream_pump(p);
}

static void stream_on_cancel(rtc_grpc_call *call, void *ud)
{
    pending_call *p = ud;
    count_cancel(p->app, call);
    p->app->st.stream_cancelled++;
    p->cancelled = true;
    if (!p->completed)
        uv_timer_start(&p->timer, stream_on_timer, 0, 0);
}

/* Send items until done, until the pacing interval, or until the queue is
 * above the high-water mark (then on_drain resumes). */
static void stream_pump(pending_call *p)
{
    while (p->next_seq < p->count) {
        if (rtc_grpc_call_pending(p->call) > STREAM_HIGH_WATER) {
            p->waiting_drain = true;
            return;
        }
        Rtc__Test__V1__StreamItem item = RTC__TEST__V1__STREAM_ITEM__INIT;
        item.seq = p->next_seq;
        if (p->size > 0) {
            memset(p->payload, p->next_seq & 0xff, (size_t)p->size);
            item.payload.data = p->payload;
            item.payload.len = (size_t)p->size;
        }
        int rc = rtc_grpc_call_send(p->call, &item.base);
        if (rc == RTC_ECLOSED) {
            /* cancelled: on_cancel has run or will run and completes it */
            if (!p->cancelled)
                pending_finish(p, RTC_GRPC_CANCELLED, "stream closed");
            return;
        }
        if (rc == RTC_ETOOBIG) {
            pending_finish(p, RTC_GRPC_RESOURCE_EXHAUSTED, "stream item too large");
            return;
        }
        if (rc != 0) {
            pending_finish(p, RTC_GRPC_INTERNAL, rtc_strerror(rc));
            return;
        }
        p->next_seq++;
        if (p->interval_ms > 0 && p->next_seq < p->count) {
            uv_timer_start(&p->timer, stream_on_timer, (uint64_t)p->interval_ms, 0);
            return;
        }
    }
    pending_finish(p, RTC_GRPC_OK, NULL);
}

static void handle_stream(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    const Rtc__Test__V1__StreamRequest *req = (const Rtc__Test__V1__StreamRequest *)msg;
    if (req->count < 0 || req->size < 0 || req->interval_ms < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT, "negative count, size or interval");
        return;
    }
    pending_call *p = pending_new(ud, call);
    if (p == NULL) {
        rtc_grpc_call_finish(call, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    p->count = req->count;
    p->size = req->size;
    p->interval_ms = req->interval_ms;
    if (p->size > 0 && (p->payload = malloc((size_t)p->size)) == NULL) {
        pending_finish(p, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    rtc_grpc_call_on_cancel(call, stream_on_cancel, p);
    rtc_grpc_call_on_drain(call, stream_on_drain, p);
    stream_pump(p);
}

/* ---- Stats, Metadata --------------------------------------------------- */

static void handle_stats(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    const app *a = ud;
    (void)msg;
    Rtc__Test__V1__StatsResponse resp = RTC__TEST__V1__STATS_RESPONSE__INIT;
    resp.cancelled_calls = a->st.cancelled_calls;
    resp.deadline_calls = a->st.deadline_calls;
    resp.sleep_cancelled = a->st.sleep_cancelled;
    resp.stream_cancelled = a->st.stream_cancelled;
    resp.active_calls = a->st.active_calls;
    resp.completed_calls = a->st.completed_calls;
    resp.sleep_completed = a->st.sleep_completed;
    int rc = rtc_grpc_call_reply(call, &resp.base);
    if (rc != 0)
        rtc_grpc_call_finish(call, RTC_GRPC_INTERNAL, rtc_strerror(rc));
}

static void handle_metadata(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    const rtc_grpc_metadata *md = NULL;
    size_t n = rtc_grpc_call_metadata_all(call, &md);
    Rtc__Test__V1__MetadataEntry *entries = NULL;
    Rtc__Test__V1__MetadataEntry **ptrs = NULL;
    rtc_buf key = RTC_BUF_INIT;
    int status = RTC_GRPC_OK;
    const char *why = NULL;
    (void)msg;
    (void)ud;

    if (n > 0) {
        entries = calloc(n, sizeof(*entries));
        ptrs = calloc(n, sizeof(*ptrs));
        if (entries == NULL || ptrs == NULL) {
            status = RTC_GRPC_RESOURCE_EXHAUSTED;
            why = "out of memory";
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        Rtc__Test__V1__MetadataEntry init = RTC__TEST__V1__METADATA_ENTRY__INIT;
        entries[i] = init;
        entries[i].key = (char *)md[i].key;
        entries[i].value = (char *)md[i].value;
        ptrs[i] = &entries[i];
        if (strncmp(md[i].key, "x-test-", 7) != 0)
            continue;
        rtc_buf_reset(&key);
        if (rtc_buf_printf(&key, "echo-%s", md[i].key) != 0) {
            status = RTC_GRPC_RESOURCE_EXHAUSTED;
            why = "out of memory";
            goto out;
        }
        if (rtc_grpc_call_add_header(call, md[i].key, md[i].value) != 0 ||
            rtc_grpc_call_add_trailer(call, (const char *)key.data, md[i].value) != 0) {
            status = RTC_GRPC_INTERNAL;
            why = "add_header/add_trailer failed";
            goto out;
        }
    }
    Rtc__Test__V1__MetadataResponse resp = RTC__TEST__V1__METADATA_RESPONSE__INIT;
    resp.n_entries = n;
    resp.entries = ptrs;
    int rc = rtc_grpc_call_reply(call, &resp.base);
    if (rc != 0) {
        status = RTC_GRPC_INTERNAL;
        why = rtc_strerror(rc);
    }
out:
    if (status != RTC_GRPC_OK)
        rtc_grpc_call_finish(call, status, why);
    rtc_buf_free(&key);
    free(ptrs);
    free(entries);
}

/* ---- process ----------------------------------------------------------- */

static void on_shutdown_done(void *ud)
{
    app *a = ud;
    rtc_info("shutdown complete");
    if (a->signals != NULL) {
        rtc_signals_close(a->signals);
        a->signals = NULL;
    }
}

static void on_signal(int signum, void *ud)
{
    app *a = ud;
    char sig[16];
    if (a->stopping)
        return;
    a->stopping = true;
    snprintf(sig, sizeof(sig), "%d", signum);
    rtc_info("draining", "signal", sig);
    rtc_grpc_server_shutdown(a->server, a->drain_ms, on_shutdown_done, a);
}

static int parse_size(const char *s, uint64_t max, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || s[0] == '-')
        return RTC_EINVAL;
    if (*end == 'k' || *end == 'K') {
        v *= 1024;
        end++;
    } else if (*end == 'm' || *end == 'M') {
        v *= 1024 * 1024;
        end++;
    }
    if (*end != '\0' || v > max)
        return RTC_EINVAL;
    *out = v;
    return 0;
}

static int parse_listen(const char *s, char *host, size_t hostcap, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    uint64_t p = 0;
    if (colon == NULL || (size_t)(colon - s) >= hostcap || colon == s)
        return RTC_EINVAL;
    if (parse_size(colon + 1, 65535, &p) != 0)
        return RTC_EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = (uint16_t)p;
    return 0;
}

static void report_handle(uv_handle_t *h, void *ud)
{
    (void)ud;
    rtc_warn("handle left open at exit", "type", uv_handle_type_name(uv_handle_get_type(h)),
             "active", uv_is_active(h) ? "yes" : "no", "closing", uv_is_closing(h) ? "yes" : "no");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: rtc-grpc-testserver --listen HOST:PORT [--max-message N]\n"
               "         [--max-send-message N] [--max-streams N] [--max-header-list N]\n"
               "         [--drain-ms N] [--log-level LEVEL]\n");
}

int main(int argc, char **argv)
{
    app a;
    rtc_grpc_server_options opts;
    char host[256] = "127.0.0.1";
    uint16_t port = 0;
    rtc_log_level level = RTC_LOG_WARN;
    int rc = 0;
    int exit_code = 1;

    memset(&a, 0, sizeof(a));
    a.drain_ms = 5000;
    rtc_grpc_server_options_init(&opts);
    opts.name = "rtc-grpc-testserver";

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *val = argv[++i];
        uint64_t v = 0;
        if (strcmp(arg, "--listen") == 0) {
            rc = parse_listen(val, host, sizeof(host), &port);
        } else if (strcmp(arg, "--log-level") == 0) {
            rc = rtc_log_level_parse(val, &level);
        } else if ((rc = parse_size(val, UINT32_MAX, &v)) != 0) {
            /* every other option takes a number */
        } else if (strcmp(arg, "--max-message") == 0) {
            opts.max_recv_message = (size_t)v;
        } else if (strcmp(arg, "--max-send-message") == 0) {
            opts.max_send_message = (size_t)v;
        } else if (strcmp(arg, "--max-streams") == 0) {
            opts.max_concurrent_streams = (uint32_t)v;
        } else if (strcmp(arg, "--max-header-list") == 0) {
            opts.max_header_list = (uint32_t)v;
        } else if (strcmp(arg, "--drain-ms") == 0) {
            a.drain_ms = v;
        } else {
            rc = RTC_EINVAL;
        }
        if (rc != 0) {
            fprintf(stderr, "rtc-grpc-testserver: bad argument %s %s\n", arg, val);
            usage(stderr);
            return 2;
        }
    }

    rtc_log_init("rtc-grpc-testserver", level);
    a.loop = uv_default_loop();

    const ProtobufCServiceDescriptor *svc = &rtc__test__v1__test__descriptor;
    if ((rc = rtc_grpc_server_new(a.loop, &opts, NULL, &a.server)) != 0 ||
        (rc = rtc_grpc_server_add_service(a.server, svc)) != 0 ||
        (rc = rtc_grpc_server_handle(a.server, svc, "Echo", RTC_GRPC_UNARY, handle_echo, &a)) !=
            0 ||
        (rc = rtc_grpc_server_handle(a.server, svc, "Stream", RTC_GRPC_SERVER_STREAMING,
                                     handle_stream, &a)) != 0 ||
        (rc = rtc_grpc_server_handle(a.server, svc, "Sleep", RTC_GRPC_UNARY, handle_sleep, &a)) !=
            0 ||
        (rc = rtc_grpc_server_handle(a.server, svc, "Stats", RTC_GRPC_UNARY, handle_stats, &a)) !=
            0 ||
        (rc = rtc_grpc_server_handle(a.server, svc, "Metadata", RTC_GRPC_UNARY, handle_metadata,
                                     &a)) != 0) {
        fprintf(stderr, "rtc-grpc-testserver: setup: %s\n", rtc_strerror(rc));
        goto out;
    }
    if ((rc = rtc_signals_start(a.loop, on_signal, &a, &a.signals)) != 0) {
        fprintf(stderr, "rtc-grpc-testserver: signals: %s\n", rtc_strerror(rc));
        goto out;
    }
    if ((rc = rtc_grpc_server_listen(a.server, host, port)) != 0) {
        fprintf(stderr, "rtc-grpc-testserver: listen %s:%u: %s\n", host, (unsigned)port,
                rtc_strerror(rc));
        goto out;
    }
    printf("PORT %u\n", (unsigned)rtc_grpc_server_port(a.server));
    fflush(stdout);

    uv_run(a.loop, UV_RUN_DEFAULT);
    exit_code = 0;
out:
    if (a.signals != NULL) {
        rtc_signals_close(a.signals);
        a.signals = NULL;
    }
    if (a.server != NULL)
        rtc_grpc_server_free(a.server);
    uv_run(a.loop, UV_RUN_NOWAIT); /* run close callbacks */
    if (uv_loop_close(a.loop) != 0) {
        /* A leak in the server (or here): name what is left. */
        uv_walk(a.loop, report_handle, NULL);
    }
    return exit_code;
}

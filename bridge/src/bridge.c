/* rtc-bridge's process: configuration, upstream channels, readiness and
 * the drain on SIGTERM. The transport is ws.c; the protocol is conn.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/bridge.h"
#include "rtc_proto_fds.h"

#include "bridge_int.h"

#define TICK_MS 200

static bridge B;

#define DEFAULT_UPSTREAMS                                                                          \
    "rtc.auth.v1.Auth=127.0.0.1:8081;"                                                             \
    "rtc.signaling.v1.Signaling=127.0.0.1:50051,127.0.0.1:50052"
#define DEFAULT_EXPOSE                                                                             \
    "rtc.signaling.v1.Signaling/*,rtc.auth.v1.Auth/DevLogin,rtc.auth.v1.Auth/RefreshToken,"        \
    "rtc.auth.v1.Auth/GetIceServers"
#define DEFAULT_ORIGINS                                                                            \
    "http://localhost:3000,http://127.0.0.1:3000,https://localhost:8443,https://127.0.0.1:8443"

static const rtc_option options[] = {
    {"listen", RTC_OPT_HOSTPORT, "127.0.0.1:8080",
     "WebSocket listen address (GET /ws; also /healthz, /readyz, /metrics)", &B.cfg.listen, 0, 0},
    {"admin", RTC_OPT_HOSTPORT, "127.0.0.1:9080",
     "admin HTTP listen address (/healthz, /readyz, /metrics)", &B.cfg.admin, 0, 0},
    {"log-level", RTC_OPT_LOG_LEVEL, "info", "debug, info, warn or error", &B.cfg.log_level, 0, 0},
    {"upstream", RTC_OPT_LIST, DEFAULT_UPSTREAMS,
     "SERVICE=HOST:PORT[,HOST:PORT…]: where a service's calls go, balanced and health-checked "
     "(repeatable; ';'-separated in the environment)",
     &B.cfg.upstreams, 0, 0},
    {"expose", RTC_OPT_STRING, DEFAULT_EXPOSE,
     "methods browsers may call: Service/Method or Service/*, comma-separated (admin services "
     "never)",
     &B.cfg.expose, 0, 0},
    {"public", RTC_OPT_STRING, "rtc.auth.v1.Auth/DevLogin",
     "exposed methods callable without an access token", &B.cfg.pub, 0, 0},
    {"resume", RTC_OPT_STRING, "rtc.signaling.v1.Signaling/Subscribe=afterEventId:id",
     "streams re-opened after an upstream failure: Service/Method=requestField:responseField",
     &B.cfg.resume, 0, 0},
    {"origins", RTC_OPT_STRING, DEFAULT_ORIGINS,
     "allowed Origin headers, comma-separated; '*' allows any (requests without Origin, i.e. "
     "not from a browser, are allowed)",
     &B.cfg.origins, 0, 0},
    {"max-message", RTC_OPT_SIZE, "256KiB", "largest WebSocket message (close 1009 beyond)",
     &B.cfg.max_message, 1024, 64 << 20},
    {"max-depth", RTC_OPT_INT, "32", "deepest JSON nesting accepted", &B.cfg.max_depth, 2, 1000},
    {"rate-limit", RTC_OPT_INT, "50", "requests per second per socket (token bucket; 0 = none)",
     &B.cfg.rate, 0, 1000000},
    {"rate-burst", RTC_OPT_INT, "100", "token bucket size", &B.cfg.burst, 1, 1000000},
    {"max-calls", RTC_OPT_INT, "64", "unary calls in flight per socket", &B.cfg.max_calls, 1,
     100000},
    {"max-streams", RTC_OPT_INT, "8", "open subscriptions per socket", &B.cfg.max_streams, 1,
     10000},
    {"max-sockets", RTC_OPT_INT, "100000", "WebSockets at once (503 beyond)", &B.cfg.max_sockets, 1,
     10000000},
    {"send-queue", RTC_OPT_SIZE, "1MiB",
     "bytes queued for one socket before it is dropped as a slow consumer", &B.cfg.send_queue, 4096,
     1 << 30},
    {"call-timeout", RTC_OPT_DURATION, "30s", "deadline of each unary upstream call",
     &B.cfg.call_timeout, 1, 3600000},
    {"resume-for", RTC_OPT_DURATION, "30s",
     "how long a broken stream keeps trying to resume on another upstream", &B.cfg.resume_for, 0,
     3600000},
    {"ping-interval", RTC_OPT_DURATION, "20s", "WebSocket ping after this much silence",
     &B.cfg.ping_interval, 1000, 3600000},
    {"idle-timeout", RTC_OPT_DURATION, "60s", "hang up after this much silence (no pong either)",
     &B.cfg.idle_timeout, 2000, 3600000},
    {"header-timeout", RTC_OPT_DURATION, "5s", "time a client has to send its request head",
     &B.cfg.header_timeout, 1000, 600000},
    {"drain-timeout", RTC_OPT_DURATION, "10s",
     "on SIGTERM, how long calls in flight may take before every socket is closed",
     &B.cfg.drain_timeout, 0, 3600000},
    {"health-check", RTC_OPT_BOOL, "true",
     "route only to upstreams whose grpc.health.v1 status is SERVING", &B.cfg.health_check, 0, 0},
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

bool bridge_origin_allowed(const bridge *b, const char *origin)
{
    if (!origin)
        return true; /* not a browser: Origin protects browsers from other sites' pages */
    for (size_t i = 0; i < b->norigins; i++)
        if (strcmp(b->origins[i], "*") == 0 || strcasecmp(b->origins[i], origin) == 0)
            return true;
    return false;
}

rtc_grpc_channel *bridge_channel(const bridge *b, int upstream)
{
    return upstream >= 0 && (size_t)upstream < b->nchannels ? b->channels[upstream] : NULL;
}

static int split_origins(bridge *b)
{
    char *copy = strdup(b->cfg.origins ? b->cfg.origins : "");
    if (!copy)
        return RTC_ENOMEM;
    for (char *save = NULL, *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        char **n = realloc(b->origins, (b->norigins + 1) * sizeof(*n));
        if (!n || !(n[b->norigins] = strdup(t))) {
            b->origins = n ? n : b->origins;
            free(copy);
            return RTC_ENOMEM;
        }
        b->origins = n;
        b->norigins++;
    }
    free(copy);
    return 0;
}

static int make_metrics(bridge *b)
{
    rtc_metrics *m = b->metrics = rtc_metrics_new();
    if (!m)
        return RTC_ENOMEM;
    static const char *const build_labels[] = {"service", "version"};
    rtc_metric_family *f = rtc_metrics_family(m, RTC_METRIC_GAUGE, "rtc_build_info",
                                              "Always 1; labels name the binary and version.", 2,
                                              build_labels, NULL, 0);
    rtc_metric *bi = f ? rtc_metric_child(f, (const char *[]){"rtc-bridge", RTC_VERSION}) : NULL;
    if (bi)
        rtc_metric_set(bi, 1);
    static const char *const call_labels[] = {"method", "code"};
    static const char *const close_labels[] = {"reason"};
    rtc_bridge_conn_metrics *cm = &b->env.metrics;
    cm->calls = rtc_metrics_family(m, RTC_METRIC_COUNTER, "rtc_bridge_calls_total",
                                   "Browser calls and subscriptions finished, by gRPC status.", 2,
                                   call_labels, NULL, 0);
    cm->requests = rtc_metrics_counter(m, "rtc_bridge_requests_total",
                                       "JSON-RPC messages received from browsers.");
    cm->bad_requests = rtc_metrics_counter(
        m, "rtc_bridge_bad_requests_total",
        "Messages answered with a JSON-RPC error (-32700 … -32602): malformed or unknown.");
    cm->rate_limited = rtc_metrics_counter(m, "rtc_bridge_rate_limited_total",
                                           "Requests refused by the per-socket rate limit.");
    cm->resumes = rtc_metrics_counter(m, "rtc_bridge_stream_resumes_total",
                                      "Stream re-opens after an upstream failure (attempts).");
    cm->resume_failures = rtc_metrics_counter(
        m, "rtc_bridge_stream_resume_failures_total",
        "Streams that could not be resumed within --resume-for and were ended.");
    cm->events = rtc_metrics_counter(m, "rtc_bridge_events_total",
                                     "rpc.event notifications sent to browsers.");
    b->m_sockets = rtc_metrics_gauge(m, "rtc_bridge_sockets", "Open WebSockets.");
    b->m_closes = rtc_metrics_family(m, RTC_METRIC_COUNTER, "rtc_bridge_socket_closes_total",
                                     "WebSockets closed, by reason.", 1, close_labels, NULL, 0);
    b->m_upgrades_refused = rtc_metrics_counter(
        m, "rtc_bridge_upgrades_refused_total",
        "Upgrade requests refused before the upgrade (path, Origin, subprotocol, limits).");
    return 0;
}

static int open_channels(bridge *b)
{
    size_t n = rtc_bridge_routes_upstream_count(b->routes);
    b->channels = calloc(n ? n : 1, sizeof(*b->channels));
    if (!b->channels)
        return RTC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *svc, *targets;
        rtc_bridge_routes_upstream(b->routes, i, &svc, &targets);
        rtc_grpc_channel_options o;
        rtc_grpc_channel_options_init(&o);
        o.targets = targets;
        o.health_check = b->cfg.health_check;
        /* The service's own status: a pod waiting for Redis keeps "" SERVING
         * (alive) but its service NOT_SERVING (not ready): skip it. */
        o.health_service = svc;
        o.backoff_max_ms = 2000; /* a restarted pod is used again within 2 s */
        o.keepalive_ms = 10000;  /* a silently dead upstream is noticed */
        int rc = rtc_grpc_channel_new(b->loop, &o, b->metrics, &b->channels[i]);
        if (rc < 0) {
            rtc_error("bad upstream", "service", svc, "targets", targets, "error",
                      rtc_strerror(rc));
            return rc;
        }
        b->nchannels++;
    }
    return 0;
}

static void update_ready(bridge *b)
{
    bool ready = true;
    b->ready_reason[0] = '\0';
    for (size_t i = 0; i < b->nchannels; i++) {
        if (!rtc_grpc_channel_ready(b->channels[i])) {
            const char *svc, *targets;
            rtc_bridge_routes_upstream(b->routes, i, &svc, &targets);
            snprintf(b->ready_reason, sizeof(b->ready_reason), "no ready upstream for %s", svc);
            ready = false;
            break;
        }
    }
    if (ready != b->ready) {
        if (ready)
            rtc_info("ready: every upstream has a serving endpoint");
        else
            rtc_warn("not ready", "reason", b->ready_reason);
    }
    b->ready = ready;
    if (b->admin && !b->draining)
        rtc_admin_set_ready(b->admin, ready, ready ? NULL : b->ready_reason);
}

static void shutdown_all(bridge *b)
{
    if (b->tick_open) {
        uv_timer_stop(&b->tick);
        uv_close((uv_handle_t *)&b->tick, NULL);
        b->tick_open = false;
    }
    ws_stop(b);
    for (size_t i = 0; i < b->nchannels; i++)
        rtc_grpc_channel_close(b->channels[i]);
    b->nchannels = 0;
    if (b->admin) {
        rtc_admin_close(b->admin);
        b->admin = NULL;
    }
    if (b->signals) {
        rtc_signals_close(b->signals);
        b->signals = NULL;
    }
}

static void on_tick(uv_timer_t *t)
{
    bridge *b = t->data;
    ws_idle_sweep(b, rtc_now_ms());
    if (!b->draining) {
        update_ready(b);
        return;
    }
    bool late = rtc_now_ms() >= b->drain_deadline;
    if (ws_drain_step(b, late)) {
        rtc_info("drained; exiting");
        shutdown_all(b);
    } else if (late && rtc_now_ms() >= b->drain_deadline + 3000) {
        rtc_warn("sockets still open after the drain deadline; exiting anyway");
        shutdown_all(b);
    }
}

static void on_signal(int signum, void *ud)
{
    bridge *b = ud;
    if (b->draining)
        return;
    b->draining = true;
    b->drain_deadline = rtc_now_ms() + b->cfg.drain_timeout;
    char ms[24], open[24];
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)b->cfg.drain_timeout);
    snprintf(open, sizeof(open), "%zu", b->nsessions);
    rtc_info("draining", "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT", "deadline_ms", ms,
             "sockets", open);
    if (b->admin)
        rtc_admin_set_ready(b->admin, false, "draining");
    on_tick(&b->tick);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int setup(bridge *b)
{
    char err[512] = "";
    int rc = rtc_pbjson_new(rtc_proto_fds, rtc_proto_fds_len, rtc_proto_fds_services,
                            rtc_proto_fds_services_len, &b->pj, err, sizeof(err));
    if (rc < 0) {
        rtc_error("cannot load the proto descriptors", "error", err);
        return rc;
    }
    rc = rtc_bridge_routes_new(b->pj, b->cfg.upstreams, b->cfg.expose, b->cfg.pub, b->cfg.resume,
                               &b->routes, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "rtc-bridge: %s (see --help)\n", err);
        return rc;
    }
    if ((rc = split_origins(b)) < 0 || (rc = make_metrics(b)) < 0)
        return rc;
    rtc_bridge_env *e = &b->env;
    e->pj = b->pj;
    e->routes = b->routes;
    rtc_bridge_limits_init(&e->limits);
    e->limits.max_depth = (unsigned)b->cfg.max_depth;
    e->limits.rate = (double)b->cfg.rate;
    e->limits.burst = (double)b->cfg.burst;
    e->limits.max_calls = (unsigned)b->cfg.max_calls;
    e->limits.max_streams = (unsigned)b->cfg.max_streams;
    e->limits.call_timeout_ms = b->cfg.call_timeout;
    e->limits.resume_for_ms = b->cfg.resume_for;
    e->ops = ws_conn_ops;
    return open_channels(b);
}

int rtc_bridge_main(int argc, char **argv)
{
    bridge *b = &B;
    int status = 1;
    int rc = rtc_config_main(options, NOPTIONS, argc, argv, "rtc-bridge",
                             "rtc bridge: browser WebSocket JSON-RPC 2.0 (subprotocol "
                             "rtc.v1.jsonrpc) to gRPC upstreams, transcoded from the proto "
                             "descriptors.");
    if (rc >= 0)
        return rc;
    if (b->cfg.idle_timeout <= b->cfg.ping_interval) {
        fprintf(stderr, "rtc-bridge: --idle-timeout must be longer than --ping-interval (see "
                        "--help)\n");
        rtc_config_free(options, NOPTIONS);
        return 2;
    }
    rtc_log_init("rtc-bridge", b->cfg.log_level);
    b->loop = uv_default_loop();
    if ((rc = setup(b)) < 0) {
        status = rc == RTC_EINVAL ? 2 : 1;
        goto out;
    }
    char listen_s[300], admin_s[300];
    rtc_hostport_format(&b->cfg.listen, listen_s, sizeof(listen_s));
    rtc_hostport_format(&b->cfg.admin, admin_s, sizeof(admin_s));
    if (ws_start(b) < 0) {
        rtc_error("cannot listen", "addr", listen_s);
        goto out;
    }
    if (rtc_admin_start(b->loop, b->cfg.admin.host, b->cfg.admin.port, b->metrics, &b->admin) < 0) {
        rtc_error("cannot start admin listener", "addr", admin_s);
        goto out;
    }
    if (rtc_signals_start(b->loop, on_signal, b, &b->signals) < 0)
        goto out;
    uv_timer_init(b->loop, &b->tick);
    b->tick.data = b;
    b->tick_open = true;
    uv_timer_start(&b->tick, on_tick, TICK_MS, TICK_MS);
    update_ready(b);
    {
        char wport[8], aport[8], nroutes[8];
        snprintf(wport, sizeof(wport), "%u", b->port);
        snprintf(aport, sizeof(aport), "%u", rtc_admin_port(b->admin));
        snprintf(nroutes, sizeof(nroutes), "%zu", rtc_bridge_routes_count(b->routes));
        rtc_info("listening", "ws", listen_s, "ws_port", wport, "admin", admin_s, "admin_port",
                 aport, "methods", nroutes, "version", RTC_VERSION);
    }
    uv_run(b->loop, UV_RUN_DEFAULT);
    status = 0;
out:
    shutdown_all(b);
    uv_run(b->loop, UV_RUN_DEFAULT);
    uv_walk(b->loop, close_walk, NULL);
    uv_run(b->loop, UV_RUN_DEFAULT);
    uv_loop_close(b->loop);
    free(b->channels);
    for (size_t i = 0; i < b->norigins; i++)
        free(b->origins[i]);
    free(b->origins);
    rtc_bridge_routes_free(b->routes);
    rtc_pbjson_free(b->pj);
    rtc_metrics_free(b->metrics);
    rtc_config_free(options, NOPTIONS);
    return status;
}

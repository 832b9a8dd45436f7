/* The common process skeleton of rtc's gRPC services; see rtc/service.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/core.h"
#include "rtc/log.h"
#include "rtc/service.h"

#define MAX_OPTIONS 64

struct rtc_service {
    const rtc_service_def *def;
    rtc_service_config cfg;
    rtc_log_level log_level;
    uv_loop_t *loop;
    rtc_metrics *metrics;
    rtc_grpc_server *grpc;
    rtc_admin *admin;
    rtc_signals *signals;
    bool draining;
    /* Readiness as the service last set it; applied when admin starts, so
     * a setup() that finds its backend down starts not ready. */
    bool ready;
    char ready_reason[128];
    bool cleaned; /* def->cleanup has run */
};

uv_loop_t *rtc_service_loop(rtc_service *s)
{
    return s->loop;
}

rtc_grpc_server *rtc_service_grpc(rtc_service *s)
{
    return s->grpc;
}

rtc_metrics *rtc_service_metrics(rtc_service *s)
{
    return s->metrics;
}

const rtc_service_config *rtc_service_config_get(const rtc_service *s)
{
    return &s->cfg;
}

void rtc_service_set_ready(rtc_service *s, bool ready, const char *reason)
{
    s->ready = ready;
    snprintf(s->ready_reason, sizeof(s->ready_reason), "%s", reason ? reason : "");
    if (s->admin && !s->draining)
        rtc_admin_set_ready(s->admin, ready, reason);
}

static void drained(void *ud)
{
    rtc_service *s = ud;
    rtc_info("drained; exiting");
    /* Frees itself once its handles have closed. */
    rtc_grpc_server_free(s->grpc);
    s->grpc = NULL;
    if (s->admin) {
        rtc_admin_close(s->admin);
        s->admin = NULL;
    }
    if (s->signals) {
        rtc_signals_close(s->signals);
        s->signals = NULL;
    }
    /* The service's own handles (Redis links, timers) would keep the loop
     * alive: release them now that no call can need them. */
    if (s->def->cleanup && !s->cleaned) {
        s->cleaned = true;
        s->def->cleanup(s, s->def->ud);
    }
}

static void on_signal(int signum, void *ud)
{
    rtc_service *s = ud;
    if (s->draining)
        return;
    s->draining = true;
    char ms[24];
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)s->cfg.drain_timeout);
    rtc_info("draining", "signal", signum == SIGTERM ? "SIGTERM" : "SIGINT", "deadline_ms", ms);
    if (s->admin)
        rtc_admin_set_ready(s->admin, false, "draining");
    if (s->def->drain)
        s->def->drain(s, s->def->ud);
    rtc_grpc_server_shutdown(s->grpc, s->cfg.drain_timeout, drained, s);
}

/* Drop handles nobody closed (there should be none) so the loop can close. */
static void close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int rtc_service_main(const rtc_service_def *def, int argc, char **argv)
{
    rtc_service svc = {.def = def, .ready = true};
    rtc_service *s = &svc;
    int status = 1;
    char listen_s[300], admin_s[300];

    const rtc_option common[] = {
        {"listen", RTC_OPT_HOSTPORT, def->default_listen, "gRPC (h2c) listen address",
         &s->cfg.listen, 0, 0},
        {"admin", RTC_OPT_HOSTPORT, def->default_admin,
         "admin HTTP listen address (/healthz, /readyz, /metrics)", &s->cfg.admin, 0, 0},
        {"log-level", RTC_OPT_LOG_LEVEL, "info", "debug, info, warn or error", &s->log_level, 0, 0},
        {"dev", RTC_OPT_BOOL, "false", "development mode (see README)", &s->cfg.dev, 0, 0},
        {"max-message", RTC_OPT_SIZE, "1MiB",
         "largest gRPC request message accepted (RESOURCE_EXHAUSTED beyond)", &s->cfg.max_message,
         64, 64 * 1024 * 1024},
        {"max-streams", RTC_OPT_INT, def->default_max_streams ? def->default_max_streams : "1000",
         "SETTINGS_MAX_CONCURRENT_STREAMS per connection", &s->cfg.max_streams, 1, 1000000},
        {"drain-timeout", RTC_OPT_DURATION, "10s",
         "on SIGTERM, how long in-flight calls may take to finish", &s->cfg.drain_timeout, 0,
         3600000},
    };
    size_t ncommon = sizeof(common) / sizeof(common[0]);
    rtc_option opts[MAX_OPTIONS];
    size_t nopts = 0;
    for (size_t i = 0; i < ncommon; i++)
        opts[nopts++] = common[i];
    for (size_t i = 0; i < def->noptions && nopts < MAX_OPTIONS; i++)
        opts[nopts++] = def->options[i];

    int rc = rtc_config_main(opts, nopts, argc, argv, def->name, def->summary);
    if (rc >= 0)
        return rc;
    rtc_log_init(def->name, s->log_level);
    rtc_hostport_format(&s->cfg.listen, listen_s, sizeof(listen_s));
    rtc_hostport_format(&s->cfg.admin, admin_s, sizeof(admin_s));

    s->loop = uv_default_loop();
    s->metrics = rtc_metrics_new();
    if (!s->metrics)
        goto out;
    {
        static const char *const labels[] = {"service", "version"};
        rtc_metric_family *f =
            rtc_metrics_family(s->metrics, RTC_METRIC_GAUGE, "rtc_build_info",
                               "Always 1; labels name the binary and version.", 2, labels, NULL, 0);
        const char *vals[] = {def->name, RTC_VERSION};
        rtc_metric *m = f ? rtc_metric_child(f, vals) : NULL;
        if (m)
            rtc_metric_set(m, 1);
    }

    rtc_grpc_server_options gopts;
    rtc_grpc_server_options_init(&gopts);
    gopts.name = def->name;
    gopts.max_recv_message = (size_t)s->cfg.max_message;
    gopts.max_concurrent_streams = (uint32_t)s->cfg.max_streams;
    if (rtc_grpc_server_new(s->loop, &gopts, s->metrics, &s->grpc) < 0) {
        rtc_error("cannot create gRPC server");
        goto out;
    }
    if (def->setup && (rc = def->setup(s, def->ud)) < 0) {
        rtc_error("service setup failed", "error", rtc_strerror(rc));
        /* Bad configuration (a missing key, an unreadable or malformed
         * file) is the operator's to fix: exit 2, as for bad flags. */
        if (rc == RTC_EINVAL || rc == RTC_EIO || rc == RTC_ETOOBIG)
            status = 2;
        goto out;
    }
    if (rtc_grpc_server_listen(s->grpc, s->cfg.listen.host, s->cfg.listen.port) < 0) {
        rtc_error("cannot listen", "addr", listen_s);
        goto out;
    }
    if (rtc_admin_start(s->loop, s->cfg.admin.host, s->cfg.admin.port, s->metrics, &s->admin) < 0) {
        rtc_error("cannot start admin listener", "addr", admin_s);
        goto out;
    }
    if (rtc_signals_start(s->loop, on_signal, s, &s->signals) < 0)
        goto out;
    if (s->cfg.dev)
        rtc_warn("development mode: not for production");
    {
        char gport[8], aport[8];
        snprintf(gport, sizeof(gport), "%u", rtc_grpc_server_port(s->grpc));
        snprintf(aport, sizeof(aport), "%u", rtc_admin_port(s->admin));
        rtc_info("listening", "grpc", listen_s, "grpc_port", gport, "admin", admin_s, "admin_port",
                 aport, "version", RTC_VERSION);
    }
    rtc_admin_set_ready(s->admin, s->ready, s->ready ? NULL : s->ready_reason);
    uv_run(s->loop, UV_RUN_DEFAULT);
    status = 0;
out:
    if (s->admin)
        rtc_admin_close(s->admin);
    if (s->signals)
        rtc_signals_close(s->signals);
    if (s->grpc) {
        rtc_grpc_server_free(s->grpc);
        s->grpc = NULL;
    }
    if (def->cleanup && !s->cleaned)
        def->cleanup(s, def->ud);
    uv_walk(s->loop, close_walk, NULL);
    uv_run(s->loop, UV_RUN_DEFAULT);
    uv_loop_close(s->loop);
    rtc_metrics_free(s->metrics);
    rtc_config_free(opts, nopts);
    return status;
}

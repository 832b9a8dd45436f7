/* rtc/service.h — the common life of a gRPC service process.
 *
 * Every rtc gRPC binary (rtc-auth, rtc-signaling) is: parse flags and
 * RTC_* environment, log as JSON, serve gRPC (with grpc.health.v1) on
 * --listen and the admin HTTP port (/healthz, /readyz, /metrics) on
 * --admin, and on SIGTERM/SIGINT drain: readiness false, health
 * NOT_SERVING, GOAWAY, in-flight calls finish within --drain-timeout, exit 0.
 * A binary supplies its name, defaults, extra options and a setup function
 * that registers its services; main() is one call to rtc_service_main(). */
#ifndef RTC_SERVICE_H
#define RTC_SERVICE_H

#include <stdbool.h>
#include <uv.h>

#include "rtc/admin.h"
#include "rtc/config.h"
#include "rtc/grpc.h"
#include "rtc/metrics.h"

typedef struct rtc_service rtc_service;

/* Settings every service takes. */
typedef struct rtc_service_config {
    rtc_hostport listen;    /* --listen: gRPC */
    rtc_hostport admin;     /* --admin: admin HTTP */
    bool dev;               /* --dev */
    uint64_t max_message;   /* --max-message, bytes */
    int64_t max_streams;    /* --max-streams per connection */
    uint64_t drain_timeout; /* --drain-timeout, ms */
} rtc_service_config;

typedef struct rtc_service_def {
    const char *name;           /* binary / log service name, e.g. "rtc-auth" */
    const char *summary;        /* one line for --help */
    const char *default_listen; /* e.g. "127.0.0.1:8081" */
    const char *default_admin;  /* e.g. "127.0.0.1:9081" */
    /* --max-streams default (NULL = "1000"). Signaling raises it: each
     * bridge multiplexes every browser's Subscribe stream over one HTTP/2
     * connection per pod (DESIGN.md §4: high on internal bridge links). */
    const char *default_max_streams;
    const rtc_option *options; /* service-specific options (may be NULL) */
    size_t noptions;
    /* Register gRPC services and handlers. Runs after config and before the
     * listeners open; a negative return aborts start-up: exit 2 for
     * RTC_EINVAL / RTC_EIO / RTC_ETOOBIG (bad configuration: log why
     * first), exit 1 otherwise. */
    int (*setup)(rtc_service *svc, void *ud);
    /* Runs when draining starts (stop background work); may be NULL. */
    void (*drain)(rtc_service *svc, void *ud);
    /* Frees what setup made: once the drain has finished (so handles it
     * holds close and the loop can end), or after a failed start-up. Runs
     * at most once; may be NULL. */
    void (*cleanup)(rtc_service *svc, void *ud);
    void *ud;
} rtc_service_def;

/* Run the process. Returns the exit status: 0 after a clean drain, 2 for
 * bad configuration (one line on stderr, or setup's logged reason), 1 when
 * start-up fails otherwise. */
int rtc_service_main(const rtc_service_def *def, int argc, char **argv);

uv_loop_t *rtc_service_loop(rtc_service *s);
rtc_grpc_server *rtc_service_grpc(rtc_service *s);
rtc_metrics *rtc_service_metrics(rtc_service *s);
const rtc_service_config *rtc_service_config_get(const rtc_service *s);
/* Readiness on /readyz (health stays as the service sets it). May be
 * called from setup: the admin port starts with the last value set. */
void rtc_service_set_ready(rtc_service *s, bool ready, const char *reason);

#endif

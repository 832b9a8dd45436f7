/* Private to rtc-bridge: the process state shared by bridge.c (config,
 * upstreams, life cycle) and ws.c (libwebsockets transport). */
#ifndef RTC_BRIDGE_INT_H
#define RTC_BRIDGE_INT_H
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "rtc/admin.h"
#include "rtc/bridge_conn.h"
#include "rtc/config.h"
#include "rtc/core.h"
#include "rtc/grpc.h"
#include "rtc/log.h"
#include "rtc/metrics.h"

struct lws_context;
struct lws_vhost;
typedef struct ws_sess ws_sess;

typedef struct bridge_config {
    rtc_hostport listen, admin;
    rtc_log_level log_level;
    char *upstreams, *expose, *pub, *resume, *origins;
    uint64_t max_message, send_queue;
    int64_t max_depth, rate, burst, max_calls, max_streams, max_sockets;
    uint64_t call_timeout, resume_for, ping_interval, idle_timeout, header_timeout;
    uint64_t drain_timeout;
    bool health_check;
} bridge_config;

typedef struct bridge {
    uv_loop_t *loop;
    bridge_config cfg;
    rtc_metrics *metrics;
    rtc_pbjson *pj;
    rtc_bridge_routes *routes;
    rtc_bridge_env env;
    rtc_grpc_channel **channels; /* one per upstream service, routes' order */
    size_t nchannels;
    char **origins; /* --origins, split; "*" allows any */
    size_t norigins;
    rtc_admin *admin;
    rtc_signals *signals;
    uv_timer_t tick; /* readiness and drain progress */
    bool tick_open;
    bool ready, draining;
    char ready_reason[160];
    uint64_t drain_deadline;
    /* ws.c */
    struct lws_context *lws;
    struct lws_vhost *vhost;
    ws_sess *sessions;
    size_t nsessions;
    uint16_t port;
    rtc_metric *m_sockets;
    rtc_metric_family *m_closes; /* {reason} */
    rtc_metric *m_upgrades_refused;
} bridge;

/* ws.c */
int ws_start(bridge *b);
/* Draining: close (1001) every socket with no unary call in flight; true
 * when none is left. force closes them all. */
bool ws_drain_step(bridge *b, bool force);
void ws_stop(bridge *b);
/* Ping sockets silent for --ping-interval, hang up those silent for
 * --idle-timeout (pongs count as traffic). From the bridge's tick. */
void ws_idle_sweep(bridge *b, uint64_t now);
/* The conn ops that run over the lws transport (ud = ws_sess). */
extern const rtc_bridge_conn_ops ws_conn_ops;
void ws_count_close(bridge *b, const char *reason);

/* bridge.c */
bool bridge_origin_allowed(const bridge *b, const char *origin);
rtc_grpc_channel *bridge_channel(const bridge *b, int upstream);

#endif

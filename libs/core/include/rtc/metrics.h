/* rtc/metrics.h — a Prometheus metrics registry.
 *
 * Families (counter, gauge, histogram) with fixed label names; children per
 * label-value tuple are created on first use and live as long as the
 * registry, so hot paths look a child up once and keep the pointer.
 * Rendering produces the text exposition format 0.0.4 that
 * `promtool check metrics` accepts. Single-threaded, like the loop. */
#ifndef RTC_METRICS_H
#define RTC_METRICS_H

#include <stddef.h>
#include "rtc/buf.h"

typedef struct rtc_metrics rtc_metrics;
typedef struct rtc_metric_family rtc_metric_family;
typedef struct rtc_metric rtc_metric;

typedef enum {
    RTC_METRIC_COUNTER,
    RTC_METRIC_GAUGE,
    RTC_METRIC_HISTOGRAM,
} rtc_metric_type;

/* Registry with the standard process_* collectors (cpu seconds, resident
 * memory, open fds, start time). NULL on allocation failure. */
rtc_metrics *rtc_metrics_new(void);
void rtc_metrics_free(rtc_metrics *m);

/* Register a family. `labels` is an array of nlabels label names (may be
 * NULL when nlabels == 0). For histograms, `buckets` is nbuckets strictly
 * increasing upper bounds (+Inf is implicit); NULL/0 gives the default
 * latency buckets in seconds. Registering the same name twice returns the
 * existing family when the type and labels match, else NULL. The returned
 * pointer is owned by the registry. */
rtc_metric_family *rtc_metrics_family(rtc_metrics *m, rtc_metric_type type, const char *name,
                                      const char *help, size_t nlabels, const char *const *labels,
                                      const double *buckets, size_t nbuckets);

/* The child for these label values (nlabels of them, copied), created on
 * first use. Owned by the registry. NULL on allocation failure. */
rtc_metric *rtc_metric_child(rtc_metric_family *f, const char *const *values);

/* Shorthands for families without labels. */
rtc_metric *rtc_metrics_counter(rtc_metrics *m, const char *name, const char *help);
rtc_metric *rtc_metrics_gauge(rtc_metrics *m, const char *name, const char *help);

void rtc_metric_inc(rtc_metric *c, double v);     /* counter or gauge; v >= 0 for counters */
void rtc_metric_set(rtc_metric *g, double v);     /* gauge */
void rtc_metric_observe(rtc_metric *h, double v); /* histogram */
double rtc_metric_value(const rtc_metric *c);     /* counter/gauge value, histogram count */

/* A callback run before every render, to refresh gauges from live state. */
typedef void (*rtc_metrics_collect_fn)(rtc_metrics *m, void *ud);
int rtc_metrics_on_collect(rtc_metrics *m, rtc_metrics_collect_fn fn, void *ud);

/* Append the text exposition of every family to out. 0 or RTC_ENOMEM. */
int rtc_metrics_render(rtc_metrics *m, rtc_buf *out);

#endif

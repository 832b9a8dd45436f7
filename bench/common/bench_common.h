/* bench_common.h — what the load generators in bench/ share: a latency
 * histogram, CPU time and RSS of processes, and a blocking GET of a
 * /metrics page (only at the edges of a measured window). */
#ifndef RTC_BENCH_COMMON_H
#define RTC_BENCH_COMMON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "rtc/buf.h"

/* Log-linear over microseconds: exact below 64 us, then 32 sub-buckets per
 * power of two (a bucket is at most ~3 % wide). */
#define BENCH_HIST_SUB     32
#define BENCH_HIST_LINEAR  64
#define BENCH_HIST_MAX_EXP 40
#define BENCH_HIST_BUCKETS (BENCH_HIST_LINEAR + (BENCH_HIST_MAX_EXP - 5) * BENCH_HIST_SUB)

typedef struct bench_hist {
    uint64_t count[BENCH_HIST_BUCKETS];
    uint64_t n, sum, min, max;
} bench_hist;

void bench_hist_add(bench_hist *h, uint64_t us);
void bench_hist_merge(bench_hist *into, const bench_hist *h);
/* The q-quantile (0 < q <= 1) in us (a bucket's midpoint); 0 when empty. */
double bench_hist_quantile(const bench_hist *h, double q);

/* The SDP text of offer / answer `seq` of pair `idx`, exactly `size`
 * bytes, NUL-terminated: a session header whose o= line carries pair and
 * sequence number, padded with attribute lines "a=x:xxx…\r\n". The
 * receiver rebuilds it to compare. 0, RTC_EINVAL (size too small for the
 * header), RTC_ENOMEM. */
int bench_make_sdp(rtc_buf *out, bool answer, unsigned idx, uint64_t seq, size_t size);

/* utime + stime of a process in seconds, -1 when it cannot be read. */
double bench_proc_cpu(int pid);
/* VmRSS of a process in KiB, -1 when it cannot be read. */
double bench_proc_rss_kib(int pid);
/* This process's CPU seconds. */
double bench_self_cpu(void);
/* Busy (non-idle, non-iowait; steal included) seconds of all CPUs; with
 * irq, also the interrupt share (irq + softirq). -1 when unreadable. */
double bench_machine_busy(double *irq);

/* GET http://hostport/metrics, blocking, 5 s timeouts; the body is
 * appended to out. 0, or -1 after a line on stderr prefixed with prog. */
int bench_http_get_metrics(const char *prog, const char *hostport, rtc_buf *out);

#endif

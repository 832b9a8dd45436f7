/* What the load generators in bench/ share; see bench_common.h. */
#include "bench_common.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "rtc/config.h"
#include "rtc/error.h"

static int hist_index(uint64_t v)
{
    if (v < BENCH_HIST_LINEAR)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    if (e > BENCH_HIST_MAX_EXP - 1)
        return BENCH_HIST_BUCKETS - 1;
    int m = (int)((v >> (e - 5)) & (BENCH_HIST_SUB - 1));
    return BENCH_HIST_LINEAR + (e - 6) * BENCH_HIST_SUB + m;
}

/* Midpoint of a bucket, in us. */
static double hist_value(int idx)
{
    if (idx < BENCH_HIST_LINEAR)
        return idx;
    int e = (idx - BENCH_HIST_LINEAR) / BENCH_HIST_SUB + 6,
        m = (idx - BENCH_HIST_LINEAR) % BENCH_HIST_SUB;
    double lo = (double)((uint64_t)(BENCH_HIST_SUB + m) << (e - 5));
    return lo + (double)(1ULL << (e - 5)) / 2;
}

void bench_hist_add(bench_hist *h, uint64_t us)
{
    h->count[hist_index(us)]++;
    if (h->n == 0 || us < h->min)
        h->min = us;
    if (us > h->max)
        h->max = us;
    h->n++;
    h->sum += us;
}

void bench_hist_merge(bench_hist *into, const bench_hist *h)
{
    if (h->n == 0)
        return;
    for (int i = 0; i < BENCH_HIST_BUCKETS; i++)
        into->count[i] += h->count[i];
    if (into->n == 0 || h->min < into->min)
        into->min = h->min;
    if (h->max > into->max)
        into->max = h->max;
    into->n += h->n;
    into->sum += h->sum;
}

double bench_hist_quantile(const bench_hist *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n + 0.999999), seen = 0;
    if (rank < 1)
        rank = 1;
    for (int i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank)
            return hist_value(i);
    }
    return (double)h->max;
}

int bench_make_sdp(rtc_buf *out, bool answer, unsigned idx, uint64_t seq, size_t size)
{
    static const char pad[] = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    rtc_buf_reset(out);
    if (rtc_buf_printf(out, "v=0\r\no=bench %u %" PRIu64 " IN IP4 127.0.0.1\r\ns=%s\r\nt=0 0\r\n",
                       idx, seq, answer ? "answer" : "offer") < 0)
        return RTC_ENOMEM;
    if (out->len + 6 > size)
        return RTC_EINVAL;
    /* Lines "a=x:<k x's>\r\n" (6 + k bytes), 72 bytes but the last. */
    while (out->len < size) {
        size_t rest = size - out->len, k = rest <= 78 ? rest - 6 : 66;
        if (rtc_buf_append(out, "a=x:", 4) < 0 || rtc_buf_append(out, pad, k) < 0 ||
            rtc_buf_append(out, "\r\n", 2) < 0)
            return RTC_ENOMEM;
    }
    if (rtc_buf_reserve(out, 1) < 0)
        return RTC_ENOMEM;
    out->data[out->len] = '\0';
    return 0;
}

double bench_proc_cpu(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double bench_proc_rss_kib(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    double v = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            v = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return v;
}

double bench_self_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

double bench_machine_busy(double *irq)
{
    unsigned long long v[8] = {0};
    if (irq)
        *irq = -1;
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return -1;
    double tck = (double)sysconf(_SC_CLK_TCK);
    if (irq)
        *irq = (double)(v[5] + v[6]) / tck;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tck;
}

int bench_http_get_metrics(const char *prog, const char *hostport, rtc_buf *out)
{
    rtc_hostport hp;
    char port[8], req[512];
    struct addrinfo hints = {0}, *res = NULL;
    int fd = -1, rc = -1;
    rtc_buf resp = RTC_BUF_INIT;
    if (rtc_parse_hostport(hostport, &hp) < 0) {
        fprintf(stderr, "%s: --metrics: bad host:port '%s'\n", prog, hostport);
        return -1;
    }
    snprintf(port, sizeof(port), "%u", hp.port);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(hp.host, port, &hints, &res) != 0 || !res) {
        fprintf(stderr, "%s: cannot resolve %s\n", prog, hostport);
        goto out;
    }
    fd = socket(res->ai_family, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 5};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
        connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        fprintf(stderr, "%s: cannot connect to %s: %s\n", prog, hostport, strerror(errno));
        goto out;
    }
    int n = snprintf(req, sizeof(req),
                     "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", hostport);
    if (write(fd, req, (size_t)n) != n) {
        fprintf(stderr, "%s: cannot send to %s\n", prog, hostport);
        goto out;
    }
    for (;;) {
        if (rtc_buf_reserve(&resp, 65536) < 0)
            goto out;
        ssize_t r = read(fd, resp.data + resp.len, resp.cap - resp.len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "%s: reading %s: %s\n", prog, hostport, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        resp.len += (size_t)r;
    }
    if (rtc_buf_append(&resp, "", 1) < 0)
        goto out;
    const char *body = strstr((const char *)resp.data, "\r\n\r\n");
    if (strncmp((const char *)resp.data, "HTTP/1.1 200", 12) != 0 || !body) {
        fprintf(stderr, "%s: GET http://%s/metrics: no 200 answer\n", prog, hostport);
        goto out;
    }
    if (rtc_buf_append_str(out, body + 4) < 0 || rtc_buf_append(out, "\n", 1) < 0)
        goto out;
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    if (res)
        freeaddrinfo(res);
    rtc_buf_free(&resp);
    return rc;
}

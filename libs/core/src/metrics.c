/* metrics.c — Prometheus registry and text exposition (format 0.0.4).
 *
 * Children are found by a linear scan over a hash of their label values:
 * families hold tens of children, hot paths cache the child pointer, and a
 * scan keeps creation order, which makes the rendering stable and easy to
 * diff. Label strings are escaped once, when a child is created, so a scrape
 * only copies bytes. */
#include "rtc/metrics.h"

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "rtc/error.h"
#include "rtc/utf8.h"

static const double default_buckets[] = {.0005, .001, .0025, .005, .01, .025, .05,
                                         .1,    .25,  .5,    1,    2.5, 5,    10};

struct rtc_metric {
    rtc_metric_family *fam;
    uint64_t hash;
    char **values;           /* raw label values, for lookup */
    char *labelstr;          /* a="x",b="y" escaped, "" without labels */
    double value;            /* counter / gauge */
    uint64_t *bucket_counts; /* histogram: per bucket (not cumulative), +Inf last */
    double sum;
    uint64_t count;
};

struct rtc_metric_family {
    rtc_metric_type type;
    char *name;
    char *help;
    size_t nlabels;
    char **labels;
    double *buckets;
    size_t nbuckets; /* finite bounds; +Inf is implicit */
    rtc_metric **children;
    size_t nchildren, cap;
};

struct collector {
    rtc_metrics_collect_fn fn;
    void *ud;
};

struct rtc_metrics {
    rtc_metric_family **fams;
    size_t nfams, cap;
    struct collector *collectors;
    size_t ncollectors;
    /* process_* collectors */
    rtc_metric *cpu, *rss, *vsize, *open_fds, *max_fds, *start_time;
};

/* ---- helpers ---- */

static bool metric_name_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool label_name_ok(const char *s)
{
    if (!s || !*s || strncmp(s, "__", 2) == 0) /* "__" is reserved to Prometheus */
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* Shortest text that parses back to v; integers without exponent, the way
 * Prometheus' own clients print them ("0.005", "1", "2.5", "+Inf"). */
static void format_double(char *out, size_t outlen, double v)
{
    if (isnan(v)) {
        snprintf(out, outlen, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, outlen, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0) { /* also turns -0 into 0 */
        snprintf(out, outlen, "0");
        return;
    }
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(out, outlen, "%.0f", v);
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(out, outlen, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

/* Escape for a HELP line (\\ and \n) or a label value (also \"). */
static int append_escaped(rtc_buf *out, const char *s, bool quote)
{
    rtc_buf clean = RTC_BUF_INIT;
    size_t len = strlen(s);
    int rc = 0;
    if (!rtc_utf8_valid(s, len)) {
        if ((rc = rtc_utf8_sanitize(&clean, s, len)) < 0)
            goto out;
        s = (const char *)clean.data;
        len = clean.len;
    }
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        const char *esc = NULL;
        if (s[i] == '\\')
            esc = "\\\\";
        else if (s[i] == '\n')
            esc = "\\n";
        else if (quote && s[i] == '"')
            esc = "\\\"";
        if (!esc)
            continue;
        if ((rc = rtc_buf_append(out, s + run, i - run)) < 0 ||
            (rc = rtc_buf_append(out, esc, 2)) < 0)
            goto out;
        run = i + 1;
    }
    rc = rtc_buf_append(out, s + run, len - run);
out:
    rtc_buf_free(&clean);
    return rc;
}

static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++)
            h = (h ^ *p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull; /* separator: ("ab","") != ("a","b") */
    }
    return h;
}

static void free_strv(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void child_free(rtc_metric *c, size_t nlabels)
{
    if (!c)
        return;
    free_strv(c->values, nlabels);
    free(c->labelstr);
    free(c->bucket_counts);
    free(c);
}

static void family_free(rtc_metric_family *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->nchildren; i++)
        child_free(f->children[i], f->nlabels);
    free(f->children);
    free_strv(f->labels, f->nlabels);
    free(f->buckets);
    free(f->name);
    free(f->help);
    free(f);
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 8;
    void *p = reallocarray(*arr, ncap, elem);
    if (!p)
        return RTC_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ---- registry ---- */

static rtc_metric_family *find_family(rtc_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nfams; i++)
        if (strcmp(m->fams[i]->name, name) == 0)
            return m->fams[i];
    return NULL;
}

/* Would `name` collide with a series another family already exposes
 * (a histogram "x" owns x_bucket, x_sum and x_count)? */
static bool series_clash(rtc_metrics *m, rtc_metric_type type, const char *name)
{
    static const char *const suffixes[] = {"_bucket", "_sum", "_count"};
    size_t n = strlen(name);
    for (size_t i = 0; i < m->nfams; i++) {
        const rtc_metric_family *f = m->fams[i];
        size_t fn = strlen(f->name);
        for (size_t s = 0; s < 3; s++) {
            size_t sl = strlen(suffixes[s]);
            if (f->type == RTC_METRIC_HISTOGRAM && n == fn + sl &&
                strncmp(name, f->name, fn) == 0 && strcmp(name + fn, suffixes[s]) == 0)
                return true;
            if (type == RTC_METRIC_HISTOGRAM && fn == n + sl && strncmp(f->name, name, n) == 0 &&
                strcmp(f->name + n, suffixes[s]) == 0)
                return true;
        }
    }
    return false;
}

rtc_metric_family *rtc_metrics_family(rtc_metrics *m, rtc_metric_type type, const char *name,
                                      const char *help, size_t nlabels, const char *const *labels,
                                      const double *buckets, size_t nbuckets)
{
    rtc_metric_family *f = NULL;
    if (!m || !metric_name_ok(name) || (nlabels > 0 && !labels) ||
        (type != RTC_METRIC_COUNTER && type != RTC_METRIC_GAUGE && type != RTC_METRIC_HISTOGRAM))
        return NULL;
    for (size_t i = 0; i < nlabels; i++) {
        if (!label_name_ok(labels[i]) ||
            (type == RTC_METRIC_HISTOGRAM && strcmp(labels[i], "le") == 0))
            return NULL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0)
                return NULL;
    }

    rtc_metric_family *old = find_family(m, name);
    if (old) {
        if (old->type != type || old->nlabels != nlabels)
            return NULL;
        for (size_t i = 0; i < nlabels; i++)
            if (strcmp(old->labels[i], labels[i]) != 0)
                return NULL;
        return old;
    }
    if (series_clash(m, type, name))
        return NULL;

    if (type == RTC_METRIC_HISTOGRAM) {
        if (!buckets || nbuckets == 0) {
            buckets = default_buckets;
            nbuckets = sizeof(default_buckets) / sizeof(default_buckets[0]);
        }
        if (isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
            nbuckets--; /* +Inf is implicit; tolerate it spelled out */
        for (size_t i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
                return NULL;
    }

    f = calloc(1, sizeof(*f));
    if (!f)
        goto fail;
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    if (!f->name || !f->help)
        goto fail;
    if (nlabels) {
        f->labels = calloc(nlabels, sizeof(char *));
        if (!f->labels)
            goto fail;
        f->nlabels = nlabels;
        for (size_t i = 0; i < nlabels; i++)
            if (!(f->labels[i] = strdup(labels[i])))
                goto fail;
    }
    if (type == RTC_METRIC_HISTOGRAM && nbuckets) {
        f->buckets = malloc(nbuckets * sizeof(double));
        if (!f->buckets)
            goto fail;
        memcpy(f->buckets, buckets, nbuckets * sizeof(double));
        f->nbuckets = nbuckets;
    }
    if (grow((void **)&m->fams, &m->cap, m->nfams, sizeof(*m->fams)) < 0)
        goto fail;
    m->fams[m->nfams++] = f;
    /* A family without labels has exactly one series: create it now so it
     * is exported (as 0) from the first scrape. */
    if (nlabels == 0 && !rtc_metric_child(f, NULL)) {
        m->nfams--;
        goto fail;
    }
    return f;
fail:
    family_free(f);
    return NULL;
}

rtc_metric *rtc_metric_child(rtc_metric_family *f, const char *const *values)
{
    if (!f || (f->nlabels > 0 && !values))
        return NULL;
    for (size_t i = 0; i < f->nlabels; i++)
        if (!values[i])
            return NULL;
    uint64_t h = hash_values(values, f->nlabels);
    for (size_t i = 0; i < f->nchildren; i++) {
        rtc_metric *c = f->children[i];
        if (c->hash != h)
            continue;
        size_t j = 0;
        while (j < f->nlabels && strcmp(c->values[j], values[j]) == 0)
            j++;
        if (j == f->nlabels)
            return c;
    }

    rtc_buf ls = RTC_BUF_INIT;
    rtc_metric *c = calloc(1, sizeof(*c));
    if (!c)
        goto fail;
    c->fam = f;
    c->hash = h;
    if (f->nlabels) {
        c->values = calloc(f->nlabels, sizeof(char *));
        if (!c->values)
            goto fail;
    }
    for (size_t i = 0; i < f->nlabels; i++) {
        if (!(c->values[i] = strdup(values[i])))
            goto fail;
        if (rtc_buf_printf(&ls, "%s%s=\"", i ? "," : "", f->labels[i]) < 0 ||
            append_escaped(&ls, values[i], true) < 0 || rtc_buf_append(&ls, "\"", 1) < 0)
            goto fail;
    }
    if (rtc_buf_append(&ls, "", 1) < 0)
        goto fail;
    c->labelstr = (char *)ls.data; /* ownership moves to the child */
    ls = (rtc_buf)RTC_BUF_INIT;
    if (f->type == RTC_METRIC_HISTOGRAM) {
        c->bucket_counts = calloc(f->nbuckets + 1, sizeof(uint64_t));
        if (!c->bucket_counts)
            goto fail;
    }
    if (grow((void **)&f->children, &f->cap, f->nchildren, sizeof(*f->children)) < 0)
        goto fail;
    f->children[f->nchildren++] = c;
    return c;
fail:
    rtc_buf_free(&ls);
    child_free(c, f->nlabels);
    return NULL;
}

rtc_metric *rtc_metrics_counter(rtc_metrics *m, const char *name, const char *help)
{
    rtc_metric_family *f = rtc_metrics_family(m, RTC_METRIC_COUNTER, name, help, 0, NULL, NULL, 0);
    return f ? rtc_metric_child(f, NULL) : NULL;
}

rtc_metric *rtc_metrics_gauge(rtc_metrics *m, const char *name, const char *help)
{
    rtc_metric_family *f = rtc_metrics_family(m, RTC_METRIC_GAUGE, name, help, 0, NULL, NULL, 0);
    return f ? rtc_metric_child(f, NULL) : NULL;
}

/* NULL children are accepted everywhere: a hot path whose child creation
 * failed for lack of memory keeps running, it just stops counting. */
void rtc_metric_inc(rtc_metric *c, double v)
{
    if (!c || isnan(v))
        return;
    if (c->fam->type == RTC_METRIC_COUNTER && v >= 0)
        c->value += v; /* counters never go down */
    else if (c->fam->type == RTC_METRIC_GAUGE)
        c->value += v;
}

void rtc_metric_set(rtc_metric *g, double v)
{
    if (g && g->fam->type == RTC_METRIC_GAUGE)
        g->value = v;
}

void rtc_metric_observe(rtc_metric *h, double v)
{
    if (!h || h->fam->type != RTC_METRIC_HISTOGRAM || isnan(v))
        return; /* a NaN would poison _sum forever */
    const rtc_metric_family *f = h->fam;
    size_t i = 0;
    while (i < f->nbuckets && v > f->buckets[i])
        i++;
    h->bucket_counts[i]++;
    h->sum += v;
    h->count++;
}

double rtc_metric_value(const rtc_metric *c)
{
    if (!c)
        return 0;
    return c->fam->type == RTC_METRIC_HISTOGRAM ? (double)c->count : c->value;
}

int rtc_metrics_on_collect(rtc_metrics *m, rtc_metrics_collect_fn fn, void *ud)
{
    if (!m || !fn)
        return RTC_EINVAL;
    struct collector *p = reallocarray(m->collectors, m->ncollectors + 1, sizeof(*p));
    if (!p)
        return RTC_ENOMEM;
    m->collectors = p;
    m->collectors[m->ncollectors++] = (struct collector){fn, ud};
    return 0;
}

/* ---- process collectors (Linux /proc) ---- */

static double boot_time_s(void)
{
    FILE *f = fopen("/proc/stat", "re");
    char line[256];
    double bt = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long long v;
        if (sscanf(line, "btime %llu", &v) == 1) {
            bt = (double)v;
            break;
        }
    }
    fclose(f);
    return bt;
}

struct proc_stat {
    unsigned long utime, stime, vsize;
    unsigned long long starttime;
    long rss;
};

static int read_proc_stat(struct proc_stat *ps)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return RTC_EIO;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* comm may contain spaces and parentheses: fields start after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p)
        return RTC_EIO;
    int got = sscanf(p + 1,
                     " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d"
                     " %*d %llu %lu %ld",
                     &ps->utime, &ps->stime, &ps->starttime, &ps->vsize, &ps->rss);
    return got == 5 ? 0 : RTC_EIO;
}

static double count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    int self = dirfd(d);
    double n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (atoi(e->d_name) == self)
            continue; /* the descriptor this very scan holds */
        n++;
    }
    closedir(d);
    return n;
}

static void collect_process(rtc_metrics *m)
{
    struct proc_stat ps;
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (read_proc_stat(&ps) == 0 && tck > 0) {
        double cpu = (double)(ps.utime + ps.stime) / (double)tck;
        if (m->cpu && cpu >= m->cpu->value)
            m->cpu->value = cpu; /* counter: set directly, never backwards */
        rtc_metric_set(m->rss, (double)ps.rss * (double)page);
        rtc_metric_set(m->vsize, (double)ps.vsize);
    }
    rtc_metric_set(m->open_fds, count_open_fds());
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        rtc_metric_set(m->max_fds, rl.rlim_cur == RLIM_INFINITY ? INFINITY : (double)rl.rlim_cur);
}

rtc_metrics *rtc_metrics_new(void)
{
    rtc_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cpu = rtc_metrics_counter(m, "process_cpu_seconds_total",
                                 "Total user and system CPU time spent in seconds.");
    m->rss =
        rtc_metrics_gauge(m, "process_resident_memory_bytes", "Resident memory size in bytes.");
    m->vsize =
        rtc_metrics_gauge(m, "process_virtual_memory_bytes", "Virtual memory size in bytes.");
    m->open_fds = rtc_metrics_gauge(m, "process_open_fds", "Number of open file descriptors.");
    m->max_fds =
        rtc_metrics_gauge(m, "process_max_fds", "Maximum number of open file descriptors.");
    m->start_time = rtc_metrics_gauge(m, "process_start_time_seconds",
                                      "Start time of the process since unix epoch in seconds.");
    if (!m->cpu || !m->rss || !m->vsize || !m->open_fds || !m->max_fds || !m->start_time) {
        rtc_metrics_free(m);
        return NULL;
    }
    struct proc_stat ps;
    long tck = sysconf(_SC_CLK_TCK);
    if (read_proc_stat(&ps) == 0 && tck > 0)
        rtc_metric_set(m->start_time, boot_time_s() + (double)ps.starttime / (double)tck);
    return m;
}

void rtc_metrics_free(rtc_metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nfams; i++)
        family_free(m->fams[i]);
    free(m->fams);
    free(m->collectors);
    free(m);
}

/* ---- rendering ---- */

static const char *type_name(rtc_metric_type t)
{
    switch (t) {
    case RTC_METRIC_COUNTER:
        return "counter";
    case RTC_METRIC_GAUGE:
        return "gauge";
    case RTC_METRIC_HISTOGRAM:
    default:
        return "histogram";
    }
}

static int render_sample(rtc_buf *out, const char *name, const char *suffix, const char *labels,
                         const char *le, double v)
{
    char num[40];
    int rc;
    format_double(num, sizeof(num), v);
    if (le)
        rc = rtc_buf_printf(out, "%s%s{%s%sle=\"%s\"} %s\n", name, suffix, labels,
                            labels[0] ? "," : "", le, num);
    else if (labels[0])
        rc = rtc_buf_printf(out, "%s%s{%s} %s\n", name, suffix, labels, num);
    else
        rc = rtc_buf_printf(out, "%s%s %s\n", name, suffix, num);
    return rc < 0 ? RTC_ENOMEM : 0;
}

static int render_family(const rtc_metric_family *f, rtc_buf *out)
{
    if (f->nchildren == 0)
        return 0; /* nothing observed yet: no series, no header */
    if (rtc_buf_printf(out, "# HELP %s ", f->name) < 0 || append_escaped(out, f->help, false) < 0 ||
        rtc_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_name(f->type)) < 0)
        return RTC_ENOMEM;
    for (size_t i = 0; i < f->nchildren; i++) {
        const rtc_metric *c = f->children[i];
        if (f->type != RTC_METRIC_HISTOGRAM) {
            if (render_sample(out, f->name, "", c->labelstr, NULL, c->value) < 0)
                return RTC_ENOMEM;
            continue;
        }
        uint64_t cum = 0;
        char le[40];
        for (size_t b = 0; b <= f->nbuckets; b++) {
            cum += c->bucket_counts[b];
            if (b < f->nbuckets)
                format_double(le, sizeof(le), f->buckets[b]);
            else
                snprintf(le, sizeof(le), "+Inf");
            if (render_sample(out, f->name, "_bucket", c->labelstr, le, (double)cum) < 0)
                return RTC_ENOMEM;
        }
        if (render_sample(out, f->name, "_sum", c->labelstr, NULL, c->sum) < 0 ||
            render_sample(out, f->name, "_count", c->labelstr, NULL, (double)c->count) < 0)
            return RTC_ENOMEM;
    }
    return 0;
}

int rtc_metrics_render(rtc_metrics *m, rtc_buf *out)
{
    size_t start = out->len;
    collect_process(m);
    for (size_t i = 0; i < m->ncollectors; i++)
        m->collectors[i].fn(m, m->collectors[i].ud);
    for (size_t i = 0; i < m->nfams; i++) {
        if (render_family(m->fams[i], out) < 0) {
            out->len = start; /* all or nothing */
            return RTC_ENOMEM;
        }
    }
    return 0;
}

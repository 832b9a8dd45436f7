/* test_metrics.c — registry, exact exposition text, escaping, promtool. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "rtc/buf.h"
#include "rtc/error.h"
#include "rtc/metrics.h"

static int setup(void **state)
{
    rtc_metrics *m = rtc_metrics_new();
    if (!m)
        return -1;
    *state = m;
    return 0;
}

static int teardown(void **state)
{
    rtc_metrics_free(*state);
    return 0;
}

/* Render, then drop the process_* families (their values vary). Caller frees. */
static char *render_without_process(rtc_metrics *m)
{
    rtc_buf out = RTC_BUF_INIT, kept = RTC_BUF_INIT;
    assert_int_equal(rtc_metrics_render(m, &out), 0);
    size_t i = 0;
    while (i < out.len) {
        const char *line = (const char *)out.data + i;
        const char *nl = memchr(line, '\n', out.len - i);
        assert_non_null(nl); /* every line ends in \n */
        size_t n = (size_t)(nl - line) + 1;
        if (strncmp(line, "process_", 8) != 0 && strncmp(line, "# HELP process_", 15) != 0 &&
            strncmp(line, "# TYPE process_", 15) != 0)
            assert_int_equal(rtc_buf_append(&kept, line, n), 0);
        i += n;
    }
    assert_int_equal(rtc_buf_append(&kept, "", 1), 0);
    rtc_buf_free(&out);
    return (char *)kept.data;
}

static char *render_all(rtc_metrics *m)
{
    rtc_buf out = RTC_BUF_INIT;
    assert_int_equal(rtc_metrics_render(m, &out), 0);
    assert_int_equal(rtc_buf_append(&out, "", 1), 0);
    return (char *)out.data;
}

static void test_render_exact(void **state)
{
    rtc_metrics *m = *state;
    const char *calls_labels[] = {"method", "code"};
    rtc_metric_family *calls =
        rtc_metrics_family(m, RTC_METRIC_COUNTER, "rtc_calls_total", "Calls by method and code.", 2,
                           calls_labels, NULL, 0);
    assert_non_null(calls);
    const char *v1[] = {"Join", "OK"};
    const char *v2[] = {"Leave", "a\"b\\c\nd"};
    rtc_metric_inc(rtc_metric_child(calls, v1), 1);
    rtc_metric_inc(rtc_metric_child(calls, v1), 2);
    rtc_metric_inc(rtc_metric_child(calls, v2), 1);

    rtc_metric *streams = rtc_metrics_gauge(m, "rtc_open_streams", "Open streams.");
    rtc_metric_set(streams, 7);

    const char *lat_labels[] = {"method"};
    const double buckets[] = {0.005, 0.25, 1};
    rtc_metric_family *lat =
        rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "rtc_latency_seconds",
                           "Latency.\nSecond line with \\ backslash.", 1, lat_labels, buckets, 3);
    assert_non_null(lat);
    const char *join[] = {"Join"};
    rtc_metric *h = rtc_metric_child(lat, join);
    rtc_metric_observe(h, 0.00390625);
    rtc_metric_observe(h, 0.125);
    rtc_metric_observe(h, 0.5);
    rtc_metric_observe(h, 4);

    /* A labelled family with no children yet is not exported. */
    const char *l[] = {"x"};
    assert_non_null(
        rtc_metrics_family(m, RTC_METRIC_GAUGE, "rtc_unused", "Unused.", 1, l, NULL, 0));

    char *text = render_without_process(m);
    assert_string_equal(text,
                        "# HELP rtc_calls_total Calls by method and code.\n"
                        "# TYPE rtc_calls_total counter\n"
                        "rtc_calls_total{method=\"Join\",code=\"OK\"} 3\n"
                        "rtc_calls_total{method=\"Leave\",code=\"a\\\"b\\\\c\\nd\"} 1\n"
                        "# HELP rtc_open_streams Open streams.\n"
                        "# TYPE rtc_open_streams gauge\n"
                        "rtc_open_streams 7\n"
                        "# HELP rtc_latency_seconds Latency.\\nSecond line with \\\\ backslash.\n"
                        "# TYPE rtc_latency_seconds histogram\n"
                        "rtc_latency_seconds_bucket{method=\"Join\",le=\"0.005\"} 1\n"
                        "rtc_latency_seconds_bucket{method=\"Join\",le=\"0.25\"} 2\n"
                        "rtc_latency_seconds_bucket{method=\"Join\",le=\"1\"} 3\n"
                        "rtc_latency_seconds_bucket{method=\"Join\",le=\"+Inf\"} 4\n"
                        "rtc_latency_seconds_sum{method=\"Join\"} 4.62890625\n"
                        "rtc_latency_seconds_count{method=\"Join\"} 4\n");
    free(text);
}

static void test_histogram_default_buckets_cumulative(void **state)
{
    rtc_metrics *m = *state;
    rtc_metric_family *f =
        rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "h_seconds", "H.", 0, NULL, NULL, 0);
    assert_non_null(f);
    rtc_metric *h = rtc_metric_child(f, NULL);
    rtc_metric_observe(h, 0.25); /* exactly on a bound: counts in that bucket (le) */
    rtc_metric_observe(h, 0.0001);
    rtc_metric_observe(h, 100);
    rtc_metric_observe(h, NAN); /* ignored */
    assert_true(rtc_metric_value(h) == 3);
    char *text = render_without_process(m);
    static const char *const expect[] = {
        "h_seconds_bucket{le=\"0.0005\"} 1\n",
        "h_seconds_bucket{le=\"0.001\"} 1\n",
        "h_seconds_bucket{le=\"0.0025\"} 1\n",
        "h_seconds_bucket{le=\"0.005\"} 1\n",
        "h_seconds_bucket{le=\"0.01\"} 1\n",
        "h_seconds_bucket{le=\"0.025\"} 1\n",
        "h_seconds_bucket{le=\"0.05\"} 1\n",
        "h_seconds_bucket{le=\"0.1\"} 1\n",
        "h_seconds_bucket{le=\"0.25\"} 2\n",
        "h_seconds_bucket{le=\"0.5\"} 2\n",
        "h_seconds_bucket{le=\"1\"} 2\n",
        "h_seconds_bucket{le=\"2.5\"} 2\n",
        "h_seconds_bucket{le=\"5\"} 2\n",
        "h_seconds_bucket{le=\"10\"} 2\n",
        "h_seconds_bucket{le=\"+Inf\"} 3\n",
        "h_seconds_sum 100.2501\n",
        "h_seconds_count 3\n",
    };
    const char *at = text;
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        const char *p = strstr(at, expect[i]);
        if (!p)
            fail_msg("missing or out of order: %s\n%s", expect[i], text);
        at = p;
    }
    free(text);
}

static void test_duplicate_registration(void **state)
{
    rtc_metrics *m = *state;
    const char *ab[] = {"a", "b"};
    const char *ac[] = {"a", "c"};
    rtc_metric_family *f =
        rtc_metrics_family(m, RTC_METRIC_COUNTER, "dup_total", "D.", 2, ab, NULL, 0);
    assert_non_null(f);
    assert_ptr_equal(
        rtc_metrics_family(m, RTC_METRIC_COUNTER, "dup_total", "other help", 2, ab, NULL, 0), f);
    assert_null(rtc_metrics_family(m, RTC_METRIC_GAUGE, "dup_total", "D.", 2, ab, NULL, 0));
    assert_null(rtc_metrics_family(m, RTC_METRIC_COUNTER, "dup_total", "D.", 2, ac, NULL, 0));
    assert_null(rtc_metrics_family(m, RTC_METRIC_COUNTER, "dup_total", "D.", 1, ab, NULL, 0));
    rtc_metric *c = rtc_metrics_counter(m, "single_total", "S.");
    assert_non_null(c);
    assert_ptr_equal(rtc_metrics_counter(m, "single_total", "S."), c);
    assert_null(rtc_metrics_gauge(m, "single_total", "S."));
    /* the process collectors are registered already */
    assert_null(rtc_metrics_counter(m, "process_open_fds", "x"));
}

static void test_series_name_clash(void **state)
{
    rtc_metrics *m = *state;
    assert_non_null(rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "lat", "L.", 0, NULL, NULL, 0));
    assert_null(rtc_metrics_gauge(m, "lat_count", "clash"));
    assert_null(rtc_metrics_gauge(m, "lat_bucket", "clash"));
    assert_non_null(rtc_metrics_gauge(m, "size_sum", "S."));
    assert_null(rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "size", "clash", 0, NULL, NULL, 0));
}

static void test_name_validation(void **state)
{
    rtc_metrics *m = *state;
    assert_null(rtc_metrics_counter(m, "1abc", "x"));
    assert_null(rtc_metrics_counter(m, "a-b", "x"));
    assert_null(rtc_metrics_counter(m, "", "x"));
    assert_null(rtc_metrics_counter(m, NULL, "x"));
    assert_null(rtc_metrics_counter(m, "a b", "x"));
    assert_non_null(rtc_metrics_counter(m, "ns:sub_name_1", "x"));
    assert_non_null(rtc_metrics_counter(m, "_x", "x"));
    const char *reserved[] = {"__name"};
    const char *digit[] = {"0x"};
    const char *le[] = {"le"};
    const char *dupl[] = {"a", "a"};
    assert_null(rtc_metrics_family(m, RTC_METRIC_GAUGE, "g1", "x", 1, reserved, NULL, 0));
    assert_null(rtc_metrics_family(m, RTC_METRIC_GAUGE, "g2", "x", 1, digit, NULL, 0));
    assert_null(rtc_metrics_family(m, RTC_METRIC_GAUGE, "g3", "x", 2, dupl, NULL, 0));
    assert_null(rtc_metrics_family(m, RTC_METRIC_GAUGE, "g4", "x", 1, NULL, NULL, 0));
    assert_null(rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "h1", "x", 1, le, NULL, 0));
    assert_non_null(rtc_metrics_family(m, RTC_METRIC_GAUGE, "g5", "x", 1, le, NULL, 0));
}

static void test_bucket_validation(void **state)
{
    rtc_metrics *m = *state;
    const double desc[] = {1, 0.5};
    const double same[] = {1, 1};
    const double nan[] = {NAN};
    const double inf_last[] = {1, INFINITY};
    assert_null(rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "b1", "x", 0, NULL, desc, 2));
    assert_null(rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "b2", "x", 0, NULL, same, 2));
    assert_null(rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "b3", "x", 0, NULL, nan, 1));
    rtc_metric_family *f =
        rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "b4", "x", 0, NULL, inf_last, 2);
    assert_non_null(f);
    char *text = render_without_process(m);
    assert_non_null(strstr(text, "b4_bucket{le=\"1\"} 0\nb4_bucket{le=\"+Inf\"} 0\nb4_sum"));
    free(text);
}

static void test_children(void **state)
{
    rtc_metrics *m = *state;
    const char *labels[] = {"a", "b"};
    rtc_metric_family *f =
        rtc_metrics_family(m, RTC_METRIC_GAUGE, "kids", "K.", 2, labels, NULL, 0);
    const char *x1[] = {"ab", ""};
    const char *x2[] = {"a", "b"};
    const char *x3[] = {"a", NULL};
    rtc_metric *c1 = rtc_metric_child(f, x1);
    rtc_metric *c2 = rtc_metric_child(f, x2);
    assert_non_null(c1);
    assert_non_null(c2);
    assert_ptr_not_equal(c1, c2);
    char copy[] = "ab";
    const char *x1b[] = {copy, ""};
    assert_ptr_equal(rtc_metric_child(f, x1b), c1); /* values are compared, not pointers */
    assert_null(rtc_metric_child(f, x3));
    assert_null(rtc_metric_child(f, NULL));
    for (int i = 0; i < 200; i++) {
        char v[16];
        snprintf(v, sizeof(v), "v%d", i);
        const char *vals[] = {v, "x"};
        rtc_metric *c = rtc_metric_child(f, vals);
        assert_non_null(c);
        rtc_metric_set(c, i);
        assert_ptr_equal(rtc_metric_child(f, vals), c);
    }
    assert_true(rtc_metric_value(c2) == 0);
}

static void test_values_and_types(void **state)
{
    rtc_metrics *m = *state;
    rtc_metric *c = rtc_metrics_counter(m, "c_total", "C.");
    rtc_metric *g = rtc_metrics_gauge(m, "g", "G.");
    rtc_metric_inc(c, 2.5);
    rtc_metric_inc(c, -1); /* counters never decrease */
    rtc_metric_inc(c, NAN);
    rtc_metric_set(c, 100); /* set is for gauges */
    rtc_metric_observe(c, 1);
    assert_true(rtc_metric_value(c) == 2.5);
    rtc_metric_set(g, 10);
    rtc_metric_inc(g, -3);
    assert_true(rtc_metric_value(g) == 7);
    /* NULL children are no-ops (allocation failure on a hot path). */
    rtc_metric_inc(NULL, 1);
    rtc_metric_set(NULL, 1);
    rtc_metric_observe(NULL, 1);
    assert_true(rtc_metric_value(NULL) == 0);
}

static void test_number_format(void **state)
{
    rtc_metrics *m = *state;
    struct {
        const char *name;
        double v;
        const char *want;
    } cases[] = {
        {"n_int", 1234567, "n_int 1234567\n"},
        {"n_big", 1e20, "n_big 1e+20\n"},
        {"n_frac", 0.1, "n_frac 0.1\n"},
        {"n_third", 1.0 / 3, "n_third 0.3333333333333333\n"},
        {"n_tiny", 1.5e-7, "n_tiny 1.5e-07\n"},
        {"n_negzero", -0.0, "n_negzero 0\n"},
        {"n_neg", -42, "n_neg -42\n"},
        {"n_nan", NAN, "n_nan NaN\n"},
        {"n_inf", INFINITY, "n_inf +Inf\n"},
        {"n_ninf", -INFINITY, "n_ninf -Inf\n"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        rtc_metric_set(rtc_metrics_gauge(m, cases[i].name, "N."), cases[i].v);
    char *text = render_without_process(m);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (!strstr(text, cases[i].want))
            fail_msg("missing %s in\n%s", cases[i].want, text);
    free(text);
}

static void test_invalid_utf8_label(void **state)
{
    rtc_metrics *m = *state;
    const char *labels[] = {"peer"};
    rtc_metric_family *f = rtc_metrics_family(m, RTC_METRIC_GAUGE, "u", "U.", 1, labels, NULL, 0);
    const char *vals[] = {"a\xff"
                          "b"};
    rtc_metric_set(rtc_metric_child(f, vals), 1);
    char *text = render_without_process(m);
    assert_non_null(strstr(text, "u{peer=\"a\xef\xbf\xbd"
                                 "b\"} 1\n"));
    free(text);
}

static int collect_calls;

static void collect(rtc_metrics *m, void *ud)
{
    collect_calls++;
    rtc_metric_set(ud, collect_calls * 10);
}

static void test_on_collect(void **state)
{
    rtc_metrics *m = *state;
    rtc_metric *g = rtc_metrics_gauge(m, "live_sessions", "Live.");
    collect_calls = 0;
    assert_int_equal(rtc_metrics_on_collect(m, collect, g), 0);
    assert_int_equal(rtc_metrics_on_collect(m, NULL, g), RTC_EINVAL);
    char *t1 = render_without_process(m);
    char *t2 = render_without_process(m);
    assert_int_equal(collect_calls, 2);
    assert_non_null(strstr(t1, "live_sessions 10\n"));
    assert_non_null(strstr(t2, "live_sessions 20\n"));
    free(t1);
    free(t2);
}

static double sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *p = strstr(text, key);
    if (!p)
        fail_msg("no sample %s", name);
    return strtod(p + strlen(key), NULL);
}

static void test_process_collectors(void **state)
{
    rtc_metrics *m = *state;
    volatile double spin = 0;
    for (int i = 0; i < 20000000; i++) /* burn a little CPU */
        spin += i;
    char *text = render_all(m);
    assert_non_null(strstr(text, "# TYPE process_cpu_seconds_total counter\n"));
    assert_non_null(strstr(text, "# TYPE process_resident_memory_bytes gauge\n"));
    assert_true(sample(text, "process_cpu_seconds_total") > 0);
    assert_true(sample(text, "process_resident_memory_bytes") > 100000);
    assert_true(sample(text, "process_open_fds") >= 3);
    assert_true(sample(text, "process_max_fds") >= sample(text, "process_open_fds"));
    double start = sample(text, "process_start_time_seconds");
    double now = (double)time(NULL);
    assert_true(start > now - 3600 && start <= now + 1);
    free(text);
}

/* The rendering must pass `promtool check metrics` (format and lint). */
static void test_promtool(void **state)
{
    const char *promtool = getenv("PROMTOOL");
    if (!promtool || !promtool[0])
        promtool = access("/usr/bin/promtool", X_OK) == 0 ? "/usr/bin/promtool" : NULL;
    if (!promtool)
        skip();
    rtc_metrics *m = *state;
    const char *cl[] = {"method", "code"};
    rtc_metric_family *calls = rtc_metrics_family(m, RTC_METRIC_COUNTER, "rtc_calls_total",
                                                  "Calls by method and code.", 2, cl, NULL, 0);
    const char *v1[] = {"Join", "OK"};
    const char *v2[] = {"Le\"ave", "back\\slash\nnewline \xff"};
    rtc_metric_inc(rtc_metric_child(calls, v1), 41);
    rtc_metric_inc(rtc_metric_child(calls, v2), 0.5);
    rtc_metric_set(rtc_metrics_gauge(m, "rtc_open_streams", "Open streams."), -3);
    const char *hl[] = {"method"};
    rtc_metric_family *lat =
        rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "rtc_call_duration_seconds",
                           "Call latency.\nBy method, with a \\ backslash.", 1, hl, NULL, 0);
    const double sizes[] = {64, 1024, 65536};
    rtc_metric_family *sz = rtc_metrics_family(m, RTC_METRIC_HISTOGRAM, "rtc_message_size_bytes",
                                               "Message sizes.", 0, NULL, sizes, 3);
    for (int i = 0; i < 100; i++) {
        const char *who[] = {i % 2 ? "Join" : "Leave"};
        rtc_metric_observe(rtc_metric_child(lat, who), i * 0.013);
        rtc_metric_observe(rtc_metric_child(sz, NULL), i * 997);
    }
    char *text = render_all(m);
    char path[] = "/tmp/rtc-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "'%s' check metrics < %s", promtool, path);
    int st = system(cmd);
    unlink(path);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("promtool rejected:\n%s", text);
    free(text);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_render_exact),
        T(test_histogram_default_buckets_cumulative),
        T(test_duplicate_registration),
        T(test_series_name_clash),
        T(test_name_validation),
        T(test_bucket_validation),
        T(test_children),
        T(test_values_and_types),
        T(test_number_format),
        T(test_invalid_utf8_label),
        T(test_on_collect),
        T(test_process_collectors),
        T(test_promtool),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}

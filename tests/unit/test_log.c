/* test_log.c — JSON log lines: fields, order, escaping, filtering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "rtc/error.h"
#include "rtc/log.h"

struct capture {
    FILE *f;
    char *buf;
    size_t len;
};

static int setup(void **state)
{
    struct capture *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    c->f = open_memstream(&c->buf, &c->len);
    if (!c->f)
        return -1;
    rtc_log_init("rtc-test", RTC_LOG_DEBUG);
    rtc_log_set_output(c->f);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct capture *c = *state;
    rtc_log_set_output(NULL);
    fclose(c->f);
    free(c->buf);
    free(c);
    return 0;
}

static size_t count_lines(const struct capture *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->len; i++)
        n += c->buf[i] == '\n';
    return n;
}

/* Parse line `idx` (0-based) of the capture; must be valid JSON. */
static json_t *line_json(const struct capture *c, size_t idx)
{
    const char *p = c->buf;
    for (size_t i = 0; i < idx; i++) {
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    const char *nl = strchr(p, '\n');
    assert_non_null(nl);
    json_error_t err;
    json_t *j = json_loadb(p, (size_t)(nl - p), 0, &err);
    if (!j)
        fail_msg("invalid JSON line: %s (%.*s)", err.text, (int)(nl - p), p);
    return j;
}

static void test_fields_and_order(void **state)
{
    struct capture *c = *state;
    rtc_log(RTC_LOG_INFO, "listening", "addr", "127.0.0.1:8081", "proto", "h2c", NULL);
    assert_int_equal(count_lines(c), 1);
    json_t *j = line_json(c, 0);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "service")), "rtc-test");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "listening");
    assert_string_equal(json_string_value(json_object_get(j, "addr")), "127.0.0.1:8081");
    assert_string_equal(json_string_value(json_object_get(j, "proto")), "h2c");
    /* ts: RFC 3339 UTC with milliseconds */
    const char *ts = json_string_value(json_object_get(j, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), 24);
    int y, mo, d, h, mi, s, ms;
    char z;
    assert_int_equal(sscanf(ts, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c", &y, &mo, &d, &h, &mi, &s, &ms, &z),
                     8);
    assert_int_equal(z, 'Z');
    assert_true(y >= 2024);
    json_decref(j);
    /* Order in the raw text: ts, level, service, msg, then the pairs. */
    const char *keys[] = {"\"ts\"", "\"level\"", "\"service\"", "\"msg\"", "\"addr\"", "\"proto\""};
    const char *prev = c->buf;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *at = strstr(c->buf, keys[i]);
        assert_non_null(at);
        assert_true(at >= prev);
        prev = at;
    }
    assert_int_equal(c->buf[0], '{');
}

static void test_macros_and_null_value(void **state)
{
    struct capture *c = *state;
    rtc_warn("no fields");
    rtc_error("with null", "session", (const char *)NULL, "after", "x");
    assert_int_equal(count_lines(c), 2);
    json_t *j = line_json(c, 0);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_int_equal(json_object_size(j), 4);
    json_decref(j);
    j = line_json(c, 1);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    assert_true(json_is_null(json_object_get(j, "session")));
    assert_string_equal(json_string_value(json_object_get(j, "after")), "x");
    json_decref(j);
}

static void test_escaping(void **state)
{
    struct capture *c = *state;
    const char *nasty = "quote\" backslash\\ newline\n tab\t cr\r bell\x07 end";
    rtc_info("msg \"quoted\"\nsecond line", "k\"ey", nasty);
    assert_int_equal(count_lines(c), 1); /* the newline in msg did not split the line */
    json_t *j = line_json(c, 0);
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "msg \"quoted\"\nsecond line");
    assert_string_equal(json_string_value(json_object_get(j, "k\"ey")), nasty);
    json_decref(j);
}

static void test_invalid_utf8(void **state)
{
    struct capture *c = *state;
    /* lone continuation, truncated sequence, overlong '/', surrogate, > U+10FFFF */
    rtc_info("bad \xff msg", "\xc0\xafkey",
             "a\x80"
             "b\xe2\x82"
             "c\xed\xa0\x80"
             "d\xf4\x90\x80\x80",
             "ok", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    json_t *j = line_json(c, 0);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "bad \xef\xbf\xbd msg");
    const char *v = json_string_value(json_object_get(j, "\xef\xbf\xbd\xef\xbf\xbdkey"));
    assert_non_null(v);
    assert_non_null(strstr(v, "a\xef\xbf\xbd"
                              "b"));
    assert_null(strstr(v, "\xed\xa0\x80"));
    /* valid multi-byte text passes through untouched */
    assert_string_equal(json_string_value(json_object_get(j, "ok")),
                        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    json_decref(j);
}

static void test_level_filtering(void **state)
{
    struct capture *c = *state;
    rtc_log_set_level(RTC_LOG_WARN);
    assert_false(rtc_log_enabled(RTC_LOG_INFO));
    assert_true(rtc_log_enabled(RTC_LOG_ERROR));
    rtc_debug("dropped");
    rtc_info("dropped");
    rtc_warn("kept");
    rtc_error("kept too");
    assert_int_equal(count_lines(c), 2);
    rtc_log_set_level(RTC_LOG_DEBUG);
    rtc_debug("now kept");
    assert_int_equal(count_lines(c), 3);
    json_t *j = line_json(c, 2);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "debug");
    json_decref(j);
}

static void test_reserved_key_not_overwritten(void **state)
{
    struct capture *c = *state;
    rtc_info("real", "level", "spoofed", "msg", "spoofed", "k", "1", "k", "2");
    json_t *j = line_json(c, 0);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "real");
    assert_string_equal(json_string_value(json_object_get(j, "_level")), "spoofed");
    assert_string_equal(json_string_value(json_object_get(j, "_msg")), "spoofed");
    assert_string_equal(json_string_value(json_object_get(j, "k")), "1");
    assert_string_equal(json_string_value(json_object_get(j, "_k")), "2");
    json_decref(j);
}

static void test_level_parse_and_name(void **state)
{
    rtc_log_level l;
    assert_int_equal(rtc_log_level_parse("debug", &l), 0);
    assert_int_equal(l, RTC_LOG_DEBUG);
    assert_int_equal(rtc_log_level_parse("INFO", &l), 0);
    assert_int_equal(l, RTC_LOG_INFO);
    assert_int_equal(rtc_log_level_parse("warn", &l), 0);
    assert_int_equal(l, RTC_LOG_WARN);
    assert_int_equal(rtc_log_level_parse("warning", &l), 0);
    assert_int_equal(l, RTC_LOG_WARN);
    assert_int_equal(rtc_log_level_parse("error", &l), 0);
    assert_int_equal(l, RTC_LOG_ERROR);
    assert_int_equal(rtc_log_level_parse("verbose", &l), RTC_EINVAL);
    assert_int_equal(rtc_log_level_parse("", &l), RTC_EINVAL);
    assert_int_equal(rtc_log_level_parse(NULL, &l), RTC_EINVAL);
    assert_string_equal(rtc_log_level_name(RTC_LOG_ERROR), "error");
    assert_string_equal(rtc_log_level_name((rtc_log_level)42), "unknown");
}

static void test_long_line(void **state)
{
    struct capture *c = *state;
    size_t n = 100000;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'z', n);
    big[n] = '\0';
    rtc_info("big", "v", big);
    json_t *j = line_json(c, 0);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "v"))), n);
    json_decref(j);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fields_and_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_macros_and_null_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_filtering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserved_key_not_overwritten, setup, teardown),
        cmocka_unit_test(test_level_parse_and_name),
        cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}

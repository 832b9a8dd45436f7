/* test_http1.c — the admin port's request-head parser, one case per rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "rtc/admin.h"
#include "rtc/error.h"

#define HEAD_MAX 8192

static int parse(const char *s, rtc_http1_request *req)
{
    return rtc_http1_parse_request(s, strlen(s), HEAD_MAX, req);
}

static void expect_proto(const char *s)
{
    rtc_http1_request req;
    int rc = parse(s, &req);
    if (rc != RTC_EPROTO)
        fail_msg("expected RTC_EPROTO, got %d for [%s]", rc, s);
}

static void test_valid_get(void **state)
{
    rtc_http1_request req;
    const char *s = "GET /metrics?x=1&y=%2F HTTP/1.1\r\nHost: localhost:9090\r\n"
                    "User-Agent: Prometheus/2.45\r\nAccept: text/plain\r\n\r\n";
    int n = parse(s, &req);
    assert_int_equal(n, (int)strlen(s));
    assert_string_equal(req.method, "GET");
    assert_string_equal(req.path, "/metrics"); /* query string dropped */
    assert_true(req.keep_alive);
    assert_int_equal(req.header_bytes, strlen(s));
}

static void test_valid_head_http10(void **state)
{
    rtc_http1_request req;
    assert_true(parse("HEAD /healthz HTTP/1.0\r\n\r\n", &req) > 0); /* 1.0 needs no Host */
    assert_string_equal(req.method, "HEAD");
    assert_false(req.keep_alive);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req) > 0);
    assert_true(req.keep_alive);
}

static void test_connection_close(void **state)
{
    rtc_http1_request req;
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n", &req) >
                0);
    assert_false(req.keep_alive);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nconnection:close\r\n\r\n", &req) > 0);
    assert_false(req.keep_alive);
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", &req) > 0);
    assert_true(req.keep_alive);
}

static void test_other_method_parses(void **state)
{
    /* Method policy (405) is the server's business, not the parser's. */
    rtc_http1_request req;
    assert_true(parse("DELETE /readyz HTTP/1.1\r\nHost: a\r\n\r\n", &req) > 0);
    assert_string_equal(req.method, "DELETE");
    assert_true(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &req) > 0);
    assert_string_equal(req.path, "*");
}

static void test_absolute_form(void **state)
{
    rtc_http1_request req;
    assert_true(parse("GET http://example.com:9090/readyz?x HTTP/1.1\r\nHost: a\r\n\r\n", &req) >
                0);
    assert_string_equal(req.path, "/readyz");
    assert_true(parse("GET http://example.com HTTP/1.1\r\nHost: a\r\n\r\n", &req) > 0);
    assert_string_equal(req.path, "/");
}

static void test_content_length_zero_ok(void **state)
{
    rtc_http1_request req;
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &req) > 0);
}

static void test_leading_crlf_ignored(void **state)
{
    rtc_http1_request req;
    const char *s = "\r\n\r\nGET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(parse(s, &req), (int)strlen(s));
    assert_string_equal(req.path, "/healthz");
}

static void test_pipelined(void **state)
{
    rtc_http1_request req;
    const char *a = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    const char *b = "HEAD /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    char both[256];
    snprintf(both, sizeof(both), "%s%s", a, b);
    int n1 = parse(both, &req);
    assert_int_equal(n1, (int)strlen(a));
    assert_string_equal(req.path, "/healthz");
    assert_true(req.keep_alive);
    int n2 = parse(both + n1, &req);
    assert_int_equal(n2, (int)strlen(b));
    assert_string_equal(req.method, "HEAD");
    assert_string_equal(req.path, "/readyz");
    assert_false(req.keep_alive);
}

static void test_partial_returns_zero(void **state)
{
    rtc_http1_request req;
    const char *s = "GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++) /* every prefix: need more */
        if (rtc_http1_parse_request(s, i, HEAD_MAX, &req) != 0)
            fail_msg("prefix of %zu bytes did not return 0", i);
    assert_int_equal(rtc_http1_parse_request(s, len, HEAD_MAX, &req), (int)len);
}

static void test_bad_method_chars(void **state)
{
    expect_proto("G(T / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_proto("GE@T / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_proto(" GET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_method_too_long(void **state)
{
    expect_proto("ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_garbage_rejected_early(void **state)
{
    rtc_http1_request req;
    /* A TLS ClientHello must not sit in the buffer until the timeout. */
    static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    assert_int_equal(rtc_http1_parse_request(hello, sizeof(hello) - 1, HEAD_MAX, &req), RTC_EPROTO);
}

static void test_missing_version(void **state)
{
    expect_proto("GET /\r\nHost: a\r\n\r\n");
    expect_proto("GET / \r\nHost: a\r\n\r\n");
}

static void test_missing_target(void **state)
{
    expect_proto("GET  HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_http2_version(void **state)
{
    expect_proto("GET / HTTP/2.0\r\nHost: a\r\n\r\n");
    expect_proto("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
}

static void test_bad_version_spelling(void **state)
{
    expect_proto("GET / http/1.1\r\nHost: a\r\n\r\n");
    expect_proto("GET / HTTP/1.1 \r\nHost: a\r\n\r\n");
    expect_proto("GET / HTTP/1.12\r\nHost: a\r\n\r\n");
    expect_proto("GET / HTTP/1.2\r\nHost: a\r\n\r\n");
}

static void test_bad_target(void **state)
{
    expect_proto("GET metrics HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_proto("GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_proto("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_proto("GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_proto("GET /%4 HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_proto("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_proto("GET ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_bare_lf(void **state)
{
    expect_proto("GET / HTTP/1.1\nHost: a\r\n\r\n");
    expect_proto("GET / HTTP/1.1\r\nHost: a\n\r\n");
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\n\n");
    expect_proto("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_bare_cr(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n");
}

static void test_header_without_colon(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nNoColonHere\r\n\r\n");
}

static void test_space_before_colon(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost : a\r\n\r\n");
}

static void test_empty_header_name(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n");
}

static void test_obs_fold(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n");
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n");
}

static void test_body_content_length(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 01\r\n\r\n");
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n");
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n");
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\n\r\n");
}

static void test_chunked(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: identity\r\n\r\n");
}

static void test_missing_host_http11(void **state)
{
    expect_proto("GET / HTTP/1.1\r\n\r\n");
}

static void test_duplicate_host(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
}

static void test_nul_byte(void **state)
{
    rtc_http1_request req;
    static const char in_value[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    static const char in_path[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
    static const char in_name[] = "GET / HTTP/1.1\r\nHost: a\r\nX\0Y: b\r\n\r\n";
    assert_int_equal(rtc_http1_parse_request(in_value, sizeof(in_value) - 1, HEAD_MAX, &req),
                     RTC_EPROTO);
    assert_int_equal(rtc_http1_parse_request(in_path, sizeof(in_path) - 1, HEAD_MAX, &req),
                     RTC_EPROTO);
    assert_int_equal(rtc_http1_parse_request(in_name, sizeof(in_name) - 1, HEAD_MAX, &req),
                     RTC_EPROTO);
}

static void test_control_char_in_value(void **state)
{
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n");
    expect_proto("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n");
}

static void test_obs_text_value_ok(void **state)
{
    rtc_http1_request req;
    assert_true(parse("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\t ok \r\n\r\n", &req) > 0);
}

static void test_too_big(void **state)
{
    rtc_http1_request req;
    char big[HEAD_MAX + 100];
    int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    memset(big + n, 'a', sizeof(big) - (size_t)n);
    /* Without an end within max_bytes: too big, however much has arrived. */
    assert_int_equal(rtc_http1_parse_request(big, HEAD_MAX, HEAD_MAX, &req), RTC_ETOOBIG);
    assert_int_equal(rtc_http1_parse_request(big, sizeof(big), HEAD_MAX, &req), RTC_ETOOBIG);
    assert_int_equal(rtc_http1_parse_request(big, HEAD_MAX - 1, HEAD_MAX, &req), 0);
}

static void test_end_just_past_limit(void **state)
{
    rtc_http1_request req;
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t len = strlen(s);
    assert_int_equal(rtc_http1_parse_request(s, len, len, &req), (int)len);
    assert_int_equal(rtc_http1_parse_request(s, len, len - 1, &req), RTC_ETOOBIG);
}

static void test_too_long_path(void **state)
{
    rtc_http1_request req;
    char s[2048];
    int n = snprintf(s, sizeof(s), "GET /");
    memset(s + n, 'p', 1100);
    snprintf(s + n + 1100, sizeof(s) - (size_t)n - 1100, " HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_int_equal(parse(s, &req), RTC_ETOOBIG);
    /* 1023 bytes fit; a long query string is not part of the path. */
    n = snprintf(s, sizeof(s), "GET /");
    memset(s + n, 'p', 1022);
    snprintf(s + n + 1022, sizeof(s) - (size_t)n - 1022, "?%0500d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    assert_true(parse(s, &req) > 0);
    assert_int_equal(strlen(req.path), 1023);
}

static void test_max_bytes_zero(void **state)
{
    rtc_http1_request req;
    assert_int_equal(rtc_http1_parse_request("", 0, 0, &req), RTC_ETOOBIG);
}

/* Regression cases found while fuzzing go below. */

#define T(fn) cmocka_unit_test(fn)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_valid_get),
        T(test_valid_head_http10),
        T(test_connection_close),
        T(test_other_method_parses),
        T(test_absolute_form),
        T(test_content_length_zero_ok),
        T(test_leading_crlf_ignored),
        T(test_pipelined),
        T(test_partial_returns_zero),
        T(test_bad_method_chars),
        T(test_method_too_long),
        T(test_garbage_rejected_early),
        T(test_missing_version),
        T(test_missing_target),
        T(test_http2_version),
        T(test_bad_version_spelling),
        T(test_bad_target),
        T(test_bare_lf),
        T(test_bare_cr),
        T(test_header_without_colon),
        T(test_space_before_colon),
        T(test_empty_header_name),
        T(test_obs_fold),
        T(test_body_content_length),
        T(test_chunked),
        T(test_missing_host_http11),
        T(test_duplicate_host),
        T(test_nul_byte),
        T(test_control_char_in_value),
        T(test_obs_text_value_ok),
        T(test_too_big),
        T(test_end_just_past_limit),
        T(test_too_long_path),
        T(test_max_bytes_zero),
    };
    return cmocka_run_group_tests_name("http1", tests, NULL, NULL);
}

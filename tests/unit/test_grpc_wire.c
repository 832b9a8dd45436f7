/* Unit tests for the I/O-free gRPC wire helpers: status names,
 * grpc-message percent-encoding, grpc-timeout and message framing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rtc/grpc.h"

/* ---- status ---- */

static void test_status_names_all_17(void **state)
{
    static const char *const want[] = {
        "OK",           "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",   "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",       "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    for (int i = 0; i < RTC_GRPC_STATUS_COUNT; i++) {
        assert_string_equal(rtc_grpc_status_name(i), want[i]);
        int code = -1;
        assert_int_equal(rtc_grpc_status_from_name(want[i], &code), 0);
        assert_int_equal(code, i);
    }
    assert_null(rtc_grpc_status_name(-1));
    assert_null(rtc_grpc_status_name(17));
    int code;
    assert_int_equal(rtc_grpc_status_from_name("not_found", &code), RTC_EINVAL);
    assert_int_equal(rtc_grpc_status_from_name(NULL, &code), RTC_EINVAL);
}

/* ---- grpc-message ---- */

static char *encode(const char *s)
{
    rtc_buf b = RTC_BUF_INIT;
    assert_int_equal(rtc_grpc_message_encode(s, strlen(s), &b), 0);
    rtc_buf_append(&b, "", 1);
    return (char *)b.data;
}

static char *decode(const char *s)
{
    rtc_buf b = RTC_BUF_INIT;
    assert_int_equal(rtc_grpc_message_decode(s, strlen(s), &b), 0);
    assert_int_equal(b.data[b.len], 0);
    return (char *)b.data;
}

static void test_message_encode_ascii_passthrough(void **state)
{
    char *e = encode("not found: room 42 (try again)");
    assert_string_equal(e, "not found: room 42 (try again)");
    free(e);
}

static void test_message_encode_escapes(void **state)
{
    char *e = encode("50% done\nnext\xc3\xa9");
    assert_string_equal(e, "50%25 done%0Anext%C3%A9");
    free(e);
}

static void test_message_decode_roundtrip(void **state)
{
    const char *in = "caf\xc3\xa9 \xe2\x9c\x93 100% \t\r\n~";
    char *e = encode(in);
    char *d = decode(e);
    assert_string_equal(d, in);
    free(e);
    free(d);
}

static void test_message_decode_malformed_kept(void **state)
{
    /* The spec: malformed percent sequences are left as they are. */
    char *d = decode("a%zzb%4%");
    assert_string_equal(d, "a%zzb%4%");
    free(d);
    d = decode("%41%6a");
    assert_string_equal(d, "Aj");
    free(d);
}

/* ---- grpc-timeout ---- */

static uint64_t tmo(const char *s, int want_rc)
{
    uint64_t ms = 12345;
    assert_int_equal(rtc_grpc_timeout_parse(s, strlen(s), &ms), want_rc);
    return ms;
}

static void test_timeout_units(void **state)
{
    assert_int_equal(tmo("1H", 0), 3600000);
    assert_int_equal(tmo("2M", 0), 120000);
    assert_int_equal(tmo("5S", 0), 5000);
    assert_int_equal(tmo("250m", 0), 250);
    assert_int_equal(tmo("1500u", 0), 2); /* rounded up */
    assert_int_equal(tmo("1n", 0), 1);
    assert_int_equal(tmo("0m", 0), 0);
    assert_int_equal(tmo("99999999S", 0), 99999999000ull > UINT32_MAX ? UINT32_MAX : 0);
}

static void test_timeout_rejects(void **state)
{
    tmo("", RTC_EINVAL);
    tmo("m", RTC_EINVAL);
    tmo("10", RTC_EINVAL);
    tmo("10s", RTC_EINVAL);    /* units are case-sensitive: s is not a unit */
    tmo("123456789S", RTC_EINVAL); /* 9 digits */
    tmo("-1S", RTC_EINVAL);
    tmo(" 1S", RTC_EINVAL);
    tmo("1.5S", RTC_EINVAL);
    uint64_t ms;
    assert_int_equal(rtc_grpc_timeout_parse(NULL, 0, &ms), RTC_EINVAL);
}

static void test_timeout_format_roundtrip(void **state)
{
    const uint64_t values[] = {0, 1, 999, 1000, 99999999, 100000000, 123456789012ull,
                               UINT32_MAX};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char out[16];
        size_t n = rtc_grpc_timeout_format(values[i], out);
        assert_int_equal(n, strlen(out));
        assert_true(n >= 2 && n <= 9);
        uint64_t back;
        assert_int_equal(rtc_grpc_timeout_parse(out, n, &back), 0);
        /* never shorter than asked; exact when it fits in 8 digits of ms */
        uint64_t capped = values[i] > UINT32_MAX ? UINT32_MAX : values[i];
        assert_true(back >= capped);
        if (values[i] <= 99999999)
            assert_int_equal(back, values[i]);
    }
}

/* ---- framing ---- */

typedef struct {
    int count;
    size_t lens[16];
    uint8_t first[16];
    bool compressed[16];
    int stop_after;
} sink;

static int on_msg(void *ud, const uint8_t *data, size_t len, bool compressed)
{
    sink *s = ud;
    if (s->count < 16) {
        s->lens[s->count] = len;
        s->first[s->count] = len ? data[0] : 0;
        s->compressed[s->count] = compressed;
    }
    s->count++;
    if (s->stop_after && s->count >= s->stop_after)
        return RTC_ECLOSED;
    return 0;
}

static size_t frame(uint8_t *out, uint8_t fill, uint32_t len)
{
    rtc_grpc_frame_header(out, false, len);
    memset(out + 5, fill, len);
    return 5 + len;
}

static void test_frame_header_layout(void **state)
{
    uint8_t h[5];
    rtc_grpc_frame_header(h, true, 0x01020304);
    const uint8_t want[5] = {1, 1, 2, 3, 4};
    assert_memory_equal(h, want, 5);
}

static void test_deframe_whole_and_split(void **state)
{
    uint8_t buf[256];
    size_t n = frame(buf, 'a', 10);
    n += frame(buf + n, 'b', 0);
    n += frame(buf + n, 'c', 100);
    /* Every split point, byte by byte: the same three messages. */
    for (size_t chunk = 1; chunk <= n; chunk++) {
        rtc_grpc_deframer d;
        rtc_grpc_deframer_init(&d, 1024);
        sink s = {0};
        for (size_t off = 0; off < n; off += chunk) {
            size_t take = n - off < chunk ? n - off : chunk;
            assert_int_equal(rtc_grpc_deframer_feed(&d, buf + off, take, on_msg, &s), 0);
        }
        assert_int_equal(s.count, 3);
        assert_int_equal(s.lens[0], 10);
        assert_int_equal(s.first[0], 'a');
        assert_int_equal(s.lens[1], 0);
        assert_int_equal(s.lens[2], 100);
        assert_int_equal(s.first[2], 'c');
        assert_true(rtc_grpc_deframer_idle(&d));
        rtc_grpc_deframer_free(&d);
    }
}

static void test_deframe_partial_not_idle(void **state)
{
    uint8_t buf[64];
    size_t n = frame(buf, 'x', 20);
    rtc_grpc_deframer d;
    rtc_grpc_deframer_init(&d, 1024);
    sink s = {0};
    assert_int_equal(rtc_grpc_deframer_feed(&d, buf, 3, on_msg, &s), 0);
    assert_false(rtc_grpc_deframer_idle(&d));
    assert_int_equal(rtc_grpc_deframer_feed(&d, buf + 3, 10, on_msg, &s), 0);
    assert_false(rtc_grpc_deframer_idle(&d));
    assert_int_equal(s.count, 0);
    assert_int_equal(rtc_grpc_deframer_feed(&d, buf + 13, n - 13, on_msg, &s), 0);
    assert_int_equal(s.count, 1);
    assert_true(rtc_grpc_deframer_idle(&d));
    rtc_grpc_deframer_free(&d);
}

static void test_deframe_too_big_before_buffering(void **state)
{
    uint8_t h[5];
    rtc_grpc_frame_header(h, false, 1025);
    rtc_grpc_deframer d;
    rtc_grpc_deframer_init(&d, 1024);
    sink s = {0};
    assert_int_equal(rtc_grpc_deframer_feed(&d, h, 5, on_msg, &s), RTC_ETOOBIG);
    assert_int_equal(s.count, 0);
    assert_int_equal(d.body.cap, 0); /* nothing was allocated for it */
    rtc_grpc_deframer_free(&d);
    /* Exactly the limit is fine. */
    uint8_t buf[1100];
    size_t n = frame(buf, 'z', 1024);
    rtc_grpc_deframer_init(&d, 1024);
    assert_int_equal(rtc_grpc_deframer_feed(&d, buf, n, on_msg, &s), 0);
    assert_int_equal(s.count, 1);
    rtc_grpc_deframer_free(&d);
}

static void test_deframe_huge_length_prefix(void **state)
{
    const uint8_t h[5] = {0, 0xff, 0xff, 0xff, 0xff};
    rtc_grpc_deframer d;
    rtc_grpc_deframer_init(&d, 4u << 20);
    sink s = {0};
    assert_int_equal(rtc_grpc_deframer_feed(&d, h, 5, on_msg, &s), RTC_ETOOBIG);
    rtc_grpc_deframer_free(&d);
}

static void test_deframe_bad_flag(void **state)
{
    const uint8_t h[6] = {2, 0, 0, 0, 1, 'a'};
    rtc_grpc_deframer d;
    rtc_grpc_deframer_init(&d, 1024);
    sink s = {0};
    assert_int_equal(rtc_grpc_deframer_feed(&d, h, 6, on_msg, &s), RTC_EPROTO);
    assert_int_equal(s.count, 0);
    rtc_grpc_deframer_free(&d);
}

static void test_deframe_compressed_flag_reported(void **state)
{
    const uint8_t h[6] = {1, 0, 0, 0, 1, 'a'};
    rtc_grpc_deframer d;
    rtc_grpc_deframer_init(&d, 1024);
    sink s = {0};
    assert_int_equal(rtc_grpc_deframer_feed(&d, h, 6, on_msg, &s), 0);
    assert_int_equal(s.count, 1);
    assert_true(s.compressed[0]);
    rtc_grpc_deframer_free(&d);
}

static void test_deframe_callback_stops(void **state)
{
    uint8_t buf[64];
    size_t n = frame(buf, 'a', 3);
    n += frame(buf + n, 'b', 3);
    rtc_grpc_deframer d;
    rtc_grpc_deframer_init(&d, 1024);
    sink s = {.stop_after = 1};
    assert_int_equal(rtc_grpc_deframer_feed(&d, buf, n, on_msg, &s), RTC_ECLOSED);
    assert_int_equal(s.count, 1);
    rtc_grpc_deframer_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names_all_17),
        cmocka_unit_test(test_message_encode_ascii_passthrough),
        cmocka_unit_test(test_message_encode_escapes),
        cmocka_unit_test(test_message_decode_roundtrip),
        cmocka_unit_test(test_message_decode_malformed_kept),
        cmocka_unit_test(test_timeout_units),
        cmocka_unit_test(test_timeout_rejects),
        cmocka_unit_test(test_timeout_format_roundtrip),
        cmocka_unit_test(test_frame_header_layout),
        cmocka_unit_test(test_deframe_whole_and_split),
        cmocka_unit_test(test_deframe_partial_not_idle),
        cmocka_unit_test(test_deframe_too_big_before_buffering),
        cmocka_unit_test(test_deframe_huge_length_prefix),
        cmocka_unit_test(test_deframe_bad_flag),
        cmocka_unit_test(test_deframe_compressed_flag_reported),
        cmocka_unit_test(test_deframe_callback_stops),
    };
    return cmocka_run_group_tests_name("grpc_wire", tests, NULL, NULL);
}

/* test_buf.c — rtc_buf: growth, printf, consume, overflow. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "rtc/buf.h"
#include "rtc/error.h"

static void test_init_empty(void **state)
{
    rtc_buf b = RTC_BUF_INIT;
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(rtc_buf_append(&b, NULL, 0), 0); /* nothing to copy: no allocation */
    assert_null(b.data);
    rtc_buf_free(&b);
}

static void test_append_grows(void **state)
{
    rtc_buf b = RTC_BUF_INIT;
    char chunk[100];
    memset(chunk, 'x', sizeof(chunk));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rtc_buf_append(&b, chunk, sizeof(chunk)), 0);
    assert_int_equal(b.len, 100000);
    assert_true(b.cap >= b.len);
    assert_true(b.cap < 2 * b.len + 64); /* geometric, not wasteful */
    assert_int_equal(b.data[99999], 'x');
    rtc_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
}

static void test_append_str(void **state)
{
    rtc_buf b = RTC_BUF_INIT;
    assert_int_equal(rtc_buf_append_str(&b, "hello "), 0);
    assert_int_equal(rtc_buf_append_str(&b, "world"), 0);
    assert_int_equal(b.len, 11);
    assert_memory_equal(b.data, "hello world", 11);
    rtc_buf_free(&b);
}

static void test_reserve_overflow(void **state)
{
    rtc_buf b = RTC_BUF_INIT;
    assert_int_equal(rtc_buf_append_str(&b, "abc"), 0);
    assert_int_equal(rtc_buf_reserve(&b, SIZE_MAX), RTC_ENOMEM);
    assert_int_equal(rtc_buf_reserve(&b, SIZE_MAX - 2), RTC_ENOMEM);
    assert_int_equal(b.len, 3); /* unchanged on failure */
    assert_memory_equal(b.data, "abc", 3);
    assert_int_equal(rtc_buf_reserve(&b, 10), 0);
    assert_true(b.cap - b.len >= 10);
    rtc_buf_free(&b);
}

static void test_printf(void **state)
{
    rtc_buf b = RTC_BUF_INIT;
    assert_int_equal(rtc_buf_printf(&b, "%d-%s", 42, "x"), 0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "42-x", 4);
    /* Larger than any spare room: takes the second vsnprintf path. */
    char big[5000];
    memset(big, 'y', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(rtc_buf_printf(&b, "[%s]", big), 0);
    assert_int_equal(b.len, 4 + 2 + 4999);
    assert_int_equal(b.data[5], 'y');
    assert_int_equal(b.data[b.len - 1], ']');
    assert_int_equal(rtc_buf_printf(&b, "%s", ""), 0);
    assert_int_equal(b.len, 4 + 2 + 4999);
    rtc_buf_free(&b);
}

static void test_consume_reset(void **state)
{
    rtc_buf b = RTC_BUF_INIT;
    assert_int_equal(rtc_buf_append_str(&b, "0123456789"), 0);
    rtc_buf_consume(&b, 3);
    assert_int_equal(b.len, 7);
    assert_memory_equal(b.data, "3456789", 7);
    rtc_buf_consume(&b, 0);
    assert_int_equal(b.len, 7);
    rtc_buf_consume(&b, 7);
    assert_int_equal(b.len, 0);
    assert_int_equal(rtc_buf_append_str(&b, "abc"), 0);
    size_t cap = b.cap;
    rtc_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, cap); /* memory kept */
    assert_non_null(b.data);
    rtc_buf_free(&b);
    rtc_buf_free(&b); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_empty), cmocka_unit_test(test_append_grows),
        cmocka_unit_test(test_append_str), cmocka_unit_test(test_reserve_overflow),
        cmocka_unit_test(test_printf),     cmocka_unit_test(test_consume_reset),
    };
    return cmocka_run_group_tests_name("buf", tests, NULL, NULL);
}

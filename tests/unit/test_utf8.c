/* rtc_utf8_valid: the ASCII fast path (8 bytes at a time) must agree with
 * the byte-by-byte definition at every position and length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rtc/utf8.h"

/* The definition: one sequence at a time. */
static bool reference(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = rtc_utf8_seq_len(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}

static void test_ascii_lengths(void **state)
{
    (void)state;
    char buf[40];
    memset(buf, 'a', sizeof(buf));
    for (size_t len = 0; len <= sizeof(buf); len++)
        assert_true(rtc_utf8_valid(buf, len));
}

/* A bad byte, a truncated sequence, a valid multibyte sequence and an
 * overlong at every offset of a 40-byte ASCII run, for every length. */
static void test_every_position(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t n;
        bool valid;
    } inserts[] = {
        {"\xff", 1, false},     {"\x80", 1, false},         {"\xc3", 1, false},
        {"\xc3\xa9", 2, true},  {"\xe2\x82\xac", 3, true},  {"\xf0\x9f\x98\x80", 4, true},
        {"\xc0\xaf", 2, false}, {"\xed\xa0\x80", 3, false}, {"\xf4\x90\x80\x80", 4, false},
        {"\x00", 1, true},
    };
    char buf[48];
    for (size_t k = 0; k < sizeof(inserts) / sizeof(inserts[0]); k++) {
        for (size_t at = 0; at + inserts[k].n <= 40; at++) {
            memset(buf, 'x', sizeof(buf));
            memcpy(buf + at, inserts[k].bytes, inserts[k].n);
            for (size_t len = 0; len <= 40; len++) {
                bool want = reference(buf, len);
                if (rtc_utf8_valid(buf, len) != want)
                    fail_msg("insert %zu at %zu, len %zu: want %d", k, at, len, want);
                if (len >= at + inserts[k].n)
                    assert_int_equal(want, inserts[k].valid);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ascii_lengths),
        cmocka_unit_test(test_every_position),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

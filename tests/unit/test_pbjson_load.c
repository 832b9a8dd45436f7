/* test_pbjson_load.c — rtc_pbjson_load against jansson's json_loadb.
 *
 * The loader promises json_loadb(JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)'s
 * result for every input. Each case here runs through both: they must agree
 * on accepting it, and accepted values must be json_equal. The cases are the
 * places where yajl and jansson differ unless load.c closes the gap
 * (surrogates, overlong UTF-8, \u0000, big numbers) and the JSON grammar's
 * edges; tests/fuzz/fuzz_json_load.c does the same on generated input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rtc/pbjson.h"

/* Loads text both ways; returns whether they accepted it (failing the test
 * when they disagree) and leaves rtc_pbjson_load's message in err. */
static bool both(const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *want = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    json_t *got = NULL;
    int rc = rtc_pbjson_load(text, len, 0, &got, err, errlen);
    if (!want != (rc != 0) || (want && !json_equal(want, got))) {
        char *a = want ? json_dumps(want, JSON_ENCODE_ANY) : NULL;
        char *b = got ? json_dumps(got, JSON_ENCODE_ANY) : NULL;
        print_error("input %.*s\n  jansson: %s %s\n  load:    %s (rc %d) %s\n", (int)len, text,
                    want ? "accepts" : "refuses", want ? a : jerr.text, rc ? "refuses" : "accepts",
                    rc, rc ? err : b);
        free(a);
        free(b);
        json_decref(want);
        json_decref(got);
        fail();
    }
    assert_true(rc == 0 || (rc == RTC_EINVAL && strstr(err, "at byte")) || strstr(err, "\\u"));
    json_decref(want);
    json_decref(got);
    return rc == 0;
}

#define ACCEPT(s)                                                                                  \
    do {                                                                                           \
        char e_[256];                                                                              \
        assert_true(both(s, sizeof(s) - 1, e_, sizeof(e_)));                                       \
    } while (0)
#define REFUSE(s)                                                                                  \
    do {                                                                                           \
        char e_[256];                                                                              \
        assert_false(both(s, sizeof(s) - 1, e_, sizeof(e_)));                                      \
    } while (0)

static void test_values(void **state)
{
    (void)state;
    ACCEPT("{}");
    ACCEPT("[]");
    ACCEPT(" \t\r\n{ \"a\" : [ 1 , 2.5 , -3 , true , false , null , \"x\" , { } , [ ] ] } \n");
    ACCEPT("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"m\",\"params\":{\"sdp\":\"v=0\\r\\no=- 1 2 "
           "IN IP4 127.0.0.1\\r\\n\"}}");
    ACCEPT("1");
    ACCEPT("\"top\"");
    ACCEPT("null");
    ACCEPT("true");
    ACCEPT("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]");
    ACCEPT("[\"\\u00e9\\u20AC\\ud83d\\ude00\", \"é€😀\"]");
    ACCEPT("[\"\\\\u0000\"]");                   /* an escaped backslash, then the text u0000 */
    ACCEPT("{\"a\":{\"a\":1},\"b\":{\"a\":2}}"); /* same key in different objects */
    ACCEPT("{\"\":1}");
}

static void test_numbers(void **state)
{
    (void)state;
    ACCEPT("[0, -0, 1e5, 1E+2, 1.5e-3, -0.0, 123456789012]");
    ACCEPT("[9223372036854775807, -9223372036854775808]");
    ACCEPT("[1e308, 1e-400, 4.9e-324]"); /* underflow is not an error in jansson */
    ACCEPT("0.0000000000000000000000000000000000000000000000000000000000000000000000000000001");
    REFUSE("[9223372036854775808]");
    REFUSE("[-9223372036854775809]");
    REFUSE("[123456789012345678901234567890]");
    REFUSE("[1e400]");
    REFUSE("[-1e400]");
    REFUSE("[01]");
    REFUSE("[1.]");
    REFUSE("[.5]");
    REFUSE("[+1]");
    REFUSE("[1e]");
    REFUSE("[-]");
    REFUSE("[NaN]");
    REFUSE("[Infinity]");
    REFUSE("[0x10]");
}

static void test_syntax(void **state)
{
    (void)state;
    REFUSE("");
    REFUSE("   ");
    REFUSE("{");
    REFUSE("{\"a\":1");
    REFUSE("{\"a\":1}}");
    REFUSE("{\"a\":1} x");
    REFUSE("1 2");
    REFUSE("\v1");
    REFUSE("[1,\f2]");
    REFUSE("\"pt\"\""); /* yajl alone accepts a string then an unfinished one */
    REFUSE("[1] \"");
    REFUSE("{} \"abc");
    ACCEPT("[1] \r\n\t ");
    ACCEPT("12 ");
    REFUSE("[1,]");
    REFUSE("{\"a\":1,}");
    REFUSE("{'a':1}");
    REFUSE("{a:1}");
    REFUSE("[1] // c");
    REFUSE("/* c */ [1]");
    REFUSE("[\"\\x\"]");
    REFUSE("[\"\\u12\"]");
    REFUSE("[\"a\nb\"]"); /* raw control character */
    REFUSE("[\"\t\"]");
    REFUSE("[tru]");
    REFUSE("\xEF\xBB\xBF[1]"); /* byte order mark */
    REFUSE("{\"a\":1,\"a\":2}");
    REFUSE("{\"x\":{\"b\":[],\"b\":{}}}");
    char nul[] = "[\"a\0b\"]";
    char e[256];
    assert_false(both(nul, sizeof(nul) - 1, e, sizeof(e)));
    /* A raw NUL right after a number or a keyword: jansson takes it for the
     * end of the text and accepts; the loader refuses (pbjson.h). */
    static const char *const after[] = {"8", "[1", "true", "{\"a\":null"};
    for (size_t i = 0; i < sizeof(after) / sizeof(after[0]); i++) {
        char t[32];
        size_t k = strlen(after[i]);
        memcpy(t, after[i], k);
        t[k] = '\0';
        json_t *j = NULL;
        assert_int_equal(rtc_pbjson_load(t, k + 1, 0, &j, e, sizeof(e)), RTC_EINVAL);
        assert_null(j);
    }
}

static void test_unicode(void **state)
{
    (void)state;
    REFUSE("[\"\\u0000\"]");
    REFUSE("{\"a\\u0000b\":1}");
    REFUSE("[\"\\ud800\"]");          /* lone high surrogate (yajl: '?') */
    REFUSE("[\"\\ud800x\"]");         /* high surrogate, no escape after it */
    REFUSE("[\"\\ud800\\u0041\"]");   /* high surrogate + a non-low escape */
    REFUSE("[\"\\ud800\\ud800\"]");   /* two high surrogates */
    REFUSE("[\"\\udc00\"]");          /* lone low surrogate */
    REFUSE("[\"\xC0\x80\"]");         /* overlong NUL */
    REFUSE("[\"\xE0\x80\xAF\"]");     /* overlong '/' */
    REFUSE("[\"\xED\xA0\x80\"]");     /* a surrogate encoded in UTF-8 */
    REFUSE("[\"\xF4\x90\x80\x80\"]"); /* above U+10FFFF */
    REFUSE("[\"\xC3\"]");             /* truncated sequence */
    REFUSE("[\"\x80\"]");             /* stray continuation byte */
    REFUSE("{\"\xFF\":1}");           /* invalid key */
    REFUSE("[1]\xFF");
    ACCEPT("[\"\xF4\x8F\xBF\xBF\"]"); /* U+10FFFF */
}

/* Strings and keys past the inline buffers, numbers past the small one. */
static void test_long(void **state)
{
    (void)state;
    size_t n = 70000;
    char *t = malloc(n + 1024);
    assert_non_null(t);
    size_t k = 0;
    k += (size_t)sprintf(t + k, "{\"");
    for (size_t i = 0; i < 300; i++)
        t[k++] = 'k';
    k += (size_t)sprintf(t + k, "\":\"");
    while (k < n)
        k += (size_t)sprintf(t + k, "a=x\\r\\n");
    k += (size_t)sprintf(t + k, "\",\"n\":0.");
    for (size_t i = 0; i < 100; i++)
        t[k++] = '1';
    t[k++] = '}';
    char e[256];
    assert_true(both(t, k, e, sizeof(e)));
    free(t);
}

static void test_depth(void **state)
{
    (void)state;
    json_t *j = NULL;
    char e[256];
    assert_int_equal(rtc_pbjson_load("[[[]]]", 6, 3, &j, e, sizeof(e)), 0);
    json_decref(j);
    assert_int_equal(rtc_pbjson_load("{\"a\":[{}]}", 10, 3, &j, e, sizeof(e)), 0);
    json_decref(j);
    assert_int_equal(rtc_pbjson_load("[[[[]]]]", 8, 3, &j, e, sizeof(e)), RTC_ETOOBIG);
    assert_null(j);
    assert_non_null(strstr(e, "nested deeper than 3 levels"));
    /* brackets inside strings do not count */
    assert_int_equal(rtc_pbjson_load("[\"[[[[[[\"]", 10, 1, &j, e, sizeof(e)), 0);
    json_decref(j);
    /* 100,000 brackets: refused at the limit, not after reading them all */
    size_t n = 100000;
    char *deep = malloc(n);
    assert_non_null(deep);
    memset(deep, '[', n);
    assert_int_equal(rtc_pbjson_load(deep, n, 32, &j, e, sizeof(e)), RTC_ETOOBIG);
    assert_non_null(strstr(e, "at byte 33"));
    /* The default is 2048 containers, jansson's limit; jansson counts the
     * scalar inside them too, so "1" inside 2048 arrays passes here only
     * (as pbjson.h says). */
    assert_int_equal(rtc_pbjson_load(deep, n, 0, &j, e, sizeof(e)), RTC_ETOOBIG);
    memset(deep, '[', 2048);
    memset(deep + 2048, ']', 2048);
    assert_int_equal(rtc_pbjson_load(deep, 4096, 0, &j, e, sizeof(e)), 0);
    json_decref(j);
    memset(deep, '[', 2048);
    deep[2048] = '1';
    memset(deep + 2049, ']', 2048);
    assert_int_equal(rtc_pbjson_load(deep, 4097, 0, &j, e, sizeof(e)), 0);
    json_decref(j);
    json_error_t jerr;
    assert_null(json_loadb(deep, 4097, JSON_DECODE_ANY, &jerr));
    memset(deep, '[', 2049);
    memset(deep + 2049, ']', 2049);
    assert_int_equal(rtc_pbjson_load(deep, 4098, 0, &j, e, sizeof(e)), RTC_ETOOBIG);
    free(deep);
}

static void test_messages(void **state)
{
    (void)state;
    json_t *j = NULL;
    char e[256];
    assert_int_equal(rtc_pbjson_load("{\"a\":1,\"a\":2}", 13, 0, &j, e, sizeof(e)), RTC_EINVAL);
    assert_string_equal(e, "duplicate object key \"a\" (at byte 12)");
    assert_int_equal(rtc_pbjson_load("[\"\\udc01\"]", 10, 0, &j, e, sizeof(e)), RTC_EINVAL);
    assert_string_equal(e, "invalid Unicode '\\uDC01'");
    assert_int_equal(rtc_pbjson_load("[1,]", 4, 0, &j, e, sizeof(e)), RTC_EINVAL);
    assert_non_null(strstr(e, "(at byte"));
    assert_null(strstr(e, "parse error")); /* the caller says that */
    assert_int_equal(rtc_pbjson_load("[99999999999999999999]", 22, 0, &j, e, sizeof(e)),
                     RTC_EINVAL);
    assert_non_null(strstr(e, "too big integer: 99999999999999999999"));
    /* A long key in a message is cut at a character boundary: "a" first, so
     * that the 40-byte cut falls inside an "é". */
    char text[200];
    const char *key = "aééééééééééééééééééééééééé";
    int n = snprintf(text, sizeof(text), "{\"%s\":1,\"%s\":2}", key, key);
    assert_int_equal(rtc_pbjson_load(text, (size_t)n, 0, &j, e, sizeof(e)), RTC_EINVAL);
    json_t *as_json = json_string(e); /* NULL unless e is valid UTF-8 */
    assert_non_null(as_json);
    json_decref(as_json);
    /* 39 bytes: "a" and 19 of the 25 "é"; byte 40 would split the 20th */
    assert_non_null(strstr(e, "duplicate object key \"a"
                              "éééééééééé"
                              "ééééééééé"
                              "\" (at"));
    /* ... and so is the whole message when the caller's buffer is small */
    for (size_t len = 1; len < 80; len++) {
        char small[80];
        assert_int_equal(rtc_pbjson_load(text, (size_t)n, 0, &j, small, len), RTC_EINVAL);
        as_json = json_string(small);
        if (!as_json)
            fail_msg("errlen %zu: message not UTF-8: %s", len, small);
        json_decref(as_json);
    }
    /* err may be NULL */
    assert_int_equal(rtc_pbjson_load("x", 1, 0, &j, NULL, 0), RTC_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),   cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_syntax),   cmocka_unit_test(test_unicode),
        cmocka_unit_test(test_long),     cmocka_unit_test(test_depth),
        cmocka_unit_test(test_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* fuzz_json_load.c — libFuzzer target for rtc_pbjson_load (the bridge's
 * JSON parser), differential against jansson's json_loadb.
 *
 * The loader promises what json_loadb(JSON_REJECT_DUPLICATES |
 * JSON_DECODE_ANY) gives: for every input both must accept or both refuse,
 * an accepted value must be json_equal to jansson's, and a refusal must say
 * why. Inputs nested near jansson's depth limit are skipped: jansson counts
 * a scalar inside 2048 containers as too deep, the loader counts
 * containers only. jansson takes a raw NUL right after a number or a
 * keyword for the end of the text ("8\0", "[1\0]", "true\0" pass); the
 * loader refuses every raw NUL, so with one in the
 * input only "the loader accepts ⇒ jansson accepts the same" is checked.
 * A second pass with a small max_depth checks the limit:
 * accepted means nested no deeper than it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/pbjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_json_load: %s:%d: %s\n", __FILE__, __LINE__, #c);                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static unsigned depth(const json_t *j)
{
    unsigned d = 0;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            unsigned e = depth(v);
            d = e > d ? e : d;
        }
        return d + 1;
    }
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            unsigned e = depth(v);
            d = e > d ? e : d;
        }
        return d + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    json_error_t jerr;
    json_t *want = json_loadb(text, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    json_t *got = NULL;
    char err[256] = "";
    int rc = rtc_pbjson_load(text, size, 0, &got, err, sizeof(err));
    if (json_error_code(&jerr) == json_error_stack_overflow || rc == RTC_ETOOBIG) {
        json_decref(want);
        json_decref(got);
        return 0;
    }
    CHECK(rc == 0 || rc == RTC_EINVAL || rc == RTC_ENOMEM);
    if (rc == RTC_ENOMEM) {
        json_decref(want);
        return 0;
    }
    if (memchr(data, 0, size) && rc && want) {
        json_decref(want);
        return 0;
    }
    CHECK(!want == (rc != 0));
    if (rc) {
        CHECK(got == NULL);
        CHECK(err[0] != '\0');
        json_t *as_json = json_string(err); /* the message is valid UTF-8 */
        CHECK(as_json != NULL);
        json_decref(as_json);
        return 0;
    }
    CHECK(json_equal(want, got));
    unsigned d = depth(got);
    json_decref(want);
    json_decref(got);
    /* the limit: accepted at max_depth d, refused as too deep below it */
    if (d > 0) {
        CHECK(rtc_pbjson_load(text, size, d, &got, err, sizeof(err)) == 0);
        json_decref(got);
        CHECK(rtc_pbjson_load(text, size, d - (d > 1), &got, err, sizeof(err)) ==
              (d > 1 ? RTC_ETOOBIG : 0));
        if (d == 1)
            json_decref(got);
    }
    return 0;
}

/* load.c — JSON text → jansson values, lexed by yajl.
 *
 * json_loadb reads its input one byte at a time through a stream callback
 * and a UTF-8 decoder, then copies each string byte by byte: on the
 * bridge's usual request (a 1 KiB SDP in a 1.2 KiB message) that is ~22 µs
 * on the 2-core VM, a third of a bridge's CPU under load. yajl lexes a
 * string in one table-driven pass; building the same jansson values from
 * its callbacks takes ~5 µs for that message (bench/json/bench_json.c).
 *
 * The result is exactly what json_loadb(JSON_REJECT_DUPLICATES |
 * JSON_DECODE_ANY) gives, value for value, and the same inputs are refused
 * but for one jansson quirk below (tests/fuzz/fuzz_json_load.c compares the
 * two on every input). Where
 * yajl is laxer than jansson, this file closes the gap:
 *  - yajl checks only the shape of UTF-8 sequences (it lets overlong forms
 *    and UTF-16 surrogates through): its check is off and every string and
 *    key is checked with rtc_utf8_valid (shortest form, no surrogates);
 *  - yajl turns a \u escape of a lone high surrogate into '?' and pairs a
 *    high surrogate with any following \u escape: escapes() checks every
 *    \u escape of the raw text first, with jansson's rules and messages;
 *  - \u0000 is refused (jansson's default without JSON_ALLOW_NUL), so keys
 *    and strings are C strings;
 *  - yajl skips \v and \f as whitespace: escapes() refuses them;
 *  - a raw NUL byte is refused anywhere (jansson takes one right after a
 *    number or a keyword for the end of the text: "8\0", "[1\0]" and
 *    "true\0" pass there);
 *  - numbers arrive as text: integers that do not fit json_int_t and reals
 *    that overflow a double are refused, as jansson does. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "pbjson_int.h"
#include "rtc/core.h"
#include "rtc/utf8.h"

/* jansson's JSON_PARSER_MAX_DEPTH, counted here in containers: jansson
 * also counts the scalar inside them, so a scalar inside exactly 2048
 * arrays passes here and not there (tests/unit/test_pbjson_load.c). */
#define LOAD_DEFAULT_DEPTH 2048
#define LOAD_INLINE_DEPTH  32

typedef struct loader {
    yajl_handle h;
    json_t *root;
    size_t root_end; /* offset just past the root value (SIZE_MAX: the end) */
    bool finishing;  /* in yajl_complete_parse: offsets are not the text's */
    json_t **stack;  /* open containers, innermost last (borrowed) */
    json_t *inline_stack[LOAD_INLINE_DEPTH];
    unsigned depth, cap, max_depth;
    char *key; /* the pending object key, NUL-terminated */
    size_t keycap;
    char inline_key[64];
    int rc;        /* set when a callback cancelled the parse */
    char why[160]; /* its message */
} loader;

/* A message that filled the caller's buffer may end inside a character:
 * drop that partial character, so err stays UTF-8 whatever its size. */
static void utf8_cut(char *err)
{
    size_t n = strlen(err);
    size_t start = n;
    while (start > 0 && ((unsigned char)err[start - 1] & 0xC0) == 0x80)
        start--;
    if (start > 0 && (unsigned char)err[start - 1] >= 0xC0) {
        unsigned char lead = (unsigned char)err[start - 1];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2;
        if (n - (start - 1) < need)
            err[start - 1] = '\0';
    }
}

/* Sets the error; arg (UTF-8 or ASCII) is shown up to 40 bytes, cut at a
 * character boundary so the message stays UTF-8 (it goes back to clients
 * inside JSON). Returns 0: the callback's "cancel". */
static int cancel(loader *l, int rc, const char *what, const char *arg, size_t len,
                  const char *after)
{
    if (len > 40) {
        len = 40;
        while (len > 0 && ((unsigned char)arg[len] & 0xC0) == 0x80)
            len--;
    }
    l->rc = rc;
    snprintf(l->why, sizeof(l->why), "%s%.*s%s", what, (int)len, arg ? arg : "", after);
    return 0;
}

/* The root value is complete: where it ends, so that what follows can be
 * checked (yajl lets an unfinished token after the root pass: `"a""`). */
static void root_done(loader *l)
{
    l->root_end = l->finishing ? SIZE_MAX : yajl_get_bytes_consumed(l->h);
}

/* Attach v (a new reference) to the open container, or make it the root. */
static int add(loader *l, json_t *v)
{
    if (!v) {
        l->rc = RTC_ENOMEM;
        return 0;
    }
    if (l->depth == 0) {
        l->root = v;
        if (!json_is_object(v) && !json_is_array(v))
            root_done(l);
        return 1;
    }
    json_t *top = l->stack[l->depth - 1];
    if (json_is_array(top)) {
        if (json_array_append_new(top, v)) {
            l->rc = RTC_ENOMEM;
            return 0;
        }
        return 1;
    }
    if (json_object_get(top, l->key)) {
        json_decref(v);
        return cancel(l, RTC_EINVAL, "duplicate object key \"", l->key, strlen(l->key), "\"");
    }
    if (json_object_set_new_nocheck(top, l->key, v)) {
        l->rc = RTC_ENOMEM;
        return 0;
    }
    return 1;
}

static int open_container(loader *l, json_t *v)
{
    if (l->depth >= l->max_depth) {
        json_decref(v);
        l->rc = RTC_ETOOBIG;
        snprintf(l->why, sizeof(l->why), "nested deeper than %u levels", l->max_depth);
        return 0;
    }
    if (l->depth == l->cap) {
        unsigned cap = l->cap * 2 > l->max_depth ? l->max_depth : l->cap * 2;
        json_t **s = malloc(cap * sizeof(*s));
        if (!s) {
            json_decref(v);
            l->rc = RTC_ENOMEM;
            return 0;
        }
        memcpy(s, l->stack, l->depth * sizeof(*s));
        if (l->stack != l->inline_stack)
            free(l->stack);
        l->stack = s;
        l->cap = cap;
    }
    if (!add(l, v))
        return 0;
    l->stack[l->depth++] = v;
    return 1;
}

static int on_null(void *ctx)
{
    return add(ctx, json_null());
}

static int on_boolean(void *ctx, int b)
{
    return add(ctx, json_boolean(b));
}

static int on_number(void *ctx, const char *s, size_t len)
{
    loader *l = ctx;
    char small[64];
    char *text = small;
    if (len >= sizeof(small) && !(text = malloc(len + 1))) {
        l->rc = RTC_ENOMEM;
        return 0;
    }
    memcpy(text, s, len);
    text[len] = '\0';
    int ok;
    errno = 0;
    if (strpbrk(text, ".eE")) {
        double d = strtod(text, NULL);
        ok = errno == ERANGE && isinf(d)
                 ? cancel(l, RTC_EINVAL, "real number overflow: ", text, len, "")
                 : add(l, json_real(d));
    } else {
        long long i = strtoll(text, NULL, 10);
        ok = errno == ERANGE
                 ? cancel(l, RTC_EINVAL,
                          text[0] == '-' ? "too big negative integer: " : "too big integer: ", text,
                          len, "")
                 : add(l, json_integer((json_int_t)i));
    }
    if (text != small)
        free(text);
    return ok;
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
    loader *l = ctx;
    if (!rtc_utf8_valid((const char *)s, len))
        return cancel(l, RTC_EINVAL, "a string is not valid UTF-8", NULL, 0, "");
    return add(l, json_stringn_nocheck((const char *)s, len));
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, json_object());
}

static int on_map_key(void *ctx, const unsigned char *s, size_t len)
{
    loader *l = ctx;
    if (!rtc_utf8_valid((const char *)s, len))
        return cancel(l, RTC_EINVAL, "an object key is not valid UTF-8", NULL, 0, "");
    if (len >= l->keycap) {
        char *k = malloc(len + 1);
        if (!k) {
            l->rc = RTC_ENOMEM;
            return 0;
        }
        if (l->key != l->inline_key)
            free(l->key);
        l->key = k;
        l->keycap = len + 1;
    }
    memcpy(l->key, s, len);
    l->key[len] = '\0';
    return 1;
}

static int on_end(void *ctx)
{
    loader *l = ctx;
    if (--l->depth == 0)
        root_done(l);
    return 1;
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, json_array());
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_map_key,
    .yajl_end_map = on_end,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end,
};

static int hex4(const char *p, const char *end, unsigned *out)
{
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int d = rtc_hex_digit((unsigned char)p[i]);
        if (d < 0)
            return -1;
        v = v << 4 | (unsigned)d;
    }
    *out = v;
    return 0;
}

/* Every \u escape of the raw text by jansson's rules (and no \v, \f). Backslashes only
 * occur inside strings in valid JSON; anywhere else yajl refuses the text,
 * so scanning all of it is enough. Malformed escapes are left to yajl. */
static int escapes(const char *text, size_t len, char *why, size_t whylen)
{
    const char *p = text, *end = text + len;
    /* yajl also skips \v and \f as whitespace; JSON has neither, and raw in
     * a string they are control characters: refused anywhere. */
    const char *vt = memchr(text, '\v', len), *ff = memchr(text, '\f', len);
    if (vt || ff) {
        const char *at = !vt ? ff : !ff ? vt : vt < ff ? vt : ff;
        snprintf(why, whylen, "invalid character 0x%02X (at byte %zu)", (unsigned char)*at,
                 (size_t)(at - text));
        return -1;
    }
    while ((p = memchr(p, '\\', (size_t)(end - p))) && end - p >= 2) {
        unsigned u, lo;
        if (p[1] != 'u' || hex4(p + 2, end, &u)) {
            p += 2; /* any other escape: the escaped byte is not a backslash */
            continue;
        }
        p += 6;
        if (u == 0) {
            snprintf(why, whylen, "\\u0000 is not allowed");
            return -1;
        }
        if (u >= 0xDC00 && u <= 0xDFFF) {
            snprintf(why, whylen, "invalid Unicode '\\u%04X'", u);
            return -1;
        }
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) ||
                lo < 0xDC00 || lo > 0xDFFF) {
                snprintf(why, whylen, "invalid Unicode '\\u%04X'", u);
                return -1;
            }
            p += 6;
        }
    }
    return 0;
}

int rtc_pbjson_load(const char *text, size_t len, unsigned max_depth, json_t **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    loader l = {
        .stack = NULL,
        .cap = LOAD_INLINE_DEPTH,
        .max_depth = max_depth ? max_depth : LOAD_DEFAULT_DEPTH,
        .keycap = sizeof(l.inline_key),
    };
    l.stack = l.inline_stack;
    l.key = l.inline_key;
    if (escapes(text, len, l.why, sizeof(l.why))) {
        if (err && errlen)
            snprintf(err, errlen, "%s", l.why);
        return RTC_EINVAL;
    }
    yajl_handle h = l.h = yajl_alloc(&callbacks, NULL, &l);
    if (!h)
        return RTC_ENOMEM;
    yajl_config(h, yajl_dont_validate_strings, 1); /* rtc_utf8_valid is stricter */
    yajl_status st = yajl_parse(h, (const unsigned char *)text, len);
    size_t at = yajl_get_bytes_consumed(h);
    if (st == yajl_status_ok) {
        l.finishing = true;
        st = yajl_complete_parse(h);
        at = len;
    }
    int rc = 0;
    if (st == yajl_status_ok && l.root_end != SIZE_MAX) {
        size_t i = l.root_end;
        while (i < len && strchr(" \t\r\n", text[i]) && text[i])
            i++;
        if (i < len) {
            rc = RTC_EINVAL;
            if (err && errlen)
                snprintf(err, errlen, "trailing garbage (at byte %zu)", i);
        }
    }
    if (st == yajl_status_client_canceled) {
        rc = l.rc ? l.rc : RTC_EINVAL;
        if (err && errlen)
            snprintf(err, errlen, "%s (at byte %zu)", rc == RTC_ENOMEM ? "out of memory" : l.why,
                     at);
    } else if (st != yajl_status_ok) {
        rc = RTC_EINVAL;
        if (err && errlen) {
            unsigned char *m = yajl_get_error(h, 0, NULL, 0);
            const char *msg = m ? (const char *)m : "invalid JSON";
            if (strncmp(msg, "parse error: ", 13) == 0)
                msg += 13; /* the caller says "parse error" already */
            size_t n = strcspn(msg, "\n");
            while (n > 0 && (msg[n - 1] == '.' || msg[n - 1] == ' '))
                n--;
            snprintf(err, errlen, "%.*s (at byte %zu)", (int)n, msg, at);
            if (m)
                yajl_free_error(h, m);
        }
    }
    yajl_free(h);
    if (rc && err && errlen)
        utf8_cut(err);
    if (l.stack != l.inline_stack)
        free(l.stack);
    if (l.key != l.inline_key)
        free(l.key);
    if (rc) {
        json_decref(l.root);
        return rc;
    }
    *out = l.root;
    return 0;
}

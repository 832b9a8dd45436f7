/* log.c — structured JSON log lines.
 *
 * Each call builds one JSON object (jansson does the escaping), appends a
 * newline and hands the whole line to a single fwrite + fflush, so lines from
 * one process never interleave and a crash loses at most the line being
 * written. Strings are sanitised to valid UTF-8 first: jansson refuses
 * invalid UTF-8, and a log line must never be dropped or be invalid JSON
 * because a peer sent odd bytes. */
#include "rtc/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "rtc/buf.h"
#include "rtc/error.h"
#include "rtc/utf8.h"

static struct {
    char service[128];
    rtc_log_level min_level;
    FILE *out; /* NULL = stderr (stderr is not a constant initialiser) */
} g_log = {"", RTC_LOG_INFO, NULL};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void rtc_log_init(const char *service, rtc_log_level min_level)
{
    snprintf(g_log.service, sizeof(g_log.service), "%s", service ? service : "");
    g_log.min_level = min_level;
}

void rtc_log_set_level(rtc_log_level min_level)
{
    g_log.min_level = min_level;
}

void rtc_log_set_output(FILE *out)
{
    g_log.out = out;
}

int rtc_log_enabled(rtc_log_level level)
{
    return level >= g_log.min_level;
}

int rtc_log_level_parse(const char *s, rtc_log_level *out)
{
    if (!s)
        return RTC_EINVAL;
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (rtc_log_level)i;
            return 0;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = RTC_LOG_WARN;
        return 0;
    }
    return RTC_EINVAL;
}

const char *rtc_log_level_name(rtc_log_level level)
{
    if ((int)level < 0 || (size_t)level >= sizeof(level_names) / sizeof(level_names[0]))
        return "unknown";
    return level_names[level];
}

/* A JSON string from arbitrary bytes; invalid UTF-8 becomes U+FFFD. */
static json_t *safe_string(const char *s, rtc_buf *scratch)
{
    size_t len = strlen(s);
    if (rtc_utf8_valid(s, len))
        return json_stringn_nocheck(s, len);
    rtc_buf_reset(scratch);
    if (rtc_utf8_sanitize(scratch, s, len) < 0)
        return NULL;
    return json_stringn_nocheck((const char *)scratch->data, scratch->len);
}

/* Add key → value keeping every field: a key that is already present (a
 * caller's "level" or "msg", or a repeated key) gets a '_' prefix rather
 * than overwriting the reserved fields or silently dropping data. */
static int add_field(json_t *obj, const char *key, json_t *val, rtc_buf *scratch)
{
    int rc = RTC_ENOMEM;
    if (!val)
        return RTC_ENOMEM;
    rtc_buf_reset(scratch);
    if (rtc_utf8_sanitize(scratch, key, strlen(key)) < 0 || rtc_buf_append(scratch, "", 1) < 0)
        goto out;
    for (int tries = 0; json_object_get(obj, (const char *)scratch->data); tries++) {
        if (tries == 8) { /* pathological caller: drop the field, keep the line */
            json_decref(val);
            return 0;
        }
        if (rtc_buf_reserve(scratch, 1) < 0)
            goto out;
        memmove(scratch->data + 1, scratch->data, scratch->len);
        scratch->data[0] = '_';
        scratch->len++;
    }
    if (json_object_set_new_nocheck(obj, (const char *)scratch->data, val) < 0)
        return RTC_ENOMEM; /* jansson consumed val */
    return 0;
out:
    json_decref(val);
    return rc;
}

static int dump_cb(const char *chunk, size_t size, void *data)
{
    return rtc_buf_append(data, chunk, size) < 0 ? -1 : 0;
}

static void format_ts(char *out, size_t outlen)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, outlen - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

void rtc_log(rtc_log_level level, const char *msg, ...)
{
    if (!rtc_log_enabled(level))
        return;
    FILE *out = g_log.out ? g_log.out : stderr;
    rtc_buf scratch = RTC_BUF_INIT, line = RTC_BUF_INIT;
    json_t *obj = json_object();
    char ts[40];
    int ok = obj != NULL;

    format_ts(ts, sizeof(ts));
    ok = ok && add_field(obj, "ts", json_string(ts), &scratch) == 0;
    ok = ok && add_field(obj, "level", json_string(rtc_log_level_name(level)), &scratch) == 0;
    ok = ok && add_field(obj, "service", safe_string(g_log.service, &scratch), &scratch) == 0;
    ok = ok && add_field(obj, "msg", safe_string(msg ? msg : "", &scratch), &scratch) == 0;

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key)
            break;
        const char *val = va_arg(ap, const char *);
        if (!ok)
            continue; /* keep consuming so the va_list stays in step */
        json_t *jv = val ? safe_string(val, &scratch) : json_null();
        ok = add_field(obj, key, jv, &scratch) == 0;
    }
    va_end(ap);

    if (ok)
        ok = json_dump_callback(obj, dump_cb, &line, JSON_COMPACT) == 0 &&
             rtc_buf_append(&line, "\n", 1) == 0;
    if (ok) {
        fwrite(line.data, 1, line.len, out);
    } else {
        /* Out of memory: still say something, in valid JSON. */
        static const char oom[] =
            "{\"level\":\"error\",\"msg\":\"log line lost: out of memory\"}\n";
        fwrite(oom, 1, sizeof(oom) - 1, out);
    }
    fflush(out);
    json_decref(obj);
    rtc_buf_free(&scratch);
    rtc_buf_free(&line);
}

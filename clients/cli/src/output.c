/* output.c — what rtcctl prints: aligned tables and key/value blocks for
 * people, canonical proto3 JSON (rtc_pbjson over the build's descriptor
 * set) for programs.
 *
 * Text that other users chose (identities, display names, metadata, data)
 * is never written raw to a terminal: it is made valid UTF-8 and control
 * characters become '?', so a participant cannot move the cursor or forge
 * lines in an operator's output. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "rtc/utf8.h"
#include "rtc_proto_fds.h"

#include "cli_int.h"

/* ---- tables ------------------------------------------------------------------ */

static char *clean_copy(const char *s)
{
    rtc_buf b = RTC_BUF_INIT;
    if (rtc_utf8_sanitize(&b, s ? s : "", s ? strlen(s) : 0) < 0 || rtc_buf_append(&b, "", 1) < 0) {
        rtc_buf_free(&b);
        return NULL;
    }
    for (size_t i = 0; i + 1 < b.len; i++)
        if (b.data[i] < 0x20 || b.data[i] == 0x7f)
            b.data[i] = '?';
    return (char *)b.data;
}

/* Columns on a terminal: code points, not bytes (UTF-8 continuation bytes
 * take no column). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static int table_push(cli_table *t, const char *const *cells)
{
    size_t rows = t->nrows + (t->has_header ? 1 : 0);
    if (rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **nc = realloc(t->cells, cap * t->ncols * sizeof(char *));
        if (!nc)
            return RTC_ENOMEM;
        t->cells = nc;
        t->cap = cap;
    }
    char **row = t->cells + rows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = clean_copy(cells[i]);
        if (!row[i]) {
            while (i > 0)
                free(row[--i]);
            return RTC_ENOMEM;
        }
    }
    return 0;
}

int cli_table_init(cli_table *t, size_t ncols, const char *const *headers)
{
    memset(t, 0, sizeof(*t));
    t->ncols = ncols;
    if (!headers)
        return 0;
    int rc = table_push(t, headers);
    t->has_header = rc == 0;
    return rc;
}

int cli_table_add(cli_table *t, const char *const *cells)
{
    int rc = table_push(t, cells);
    if (rc == 0)
        t->nrows++;
    return rc;
}

int cli_table_kv(cli_table *t, const char *key, const char *fmt, ...)
{
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *value = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (value)
        vsnprintf(value, (size_t)n + 1, fmt, again);
    va_end(again);
    char k[64];
    snprintf(k, sizeof(k), "%s:", key);
    const char *cells[2] = {k, value};
    int rc = value ? cli_table_add(t, cells) : RTC_ENOMEM;
    free(value);
    return rc;
}

void cli_table_print(const cli_table *t, FILE *out)
{
    size_t rows = t->nrows + (t->has_header ? 1 : 0);
    size_t width[16] = {0};
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < t->ncols && i < 16; i++) {
            size_t w = text_width(t->cells[r * t->ncols + i]);
            if (w > width[i])
                width[i] = w;
        }
    for (size_t r = 0; r < rows; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            const char *cell = t->cells[r * t->ncols + i];
            if (i + 1 == t->ncols) {
                fputs(cell, out);
                break;
            }
            fputs(cell, out);
            for (size_t pad = text_width(cell); pad < width[i < 16 ? i : 15] + 2; pad++)
                fputc(' ', out);
        }
        fputc('\n', out);
    }
}

void cli_table_free(cli_table *t)
{
    size_t rows = t->nrows + (t->has_header ? 1 : 0);
    for (size_t i = 0; i < rows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* ---- values -------------------------------------------------------------------- */

void cli_fmt_time(int64_t ms, char *out, size_t outlen)
{
    if (ms <= 0) {
        snprintf(out, outlen, "-");
        return;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(out, outlen, "%lld", (long long)ms);
        return;
    }
    snprintf(out, outlen, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

void cli_fmt_duration(int64_t ms, char *out, size_t outlen)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    if (ms <= 0) {
        snprintf(out, outlen, "%lld", (long long)ms);
        return;
    }
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < 4 && ms > 0 && n < outlen; i++) {
        if (ms >= units[i].ms) {
            n += (size_t)snprintf(out + n, outlen - n, "%lld%s", (long long)(ms / units[i].ms),
                                  units[i].unit);
            ms %= units[i].ms;
        }
    }
}

int cli_fmt_bytes(const uint8_t *data, size_t len, rtc_buf *out)
{
    json_t *s =
        rtc_utf8_valid((const char *)data, len) ? json_stringn((const char *)data, len) : NULL;
    if (s) {
        char *text = json_dumps(s, JSON_ENCODE_ANY | JSON_COMPACT);
        json_decref(s);
        int rc = text ? rtc_buf_append_str(out, text) : RTC_ENOMEM;
        free(text);
        if (rc == 0 && (rc = rtc_buf_reserve(out, 1)) == 0)
            out->data[out->len] = '\0';
        return rc;
    }
    size_t need = 7 + 4 * ((len + 2) / 3) + 1;
    if (rtc_buf_reserve(out, need) < 0)
        return RTC_ENOMEM;
    memcpy(out->data + out->len, "base64:", 7);
    int n = EVP_EncodeBlock(out->data + out->len + 7, data, (int)len);
    out->len += 7 + (size_t)n; /* EVP_EncodeBlock wrote the NUL after it */
    return 0;
}

const char *cli_enum_name(const ProtobufCEnumDescriptor *d, int value, char *buf, size_t len)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(d, value);
    if (v)
        return v->name;
    snprintf(buf, len, "%d", value);
    return buf;
}

/* ---- JSON ------------------------------------------------------------------------ */

static rtc_pbjson *pbjson(cli *c)
{
    if (c->pj)
        return c->pj;
    char err[256];
    if (rtc_pbjson_new(rtc_proto_fds, rtc_proto_fds_len, rtc_proto_fds_services,
                       rtc_proto_fds_services_len, &c->pj, err, sizeof(err)) < 0) {
        c->pj = NULL;
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "cannot load the descriptors for --json: %s", err);
    }
    return c->pj;
}

json_t *cli_to_json(cli *c, const ProtobufCMessage *msg)
{
    rtc_pbjson *pj = pbjson(c);
    json_t *j = NULL;
    char err[256];
    if (pj && rtc_pbjson_to_json(pj, msg, &j, err, sizeof(err)) < 0) {
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "cannot write %s as JSON: %s", msg->descriptor->name,
                 err);
        return NULL;
    }
    return j;
}

int cli_print_json_value(cli *c, const json_t *v)
{
    if (json_dumpf(v, c->out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) < 0)
        return RTC_EIO;
    fputc('\n', c->out);
    return 0;
}

int cli_print_json(cli *c, const ProtobufCMessage *msg)
{
    json_t *j = cli_to_json(c, msg);
    if (!j)
        return RTC_EINVAL;
    int rc = cli_print_json_value(c, j);
    json_decref(j);
    return rc;
}

bool cli_json_reply(cli *c, const ProtobufCMessage *resp)
{
    if (!c->json)
        return false;
    cli_finish(c, cli_print_json(c, resp) == 0 ? RTC_CLI_EXIT_OK : RTC_CLI_EXIT_FAILURE);
    return true;
}

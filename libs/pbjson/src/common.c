/* common.c — what both directions share: the error path ("participants[2].id:
 * ..."), element sizes and names of protobuf-c types, base64.
 *
 * The path is a stack of segments pushed and popped as a conversion
 * descends; it is only rendered when something fails, so the happy path
 * pays two stores per field. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbjson_int.h"

void pj_ctx_init(pj_ctx *c, char *err, size_t errlen)
{
    c->err = err;
    c->errlen = errlen;
    c->depth = 0;
    c->nseg = 0;
    if (err && errlen)
        err[0] = '\0';
}

static void push(pj_ctx *c, pj_seg s)
{
    if (c->nseg < PJ_MAX_SEGS)
        c->seg[c->nseg] = s;
    c->nseg++;
}

void pj_push_field(pj_ctx *c, const pj_field *f)
{
    push(c, (pj_seg){.kind = PJ_SEG_FIELD, .name = f->json_name});
}

void pj_push_index(pj_ctx *c, size_t index)
{
    push(c, (pj_seg){.kind = PJ_SEG_INDEX, .index = index});
}

void pj_push_key(pj_ctx *c, const char *key, size_t len)
{
    push(c, (pj_seg){.kind = PJ_SEG_KEY, .name = key, .len = len});
}

void pj_pop(pj_ctx *c)
{
    c->nseg--;
}

/* Appends to buf[*n..cap), always NUL-terminated, silently truncating. */
static void put(char *buf, size_t cap, size_t *n, const char *s, size_t len)
{
    if (*n + 1 >= cap)
        return;
    if (len > cap - 1 - *n)
        len = cap - 1 - *n;
    memcpy(buf + *n, s, len);
    *n += len;
    buf[*n] = '\0';
}

const char *pj_quote(const char *s, size_t len, char *buf, size_t cap)
{
    size_t n = 0;
    const size_t keep = cap > 16 ? cap - 16 : 0; /* room for an escape, "..." and quotes */
    buf[0] = '\0';
    put(buf, cap, &n, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        if (n >= keep) {
            put(buf, cap, &n, "...", 3);
            break;
        }
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            put(buf, cap, &n, esc, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof(esc), "\\u%04x", ch);
            put(buf, cap, &n, esc, 6);
        } else {
            put(buf, cap, &n, (const char *)&s[i], 1);
        }
    }
    put(buf, cap, &n, "\"", 1);
    return buf;
}

int pj_fail(pj_ctx *c, int rc, const char *fmt, ...)
{
    if (!c->err || !c->errlen)
        return rc;
    char path[512];
    size_t n = 0;
    path[0] = '\0';
    size_t nseg = c->nseg < PJ_MAX_SEGS ? c->nseg : PJ_MAX_SEGS;
    for (size_t i = 0; i < nseg; i++) {
        const pj_seg *s = &c->seg[i];
        char tmp[PJ_QUOTE_MAX + 8];
        switch (s->kind) {
        case PJ_SEG_FIELD:
            if (n)
                put(path, sizeof(path), &n, ".", 1);
            put(path, sizeof(path), &n, s->name, strlen(s->name));
            break;
        case PJ_SEG_INDEX:
            snprintf(tmp, sizeof(tmp), "[%zu]", s->index);
            put(path, sizeof(path), &n, tmp, strlen(tmp));
            break;
        default:
            put(path, sizeof(path), &n, "[", 1);
            pj_quote(s->name, s->len, tmp, sizeof(tmp));
            put(path, sizeof(path), &n, tmp, strlen(tmp));
            put(path, sizeof(path), &n, "]", 1);
            break;
        }
    }
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (n)
        snprintf(c->err, c->errlen, "%s: %s", path, what);
    else
        snprintf(c->err, c->errlen, "%s", what);
    return rc;
}

const char *pj_fmt_double(double d, char *buf, size_t cap)
{
    for (int prec = 15; prec < 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return buf;
    }
    snprintf(buf, cap, "%.17g", d);
    return buf;
}

const pj_msg *pj_msg_lookup(pj_ctx *c, const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc)
{
    const pj_msg *m = pj_msg_find(pj, desc);
    if (!m)
        pj_fail(c, RTC_ENOTFOUND, "message type %s is not registered",
                desc ? desc->name : "(null)");
    return m;
}

size_t pj_elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM: /* protobuf-c stores enums as int32_t */
        return 4;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

const char *pj_type_name(ProtobufCType t)
{
    static const char *const names[] = {
        [PROTOBUF_C_TYPE_INT32] = "int32",       [PROTOBUF_C_TYPE_SINT32] = "sint32",
        [PROTOBUF_C_TYPE_SFIXED32] = "sfixed32", [PROTOBUF_C_TYPE_INT64] = "int64",
        [PROTOBUF_C_TYPE_SINT64] = "sint64",     [PROTOBUF_C_TYPE_SFIXED64] = "sfixed64",
        [PROTOBUF_C_TYPE_UINT32] = "uint32",     [PROTOBUF_C_TYPE_FIXED32] = "fixed32",
        [PROTOBUF_C_TYPE_UINT64] = "uint64",     [PROTOBUF_C_TYPE_FIXED64] = "fixed64",
        [PROTOBUF_C_TYPE_FLOAT] = "float",       [PROTOBUF_C_TYPE_DOUBLE] = "double",
        [PROTOBUF_C_TYPE_BOOL] = "bool",         [PROTOBUF_C_TYPE_ENUM] = "enum",
        [PROTOBUF_C_TYPE_STRING] = "string",     [PROTOBUF_C_TYPE_BYTES] = "bytes",
        [PROTOBUF_C_TYPE_MESSAGE] = "message",
    };
    return (size_t)t < sizeof(names) / sizeof(names[0]) && names[t] ? names[t] : "?";
}

ProtobufCMessage *pj_msg_new(const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = calloc(1, desc->sizeof_message);
    if (m)
        desc->message_init(m);
    return m;
}

/* ---- base64 ---------------------------------------------------------------------- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t pj_b64_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

void pj_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_std[v >> 18];
        out[o++] = b64_std[(v >> 12) & 63];
        out[o++] = b64_std[(v >> 6) & 63];
        out[o++] = b64_std[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64_std[v >> 18];
        out[o++] = b64_std[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_std[v >> 18];
        out[o++] = b64_std[(v >> 12) & 63];
        out[o++] = b64_std[(v >> 6) & 63];
        out[o++] = '=';
    }
}

/* Value of a base64 character in either alphabet, or -1. */
static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int pj_b64_decode(const char *in, size_t n, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    size_t m = n;
    while (m > 0 && n - m < 2 && in[m - 1] == '=')
        m--;
    /* With padding the text is whole quads; without, a lone last character
     * cannot be (it holds 6 of 8 bits). */
    if ((m < n && n % 4 != 0) || m % 4 == 1)
        return RTC_EINVAL;
    size_t len = m / 4 * 3 + (m % 4 ? m % 4 - 1 : 0);
    if (len == 0)
        return 0;
    uint8_t *buf = malloc(len);
    if (!buf)
        return RTC_ENOMEM;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < m; i++) {
        int v = b64_val((unsigned char)in[i]);
        if (v < 0) {
            free(buf);
            return RTC_EINVAL;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out = buf;
    *outlen = o;
    return 0;
}

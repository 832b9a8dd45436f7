/* to_json.c — protobuf-c message → proto3 JSON (rtc_pbjson_to_json,
 * rtc_pbjson_decode).
 *
 * A field is written when protobuf-c would put it on the wire (a proto3
 * scalar at its default is not, a set oneof member and a present
 * sub-message are), so JSON and wire bytes of one message say the same
 * thing. Floats are written as the shortest decimal that reads back as the
 * same float (as protobuf's own implementations do), not as the double
 * nearest to it: 0.1f is 0.1, not 0.10000000149011612.
 *
 * Wire bytes are walked once before protobuf_c_message_unpack sees them:
 * it recurses once per nested message with no limit, and a few bytes per
 * level are enough to exhaust the stack. */
#include <inttypes.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbjson_int.h"
#include "rtc/utf8.h"

#define MEMBER(msg, off) ((const void *)((const char *)(msg) + (off)))

static json_t *float_to_json(float f)
{
    if (isnan(f))
        return json_string("NaN");
    if (isinf(f))
        return json_string(f > 0 ? "Infinity" : "-Infinity");
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f)
            return json_real(d);
    }
    return json_real((double)f); /* not reached: 9 digits always read back */
}

static json_t *double_to_json(double d)
{
    if (isnan(d))
        return json_string("NaN");
    if (isinf(d))
        return json_string(d > 0 ? "Infinity" : "-Infinity");
    return json_real(d);
}

static int value_to_json(pj_ctx *c, const pj_field *f, const void *p, json_t **out)
{
    const ProtobufCFieldDescriptor *fd = f->fd;
    json_t *v = NULL;
    char buf[32];
    switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        v = json_integer(*(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        v = json_integer(*(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, sizeof(buf), "%" PRId64, *(const int64_t *)p);
        v = json_string_nocheck(buf);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, sizeof(buf), "%" PRIu64, *(const uint64_t *)p);
        v = json_string_nocheck(buf);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        v = float_to_json(*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        v = double_to_json(*(const double *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        v = json_boolean(*(const protobuf_c_boolean *)p);
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t n = *(const int32_t *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(fd->descriptor, n);
        v = ev ? json_string_nocheck(ev->name) : json_integer(n);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        size_t len = s ? strlen(s) : 0;
        if (!rtc_utf8_valid(s ? s : "", len))
            return pj_fail(c, RTC_EINVAL, "string is not valid UTF-8");
        v = json_stringn_nocheck(s ? s : "", len);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        size_t n = pj_b64_len(bd->len);
        char *tmp = malloc(n + 1);
        if (!tmp)
            break;
        if (bd->len)
            pj_b64_encode(bd->data, bd->len, tmp);
        v = json_stringn_nocheck(tmp, n);
        free(tmp);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        if (sub)
            return pj_msg_to_json(c, f->msg, sub, out);
        v = json_object(); /* a map value left out on the wire */
        break;
    }
    }
    if (!v)
        return pj_fail(c, RTC_ENOMEM, "out of memory");
    *out = v;
    return 0;
}

/* Whether a singular field is set, by protobuf-c's rules for packing it. */
static bool present(const ProtobufCFieldDescriptor *fd, const ProtobufCMessage *msg,
                    const void *member)
{
    bool pointer = fd->type == PROTOBUF_C_TYPE_STRING || fd->type == PROTOBUF_C_TYPE_MESSAGE;
    const void *ptr = pointer ? *(const void *const *)member : NULL;
    if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (*(const uint32_t *)MEMBER(msg, fd->quantifier_offset) != fd->id)
            return false;
        return !pointer || (ptr && ptr != fd->default_value);
    }
    switch (fd->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return true;
    case PROTOBUF_C_LABEL_OPTIONAL:
        if (pointer)
            return ptr && ptr != fd->default_value;
        return *(const protobuf_c_boolean *)MEMBER(msg, fd->quantifier_offset);
    default:
        break;
    }
    /* proto3: present unless at the default. */
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING:
        return ptr && *(const char *)ptr;
    case PROTOBUF_C_TYPE_MESSAGE:
        return ptr != NULL;
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)member)->len > 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)member != 0; /* -0 too, as protobuf-c */
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)member != 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)member != 0;
    default:
        break;
    }
    if (pj_elem_size(fd->type) == 8)
        return *(const uint64_t *)member != 0;
    return *(const uint32_t *)member != 0;
}

/* A map key as JSON object key text (into buf for numbers). */
static int map_key_text(pj_ctx *c, const pj_field *kf, const void *p, char *buf, size_t cap,
                        const char **key)
{
    switch (kf->fd->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        *key = s ? s : "";
        if (!rtc_utf8_valid(*key, strlen(*key)))
            return pj_fail(c, RTC_EINVAL, "map key is not valid UTF-8");
        return 0;
    }
    case PROTOBUF_C_TYPE_BOOL:
        *key = *(const protobuf_c_boolean *)p ? "true" : "false";
        return 0;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        snprintf(buf, cap, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(buf, cap, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, cap, "%" PRId64, *(const int64_t *)p);
        break;
    default:
        snprintf(buf, cap, "%" PRIu64, *(const uint64_t *)p);
        break;
    }
    *key = buf;
    return 0;
}

/* Wire maps may repeat a key: the last one wins, as in every protobuf
 * implementation. */
static int map_to_json(pj_ctx *c, const pj_field *f, const void *member, size_t n, json_t *obj)
{
    ProtobufCMessage *const *entries = *(ProtobufCMessage *const *const *)member;
    const pj_msg *em = f->msg;
    const pj_field *kf = &em->fields[0], *vf = &em->fields[1];
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessage *e = entries[i];
        if (!e)
            return pj_fail(c, RTC_EINVAL, "map entry %zu is NULL", i);
        char buf[32];
        const char *key;
        json_t *v = NULL;
        int rc = map_key_text(c, kf, MEMBER(e, kf->fd->offset), buf, sizeof(buf), &key);
        if (rc)
            return rc;
        pj_push_key(c, key, strlen(key));
        if ((rc = value_to_json(c, vf, MEMBER(e, vf->fd->offset), &v)))
            return rc;
        if (json_object_set_new_nocheck(obj, key, v))
            return pj_fail(c, RTC_ENOMEM, "out of memory");
        pj_pop(c);
    }
    return 0;
}

static int array_to_json(pj_ctx *c, const pj_field *f, const void *member, size_t n, json_t *arr)
{
    const char *base = *(const char *const *)member;
    size_t es = pj_elem_size(f->fd->type);
    for (size_t i = 0; i < n; i++) {
        json_t *v = NULL;
        pj_push_index(c, i);
        int rc = value_to_json(c, f, base + i * es, &v);
        if (rc)
            return rc;
        if (json_array_append_new(arr, v))
            return pj_fail(c, RTC_ENOMEM, "out of memory");
        pj_pop(c);
    }
    return 0;
}

int pj_msg_to_json(pj_ctx *c, const pj_msg *m, const ProtobufCMessage *msg, json_t **out)
{
    if (c->depth >= PJ_MAX_DEPTH)
        return pj_fail(c, RTC_EINVAL, "nesting deeper than %d messages", PJ_MAX_DEPTH);
    json_t *obj = json_object();
    if (!obj)
        return pj_fail(c, RTC_ENOMEM, "out of memory");
    c->depth++;
    for (size_t i = 0; i < m->desc->n_fields; i++) {
        const pj_field *f = &m->fields[i];
        const ProtobufCFieldDescriptor *fd = f->fd;
        const void *member = MEMBER(msg, fd->offset);
        json_t *v = NULL;
        int rc;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)MEMBER(msg, fd->quantifier_offset);
            if (n == 0)
                continue;
            v = f->map ? json_object() : json_array();
            if (!v) {
                json_decref(obj);
                return pj_fail(c, RTC_ENOMEM, "out of memory");
            }
            pj_push_field(c, f);
            rc = f->map ? map_to_json(c, f, member, n, v) : array_to_json(c, f, member, n, v);
        } else {
            if (!present(fd, msg, member))
                continue;
            pj_push_field(c, f);
            rc = value_to_json(c, f, member, &v);
        }
        if (rc) {
            json_decref(v);
            json_decref(obj);
            return rc;
        }
        pj_pop(c);
        if (json_object_set_new_nocheck(obj, f->json_name, v)) {
            json_decref(obj);
            return pj_fail(c, RTC_ENOMEM, "out of memory");
        }
    }
    c->depth--;
    *out = obj;
    return 0;
}

/* ---- straight to text ------------------------------------------------------------------ */

/* The same JSON as pj_msg_to_json + json_dumps(JSON_COMPACT), written
 * directly: building jansson objects only to print them was most of the
 * bridge's cost per relayed event. Values compare equal (test_pbjson
 * checks every golden); the text differs only where JSON allows (a float
 * is written as its shortest decimal). */

static int put(pj_ctx *c, rtc_buf *out, const void *p, size_t n)
{
    return rtc_buf_append(out, p, n) < 0 ? pj_fail(c, RTC_ENOMEM, "out of memory") : 0;
}

static int put_str(pj_ctx *c, rtc_buf *out, const char *s)
{
    return put(c, out, s, strlen(s));
}

/* A JSON string of valid UTF-8 s[0..n): quotes, backslash and controls
 * escaped; everything else as is. */
static int put_quoted(pj_ctx *c, rtc_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (rtc_buf_reserve(out, n + 2) < 0)
        return pj_fail(c, RTC_ENOMEM, "out of memory");
    out->data[out->len++] = '"';
    size_t run = 0; /* start of the bytes not yet copied */
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        char esc[6] = {'\\', 0, 0, 0, 0, 0};
        size_t el = 2;
        switch (ch) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        case '\b':
            esc[1] = 'b';
            break;
        case '\f':
            esc[1] = 'f';
            break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            el = 6;
        }
        if (put(c, out, s + run, i - run) || put(c, out, esc, el))
            return RTC_ENOMEM;
        run = i + 1;
    }
    if (put(c, out, s + run, n - run) || put(c, out, "\"", 1))
        return RTC_ENOMEM;
    return 0;
}

static int put_fmt(pj_ctx *c, rtc_buf *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int put_fmt(pj_ctx *c, rtc_buf *out, const char *fmt, ...)
{
    char buf[40];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return n < 0 ? pj_fail(c, RTC_EINVAL, "format") : put(c, out, buf, (size_t)n);
}

static int put_double(pj_ctx *c, rtc_buf *out, double d, int min_prec, int max_prec, bool is_float)
{
    if (isnan(d))
        return put_str(c, out, "\"NaN\"");
    if (isinf(d))
        return put_str(c, out, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    char buf[40];
    for (int prec = min_prec; prec <= max_prec; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)d : back == d)
            break;
    }
    /* JSON numbers need a digit after a leading sign and no bare "inf". */
    if (!strpbrk(buf, ".eE") && strlen(buf) < sizeof(buf) - 3)
        strcat(buf, ".0");
    return put_str(c, out, buf);
}

static int value_to_text(pj_ctx *c, const pj_field *f, const void *p, rtc_buf *out);
static int msg_to_text(pj_ctx *c, const pj_msg *m, const ProtobufCMessage *msg, rtc_buf *out);

static int value_to_text(pj_ctx *c, const pj_field *f, const void *p, rtc_buf *out)
{
    const ProtobufCFieldDescriptor *fd = f->fd;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return put_fmt(c, out, "%" PRId32, *(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return put_fmt(c, out, "%" PRIu32, *(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return put_fmt(c, out, "\"%" PRId64 "\"", *(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return put_fmt(c, out, "\"%" PRIu64 "\"", *(const uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        return put_double(c, out, (double)*(const float *)p, 6, 9, true);
    case PROTOBUF_C_TYPE_DOUBLE:
        return put_double(c, out, *(const double *)p, 15, 17, false);
    case PROTOBUF_C_TYPE_BOOL:
        return put_str(c, out, *(const protobuf_c_boolean *)p ? "true" : "false");
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t n = *(const int32_t *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(fd->descriptor, n);
        return ev ? put_quoted(c, out, ev->name, strlen(ev->name)) : put_fmt(c, out, "%" PRId32, n);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        size_t len = s ? strlen(s) : 0;
        if (!rtc_utf8_valid(s ? s : "", len))
            return pj_fail(c, RTC_EINVAL, "string is not valid UTF-8");
        return put_quoted(c, out, s ? s : "", len);
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        size_t n = pj_b64_len(bd->len);
        if (rtc_buf_reserve(out, n + 2) < 0)
            return pj_fail(c, RTC_ENOMEM, "out of memory");
        out->data[out->len++] = '"';
        if (bd->len)
            pj_b64_encode(bd->data, bd->len, (char *)out->data + out->len);
        out->len += n;
        out->data[out->len++] = '"';
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        return sub ? msg_to_text(c, f->msg, sub, out) : put_str(c, out, "{}");
    }
    }
    return pj_fail(c, RTC_EINVAL, "unknown field type");
}

static int msg_to_text(pj_ctx *c, const pj_msg *m, const ProtobufCMessage *msg, rtc_buf *out)
{
    if (c->depth >= PJ_MAX_DEPTH)
        return pj_fail(c, RTC_EINVAL, "nesting deeper than %d messages", PJ_MAX_DEPTH);
    c->depth++;
    bool first = true;
    int rc = put(c, out, "{", 1);
    for (size_t i = 0; i < m->desc->n_fields && rc == 0; i++) {
        const pj_field *f = &m->fields[i];
        const ProtobufCFieldDescriptor *fd = f->fd;
        const void *member = MEMBER(msg, fd->offset);
        size_t n = 0;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            if ((n = *(const size_t *)MEMBER(msg, fd->quantifier_offset)) == 0)
                continue;
        } else if (!present(fd, msg, member)) {
            continue;
        }
        if ((!first && (rc = put(c, out, ",", 1))) ||
            (rc = put_quoted(c, out, f->json_name, strlen(f->json_name))) ||
            (rc = put(c, out, ":", 1)))
            break;
        first = false;
        pj_push_field(c, f);
        if (fd->label != PROTOBUF_C_LABEL_REPEATED) {
            rc = value_to_text(c, f, member, out);
        } else if (!f->map) {
            const char *base = *(const char *const *)member;
            size_t es = pj_elem_size(fd->type);
            rc = put(c, out, "[", 1);
            for (size_t k = 0; k < n && rc == 0; k++) {
                pj_push_index(c, k);
                if ((k == 0 || (rc = put(c, out, ",", 1)) == 0) &&
                    (rc = value_to_text(c, f, base + k * es, out)) == 0)
                    pj_pop(c);
            }
            if (rc == 0)
                rc = put(c, out, "]", 1);
        } else {
            /* Maps: a repeated key is written again; a JSON reader keeps
             * the last, as the wire rule says. */
            ProtobufCMessage *const *entries = *(ProtobufCMessage *const *const *)member;
            const pj_field *kf = &f->msg->fields[0], *vf = &f->msg->fields[1];
            rc = put(c, out, "{", 1);
            for (size_t k = 0; k < n && rc == 0; k++) {
                const ProtobufCMessage *e = entries[k];
                char buf[32];
                const char *key;
                if (!e) {
                    rc = pj_fail(c, RTC_EINVAL, "map entry %zu is NULL", k);
                    break;
                }
                if ((rc = map_key_text(c, kf, MEMBER(e, kf->fd->offset), buf, sizeof(buf), &key)))
                    break;
                pj_push_key(c, key, strlen(key));
                if ((k == 0 || (rc = put(c, out, ",", 1)) == 0) &&
                    (rc = put_quoted(c, out, key, strlen(key))) == 0 &&
                    (rc = put(c, out, ":", 1)) == 0 &&
                    (rc = value_to_text(c, vf, MEMBER(e, vf->fd->offset), out)) == 0)
                    pj_pop(c);
            }
            if (rc == 0)
                rc = put(c, out, "}", 1);
        }
        if (rc == 0)
            pj_pop(c);
    }
    if (rc == 0)
        rc = put(c, out, "}", 1);
    c->depth--;
    return rc;
}

/* ---- wire bytes ------------------------------------------------------------------------ */

static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int i = 0; i < 10 && *p < end; i++) {
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

/* Refuses wire bytes nested deeper than PJ_MAX_DEPTH messages (map entries
 * do not count: they are no JSON level) and bytes that are not even
 * well-framed; everything else is left to protobuf_c_message_unpack. */
static int wire_check(pj_ctx *c, const pj_msg *m, const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    while (p < end) {
        uint64_t tag, n;
        if (!wire_varint(&p, end, &tag))
            return RTC_EPROTO;
        switch (tag & 7) {
        case 0:
            if (!wire_varint(&p, end, &n))
                return RTC_EPROTO;
            break;
        case 1:
        case 5: {
            size_t w = (tag & 7) == 1 ? 8 : 4;
            if ((size_t)(end - p) < w)
                return RTC_EPROTO;
            p += w;
            break;
        }
        case 2: {
            if (!wire_varint(&p, end, &n) || n > (uint64_t)(end - p))
                return RTC_EPROTO;
            const ProtobufCFieldDescriptor *fd =
                tag >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(m->desc, (unsigned)(tag >> 3))
                    : NULL;
            if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE) {
                const pj_msg *sub = m->fields[fd - m->desc->fields].msg;
                int level = sub->map_entry ? 0 : 1;
                if (c->depth + level > PJ_MAX_DEPTH)
                    return pj_fail(c, RTC_EPROTO, "nesting deeper than %d messages", PJ_MAX_DEPTH);
                c->depth += level;
                int rc = wire_check(c, sub, p, (size_t)n);
                c->depth -= level;
                if (rc)
                    return rc;
            }
            p += n;
            break;
        }
        default:
            return RTC_EPROTO; /* groups (3, 4) and 6, 7: protobuf-c refuses them too */
        }
    }
    return 0;
}

/* ---- public ------------------------------------------------------------------------------ */

int rtc_pbjson_to_json(const rtc_pbjson *pj, const ProtobufCMessage *msg, json_t **out, char *err,
                       size_t errlen)
{
    pj_ctx c;
    pj_ctx_init(&c, err, errlen);
    *out = NULL;
    if (!msg)
        return pj_fail(&c, RTC_EINVAL, "no message");
    const pj_msg *m = pj_msg_lookup(&c, pj, msg->descriptor);
    if (!m)
        return RTC_ENOTFOUND;
    return pj_msg_to_json(&c, m, msg, out);
}

/* Checks and unpacks wire bytes of desc: *msg owned by the caller. */
static int unpack(pj_ctx *c, const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                  const uint8_t *data, size_t len, const pj_msg **m, ProtobufCMessage **msg)
{
    if (!(*m = pj_msg_lookup(c, pj, desc)))
        return RTC_ENOTFOUND;
    c->depth = 1;
    int rc = len ? wire_check(c, *m, data, len) : 0;
    if (rc && c->err && !c->err[0])
        pj_fail(c, rc, "not a valid %s message", desc->name);
    if (rc)
        return rc;
    c->depth = 0;
    if (!(*msg = protobuf_c_message_unpack(desc, NULL, len, data)))
        return pj_fail(c, RTC_EPROTO, "not a valid %s message", desc->name);
    return 0;
}

int rtc_pbjson_decode(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                      const uint8_t *data, size_t len, json_t **out, char *err, size_t errlen)
{
    pj_ctx c;
    pj_ctx_init(&c, err, errlen);
    *out = NULL;
    const pj_msg *m;
    ProtobufCMessage *msg = NULL;
    int rc = unpack(&c, pj, desc, data, len, &m, &msg);
    if (rc)
        return rc;
    rc = pj_msg_to_json(&c, m, msg, out);
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

int rtc_pbjson_decode_text(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                           const uint8_t *data, size_t len, rtc_buf *out, ProtobufCMessage **msg,
                           char *err, size_t errlen)
{
    pj_ctx c;
    pj_ctx_init(&c, err, errlen);
    if (msg)
        *msg = NULL;
    const pj_msg *m;
    ProtobufCMessage *pm = NULL;
    int rc = unpack(&c, pj, desc, data, len, &m, &pm);
    if (rc)
        return rc;
    size_t mark = out->len;
    rc = msg_to_text(&c, m, pm, out);
    if (rc)
        out->len = mark;
    if (rc == 0 && msg)
        *msg = pm;
    else
        protobuf_c_message_free_unpacked(pm, NULL);
    return rc;
}

/* from_json.c — proto3 JSON → protobuf-c message (rtc_pbjson_from_json,
 * rtc_pbjson_encode).
 *
 * The message is built the way protobuf_c_message_unpack builds one, so
 * protobuf_c_message_free_unpacked(msg, NULL) frees it: malloc'd strings,
 * bytes and arrays, sub-messages initialised by their descriptor. Every
 * pointer is stored in its parent (and every count and oneof case set)
 * before the value behind it is filled in, so a failure halfway leaves a
 * message free_unpacked can take apart.
 *
 * Choices the proto3 JSON mapping leaves open:
 *  - integers: a JSON number must be integral and in range (1e3 is 1000);
 *    a string must be a plain decimal ("-12", no '+', no spaces, no
 *    exponent). jansson parses integers up to int64, so uint64 values above
 *    2^63-1 come as strings; reals above 2^53 are accepted when integral
 *    (they are exact, if perhaps not what the sender meant).
 *  - map keys: integer keys must be canonical decimal (no leading zeros, no
 *    "-0") and bool keys "true" or "false", so two different JSON keys never
 *    name one map key; JSON objects themselves have unique keys (jansson
 *    keeps the last of repeated keys unless the caller parses with
 *    JSON_REJECT_DUPLICATES).
 *  - strings holding U+0000 are refused: protobuf-c strings are
 *    NUL-terminated and would silently lose the rest.
 *  - float: any number that rounds to a finite float is accepted (the
 *    shortest form of FLT_MAX that to_json writes is slightly above it). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbjson_int.h"
#include "rtc/utf8.h"

static int msg_from_json(pj_ctx *c, const pj_msg *m, const json_t *obj, ProtobufCMessage *msg);

#define MEMBER(msg, off) ((void *)((char *)(msg) + (off)))

/* Keys may hold U+0000 from jansson 2.14 on (json_object_setn). */
static size_t key_len(void *it, const char *key)
{
#if JANSSON_VERSION_HEX >= 0x020e00
    (void)key;
    return json_object_iter_key_len(it);
#else
    (void)it;
    return strlen(key);
#endif
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        break;
    }
    return "null";
}

/* ---- integers -------------------------------------------------------------------- */

/* A decimal integer as sign and magnitude. Returns false when the text is
 * not -?[0-9]+; *overflow when the magnitude exceeds 64 bits. With
 * canonical, leading zeros and "-0" are refused too. */
static bool parse_decimal(const char *s, size_t len, bool canonical, bool *neg, uint64_t *mag,
                          bool *overflow)
{
    size_t i = 0;
    *neg = false;
    *mag = 0;
    *overflow = false;
    if (len && s[0] == '-') {
        *neg = true;
        i = 1;
    }
    if (i == len)
        return false;
    if (canonical && s[i] == '0' && (len - i > 1 || *neg))
        return false;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (*mag > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            *mag = *mag * 10 + d;
    }
    return true;
}

static bool is_signed(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_INT32 || t == PROTOBUF_C_TYPE_SINT32 ||
           t == PROTOBUF_C_TYPE_SFIXED32 || t == PROTOBUF_C_TYPE_INT64 ||
           t == PROTOBUF_C_TYPE_SINT64 || t == PROTOBUF_C_TYPE_SFIXED64 ||
           t == PROTOBUF_C_TYPE_ENUM;
}

static bool is_64bit(ProtobufCType t)
{
    return pj_elem_size(t) == 8;
}

/* sign + magnitude → the value's bits when it fits type t. */
static bool fits(ProtobufCType t, bool neg, uint64_t mag, uint64_t *bits)
{
    uint64_t max;
    if (is_signed(t))
        max = (is_64bit(t) ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX) + (neg ? 1 : 0);
    else
        max = neg ? 0 : is_64bit(t) ? UINT64_MAX : UINT32_MAX;
    if (mag > max)
        return false;
    *bits = neg ? (uint64_t)0 - mag : mag;
    return true;
}

/* Any JSON integer form → bits of type t. what names the type in errors. */
static int int_from_json(pj_ctx *c, const json_t *v, ProtobufCType t, const char *what,
                         uint64_t *bits)
{
    char q[PJ_QUOTE_MAX];
    bool neg = false, overflow = false;
    uint64_t mag = 0;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        neg = i < 0;
        mag = neg ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
        if (!fits(t, neg, mag, bits))
            return pj_fail(c, RTC_EINVAL, "value %lld out of range for %s", (long long)i, what);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d) || d != trunc(d))
            return pj_fail(c, RTC_EINVAL, "value %s is not an integer",
                           pj_fmt_double(d, q, sizeof(q)));
        neg = d < 0;
        /* 2^64 and beyond do not fit any type (and must not be cast). */
        if (fabs(d) >= 18446744073709551616.0 || !fits(t, neg, (uint64_t)fabs(d), bits))
            return pj_fail(c, RTC_EINVAL, "value %s out of range for %s",
                           pj_fmt_double(d, q, sizeof(q)), what);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (!parse_decimal(s, len, false, &neg, &mag, &overflow))
            return pj_fail(c, RTC_EINVAL, "invalid integer %s", pj_quote(s, len, q, sizeof(q)));
        if (overflow || !fits(t, neg, mag, bits))
            return pj_fail(c, RTC_EINVAL, "value %s out of range for %s",
                           pj_quote(s, len, q, sizeof(q)), what);
        return 0;
    }
    return pj_fail(c, RTC_EINVAL, "expected an integer (a number or a decimal string), got %s",
                   json_kind(v));
}

static void store_int(ProtobufCType t, uint64_t bits, void *p)
{
    if (is_64bit(t))
        *(uint64_t *)p = bits;
    else
        *(uint32_t *)p = (uint32_t)bits;
}

/* ---- other scalars ---------------------------------------------------------------- */

static int real_from_json(pj_ctx *c, const json_t *v, ProtobufCType t, void *p)
{
    double d;
    if (json_is_integer(v)) {
        d = (double)json_integer_value(v);
    } else if (json_is_real(v)) {
        d = json_real_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcmp(s, "NaN")) {
            d = NAN;
        } else if (!strcmp(s, "Infinity")) {
            d = INFINITY;
        } else if (!strcmp(s, "-Infinity")) {
            d = -INFINITY;
        } else {
            char q[PJ_QUOTE_MAX];
            return pj_fail(c, RTC_EINVAL,
                           "invalid number %s (expected a number, \"NaN\", \"Infinity\" or "
                           "\"-Infinity\")",
                           pj_quote(s, json_string_length(v), q, sizeof(q)));
        }
    } else {
        return pj_fail(c, RTC_EINVAL, "expected a number, got %s", json_kind(v));
    }
    if (t == PROTOBUF_C_TYPE_DOUBLE) {
        *(double *)p = d;
        return 0;
    }
    /* Below the midpoint between FLT_MAX and 2^128 a double rounds to a
     * finite float (and the conversion is defined). */
    if (isfinite(d) && fabs(d) >= 0x1.ffffffp127) {
        char q[32];
        return pj_fail(c, RTC_EINVAL, "value %s out of range for float",
                       pj_fmt_double(d, q, sizeof(q)));
    }
    *(float *)p = (float)d;
    return 0;
}

/* A JSON string as a new C string; refuses NUL and invalid UTF-8. With
 * keep_empty, "" leaves *p alone (protobuf-c's shared empty default). */
static int string_from_json(pj_ctx *c, const char *s, size_t len, bool keep_empty, char **p)
{
    if (memchr(s, '\0', len))
        return pj_fail(c, RTC_EINVAL, "string contains U+0000, which protobuf-c cannot carry");
    if (!rtc_utf8_valid(s, len))
        return pj_fail(c, RTC_EINVAL, "string is not valid UTF-8");
    if (len == 0 && keep_empty)
        return 0;
    char *copy = malloc(len + 1);
    if (!copy)
        return pj_fail(c, RTC_ENOMEM, "out of memory");
    memcpy(copy, s, len);
    copy[len] = '\0';
    *p = copy;
    return 0;
}

static int enum_from_json(pj_ctx *c, const pj_field *f, const json_t *v, int32_t *p)
{
    const ProtobufCEnumDescriptor *ed = f->fd->descriptor;
    if (json_is_string(v)) {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
        if (!ev || strlen(ev->name) != json_string_length(v)) {
            char q[PJ_QUOTE_MAX];
            return pj_fail(c, RTC_EINVAL, "unknown value %s of enum %s",
                           pj_quote(json_string_value(v), json_string_length(v), q, sizeof(q)),
                           ed->name);
        }
        *p = ev->value;
        return 0;
    }
    if (!json_is_number(v))
        return pj_fail(c, RTC_EINVAL, "expected an enum name or number, got %s", json_kind(v));
    char what[256];
    snprintf(what, sizeof(what), "enum %s", ed->name);
    uint64_t bits;
    int rc = int_from_json(c, v, PROTOBUF_C_TYPE_ENUM, what, &bits);
    if (rc)
        return rc;
    int32_t n = (int32_t)(uint32_t)bits;
    /* proto3 enums are open: a number this build does not know is kept. */
    if (f->closed_enum && !protobuf_c_enum_descriptor_get_value(ed, n))
        return pj_fail(c, RTC_EINVAL, "unknown value %d of enum %s", (int)n, ed->name);
    *p = n;
    return 0;
}

/* One value of field f (a singular member, an array element or a map
 * value) into p. fresh: p is zeroed storage that nothing shares (array
 * element, oneof member), so an empty string must be allocated too. */
static int value_from_json(pj_ctx *c, const pj_field *f, const json_t *v, void *p, bool fresh)
{
    const ProtobufCFieldDescriptor *fd = f->fd;
    uint64_t bits;
    int rc;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if ((rc = int_from_json(c, v, fd->type, pj_type_name(fd->type), &bits)))
            return rc;
        store_int(fd->type, bits, p);
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        return real_from_json(c, v, fd->type, p);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return pj_fail(c, RTC_EINVAL, "expected true or false, got %s", json_kind(v));
        *(protobuf_c_boolean *)p = json_is_true(v);
        return 0;
    case PROTOBUF_C_TYPE_ENUM:
        return enum_from_json(c, f, v, p);
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v))
            return pj_fail(c, RTC_EINVAL, "expected a string, got %s", json_kind(v));
        /* A proto2 default or a shared empty string is never freed, so
         * overwriting the pointer leaks nothing. */
        return string_from_json(c, json_string_value(v), json_string_length(v),
                                !fresh && fd->label == PROTOBUF_C_LABEL_NONE, p);
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(v))
            return pj_fail(c, RTC_EINVAL, "expected a base64 string, got %s", json_kind(v));
        ProtobufCBinaryData *bd = p;
        rc = pj_b64_decode(json_string_value(v), json_string_length(v), &bd->data, &bd->len);
        if (rc == RTC_ENOMEM)
            return pj_fail(c, rc, "out of memory");
        if (rc)
            return pj_fail(c, rc, "invalid base64");
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (!json_is_object(v))
            return pj_fail(c, RTC_EINVAL, "expected an object, got %s", json_kind(v));
        ProtobufCMessage *sub = pj_msg_new(f->msg->desc);
        if (!sub)
            return pj_fail(c, RTC_ENOMEM, "out of memory");
        *(ProtobufCMessage **)p = sub;
        return msg_from_json(c, f->msg, v, sub);
    }
    }
    return pj_fail(c, RTC_EINVAL, "unsupported field type %d", (int)fd->type);
}

/* ---- maps and repeated fields ------------------------------------------------------ */

static int map_key_from_json(pj_ctx *c, const pj_field *kf, const char *key, size_t len, void *p)
{
    char q[PJ_QUOTE_MAX];
    ProtobufCType t = kf->fd->type;
    if (t == PROTOBUF_C_TYPE_STRING)
        return string_from_json(c, key, len, true, p);
    if (t == PROTOBUF_C_TYPE_BOOL) {
        if (len == 4 && !memcmp(key, "true", 4))
            *(protobuf_c_boolean *)p = 1;
        else if (len != 5 || memcmp(key, "false", 5))
            return pj_fail(c, RTC_EINVAL, "map key %s is not true or false",
                           pj_quote(key, len, q, sizeof(q)));
        return 0;
    }
    bool neg, overflow;
    uint64_t mag, bits;
    if (!parse_decimal(key, len, true, &neg, &mag, &overflow))
        return pj_fail(c, RTC_EINVAL, "map key %s is not a canonical decimal %s",
                       pj_quote(key, len, q, sizeof(q)), pj_type_name(t));
    if (overflow || !fits(t, neg, mag, &bits))
        return pj_fail(c, RTC_EINVAL, "map key %s out of range for %s",
                       pj_quote(key, len, q, sizeof(q)), pj_type_name(t));
    store_int(t, bits, p);
    return 0;
}

static int map_from_json(pj_ctx *c, const pj_field *f, const json_t *v, ProtobufCMessage *msg)
{
    if (!json_is_object(v))
        return pj_fail(c, RTC_EINVAL, "expected an object (a map), got %s", json_kind(v));
    size_t n = json_object_size(v);
    if (n == 0)
        return 0;
    ProtobufCMessage **entries = calloc(n, sizeof(*entries));
    if (!entries)
        return pj_fail(c, RTC_ENOMEM, "out of memory");
    *(ProtobufCMessage ***)MEMBER(msg, f->fd->offset) = entries;
    *(size_t *)MEMBER(msg, f->fd->quantifier_offset) = n;
    const pj_msg *em = f->msg;
    const pj_field *kf = &em->fields[0], *vf = &em->fields[1];
    size_t i = 0;
    for (void *it = json_object_iter((json_t *)v); it && i < n;
         it = json_object_iter_next((json_t *)v, it), i++) {
        const char *key = json_object_iter_key(it);
        size_t klen = key_len(it, key);
        const json_t *val = json_object_iter_value(it);
        pj_push_key(c, key, klen);
        ProtobufCMessage *e = pj_msg_new(em->desc);
        if (!e)
            return pj_fail(c, RTC_ENOMEM, "out of memory");
        entries[i] = e;
        int rc = map_key_from_json(c, kf, key, klen, MEMBER(e, kf->fd->offset));
        if (!rc && json_is_null(val))
            rc = pj_fail(c, RTC_EINVAL, "null is not allowed as a map value");
        if (!rc)
            rc = value_from_json(c, vf, val, MEMBER(e, vf->fd->offset), false);
        if (rc)
            return rc;
        pj_pop(c);
    }
    return 0;
}

static int repeated_from_json(pj_ctx *c, const pj_field *f, const json_t *v, ProtobufCMessage *msg)
{
    if (f->map)
        return map_from_json(c, f, v, msg);
    if (!json_is_array(v))
        return pj_fail(c, RTC_EINVAL, "expected an array, got %s", json_kind(v));
    size_t n = json_array_size(v);
    if (n == 0)
        return 0;
    size_t es = pj_elem_size(f->fd->type);
    char *arr = calloc(n, es);
    if (!arr)
        return pj_fail(c, RTC_ENOMEM, "out of memory");
    *(void **)MEMBER(msg, f->fd->offset) = arr;
    *(size_t *)MEMBER(msg, f->fd->quantifier_offset) = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *el = json_array_get(v, i);
        pj_push_index(c, i);
        int rc = json_is_null(el)
                     ? pj_fail(c, RTC_EINVAL, "null is not allowed in a repeated field")
                     : value_from_json(c, f, el, arr + i * es, true);
        if (rc)
            return rc;
        pj_pop(c);
    }
    return 0;
}

/* ---- messages ----------------------------------------------------------------------- */

static int field_from_json(pj_ctx *c, const pj_field *f, const json_t *v, ProtobufCMessage *msg)
{
    const ProtobufCFieldDescriptor *fd = f->fd;
    void *member = MEMBER(msg, fd->offset);
    if (fd->label == PROTOBUF_C_LABEL_REPEATED)
        return repeated_from_json(c, f, v, msg);
    if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        /* The case is set first so that a failure below still frees what
         * the member got; the member starts zeroed (NULL, not the shared
         * empty string: a oneof string equal to its default is not
         * packed). */
        *(uint32_t *)MEMBER(msg, fd->quantifier_offset) = fd->id;
        memset(member, 0, pj_elem_size(fd->type));
        return value_from_json(c, f, v, member, true);
    }
    if (fd->label == PROTOBUF_C_LABEL_OPTIONAL && fd->type != PROTOBUF_C_TYPE_STRING &&
        fd->type != PROTOBUF_C_TYPE_MESSAGE)
        *(protobuf_c_boolean *)MEMBER(msg, fd->quantifier_offset) = 1;
    return value_from_json(c, f, v, member, false);
}

/* The field of m's oneof member that is set in msg (case = its number). */
static size_t oneof_member(const pj_msg *m, const ProtobufCMessage *msg, size_t like)
{
    const ProtobufCFieldDescriptor *fds = m->desc->fields;
    uint32_t id = *(const uint32_t *)MEMBER(msg, fds[like].quantifier_offset);
    for (size_t i = 0; i < m->desc->n_fields; i++)
        if (fds[i].id == id && fds[i].quantifier_offset == fds[like].quantifier_offset)
            return i;
    return like;
}

static int msg_from_json(pj_ctx *c, const pj_msg *m, const json_t *obj, ProtobufCMessage *msg)
{
    if (c->depth >= PJ_MAX_DEPTH)
        return pj_fail(c, RTC_EINVAL, "nesting deeper than %d messages", PJ_MAX_DEPTH);
    c->depth++;
    /* The key each field was given under: both spellings of one field, or
     * two members of one oneof, are refused. */
    const char *seen_small[32] = {0};
    const char **seen = seen_small;
    size_t nf = m->desc->n_fields;
    int rc = 0;
    if (nf > sizeof(seen_small) / sizeof(seen_small[0]) && !(seen = calloc(nf, sizeof(*seen))))
        return pj_fail(c, RTC_ENOMEM, "out of memory");
    char q1[PJ_QUOTE_MAX], q2[PJ_QUOTE_MAX];
    for (void *it = json_object_iter((json_t *)obj); it;
         it = json_object_iter_next((json_t *)obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = key_len(it, key);
        const json_t *v = json_object_iter_value(it);
        const pj_key *k = pj_key_find(m, key, klen);
        if (!k) {
            rc = pj_fail(c, RTC_EINVAL, "unknown field %s", pj_quote(key, klen, q1, sizeof(q1)));
            goto out;
        }
        const pj_field *f = &m->fields[k->field];
        if (seen[k->field]) {
            rc = pj_fail(c, RTC_EINVAL, "both %s and %s given",
                         pj_quote(seen[k->field], strlen(seen[k->field]), q1, sizeof(q1)),
                         pj_quote(key, klen, q2, sizeof(q2)));
            goto out;
        }
        seen[k->field] = key;
        if (json_is_null(v))
            continue; /* the default; for a oneof member: not set */
        if ((f->fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)MEMBER(msg, f->fd->quantifier_offset) != 0) {
            const char *other = seen[oneof_member(m, msg, k->field)];
            rc = pj_fail(c, RTC_EINVAL, "%s and %s are members of one oneof",
                         pj_quote(other, strlen(other), q1, sizeof(q1)),
                         pj_quote(key, klen, q2, sizeof(q2)));
            goto out;
        }
        pj_push_field(c, f);
        if ((rc = field_from_json(c, f, v, msg)))
            goto out;
        pj_pop(c);
    }
    c->depth--;
out:
    if (seen != seen_small)
        free(seen);
    return rc;
}

/* ---- public --------------------------------------------------------------------------- */

int rtc_pbjson_from_json(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                         const json_t *in, ProtobufCMessage **out, char *err, size_t errlen)
{
    pj_ctx c;
    pj_ctx_init(&c, err, errlen);
    *out = NULL;
    const pj_msg *m = pj_msg_lookup(&c, pj, desc);
    if (!m)
        return RTC_ENOTFOUND;
    if (!in || !json_is_object(in))
        return pj_fail(&c, RTC_EINVAL, "expected an object, got %s",
                       in ? json_kind(in) : "nothing");
    ProtobufCMessage *msg = pj_msg_new(desc);
    if (!msg)
        return pj_fail(&c, RTC_ENOMEM, "out of memory");
    int rc = msg_from_json(&c, m, in, msg);
    if (rc) {
        protobuf_c_message_free_unpacked(msg, NULL);
        return rc;
    }
    *out = msg;
    return 0;
}

int rtc_pbjson_encode(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                      const json_t *in, rtc_buf *out, char *err, size_t errlen)
{
    ProtobufCMessage *msg = NULL;
    int rc = rtc_pbjson_from_json(pj, desc, in, &msg, err, errlen);
    if (rc)
        return rc;
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > 0) {
        if ((rc = rtc_buf_reserve(out, n))) {
            if (err && errlen)
                snprintf(err, errlen, "out of memory");
            goto out;
        }
        out->len += protobuf_c_message_pack(msg, out->data + out->len);
    }
out:
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

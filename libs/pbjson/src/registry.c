/* registry.c — rtc_pbjson_new: joins protobuf-c's descriptors (layout,
 * wire format) with the FileDescriptorSet (json names, map entries,
 * streaming flags, proto2 vs proto3), once, so conversions only follow
 * pointers.
 *
 * The set is unpacked with protobuf-c from descriptor.proto's generated
 * code, indexed by full name, and dropped again at the end: a registered
 * message keeps copies of what it needs. Every mismatch between the two
 * descriptions (a message, field, service or method one side lacks, a field
 * whose name differs) fails the whole registry: the transcoder would
 * otherwise produce JSON that other implementations read differently. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "pbjson_int.h"

typedef Google__Protobuf__FileDescriptorSet fds_set;
typedef Google__Protobuf__FileDescriptorProto fds_file;
typedef Google__Protobuf__DescriptorProto fds_msg;
typedef Google__Protobuf__FieldDescriptorProto fds_field;
typedef Google__Protobuf__EnumDescriptorProto fds_enum;
typedef Google__Protobuf__ServiceDescriptorProto fds_service;
typedef Google__Protobuf__MethodDescriptorProto fds_method;

enum { ENT_MESSAGE, ENT_ENUM, ENT_SERVICE };

/* One named definition of the set: "pkg.Outer.Inner" → its proto. */
typedef struct fds_ent {
    char *name;
    int kind;
    const void *proto;
    bool proto2; /* declared in a proto2 file */
    UT_hash_handle hh;
} fds_ent;

typedef struct builder {
    rtc_pbjson *pj;
    fds_ent *index;
    char *err;
    size_t errlen;
    /* Messages registered but whose fields are not filled in yet. */
    pj_msg **todo;
    size_t ntodo, captodo;
} builder;

static int fail(builder *b, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(builder *b, int rc, const char *fmt, ...)
{
    if (b->err && b->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, b->errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- the set, indexed by full name -------------------------------------------- */

static int index_add(builder *b, const char *prefix, const char *name, int kind, const void *proto,
                     bool proto2)
{
    bool oom = false;
    fds_ent *e = calloc(1, sizeof(*e));
    if (!e)
        return fail(b, RTC_ENOMEM, "out of memory");
    if (asprintf(&e->name, "%s%s%s", prefix, *prefix ? "." : "", name ? name : "") < 0) {
        free(e);
        return fail(b, RTC_ENOMEM, "out of memory");
    }
    e->kind = kind;
    e->proto = proto;
    e->proto2 = proto2;
    fds_ent *dup = NULL;
    HASH_FIND_STR(b->index, e->name, dup);
    if (dup) {
        int rc = fail(b, RTC_EINVAL, "descriptor set defines %s twice", e->name);
        free(e->name);
        free(e);
        return rc;
    }
    HASH_ADD_KEYPTR(hh, b->index, e->name, strlen(e->name), e);
    if (oom) {
        free(e->name);
        free(e);
        return fail(b, RTC_ENOMEM, "out of memory");
    }
    return 0;
}

static int index_message(builder *b, const char *prefix, const fds_msg *m, bool proto2)
{
    int rc = index_add(b, prefix, m->name, ENT_MESSAGE, m, proto2);
    if (rc)
        return rc;
    char *full = NULL;
    if (asprintf(&full, "%s%s%s", prefix, *prefix ? "." : "", m->name ? m->name : "") < 0)
        return fail(b, RTC_ENOMEM, "out of memory");
    for (size_t i = 0; i < m->n_nested_type && !rc; i++)
        rc = index_message(b, full, m->nested_type[i], proto2);
    for (size_t i = 0; i < m->n_enum_type && !rc; i++)
        rc = index_add(b, full, m->enum_type[i]->name, ENT_ENUM, m->enum_type[i], proto2);
    free(full);
    return rc;
}

static int index_set(builder *b, const fds_set *set)
{
    int rc = 0;
    for (size_t f = 0; f < set->n_file && !rc; f++) {
        const fds_file *file = set->file[f];
        const char *pkg = file->package ? file->package : "";
        /* An absent syntax means proto2 (descriptor.proto says so). */
        bool proto2 = !file->syntax || !strcmp(file->syntax, "proto2");
        for (size_t i = 0; i < file->n_message_type && !rc; i++)
            rc = index_message(b, pkg, file->message_type[i], proto2);
        for (size_t i = 0; i < file->n_enum_type && !rc; i++)
            rc = index_add(b, pkg, file->enum_type[i]->name, ENT_ENUM, file->enum_type[i], proto2);
        for (size_t i = 0; i < file->n_service && !rc; i++)
            rc = index_add(b, pkg, file->service[i]->name, ENT_SERVICE, file->service[i], proto2);
    }
    return rc;
}

static const fds_ent *index_find(const builder *b, const char *name, int kind)
{
    fds_ent *e = NULL;
    HASH_FIND_STR(b->index, name, e);
    return e && e->kind == kind ? e : NULL;
}

/* ---- messages ------------------------------------------------------------------- */

/* protoc's rule for a json name when the set has none: drop each '_' and
 * upper-case the letter after it. */
static char *camel_case(const char *name)
{
    char *out = malloc(strlen(name) + 1);
    if (!out)
        return NULL;
    size_t n = 0;
    bool up = false;
    for (const char *p = name; *p; p++) {
        if (*p == '_') {
            up = true;
        } else {
            out[n++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
            up = false;
        }
    }
    out[n] = '\0';
    return out;
}

static int key_cmp(const void *a, const void *b)
{
    const pj_key *x = a, *y = b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

const pj_key *pj_key_find(const pj_msg *m, const char *name, size_t len)
{
    pj_key k = {name, len, 0};
    return bsearch(&k, m->keys, m->nkeys, sizeof(*m->keys), key_cmp);
}

const pj_msg *pj_msg_find(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc)
{
    pj_msg *m = NULL;
    if (desc)
        HASH_FIND_PTR(pj->msgs, &desc, m);
    return m;
}

static void msg_free(pj_msg *m)
{
    if (!m)
        return;
    if (m->fields)
        for (size_t i = 0; i < m->desc->n_fields; i++)
            free(m->fields[i].json_name);
    free(m->fields);
    free(m->keys);
    free(m);
}

/* Registers desc (once) with an empty field table; fill_msg completes it. */
static int reg_msg(builder *b, const ProtobufCMessageDescriptor *desc)
{
    bool oom = false;
    if (pj_msg_find(b->pj, desc))
        return 0;
    if (!index_find(b, desc->name, ENT_MESSAGE))
        return fail(b, RTC_EINVAL, "message %s is not in the descriptor set", desc->name);
    if (b->ntodo == b->captodo) {
        size_t cap = b->captodo ? 2 * b->captodo : 32;
        pj_msg **t = realloc(b->todo, cap * sizeof(*t));
        if (!t)
            return fail(b, RTC_ENOMEM, "out of memory");
        b->todo = t;
        b->captodo = cap;
    }
    pj_msg *m = calloc(1, sizeof(*m));
    if (!m)
        return fail(b, RTC_ENOMEM, "out of memory");
    m->desc = desc;
    HASH_ADD_PTR(b->pj->msgs, desc, m);
    if (oom) {
        free(m);
        return fail(b, RTC_ENOMEM, "out of memory");
    }
    b->todo[b->ntodo++] = m;
    return 0;
}

static const fds_field *proto_field(const fds_msg *dp, uint32_t number)
{
    for (size_t i = 0; i < dp->n_field; i++)
        if (dp->field[i]->has_number && (uint32_t)dp->field[i]->number == number)
            return dp->field[i];
    return NULL;
}

static int fill_field(builder *b, const pj_msg *m, const fds_msg *dp, pj_field *f)
{
    const ProtobufCFieldDescriptor *fd = f->fd;
    const char *mname = m->desc->name;
    const fds_field *pf = proto_field(dp, fd->id);
    if (!pf)
        return fail(b, RTC_EINVAL, "field %s.%s (%u) is not in the descriptor set", mname, fd->name,
                    fd->id);
    if (!pf->name || strcmp(pf->name, fd->name))
        return fail(b, RTC_EINVAL, "field %u of %s is \"%s\" in the descriptor set, not \"%s\"",
                    fd->id, mname, pf->name ? pf->name : "", fd->name);
    bool repeated = pf->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
    if (repeated != (fd->label == PROTOBUF_C_LABEL_REPEATED))
        return fail(b, RTC_EINVAL, "field %s.%s is repeated on one side only", mname, fd->name);
    f->json_name = pf->json_name && *pf->json_name ? strdup(pf->json_name) : camel_case(fd->name);
    if (!f->json_name)
        return fail(b, RTC_ENOMEM, "out of memory");
    if (fd->type == PROTOBUF_C_TYPE_ENUM) {
        const ProtobufCEnumDescriptor *ed = fd->descriptor;
        const fds_ent *e = index_find(b, ed->name, ENT_ENUM);
        if (!e)
            return fail(b, RTC_EINVAL, "enum %s is not in the descriptor set", ed->name);
        f->closed_enum = e->proto2;
    } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
        return reg_msg(b, fd->descriptor);
    }
    return 0;
}

static int fill_keys(builder *b, pj_msg *m)
{
    size_t n = m->desc->n_fields;
    m->keys = calloc(2 * n + 1, sizeof(*m->keys));
    if (!m->keys)
        return fail(b, RTC_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const pj_field *f = &m->fields[i];
        m->keys[m->nkeys++] = (pj_key){f->json_name, strlen(f->json_name), i};
        if (strcmp(f->json_name, f->fd->name))
            m->keys[m->nkeys++] = (pj_key){f->fd->name, strlen(f->fd->name), i};
    }
    qsort(m->keys, m->nkeys, sizeof(*m->keys), key_cmp);
    for (size_t i = 1; i < m->nkeys; i++)
        if (!key_cmp(&m->keys[i - 1], &m->keys[i]))
            return fail(b, RTC_EINVAL, "message %s: \"%s\" names two fields", m->desc->name,
                        m->keys[i].name);
    return 0;
}

static int fill_msg(builder *b, pj_msg *m)
{
    const ProtobufCMessageDescriptor *desc = m->desc;
    const fds_msg *dp = index_find(b, desc->name, ENT_MESSAGE)->proto;
    if (dp->n_field != desc->n_fields)
        return fail(b, RTC_EINVAL, "message %s has %zu fields in the descriptor set, %u here",
                    desc->name, dp->n_field, desc->n_fields);
    m->map_entry = dp->options && dp->options->has_map_entry && dp->options->map_entry;
    if (m->map_entry &&
        (desc->n_fields != 2 || desc->fields[0].id != 1 || desc->fields[1].id != 2 ||
         desc->fields[0].type == PROTOBUF_C_TYPE_MESSAGE))
        return fail(b, RTC_EINVAL, "map entry %s is not (key = 1, value = 2)", desc->name);
    m->fields = calloc(desc->n_fields ? desc->n_fields : 1, sizeof(*m->fields));
    if (!m->fields)
        return fail(b, RTC_ENOMEM, "out of memory");
    for (size_t i = 0; i < desc->n_fields; i++) {
        m->fields[i].fd = &desc->fields[i];
        int rc = fill_field(b, m, dp, &m->fields[i]);
        if (rc)
            return rc;
    }
    return fill_keys(b, m);
}

/* Points each message field at its registered type: every type is in the
 * table by now. */
static void link_msgs(rtc_pbjson *pj)
{
    pj_msg *m, *tmp;
    HASH_ITER(hh, pj->msgs, m, tmp)
    {
        for (size_t i = 0; i < m->desc->n_fields; i++) {
            pj_field *f = &m->fields[i];
            if (f->fd->type != PROTOBUF_C_TYPE_MESSAGE)
                continue;
            f->msg = pj_msg_find(pj, f->fd->descriptor);
            f->map = f->fd->label == PROTOBUF_C_LABEL_REPEATED && f->msg->map_entry;
        }
    }
}

/* ---- services ------------------------------------------------------------------- */

static bool same_type(const char *proto_type, const ProtobufCMessageDescriptor *d)
{
    if (!proto_type)
        return false;
    if (*proto_type == '.')
        proto_type++;
    return !strcmp(proto_type, d->name);
}

static int reg_method(builder *b, const ProtobufCServiceDescriptor *s, const fds_service *sp,
                      const ProtobufCMethodDescriptor *md, pj_method *out)
{
    bool oom = false;
    const fds_method *pm = NULL;
    for (size_t i = 0; i < sp->n_method && !pm; i++)
        if (sp->method[i]->name && !strcmp(sp->method[i]->name, md->name))
            pm = sp->method[i];
    if (!pm)
        return fail(b, RTC_EINVAL, "method %s/%s is not in the descriptor set", s->name, md->name);
    if (!same_type(pm->input_type, md->input) || !same_type(pm->output_type, md->output))
        return fail(b, RTC_EINVAL, "method %s/%s has other types in the descriptor set", s->name,
                    md->name);
    rtc_pbjson_method *m = &out->m;
    if (asprintf((char **)&m->name, "%s/%s", s->name, md->name) < 0) {
        m->name = NULL;
        return fail(b, RTC_ENOMEM, "out of memory");
    }
    m->service = s->name;
    m->method = md->name;
    m->input = md->input;
    m->output = md->output;
    m->client_streaming = pm->has_client_streaming && pm->client_streaming;
    m->server_streaming = pm->has_server_streaming && pm->server_streaming;
    pj_method *dup = NULL;
    HASH_FIND_STR(b->pj->by_name, m->name, dup);
    if (dup)
        return fail(b, RTC_EINVAL, "method %s is given twice", m->name);
    HASH_ADD_KEYPTR(hh, b->pj->by_name, m->name, strlen(m->name), out);
    if (oom)
        return fail(b, RTC_ENOMEM, "out of memory");
    int rc = reg_msg(b, md->input);
    return rc ? rc : reg_msg(b, md->output);
}

static int reg_services(builder *b, const ProtobufCServiceDescriptor *const *services,
                        size_t nservices)
{
    size_t total = 0;
    for (size_t i = 0; i < nservices; i++)
        total += services[i]->n_methods;
    b->pj->methods = calloc(total ? total : 1, sizeof(*b->pj->methods));
    if (!b->pj->methods)
        return fail(b, RTC_ENOMEM, "out of memory");
    for (size_t i = 0; i < nservices; i++) {
        const ProtobufCServiceDescriptor *s = services[i];
        const fds_ent *e = index_find(b, s->name, ENT_SERVICE);
        if (!e)
            return fail(b, RTC_EINVAL, "service %s is not in the descriptor set", s->name);
        for (unsigned j = 0; j < s->n_methods; j++) {
            int rc = reg_method(b, s, e->proto, &s->methods[j], &b->pj->methods[b->pj->nmethods]);
            if (b->pj->methods[b->pj->nmethods].m.name)
                b->pj->nmethods++; /* so that rtc_pbjson_free frees its name */
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* ---- public --------------------------------------------------------------------- */

int rtc_pbjson_new(const uint8_t *fds, size_t fds_len,
                   const ProtobufCServiceDescriptor *const *services, size_t nservices,
                   rtc_pbjson **out, char *err, size_t errlen)
{
    builder b = {.err = err, .errlen = errlen};
    fds_set *set = NULL;
    int rc = 0;
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    if (!fds || (!services && nservices))
        return fail(&b, RTC_EINVAL, "no descriptor set or services given");
    b.pj = calloc(1, sizeof(*b.pj));
    if (!b.pj)
        return fail(&b, RTC_ENOMEM, "out of memory");
    set = google__protobuf__file_descriptor_set__unpack(NULL, fds_len, fds);
    if (!set) {
        rc = fail(&b, RTC_EINVAL, "the descriptor set does not parse");
        goto out;
    }
    if ((rc = index_set(&b, set)))
        goto out;
    if ((rc = reg_services(&b, services, nservices)))
        goto out;
    /* fill_msg registers the types its fields name, which appends to todo. */
    for (size_t i = 0; i < b.ntodo; i++)
        if ((rc = fill_msg(&b, b.todo[i])))
            goto out;
    link_msgs(b.pj);
    *out = b.pj;
    b.pj = NULL;
out:
    rtc_pbjson_free(b.pj);
    fds_ent *e, *tmp;
    HASH_ITER(hh, b.index, e, tmp)
    {
        HASH_DEL(b.index, e);
        free(e->name);
        free(e);
    }
    free(b.todo);
    if (set)
        google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    return rc;
}

void rtc_pbjson_free(rtc_pbjson *pj)
{
    if (!pj)
        return;
    pj_msg *m, *tmp;
    HASH_ITER(hh, pj->msgs, m, tmp)
    {
        HASH_DEL(pj->msgs, m);
        msg_free(m);
    }
    HASH_CLEAR(hh, pj->by_name);
    for (size_t i = 0; i < pj->nmethods; i++)
        free((char *)pj->methods[i].m.name);
    free(pj->methods);
    free(pj);
}

const rtc_pbjson_method *rtc_pbjson_method_find(const rtc_pbjson *pj, const char *name)
{
    pj_method *m = NULL;
    if (name)
        HASH_FIND_STR(pj->by_name, name, m);
    return m ? &m->m : NULL;
}

size_t rtc_pbjson_method_count(const rtc_pbjson *pj)
{
    return pj->nmethods;
}

const rtc_pbjson_method *rtc_pbjson_method_at(const rtc_pbjson *pj, size_t i)
{
    return i < pj->nmethods ? &pj->methods[i].m : NULL;
}

const char *rtc_pbjson_json_name(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                                 const ProtobufCFieldDescriptor *field)
{
    const pj_msg *m = pj_msg_find(pj, desc);
    if (!m || !field || field < desc->fields || field >= desc->fields + desc->n_fields)
        return NULL;
    return m->fields[field - desc->fields].json_name;
}

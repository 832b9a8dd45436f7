/* pbjson_int.h — rtc_pbjson's private types: the registry built by
 * registry.c and read by the two directions (from_json.c, to_json.c), and
 * the error context that renders "<path>: <what>".
 *
 * Everything the hot path needs is resolved once in rtc_pbjson_new: a
 * registered message knows, per protobuf-c field (same index as
 * desc->fields), its json name, its sub-message's registry entry and
 * whether it is a map; and it has a sorted table of the JSON keys it
 * accepts. A conversion does one hash lookup (the top-level descriptor) and
 * then follows pointers. */
#ifndef RTC_PBJSON_INT_H
#define RTC_PBJSON_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* uthash reports a failed allocation through this instead of exiting; a
 * function that adds to a hash declares `bool oom = false` and checks it. */
#define HASH_NONFATAL_OOM        1
#define uthash_nonfatal_oom(elt) (oom = true)
/* FNV-1a: uthash's default (Jenkins) falls through switch cases, which
 * clang's -Wimplicit-fallthrough refuses. Keys are short names and
 * pointers. */
#define HASH_FUNCTION(keyptr, keylen, hashv) HASH_FNV(keyptr, keylen, hashv)
#include <uthash.h>

#include "rtc/pbjson.h"

/* How many message levels a JSON object or a wire message may nest. Deeper
 * input is refused before anything recurses further: the transcoder and
 * protobuf-c's unpacker both recurse once per level. */
#define PJ_MAX_DEPTH 64

typedef struct pj_msg pj_msg;

typedef struct pj_field {
    const ProtobufCFieldDescriptor *fd;
    char *json_name;   /* owned */
    const pj_msg *msg; /* TYPE_MESSAGE: the registered type (for a map: the entry) */
    bool map;          /* repeated entries of msg: key = msg->fields[0], value = [1] */
    bool closed_enum;  /* TYPE_ENUM of a proto2 file: unknown numbers are refused */
} pj_field;

/* One accepted JSON key of a message: a json name or a .proto name. */
typedef struct pj_key {
    const char *name; /* borrowed from the field */
    size_t len;
    size_t field; /* index in pj_msg.fields */
} pj_key;

struct pj_msg {
    const ProtobufCMessageDescriptor *desc;
    pj_field *fields; /* desc->n_fields, in desc->fields order */
    pj_key *keys;     /* sorted by (bytes, length): binary search */
    size_t nkeys;
    bool map_entry;
    UT_hash_handle hh; /* rtc_pbjson.msgs, keyed by desc */
};

typedef struct pj_method {
    rtc_pbjson_method m;
    UT_hash_handle hh; /* rtc_pbjson.by_name, keyed by m.name */
} pj_method;

struct rtc_pbjson {
    pj_msg *msgs;
    pj_method *methods; /* array of nmethods */
    size_t nmethods;
    pj_method *by_name;
};

const pj_msg *pj_msg_find(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc);
const pj_key *pj_key_find(const pj_msg *m, const char *name, size_t len);

/* ---- error context: where in the message we are ----------------------------------- */

enum { PJ_SEG_FIELD, PJ_SEG_INDEX, PJ_SEG_KEY };

typedef struct pj_seg {
    int kind;
    const char *name; /* FIELD: json name; KEY: the map key (len bytes) */
    size_t len;
    size_t index; /* INDEX */
} pj_seg;

/* Two segments per message level at most (field, then index or key). */
#define PJ_MAX_SEGS (2 * PJ_MAX_DEPTH + 4)

typedef struct pj_ctx {
    char *err;
    size_t errlen;
    int depth;
    size_t nseg; /* may exceed PJ_MAX_SEGS: the excess is not recorded */
    pj_seg seg[PJ_MAX_SEGS];
} pj_ctx;

void pj_ctx_init(pj_ctx *c, char *err, size_t errlen);
void pj_push_field(pj_ctx *c, const pj_field *f);
void pj_push_index(pj_ctx *c, size_t index);
void pj_push_key(pj_ctx *c, const char *key, size_t len);
void pj_pop(pj_ctx *c);
/* Writes "<path>: <what>" (or "<what>" at the top) to c->err; returns rc. */
int pj_fail(pj_ctx *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* s as a quoted, escaped and possibly shortened string for messages. */
const char *pj_quote(const char *s, size_t len, char *buf, size_t cap);
#define PJ_QUOTE_MAX 96
/* The shortest %g form of d that reads back as d, for messages. */
const char *pj_fmt_double(double d, char *buf, size_t cap);

/* The registered type desc, or NULL with c's error set (the caller returns
 * RTC_ENOTFOUND). */
const pj_msg *pj_msg_lookup(pj_ctx *c, const rtc_pbjson *pj,
                            const ProtobufCMessageDescriptor *desc);

/* ---- shared helpers ---------------------------------------------------------------- */

/* Size of one element of a repeated field of type t (and of a singular
 * member). */
size_t pj_elem_size(ProtobufCType t);
/* A new message initialised with desc->message_init, or NULL. */
ProtobufCMessage *pj_msg_new(const ProtobufCMessageDescriptor *desc);
/* The proto type name for messages: "int32", "fixed64", ... */
const char *pj_type_name(ProtobufCType t);

/* Standard base64 with padding: writes pj_b64_len(n) bytes (no NUL). */
size_t pj_b64_len(size_t n);
void pj_b64_encode(const uint8_t *in, size_t n, char *out);
/* Standard or URL-safe alphabet, padding optional. *out is malloc'd (NULL
 * when *outlen is 0). 0, RTC_EINVAL or RTC_ENOMEM. */
int pj_b64_decode(const char *in, size_t n, uint8_t **out, size_t *outlen);

int pj_msg_to_json(pj_ctx *c, const pj_msg *m, const ProtobufCMessage *msg, json_t **out);

#endif

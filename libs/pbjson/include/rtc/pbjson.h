/* rtc/pbjson.h — proto3 canonical JSON ⇄ protobuf, driven by descriptors.
 *
 * The bridge turns browser JSON into gRPC calls without code per method:
 * everything it needs comes from descriptors. protobuf-c's descriptors give
 * each message's layout (field numbers, types, offsets, nested types) and
 * protobuf-c does the wire format; the build's FileDescriptorSet adds what
 * protoc-c's descriptors lack: each field's json_name, which repeated
 * fields are maps, and each method's streaming flags.
 *
 * JSON follows the proto3 JSON mapping
 * (https://protobuf.dev/programming-guides/proto3/#json):
 *  - out: lowerCamelCase json names; fields at their default value are
 *    left out (a set oneof member and a present sub-message are always
 *    written); int64/uint64/fixed64/sfixed64/sint64 as decimal strings;
 *    enums by name (a number the descriptor does not know stays a number);
 *    bytes as standard base64 with padding; float/double NaN and infinities
 *    as "NaN", "Infinity", "-Infinity"; maps as objects keyed by the key's
 *    text.
 *  - in: the json name or the .proto field name (not both for one field);
 *    null = the default; every integer type as a JSON number (integral,
 *    in range) or a decimal string; enums by name or number; bytes in
 *    standard or URL-safe base64, padding optional; float/double as
 *    numbers or the strings above.
 *  - rejected with the path of the field in the message, e.g.
 *    `payload.description.type: unknown value "OFERR" of enum
 *    rtc.signaling.v1.SdpType`: unknown fields, wrong JSON types,
 *    out-of-range numbers, bad base64, two members of one oneof, null
 *    inside a repeated field or map, and strings that are not UTF-8.
 * Well-known types (google.protobuf.Timestamp, …) get no special form:
 * they are plain messages here (the rtc contracts do not use them).
 *
 * No I/O; single-threaded use of one rtc_pbjson, read-only after new. */
#ifndef RTC_PBJSON_H
#define RTC_PBJSON_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include "rtc/buf.h"
#include "rtc/error.h"

typedef struct rtc_pbjson rtc_pbjson;

/* One RPC of a registered service. */
typedef struct rtc_pbjson_method {
    const char *name;    /* "rtc.signaling.v1.Signaling/Join": the gRPC path without '/' */
    const char *service; /* "rtc.signaling.v1.Signaling" */
    const char *method;  /* "Join" */
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    bool client_streaming;
    bool server_streaming;
} rtc_pbjson_method;

/* Build the registry from a serialized FileDescriptorSet (protoc
 * --descriptor_set_out --include_imports) and the protobuf-c descriptors
 * of the services to expose; every message reachable from their methods is
 * registered. On failure, err (may be NULL) says why in one line.
 * RTC_EINVAL: the set does not parse, or a service, method, message or
 * field of the protobuf-c descriptors is missing from it (the two were not
 * built from the same .proto files). RTC_ENOMEM. *out owned by the caller:
 * rtc_pbjson_free. */
int rtc_pbjson_new(const uint8_t *fds, size_t fds_len,
                   const ProtobufCServiceDescriptor *const *services, size_t nservices,
                   rtc_pbjson **out, char *err, size_t errlen);
void rtc_pbjson_free(rtc_pbjson *pj);

/* The method "pkg.Service/Method" (no leading '/'), or NULL. */
const rtc_pbjson_method *rtc_pbjson_method_find(const rtc_pbjson *pj, const char *name);
/* Every method, in the order of the services given, then of the .proto. */
size_t rtc_pbjson_method_count(const rtc_pbjson *pj);
const rtc_pbjson_method *rtc_pbjson_method_at(const rtc_pbjson *pj, size_t i);

/* The json name of a field of a registered message ("sessionId"), or NULL
 * when the message is not registered. */
const char *rtc_pbjson_json_name(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                                 const ProtobufCFieldDescriptor *field);

/* JSON text → a JSON value (caller owns the reference): the value
 * json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, …) gives,
 * and the same inputs refused, but lexed by yajl (~5× faster on an SDP-sized
 * message), with containers nested at most max_depth deep (0: 2048). Two
 * differences, both stricter or at jansson's limit: a raw NUL byte is
 * refused anywhere (jansson ends the text at one after a number or a
 * keyword), and with max_depth 0 a scalar inside exactly 2048 containers
 * passes (jansson counts the scalar as a level too). 0; RTC_EINVAL: not
 * JSON, a duplicate key, \u0000, an integer beyond json_int_t or a real
 * beyond a double (err: what, and at which byte); RTC_ETOOBIG: nested deeper
 * than max_depth (err says so); RTC_ENOMEM. err is always valid UTF-8, cut
 * to errlen. */
int rtc_pbjson_load(const char *text, size_t len, unsigned max_depth, json_t **out, char *err,
                    size_t errlen);

/* JSON → a new protobuf-c message of type desc. `in` must be a JSON
 * object. *out is allocated the way protobuf_c_message_unpack allocates
 * (system allocator): free it with protobuf_c_message_free_unpacked(*out,
 * NULL). 0; RTC_EINVAL with err = "<path>: <what>" (path "" for the
 * message itself); RTC_ENOTFOUND when desc is not registered; RTC_ENOMEM. */
int rtc_pbjson_from_json(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                         const json_t *in, ProtobufCMessage **out, char *err, size_t errlen);

/* A protobuf-c message (of a registered type) → a new JSON object (caller
 * owns the reference). 0, RTC_ENOTFOUND, RTC_EINVAL (a string field that
 * is not UTF-8: err names it), RTC_ENOMEM. */
int rtc_pbjson_to_json(const rtc_pbjson *pj, const ProtobufCMessage *msg, json_t **out,
                       char *err, size_t errlen);

/* JSON → protobuf wire bytes appended to out (from_json + pack). Errors as
 * rtc_pbjson_from_json. */
int rtc_pbjson_encode(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                      const json_t *in, rtc_buf *out, char *err, size_t errlen);

/* Protobuf wire bytes of type desc → a new JSON object (unpack +
 * to_json). RTC_EPROTO when the bytes are not a valid message of that
 * type; else as rtc_pbjson_to_json. */
int rtc_pbjson_decode(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                      const uint8_t *data, size_t len, json_t **out, char *err, size_t errlen);

/* Protobuf wire bytes of type desc → their JSON text, appended to out: the
 * same JSON as rtc_pbjson_decode printed compactly, without building JSON
 * values (the bridge's hot path). With msg, the unpacked message is handed
 * over too (free it with protobuf_c_message_free_unpacked(*msg, NULL)).
 * Errors as rtc_pbjson_decode; out is left as it was. */
int rtc_pbjson_decode_text(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *desc,
                           const uint8_t *data, size_t len, rtc_buf *out, ProtobufCMessage **msg,
                           char *err, size_t errlen);

#endif

/* test_pbjson.c — rtc_pbjson: the registry, golden files made by an
 * independent implementation, and refusals with their exact error paths.
 *
 * Two registries: rtc_proto's services (the published contracts) and
 * rtc.test.v1.Types (tests/proto/rtc/test/v1/types.proto: every scalar,
 * repeated, map, oneof and naming shape). golden/pbjson/ holds, per message
 * reachable from those services, python3-protobuf's JSON (json names and
 * .proto names) and wire bytes of a fully populated instance (gen.py says
 * how they are made); a message without goldens fails the test, so a new
 * message in a .proto needs a re-run of gen.py. */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rtc/pbjson.h"
#include "rtc/signaling/v1/signaling.pb-c.h"
#include "rtc/test/v1/types.pb-c.h"
#include "rtc_proto_fds.h"
#include "rtc_test_types_proto_fds.h"

#ifndef RTC_PBJSON_GOLDEN_DIR
#error "RTC_PBJSON_GOLDEN_DIR must name tests/unit/golden/pbjson"
#endif

static rtc_pbjson *g_rtc;   /* rtc_proto's services */
static rtc_pbjson *g_types; /* rtc.test.v1.Types */

/* ---- helpers ------------------------------------------------------------------------- */

static int setup_all(void **state)
{
    (void)state;
    char err[256];
    if (rtc_pbjson_new(rtc_proto_fds, rtc_proto_fds_len, rtc_proto_fds_services,
                       rtc_proto_fds_services_len, &g_rtc, err, sizeof(err))) {
        fprintf(stderr, "rtc registry: %s\n", err);
        return -1;
    }
    if (rtc_pbjson_new(rtc_test_types_fds, rtc_test_types_fds_len, rtc_test_types_fds_services,
                       rtc_test_types_fds_services_len, &g_types, err, sizeof(err))) {
        fprintf(stderr, "types registry: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    rtc_pbjson_free(g_rtc);
    rtc_pbjson_free(g_types);
    return 0;
}

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_ALLOW_NUL | JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("bad JSON in test: %s: %s", text, e.text);
    return j;
}

static void assert_json_equal(const json_t *got, const json_t *want, const char *what)
{
    if (json_equal(got, want))
        return;
    char *g = json_dumps(got, JSON_SORT_KEYS | JSON_INDENT(1));
    char *w = json_dumps(want, JSON_SORT_KEYS | JSON_INDENT(1));
    print_error("%s:\n got: %s\nwant: %s\n", what, g ? g : "?", w ? w : "?");
    free(g);
    free(w);
    fail();
}

static void assert_bytes_equal(const rtc_buf *a, const uint8_t *b, size_t blen, const char *what)
{
    if (a->len == blen && (blen == 0 || !memcmp(a->data, b, blen)))
        return;
    print_error("%s: %zu bytes vs %zu bytes differ\n", what, a->len, blen);
    fail();
}

/* The messages reachable from a registry's methods, by protobuf-c descriptor. */
typedef struct reach {
    const ProtobufCMessageDescriptor *desc[256];
    const rtc_pbjson *pj[256];
    size_t n;
} reach;

static void reach_add(reach *r, const rtc_pbjson *pj, const ProtobufCMessageDescriptor *d)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->desc[i] == d)
            return;
    assert_true(r->n < 256);
    r->desc[r->n] = d;
    r->pj[r->n++] = pj;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (d->fields[i].type == PROTOBUF_C_TYPE_MESSAGE)
            reach_add(r, pj, d->fields[i].descriptor);
}

static void reach_all(reach *r)
{
    r->n = 0;
    const rtc_pbjson *pjs[] = {g_rtc, g_types};
    for (size_t p = 0; p < 2; p++)
        for (size_t i = 0; i < rtc_pbjson_method_count(pjs[p]); i++) {
            const rtc_pbjson_method *m = rtc_pbjson_method_at(pjs[p], i);
            reach_add(r, pjs[p], m->input);
            reach_add(r, pjs[p], m->output);
        }
}

static const ProtobufCMessageDescriptor *reach_find(const reach *r, const char *name,
                                                    const rtc_pbjson **pj)
{
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->desc[i]->name, name)) {
            *pj = r->pj[i];
            return r->desc[i];
        }
    return NULL;
}

static char *golden_path(const char *base, const char *ext)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s%s", RTC_PBJSON_GOLDEN_DIR, base, ext) > 0);
    return p;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0, r;
    do {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        r = fread(buf + n, 1, cap - n, f);
        n += r;
    } while (r > 0);
    fclose(f);
    *len = n;
    return buf;
}

static json_t *load_json(const char *path)
{
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (!j)
        fail_msg("%s: %s", path, e.text);
    return j;
}

/* encode(in) then decode: the canonical JSON of what in says. */
static json_t *reencode(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *d, const json_t *in,
                        rtc_buf *bytes)
{
    char err[256] = "";
    json_t *out = NULL;
    rtc_buf_reset(bytes);
    int rc = rtc_pbjson_encode(pj, d, in, bytes, err, sizeof(err));
    if (rc)
        fail_msg("%s: encode: %s (%d)", d->name, err, rc);
    rc = rtc_pbjson_decode(pj, d, bytes->data, bytes->len, &out, err, sizeof(err));
    if (rc)
        fail_msg("%s: decode: %s (%d)", d->name, err, rc);
    return out;
}

/* ---- registry ------------------------------------------------------------------------- */

static void test_methods(void **state)
{
    (void)state;
    size_t total = 0;
    for (size_t i = 0; i < rtc_proto_fds_services_len; i++)
        total += rtc_proto_fds_services[i]->n_methods;
    assert_int_equal(rtc_pbjson_method_count(g_rtc), total);
    assert_true(total >= 20);

    const rtc_pbjson_method *m = rtc_pbjson_method_find(g_rtc, "rtc.signaling.v1.Signaling/Join");
    assert_non_null(m);
    assert_string_equal(m->service, "rtc.signaling.v1.Signaling");
    assert_string_equal(m->method, "Join");
    assert_ptr_equal(m->input, &rtc__signaling__v1__join_request__descriptor);
    assert_ptr_equal(m->output, &rtc__signaling__v1__join_response__descriptor);
    assert_false(m->server_streaming);
    assert_false(m->client_streaming);

    m = rtc_pbjson_method_find(g_rtc, "rtc.signaling.v1.Signaling/Subscribe");
    assert_non_null(m);
    assert_true(m->server_streaming);
    assert_false(m->client_streaming);
    assert_ptr_equal(m->output, &rtc__signaling__v1__event__descriptor);
    m = rtc_pbjson_method_find(g_rtc, "grpc.health.v1.Health/Watch");
    assert_non_null(m);
    assert_true(m->server_streaming);
    assert_false(rtc_pbjson_method_find(g_rtc, "grpc.health.v1.Health/Check")->server_streaming);

    /* Order: services as given, then methods as in the .proto. */
    assert_string_equal(rtc_pbjson_method_at(g_rtc, 0)->name, "grpc.health.v1.Health/Check");
    assert_string_equal(rtc_pbjson_method_at(g_rtc, 1)->name, "grpc.health.v1.Health/Watch");
    assert_string_equal(rtc_pbjson_method_at(g_rtc, 2)->name, "rtc.auth.v1.Auth/IssueToken");
    assert_null(rtc_pbjson_method_at(g_rtc, total));

    assert_null(rtc_pbjson_method_find(g_rtc, "/rtc.signaling.v1.Signaling/Join"));
    assert_null(rtc_pbjson_method_find(g_rtc, "rtc.signaling.v1.Signaling/join"));
    assert_null(rtc_pbjson_method_find(g_rtc, "rtc.test.v1.Types/Echo"));

    assert_int_equal(rtc_pbjson_method_count(g_types), 2);
    m = rtc_pbjson_method_find(g_types, "rtc.test.v1.Types/Echo");
    assert_non_null(m);
    assert_false(m->server_streaming);
    m = rtc_pbjson_method_find(g_types, "rtc.test.v1.Types/Watch");
    assert_non_null(m);
    assert_true(m->server_streaming);
    assert_ptr_equal(m->input, &rtc__test__v1__empty__descriptor);
}

static void test_json_names(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &rtc__signaling__v1__ice_candidate__descriptor;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(d, "sdp_mid");
    assert_string_equal(rtc_pbjson_json_name(g_rtc, d, f), "sdpMid");
    f = protobuf_c_message_descriptor_get_field_by_name(d, "sdp_mline_index");
    assert_string_equal(rtc_pbjson_json_name(g_rtc, d, f), "sdpMlineIndex");
    f = protobuf_c_message_descriptor_get_field_by_name(d, "candidate");
    assert_string_equal(rtc_pbjson_json_name(g_rtc, d, f), "candidate");

    d = &rtc__test__v1__names__descriptor;
    f = protobuf_c_message_descriptor_get_field_by_name(d, "renamed");
    assert_string_equal(rtc_pbjson_json_name(g_types, d, f), "customJson");
    f = protobuf_c_message_descriptor_get_field_by_name(d, "some_field_name");
    assert_string_equal(rtc_pbjson_json_name(g_types, d, f), "someFieldName");
    f = protobuf_c_message_descriptor_get_field_by_name(d, "x_1_y_2");
    assert_string_equal(rtc_pbjson_json_name(g_types, d, f), "x1Y2");

    /* Not registered there, or not a field of that message. */
    assert_null(rtc_pbjson_json_name(g_rtc, d, f));
    assert_null(rtc_pbjson_json_name(g_types, &rtc__test__v1__scalars__descriptor, f));
}

static void test_new_refuses_mismatch(void **state)
{
    (void)state;
    char err[256];
    rtc_pbjson *pj = (rtc_pbjson *)1;
    static const uint8_t garbage[] = {0x0a, 0x05, 0x01};
    assert_int_equal(rtc_pbjson_new(garbage, sizeof(garbage), rtc_proto_fds_services,
                                    rtc_proto_fds_services_len, &pj, err, sizeof(err)),
                     RTC_EINVAL);
    assert_null(pj);
    assert_string_equal(err, "the descriptor set does not parse");

    /* rtc_proto's services against the test protos' set. */
    assert_int_equal(rtc_pbjson_new(rtc_test_types_fds, rtc_test_types_fds_len,
                                    rtc_proto_fds_services, rtc_proto_fds_services_len, &pj, err,
                                    sizeof(err)),
                     RTC_EINVAL);
    assert_string_equal(err, "service grpc.health.v1.Health is not in the descriptor set");

    /* No services: an empty registry that knows no message. */
    assert_int_equal(
        rtc_pbjson_new(rtc_proto_fds, rtc_proto_fds_len, NULL, 0, &pj, err, sizeof(err)), 0);
    assert_int_equal(rtc_pbjson_method_count(pj), 0);
    json_t *out = NULL;
    assert_int_equal(rtc_pbjson_decode(pj, &rtc__signaling__v1__event__descriptor, NULL, 0, &out,
                                       err, sizeof(err)),
                     RTC_ENOTFOUND);
    assert_string_equal(err, "message type rtc.signaling.v1.Event is not registered");
    rtc_pbjson_free(pj);

    /* A service given twice. */
    const ProtobufCServiceDescriptor *twice[] = {rtc_proto_fds_services[0],
                                                 rtc_proto_fds_services[0]};
    assert_int_equal(
        rtc_pbjson_new(rtc_proto_fds, rtc_proto_fds_len, twice, 2, &pj, err, sizeof(err)),
        RTC_EINVAL);
    assert_string_equal(err, "method grpc.health.v1.Health/Check is given twice");
}

/* ---- goldens ---------------------------------------------------------------------------- */

static bool file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f)
        fclose(f);
    return f != NULL;
}

static void test_every_message_has_goldens(void **state)
{
    (void)state;
    reach r;
    reach_all(&r);
    assert_true(r.n >= 60);
    size_t missing = 0;
    static const char *const exts[] = {".json", ".proto-names.json", ".bin"};
    for (size_t i = 0; i < r.n; i++)
        for (size_t e = 0; e < 3; e++) {
            char *p = golden_path(r.desc[i]->name, exts[e]);
            if (!file_exists(p)) {
                print_error("missing golden %s (run tests/unit/golden/pbjson/gen.py)\n", p);
                missing++;
            }
            free(p);
        }
    assert_int_equal(missing, 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One golden: <base>.bin, <base>.json, <base>.proto-names.json of type
 * <base up to '@'>. */
static void check_golden(const reach *r, const char *base)
{
    char type[256];
    snprintf(type, sizeof(type), "%s", base);
    char *at = strchr(type, '@');
    if (at)
        *at = '\0';
    const rtc_pbjson *pj = NULL;
    const ProtobufCMessageDescriptor *d = reach_find(r, type, &pj);
    if (!d)
        fail_msg("golden %s: no registered message %s", base, type);

    char *pjson = golden_path(base, ".json"), *pnames = golden_path(base, ".proto-names.json"),
         *pbin = golden_path(base, ".bin");
    json_t *golden = load_json(pjson), *names = load_json(pnames);
    size_t binlen = 0;
    uint8_t *bin = read_file(pbin, &binlen);
    char err[256] = "", what[512];
    rtc_buf b1 = RTC_BUF_INIT, b2 = RTC_BUF_INIT, b3 = RTC_BUF_INIT;

    /* python's bytes → our JSON = python's JSON. */
    json_t *j = NULL;
    int rc = rtc_pbjson_decode(pj, d, bin, binlen, &j, err, sizeof(err));
    if (rc)
        fail_msg("%s: decode: %s", base, err);
    snprintf(what, sizeof(what), "%s: decode(.bin) vs .json", base);
    assert_json_equal(j, golden, what);

    /* The text writer (the bridge's path) says the same: python's bytes →
     * our JSON text, parsed, = python's JSON; and the message it hands
     * over is the one the bytes hold. */
    rtc_buf text = RTC_BUF_INIT;
    ProtobufCMessage *tm = NULL;
    rtc_buf_append(&text, "x", 1); /* appended after what is there */
    rc = rtc_pbjson_decode_text(pj, d, bin, binlen, &text, &tm, err, sizeof(err));
    if (rc)
        fail_msg("%s: decode_text: %s", base, err);
    json_error_t jerr;
    json_t *jt = json_loadb((const char *)text.data + 1, text.len - 1, 0, &jerr);
    if (!jt)
        fail_msg("%s: decode_text wrote invalid JSON (%s): %.*s", base, jerr.text, (int)text.len,
                 (const char *)text.data);
    snprintf(what, sizeof(what), "%s: decode_text(.bin) vs .json", base);
    assert_json_equal(jt, golden, what);
    assert_non_null(tm);
    assert_ptr_equal(tm->descriptor, d);
    protobuf_c_message_free_unpacked(tm, NULL);
    json_decref(jt);
    rtc_buf_free(&text);

    /* Our JSON → bytes means what python's bytes mean, to the byte when both
     * come from the same JSON (protobuf-c repacks python's bytes in its
     * own order: zero map keys and values left out). */
    ProtobufCMessage *um = protobuf_c_message_unpack(d, NULL, binlen, bin);
    assert_non_null(um);
    size_t n = protobuf_c_message_get_packed_size(um);
    uint8_t *repack = malloc(n ? n : 1);
    assert_non_null(repack);
    protobuf_c_message_pack(um, repack);
    protobuf_c_message_free_unpacked(um, NULL);
    assert_int_equal(rtc_pbjson_encode(pj, d, j, &b3, err, sizeof(err)), 0);
    snprintf(what, sizeof(what), "%s: encode(decode(.bin)) vs protobuf-c repack", base);
    assert_bytes_equal(&b3, repack, n, what);
    free(repack);

    /* decode(encode(golden)) = golden. */
    json_t *j2 = reencode(pj, d, golden, &b1);
    snprintf(what, sizeof(what), "%s: decode(encode(.json)) vs .json", base);
    assert_json_equal(j2, golden, what);

    /* The .proto names spelling is the same message, to the byte. */
    json_t *j3 = reencode(pj, d, names, &b2);
    snprintf(what, sizeof(what), "%s: decode(encode(.proto-names.json)) vs .json", base);
    assert_json_equal(j3, golden, what);
    snprintf(what, sizeof(what), "%s: encode(.proto-names.json) vs encode(.json)", base);
    assert_bytes_equal(&b2, b1.data, b1.len, what);

    /* JSON → protobuf-c message → JSON, without the wire in between. */
    ProtobufCMessage *msg = NULL;
    json_t *j4 = NULL;
    rc = rtc_pbjson_from_json(pj, d, golden, &msg, err, sizeof(err));
    if (rc)
        fail_msg("%s: from_json: %s", base, err);
    assert_int_equal(rtc_pbjson_to_json(pj, msg, &j4, err, sizeof(err)), 0);
    snprintf(what, sizeof(what), "%s: to_json(from_json(.json)) vs .json", base);
    assert_json_equal(j4, golden, what);
    protobuf_c_message_free_unpacked(msg, NULL);

    json_decref(j);
    json_decref(j2);
    json_decref(j3);
    json_decref(j4);
    json_decref(golden);
    json_decref(names);
    rtc_buf_free(&b1);
    rtc_buf_free(&b2);
    rtc_buf_free(&b3);
    free(bin);
    free(pjson);
    free(pnames);
    free(pbin);
}

static void test_goldens(void **state)
{
    (void)state;
    reach r;
    reach_all(&r);
    DIR *dir = opendir(RTC_PBJSON_GOLDEN_DIR);
    assert_non_null(dir);
    char **bases = NULL;
    size_t n = 0;
    for (struct dirent *de; (de = readdir(dir));) {
        size_t len = strlen(de->d_name);
        if (len > 4 && !strcmp(de->d_name + len - 4, ".bin")) {
            bases = realloc(bases, (n + 1) * sizeof(*bases));
            assert_non_null(bases);
            bases[n++] = strndup(de->d_name, len - 4);
        }
    }
    closedir(dir);
    qsort(bases, n, sizeof(*bases), cmp_str);
    /* One per message plus the oneof variants. */
    assert_true(n > r.n);
    for (size_t i = 0; i < n; i++) {
        check_golden(&r, bases[i]);
        free(bases[i]);
    }
    free(bases);
    print_message("checked %zu goldens of %zu messages\n", n, r.n);
}

/* ---- accepted forms --------------------------------------------------------------------- */

typedef struct form {
    const char *type;
    const char *in;
    const char *out; /* the canonical JSON it decodes back to */
} form;

static const form forms[] = {
    /* Integers as numbers, integral reals and decimal strings; 64-bit ones
     * come out as strings. */
    {"rtc.test.v1.Scalars",
     "{\"fInt32\": \"-12\", \"fInt64\": 5, \"fUint64\": 1e3, \"fUint32\": 4294967295.0,"
     " \"fSint64\": \"-9223372036854775808\", \"fFixed64\": \"18446744073709551615\","
     " \"fSfixed32\": -2147483648, \"fSint32\": \"007\"}",
     "{\"fInt32\": -12, \"fInt64\": \"5\", \"fUint64\": \"1000\", \"fUint32\": 4294967295,"
     " \"fSint64\": \"-9223372036854775808\", \"fFixed64\": \"18446744073709551615\","
     " \"fSfixed32\": -2147483648, \"fSint32\": 7}"},
    /* Floats from integers, the special strings, shortest float form. */
    {"rtc.test.v1.Scalars", "{\"fFloat\": 1, \"fDouble\": \"-Infinity\"}",
     "{\"fFloat\": 1.0, \"fDouble\": \"-Infinity\"}"},
    {"rtc.test.v1.Scalars", "{\"fFloat\": 0.1, \"fDouble\": \"NaN\"}",
     "{\"fFloat\": 0.1, \"fDouble\": \"NaN\"}"},
    {"rtc.test.v1.Scalars", "{\"fFloat\": \"Infinity\", \"fDouble\": 1e-300}",
     "{\"fFloat\": \"Infinity\", \"fDouble\": 1e-300}"},
    /* Just above FLT_MAX still rounds to it (its shortest form is). */
    {"rtc.test.v1.Scalars", "{\"fFloat\": 3.4028235e38}", "{\"fFloat\": 3.4028235e38}"},
    /* Bytes: URL-safe and unpadded in, standard and padded out. */
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"-_8\"}", "{\"fBytes\": \"+/8=\"}"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"QQ\"}", "{\"fBytes\": \"QQ==\"}"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"QUI=\"}", "{\"fBytes\": \"QUI=\"}"},
    /* Enums by number; unknown numbers are kept (proto3 enums are open). */
    {"rtc.test.v1.Scalars", "{\"fEnum\": 2}", "{\"fEnum\": \"COLOR_GREEN\"}"},
    {"rtc.test.v1.Scalars", "{\"fEnum\": -1}", "{\"fEnum\": \"COLOR_INFRARED\"}"},
    {"rtc.test.v1.Scalars", "{\"fEnum\": 7}", "{\"fEnum\": 7}"},
    {"rtc.test.v1.Repeated", "{\"rEnum\": [7, \"COLOR_RED\", -5, 0]}",
     "{\"rEnum\": [7, \"COLOR_RED\", -5, \"COLOR_UNSPECIFIED\"]}"},
    /* Defaults and null are left out. */
    {"rtc.test.v1.Scalars",
     "{\"fInt32\": 0, \"fInt64\": \"0\", \"fString\": \"\", \"fBytes\": \"\","
     " \"fEnum\": \"COLOR_UNSPECIFIED\", \"fBool\": false, \"fDouble\": 0, \"fFloat\": -0.0,"
     " \"fUint32\": null}",
     "{}"},
    {"rtc.test.v1.Everything", "{\"scalars\": null, \"repeated\": null, \"kinds\": null}", "{}"},
    {"rtc.test.v1.Repeated", "{\"rInt32\": [], \"rMessage\": []}", "{}"},
    /* Both spellings, each alone. */
    {"rtc.test.v1.Names", "{\"some_field_name\": \"a\", \"renamed\": 3, \"x_1_y_2\": 4}",
     "{\"someFieldName\": \"a\", \"customJson\": 3, \"x1Y2\": 4}"},
    /* A present sub-message and a set oneof member are written at their
     * defaults; a null oneof member is not set. */
    {"rtc.test.v1.Everything", "{\"scalars\": {}, \"oneofs\": {\"oInt64\": \"0\"}}",
     "{\"scalars\": {}, \"oneofs\": {\"oInt64\": \"0\"}}"},
    {"rtc.test.v1.Oneofs", "{\"oString\": \"\", \"oUint32\": 0}",
     "{\"oString\": \"\", \"oUint32\": 0}"},
    {"rtc.test.v1.Oneofs", "{\"oBytes\": \"\"}", "{\"oBytes\": \"\"}"},
    {"rtc.test.v1.Oneofs", "{\"oMessage\": {}}", "{\"oMessage\": {}}"},
    {"rtc.test.v1.Oneofs", "{\"oBool\": false, \"oString\": null}", "{\"oBool\": false}"},
    {"rtc.signaling.v1.IceCandidate", "{\"sdpMlineIndex\": 0}", "{\"sdpMlineIndex\": 0}"},
    /* Maps: default keys and values, bool keys, empty message values. */
    {"rtc.test.v1.Maps",
     "{\"int32Message\": {\"0\": {}, \"-1\": {\"fInt32\": 1}}, \"boolEnum\": {\"false\": 0,"
     " \"true\": \"COLOR_RED\"}, \"stringString\": {\"\": \"\"}, \"uint64Bytes\":"
     " {\"18446744073709551615\": \"\"}}",
     "{\"int32Message\": {\"0\": {}, \"-1\": {\"fInt32\": 1}}, \"boolEnum\": {\"false\":"
     " \"COLOR_UNSPECIFIED\", \"true\": \"COLOR_RED\"}, \"stringString\": {\"\": \"\"},"
     " \"uint64Bytes\": {\"18446744073709551615\": \"\"}}"},
    {"rtc.test.v1.Maps", "{\"sfixed64Node\": {\"-9223372036854775808\": {\"child\": {}}}}",
     "{\"sfixed64Node\": {\"-9223372036854775808\": {\"child\": {}}}}"},
    /* Strings: any UTF-8. */
    {"rtc.test.v1.Scalars", "{\"fString\": \"\\u00fc\\ud834\\udd1e\\n\"}",
     "{\"fString\": \"\\u00fc\\ud834\\udd1e\\n\"}"},
};

static const ProtobufCMessageDescriptor *find_type(const char *name, const rtc_pbjson **pj)
{
    reach r;
    reach_all(&r);
    const ProtobufCMessageDescriptor *d = reach_find(&r, name, pj);
    if (!d)
        fail_msg("no registered message %s", name);
    return d;
}

static void test_accepted_forms(void **state)
{
    (void)state;
    rtc_buf b = RTC_BUF_INIT;
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        const rtc_pbjson *pj = NULL;
        const ProtobufCMessageDescriptor *d = find_type(forms[i].type, &pj);
        json_t *in = parse(forms[i].in), *want = parse(forms[i].out);
        json_t *got = reencode(pj, d, in, &b);
        assert_json_equal(got, want, forms[i].in);
        json_decref(in);
        json_decref(want);
        json_decref(got);
    }
    rtc_buf_free(&b);
}

static void test_encode_appends(void **state)
{
    (void)state;
    rtc_buf b = RTC_BUF_INIT;
    char err[256];
    assert_int_equal(rtc_buf_append(&b, "xy", 2), 0);
    json_t *in = parse("{\"status\": \"SERVING\"}");
    assert_int_equal(rtc_pbjson_encode(g_rtc, &grpc__health__v1__health_check_response__descriptor,
                                       in, &b, err, sizeof(err)),
                     0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "xy\x08\x01", 4);
    /* An empty message appends nothing. */
    json_decref(in);
    in = parse("{}");
    assert_int_equal(rtc_pbjson_encode(g_rtc, &grpc__health__v1__health_check_response__descriptor,
                                       in, &b, err, sizeof(err)),
                     0);
    assert_int_equal(b.len, 4);
    json_decref(in);
    rtc_buf_free(&b);
}

/* ---- refusals ---------------------------------------------------------------------------- */

typedef struct refusal {
    const char *type;
    const char *in;
    const char *err;
} refusal;

static const refusal refusals[] = {
    /* the message itself */
    {"rtc.test.v1.Scalars", "[]", "expected an object, got an array"},
    {"rtc.test.v1.Scalars", "\"x\"", "expected an object, got a string"},
    {"rtc.test.v1.Scalars", "{\"foo\": 1}", "unknown field \"foo\""},
    {"rtc.test.v1.Scalars", "{\"FInt32\": 1}", "unknown field \"FInt32\""},
    {"rtc.test.v1.Scalars", "{\"f_int32\": 1, \"fInt32\": 2}",
     "both \"f_int32\" and \"fInt32\" given"},
    {"rtc.test.v1.Names", "{\"customJson\": 1, \"renamed\": 2}",
     "both \"customJson\" and \"renamed\" given"},
    /* wrong JSON types */
    {"rtc.test.v1.Scalars", "{\"fInt32\": {}}",
     "fInt32: expected an integer (a number or a decimal string), got an object"},
    {"rtc.test.v1.Scalars", "{\"fInt64\": true}",
     "fInt64: expected an integer (a number or a decimal string), got true"},
    {"rtc.test.v1.Scalars", "{\"fDouble\": true}", "fDouble: expected a number, got true"},
    {"rtc.test.v1.Scalars", "{\"fFloat\": []}", "fFloat: expected a number, got an array"},
    {"rtc.test.v1.Scalars", "{\"fBool\": 1}", "fBool: expected true or false, got a number"},
    {"rtc.test.v1.Scalars", "{\"fBool\": \"true\"}", "fBool: expected true or false, got a string"},
    {"rtc.test.v1.Scalars", "{\"fString\": 5}", "fString: expected a string, got a number"},
    {"rtc.test.v1.Scalars", "{\"fString\": {}}", "fString: expected a string, got an object"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": 5}", "fBytes: expected a base64 string, got a number"},
    {"rtc.test.v1.Scalars", "{\"fEnum\": []}",
     "fEnum: expected an enum name or number, got an array"},
    {"rtc.test.v1.Scalars", "{\"fEnum\": false}",
     "fEnum: expected an enum name or number, got false"},
    {"rtc.test.v1.Everything", "{\"scalars\": []}", "scalars: expected an object, got an array"},
    {"rtc.test.v1.Everything", "{\"scalars\": \"\"}", "scalars: expected an object, got a string"},
    {"rtc.test.v1.Repeated", "{\"rInt32\": 5}", "rInt32: expected an array, got a number"},
    {"rtc.test.v1.Repeated", "{\"rMessage\": {}}", "rMessage: expected an array, got an object"},
    {"rtc.test.v1.Maps", "{\"stringString\": []}",
     "stringString: expected an object (a map), got an array"},
    /* integers out of range, for each width */
    {"rtc.test.v1.Scalars", "{\"fInt32\": 2147483648}",
     "fInt32: value 2147483648 out of range for int32"},
    {"rtc.test.v1.Scalars", "{\"fInt32\": -2147483649}",
     "fInt32: value -2147483649 out of range for int32"},
    {"rtc.test.v1.Scalars", "{\"fSint32\": \"2147483648\"}",
     "fSint32: value \"2147483648\" out of range for sint32"},
    {"rtc.test.v1.Scalars", "{\"fSfixed32\": -2147483649}",
     "fSfixed32: value -2147483649 out of range for sfixed32"},
    {"rtc.test.v1.Scalars", "{\"fUint32\": 4294967296}",
     "fUint32: value 4294967296 out of range for uint32"},
    {"rtc.test.v1.Scalars", "{\"fUint32\": -1}", "fUint32: value -1 out of range for uint32"},
    {"rtc.test.v1.Scalars", "{\"fFixed32\": 4294967296}",
     "fFixed32: value 4294967296 out of range for fixed32"},
    {"rtc.test.v1.Scalars", "{\"fInt64\": \"9223372036854775808\"}",
     "fInt64: value \"9223372036854775808\" out of range for int64"},
    {"rtc.test.v1.Scalars", "{\"fSint64\": \"-9223372036854775809\"}",
     "fSint64: value \"-9223372036854775809\" out of range for sint64"},
    {"rtc.test.v1.Scalars", "{\"fSfixed64\": 1e19}",
     "fSfixed64: value 1e+19 out of range for sfixed64"},
    {"rtc.test.v1.Scalars", "{\"fUint64\": \"18446744073709551616\"}",
     "fUint64: value \"18446744073709551616\" out of range for uint64"},
    {"rtc.test.v1.Scalars", "{\"fUint64\": -1}", "fUint64: value -1 out of range for uint64"},
    {"rtc.test.v1.Scalars", "{\"fFixed64\": \"-1\"}",
     "fFixed64: value \"-1\" out of range for fixed64"},
    {"rtc.test.v1.Scalars", "{\"fFixed64\": 1e20}",
     "fFixed64: value 1e+20 out of range for fixed64"},
    {"rtc.test.v1.Scalars", "{\"fUint64\": \"99999999999999999999999\"}",
     "fUint64: value \"99999999999999999999999\" out of range for uint64"},
    /* not integers */
    {"rtc.test.v1.Scalars", "{\"fInt32\": 1.5}", "fInt32: value 1.5 is not an integer"},
    {"rtc.test.v1.Scalars", "{\"fSint64\": -0.25}", "fSint64: value -0.25 is not an integer"},
    {"rtc.test.v1.Scalars", "{\"fInt32\": \"x\"}", "fInt32: invalid integer \"x\""},
    {"rtc.test.v1.Scalars", "{\"fInt32\": \" 1\"}", "fInt32: invalid integer \" 1\""},
    {"rtc.test.v1.Scalars", "{\"fInt64\": \"+1\"}", "fInt64: invalid integer \"+1\""},
    {"rtc.test.v1.Scalars", "{\"fInt64\": \"1e3\"}", "fInt64: invalid integer \"1e3\""},
    {"rtc.test.v1.Scalars", "{\"fUint32\": \"\"}", "fUint32: invalid integer \"\""},
    {"rtc.test.v1.Scalars", "{\"fUint32\": \"-\"}", "fUint32: invalid integer \"-\""},
    /* floats */
    {"rtc.test.v1.Scalars", "{\"fFloat\": 1e39}", "fFloat: value 1e+39 out of range for float"},
    {"rtc.test.v1.Scalars", "{\"fFloat\": -3.5e38}",
     "fFloat: value -3.5e+38 out of range for float"},
    {"rtc.test.v1.Scalars", "{\"fDouble\": \"nan\"}",
     "fDouble: invalid number \"nan\" (expected a number, \"NaN\", \"Infinity\" or "
     "\"-Infinity\")"},
    {"rtc.test.v1.Scalars", "{\"fDouble\": \"1.5\"}",
     "fDouble: invalid number \"1.5\" (expected a number, \"NaN\", \"Infinity\" or "
     "\"-Infinity\")"},
    /* strings and bytes */
    {"rtc.test.v1.Scalars", "{\"fString\": \"a\\u0000b\"}",
     "fString: string contains U+0000, which protobuf-c cannot carry"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"!!!!\"}", "fBytes: invalid base64"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"QQ=\"}", "fBytes: invalid base64"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"Q\"}", "fBytes: invalid base64"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"QQ==QQ==\"}", "fBytes: invalid base64"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"QU I=\"}", "fBytes: invalid base64"},
    {"rtc.test.v1.Scalars", "{\"fBytes\": \"QQ===\"}", "fBytes: invalid base64"},
    /* enums */
    {"rtc.test.v1.Scalars", "{\"fEnum\": \"COLOR_BLUE\"}",
     "fEnum: unknown value \"COLOR_BLUE\" of enum rtc.test.v1.Color"},
    {"rtc.test.v1.Scalars", "{\"fEnum\": \"color_red\"}",
     "fEnum: unknown value \"color_red\" of enum rtc.test.v1.Color"},
    {"rtc.test.v1.Scalars", "{\"fEnum\": \"COLOR_RED\\u0000\"}",
     "fEnum: unknown value \"COLOR_RED\\u0000\" of enum rtc.test.v1.Color"},
    {"rtc.test.v1.Scalars", "{\"fEnum\": 4294967296}",
     "fEnum: value 4294967296 out of range for enum rtc.test.v1.Color"},
    {"rtc.test.v1.Scalars", "{\"fEnum\": 1.5}", "fEnum: value 1.5 is not an integer"},
    {"rtc.test.v1.Everything", "{\"inner\": {\"kind\": \"KIND_TWO\"}}",
     "inner.kind: unknown value \"KIND_TWO\" of enum rtc.test.v1.Everything.Kind"},
    /* oneofs */
    {"rtc.test.v1.Oneofs", "{\"oString\": \"a\", \"oInt64\": \"1\"}",
     "\"oString\" and \"oInt64\" are members of one oneof"},
    {"rtc.test.v1.Oneofs", "{\"o_message\": {}, \"plain\": \"\", \"oBool\": true}",
     "\"o_message\" and \"oBool\" are members of one oneof"},
    {"rtc.test.v1.Oneofs", "{\"oUint32\": 1, \"o_uint32\": 1}",
     "both \"oUint32\" and \"o_uint32\" given"},
    /* null inside repeated fields and maps */
    {"rtc.test.v1.Repeated", "{\"rInt32\": [1, null]}",
     "rInt32[1]: null is not allowed in a repeated field"},
    {"rtc.test.v1.Repeated", "{\"rMessage\": [null]}",
     "rMessage[0]: null is not allowed in a repeated field"},
    {"rtc.test.v1.Maps", "{\"stringString\": {\"k\": null}}",
     "stringString[\"k\"]: null is not allowed as a map value"},
    /* map keys */
    {"rtc.test.v1.Maps", "{\"int32Message\": {\"01\": {}}}",
     "int32Message[\"01\"]: map key \"01\" is not a canonical decimal int32"},
    {"rtc.test.v1.Maps", "{\"int32Message\": {\"-0\": {}}}",
     "int32Message[\"-0\"]: map key \"-0\" is not a canonical decimal int32"},
    {"rtc.test.v1.Maps", "{\"int32Message\": {\"x\": {}}}",
     "int32Message[\"x\"]: map key \"x\" is not a canonical decimal int32"},
    {"rtc.test.v1.Maps", "{\"int32Message\": {\"2147483648\": {}}}",
     "int32Message[\"2147483648\"]: map key \"2147483648\" out of range for int32"},
    {"rtc.test.v1.Maps", "{\"uint64Bytes\": {\"-1\": \"\"}}",
     "uint64Bytes[\"-1\"]: map key \"-1\" out of range for uint64"},
    {"rtc.test.v1.Maps", "{\"boolEnum\": {\"yes\": \"COLOR_RED\"}}",
     "boolEnum[\"yes\"]: map key \"yes\" is not true or false"},
    {"rtc.test.v1.Maps", "{\"boolEnum\": {\"True\": 1}}",
     "boolEnum[\"True\"]: map key \"True\" is not true or false"},
    {"rtc.test.v1.Maps", "{\"stringString\": {\"k\\\"\\n\": 5}}",
     "stringString[\"k\\\"\\u000a\"]: expected a string, got a number"},
    /* nested paths */
    {"rtc.test.v1.Maps", "{\"int32Message\": {\"5\": {\"fUint32\": -1}}}",
     "int32Message[\"5\"].fUint32: value -1 out of range for uint32"},
    {"rtc.test.v1.Everything", "{\"repeated\": {\"rMessage\": [{}, {\"fBytes\": \"%%\"}]}}",
     "repeated.rMessage[1].fBytes: invalid base64"},
    {"rtc.test.v1.Everything", "{\"node\": {\"child\": {\"children\": [{}, {\"value\": []}]}}}",
     "node.child.children[1].value: expected an integer (a number or a decimal string), got an "
     "array"},
    {"rtc.test.v1.Everything", "{\"maps\": {\"sfixed64Node\": {\"1\": {\"bogus\": 1}}}}",
     "maps.sfixed64Node[\"1\"]: unknown field \"bogus\""},
    {"rtc.signaling.v1.SignalRequest", "{\"payload\": {\"description\": {\"type\": \"OFERR\"}}}",
     "payload.description.type: unknown value \"OFERR\" of enum rtc.signaling.v1.SdpType"},
    {"rtc.signaling.v1.SignalRequest",
     "{\"payload\": {\"candidate\": {\"sdp_mid\": \"0\", \"sdpMid\": \"1\"}}}",
     "payload.candidate: both \"sdp_mid\" and \"sdpMid\" given"},
    {"rtc.signaling.v1.SignalRequest", "{\"payload\": {\"candidate\": {}, \"description\": {}}}",
     "payload: \"candidate\" and \"description\" are members of one oneof"},
    {"rtc.signaling.v1.JoinResponse",
     "{\"participants\": [{\"id\": \"a\"}, {\"id\": \"b\"}, {\"id\": 3}]}",
     "participants[2].id: expected a string, got a number"},
    {"rtc.signaling.v1.JoinResponse", "{\"ice_servers\": [{\"urls\": [\"stun:x\", 1]}]}",
     "iceServers[0].urls[1]: expected a string, got a number"},
};

static void test_refusals(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
        const refusal *r = &refusals[i];
        const rtc_pbjson *pj = NULL;
        const ProtobufCMessageDescriptor *d = find_type(r->type, &pj);
        json_t *in = parse(r->in);
        char err[512] = "";
        ProtobufCMessage *msg = (ProtobufCMessage *)1;
        rtc_buf b = RTC_BUF_INIT;
        assert_int_equal(rtc_pbjson_from_json(pj, d, in, &msg, err, sizeof(err)), RTC_EINVAL);
        assert_null(msg);
        if (strcmp(err, r->err))
            fail_msg("%s %s:\n got: %s\nwant: %s", r->type, r->in, err, r->err);
        err[0] = '\0';
        assert_int_equal(rtc_pbjson_encode(pj, d, in, &b, err, sizeof(err)), RTC_EINVAL);
        assert_string_equal(err, r->err);
        assert_int_equal(b.len, 0);
        json_decref(in);
    }
}

static void test_not_registered(void **state)
{
    (void)state;
    char err[256];
    json_t *in = parse("{}"), *out = (json_t *)1;
    ProtobufCMessage *msg = (ProtobufCMessage *)1;
    rtc_buf b = RTC_BUF_INIT;
    const ProtobufCMessageDescriptor *d = &rtc__test__v1__scalars__descriptor;
    assert_int_equal(rtc_pbjson_from_json(g_rtc, d, in, &msg, err, sizeof(err)), RTC_ENOTFOUND);
    assert_null(msg);
    assert_string_equal(err, "message type rtc.test.v1.Scalars is not registered");
    assert_int_equal(rtc_pbjson_encode(g_rtc, d, in, &b, NULL, 0), RTC_ENOTFOUND);
    assert_int_equal(rtc_pbjson_decode(g_rtc, d, NULL, 0, &out, err, sizeof(err)), RTC_ENOTFOUND);
    assert_null(out);
    Rtc__Test__V1__Scalars s = RTC__TEST__V1__SCALARS__INIT;
    assert_int_equal(rtc_pbjson_to_json(g_rtc, &s.base, &out, err, sizeof(err)), RTC_ENOTFOUND);
    assert_int_equal(rtc_pbjson_to_json(g_types, &s.base, &out, err, sizeof(err)), 0);
    json_decref(out);
    json_decref(in);
}

/* ---- binary input ------------------------------------------------------------------------ */

static void expect_decode(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *d,
                          const void *data, size_t len, int want_rc, const char *want_err)
{
    char err[256] = "";
    json_t *out = (json_t *)1;
    int rc = rtc_pbjson_decode(pj, d, data, len, &out, err, sizeof(err));
    if (rc != want_rc || strcmp(err, want_err))
        fail_msg("%s: got %d \"%s\", want %d \"%s\"", d->name, rc, err, want_rc, want_err);
    assert_null(out);
}

static void test_decode_refuses_invalid_utf8(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &rtc__test__v1__scalars__descriptor;
    /* fString (14, length-delimited) = ff fe */
    static const uint8_t s1[] = {0x72, 0x02, 0xff, 0xfe};
    expect_decode(g_types, d, s1, sizeof(s1), RTC_EINVAL, "fString: string is not valid UTF-8");
    /* An overlong '/' and a surrogate. */
    static const uint8_t s2[] = {0x72, 0x02, 0xc0, 0xaf};
    expect_decode(g_types, d, s2, sizeof(s2), RTC_EINVAL, "fString: string is not valid UTF-8");
    static const uint8_t s3[] = {0x72, 0x03, 0xed, 0xa0, 0x80};
    expect_decode(g_types, d, s3, sizeof(s3), RTC_EINVAL, "fString: string is not valid UTF-8");

    /* Deeper: Everything.repeated.rString[1], and a map key and value. */
    Rtc__Test__V1__Repeated rep = RTC__TEST__V1__REPEATED__INIT;
    char *strs[] = {"ok", "bad \xff"};
    rep.n_r_string = 2;
    rep.r_string = strs;
    Rtc__Test__V1__Everything ev = RTC__TEST__V1__EVERYTHING__INIT;
    ev.repeated = &rep;
    uint8_t buf[256];
    size_t n = rtc__test__v1__everything__pack(&ev, buf);
    expect_decode(g_types, &rtc__test__v1__everything__descriptor, buf, n, RTC_EINVAL,
                  "repeated.rString[1]: string is not valid UTF-8");
    char err[256];
    json_t *out = NULL;
    assert_int_equal(rtc_pbjson_to_json(g_types, &ev.base, &out, err, sizeof(err)), RTC_EINVAL);
    assert_string_equal(err, "repeated.rString[1]: string is not valid UTF-8");
    assert_null(out);

    Rtc__Test__V1__Maps__StringStringEntry e = RTC__TEST__V1__MAPS__STRING_STRING_ENTRY__INIT;
    Rtc__Test__V1__Maps__StringStringEntry *ep = &e;
    Rtc__Test__V1__Maps maps = RTC__TEST__V1__MAPS__INIT;
    maps.n_string_string = 1;
    maps.string_string = &ep;
    e.key = "k\xff";
    e.value = "v";
    n = rtc__test__v1__maps__pack(&maps, buf);
    expect_decode(g_types, &rtc__test__v1__maps__descriptor, buf, n, RTC_EINVAL,
                  "stringString: map key is not valid UTF-8");
    e.key = "k";
    e.value = "v\xff";
    n = rtc__test__v1__maps__pack(&maps, buf);
    expect_decode(g_types, &rtc__test__v1__maps__descriptor, buf, n, RTC_EINVAL,
                  "stringString[\"k\"]: string is not valid UTF-8");
}

static void test_decode_refuses_garbage(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &rtc__test__v1__everything__descriptor;
    const char *want = "not a valid rtc.test.v1.Everything message";
    /* A length beyond the end. */
    expect_decode(g_types, d, "\x0a\x05\x08\x01", 4, RTC_EPROTO, want);
    /* A truncated varint. */
    expect_decode(g_types, d, "\x48\xff", 2, RTC_EPROTO, want);
    /* A varint longer than 10 bytes. */
    expect_decode(g_types, d, "\x48\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12, RTC_EPROTO,
                  want);
    /* Wire types 3 (group), 6 and 7. */
    expect_decode(g_types, d, "\x0b\x0c", 2, RTC_EPROTO, want);
    expect_decode(g_types, d, "\x0e\x00", 2, RTC_EPROTO, want);
    expect_decode(g_types, d, "\x0f\x00", 2, RTC_EPROTO, want);
    /* A message field sent as a varint: well-framed, but not the type. */
    expect_decode(g_types, d, "\x08\x01", 2, RTC_EPROTO, want);
    /* Garbage inside a sub-message. */
    expect_decode(g_types, d, "\x0a\x02\x72\x05", 4, RTC_EPROTO, want);
    /* A truncated fixed64. */
    expect_decode(g_types, &rtc__test__v1__scalars__descriptor, "\x41\x01\x02", 3, RTC_EPROTO,
                  "not a valid rtc.test.v1.Scalars message");

    /* Unknown fields are skipped; empty input is the empty message. */
    char err[256];
    json_t *out = NULL;
    assert_int_equal(
        rtc_pbjson_decode(g_types, d, (const uint8_t *)"\xf8\x07\x01", 3, &out, err, sizeof(err)),
        0);
    assert_int_equal(json_object_size(out), 0);
    json_decref(out);
    assert_int_equal(rtc_pbjson_decode(g_types, d, NULL, 0, &out, err, sizeof(err)), 0);
    assert_int_equal(json_object_size(out), 0);
    json_decref(out);
}

/* ---- depth ------------------------------------------------------------------------------ */

/* {"child": {"child": ... {"value": 1} ...}} with n objects in all. */
static json_t *nested_json(int n)
{
    json_t *j = json_pack("{s:i}", "value", 1);
    for (int i = 1; i < n; i++)
        j = json_pack("{s:o}", "child", j);
    assert_non_null(j);
    return j;
}

/* Wire bytes of n nested Nodes (child = field 2), innermost value = 1. */
static uint8_t *nested_wire(int n, size_t *len)
{
    size_t cap = (size_t)n * 8 + 8, start = cap - 2;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    buf[start] = 0x08; /* value = 1 */
    buf[start + 1] = 0x01;
    for (int i = 1; i < n; i++) {
        size_t inner = cap - start;
        uint8_t v[10];
        size_t vn = 0;
        for (size_t x = inner;; x >>= 7) {
            v[vn++] = (uint8_t)((x & 0x7f) | (x >= 0x80 ? 0x80 : 0));
            if (x < 0x80)
                break;
        }
        start -= vn + 1;
        buf[start] = 0x12;
        memcpy(buf + start + 1, v, vn);
    }
    *len = cap - start;
    memmove(buf, buf + start, *len);
    return buf;
}

static void test_depth_limit(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &rtc__test__v1__node__descriptor;
    char err[1024];
    rtc_buf b = RTC_BUF_INIT;

    /* 64 levels are fine, both ways. */
    json_t *j = nested_json(64), *out = NULL;
    assert_int_equal(rtc_pbjson_encode(g_types, d, j, &b, err, sizeof(err)), 0);
    assert_int_equal(rtc_pbjson_decode(g_types, d, b.data, b.len, &out, err, sizeof(err)), 0);
    assert_true(json_equal(out, j));
    json_decref(out);
    json_decref(j);

    /* 65 and 100 are not; the path says where. */
    j = nested_json(65);
    assert_int_equal(rtc_pbjson_encode(g_types, d, j, &b, err, sizeof(err)), RTC_EINVAL);
    const char *tail = ": nesting deeper than 64 messages";
    assert_true(strlen(err) > strlen(tail));
    assert_string_equal(err + strlen(err) - strlen(tail), tail);
    assert_memory_equal(err, "child.child.child", 17);
    json_decref(j);
    j = nested_json(100);
    assert_int_equal(rtc_pbjson_encode(g_types, d, j, &b, err, sizeof(err)), RTC_EINVAL);
    json_decref(j);

    /* Wire bytes: 64 decode, 65 and a hundred thousand (which would take
     * protobuf-c's unpacker deep into the stack) are refused. */
    size_t len;
    uint8_t *w = nested_wire(64, &len);
    assert_int_equal(rtc_pbjson_decode(g_types, d, w, len, &out, err, sizeof(err)), 0);
    json_decref(out);
    free(w);
    w = nested_wire(65, &len);
    expect_decode(g_types, d, w, len, RTC_EPROTO, "nesting deeper than 64 messages");
    free(w);
    w = nested_wire(100000, &len);
    expect_decode(g_types, d, w, len, RTC_EPROTO, "nesting deeper than 64 messages");
    free(w);

    /* A map entry is no level (it is none in JSON), on the wire either:
     * Everything → maps → sfixed64Node["1"] → 62 Nodes is 64 levels. */
    for (int total = 64; total <= 65; total++) {
        json_t *ev =
            json_pack("{s:{s:{s:o}}}", "maps", "sfixed64Node", "1", nested_json(total - 2));
        int rc = rtc_pbjson_encode(g_types, &rtc__test__v1__everything__descriptor, ev, &b, err,
                                   sizeof(err));
        assert_int_equal(rc, total == 64 ? 0 : RTC_EINVAL);
        json_decref(ev);
    }
    Rtc__Test__V1__Node chain[63];
    for (int i = 0; i < 63; i++) {
        rtc__test__v1__node__init(&chain[i]);
        chain[i].child = i + 1 < 63 ? &chain[i + 1] : NULL;
    }
    Rtc__Test__V1__Maps__Sfixed64NodeEntry entry = RTC__TEST__V1__MAPS__SFIXED64_NODE_ENTRY__INIT;
    Rtc__Test__V1__Maps__Sfixed64NodeEntry *entries[] = {&entry};
    Rtc__Test__V1__Maps maps = RTC__TEST__V1__MAPS__INIT;
    maps.n_sfixed64_node = 1;
    maps.sfixed64_node = entries;
    Rtc__Test__V1__Everything ev = RTC__TEST__V1__EVERYTHING__INIT;
    ev.maps = &maps;
    entry.key = 1;
    for (int total = 64; total <= 65; total++) {
        entry.value = &chain[65 - total]; /* 62 or 63 Nodes */
        rtc_buf_reset(&b);
        assert_int_equal(rtc_buf_reserve(&b, protobuf_c_message_get_packed_size(&ev.base)), 0);
        b.len = protobuf_c_message_pack(&ev.base, b.data);
        int rc = rtc_pbjson_decode(g_types, &rtc__test__v1__everything__descriptor, b.data, b.len,
                                   &out, err, sizeof(err));
        assert_int_equal(rc, total == 64 ? 0 : RTC_EPROTO);
        json_decref(out);
        rc = rtc_pbjson_to_json(g_types, &ev.base, &out, err, sizeof(err));
        assert_int_equal(rc, total == 64 ? 0 : RTC_EINVAL);
        json_decref(out);
    }

    /* An in-process message deeper than the limit. */
    Rtc__Test__V1__Node nodes[70];
    for (int i = 0; i < 70; i++) {
        rtc__test__v1__node__init(&nodes[i]);
        nodes[i].child = i + 1 < 70 ? &nodes[i + 1] : NULL;
    }
    assert_int_equal(rtc_pbjson_to_json(g_types, &nodes[0].base, &out, err, sizeof(err)),
                     RTC_EINVAL);
    assert_string_equal(err + strlen(err) - strlen(tail), tail);
    assert_null(out);
    assert_int_equal(rtc_pbjson_to_json(g_types, &nodes[6].base, &out, err, sizeof(err)), 0);
    json_decref(out);
    rtc_buf_free(&b);
}

/* ---- allocation failure ------------------------------------------------------------------ */

static long g_allocs_left;

static void *failing_malloc(size_t n)
{
    if (g_allocs_left-- <= 0)
        return NULL;
    return malloc(n);
}

/* Every jansson allocation to_json makes fails in turn: each gives
 * RTC_ENOMEM and frees what it had built (ASan's leak check). */
static void test_decode_out_of_memory(void **state)
{
    (void)state;
    char *path = golden_path("rtc.test.v1.Everything", ".bin");
    size_t len;
    uint8_t *bin = read_file(path, &len);
    const ProtobufCMessageDescriptor *d = &rtc__test__v1__everything__descriptor;
    long n;
    for (n = 0;; n++) {
        char err[256] = "";
        json_t *out = NULL;
        g_allocs_left = n;
        json_set_alloc_funcs(failing_malloc, free);
        int rc = rtc_pbjson_decode(g_types, d, bin, len, &out, err, sizeof(err));
        json_set_alloc_funcs(malloc, free);
        if (rc == 0) {
            json_decref(out);
            break;
        }
        assert_int_equal(rc, RTC_ENOMEM);
        assert_null(out);
        const char *tail = "out of memory";
        assert_true(strlen(err) >= strlen(tail));
        assert_string_equal(err + strlen(err) - strlen(tail), tail);
    }
    assert_true(n > 100);
    free(bin);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_json_names),
        cmocka_unit_test(test_new_refuses_mismatch),
        cmocka_unit_test(test_every_message_has_goldens),
        cmocka_unit_test(test_goldens),
        cmocka_unit_test(test_accepted_forms),
        cmocka_unit_test(test_encode_appends),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_not_registered),
        cmocka_unit_test(test_decode_refuses_invalid_utf8),
        cmocka_unit_test(test_decode_refuses_garbage),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_decode_out_of_memory),
    };
    return cmocka_run_group_tests_name("pbjson", tests, setup_all, teardown_all);
}

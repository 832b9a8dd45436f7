/* fuzz_pbjson.c — libFuzzer target for rtc_pbjson (JSON ⇄ protobuf).
 *
 * Byte 0 picks a message type: the input or output type of one method of
 * rtc_proto's services or of the test protos' rtc.test.v1.Types (which has
 * every scalar, map, oneof and recursive shape). The rest is used twice:
 *  - as JSON text (json_loadb; jansson bounds nesting at
 *    JSON_PARSER_MAX_DEPTH, 2048): from_json must refuse it with a message
 *    or build a message that to_json writes, that packs, that decodes to
 *    the same JSON, and whose JSON encodes to the same bytes again;
 *  - as wire bytes: decode must refuse them with a message or give JSON
 *    that encodes, decodes to the same JSON and encodes to the same bytes.
 * Checks the header's promises, not only that nothing crashes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/pbjson.h"
#include "rtc_proto_fds.h"
#include "rtc_test_types_proto_fds.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_pbjson: %s:%d: %s\n", __FILE__, __LINE__, #c);                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct target {
    const rtc_pbjson *pj;
    const ProtobufCMessageDescriptor *desc;
} target;

static rtc_pbjson *g_pj[2];
static target g_targets[256];
static size_t g_ntargets;

static void init(void)
{
    char err[256];
    if (g_ntargets)
        return;
    CHECK(!rtc_pbjson_new(rtc_proto_fds, rtc_proto_fds_len, rtc_proto_fds_services,
                          rtc_proto_fds_services_len, &g_pj[0], err, sizeof(err)));
    CHECK(!rtc_pbjson_new(rtc_test_types_fds, rtc_test_types_fds_len, rtc_test_types_fds_services,
                          rtc_test_types_fds_services_len, &g_pj[1], err, sizeof(err)));
    /* Method i of the concatenated lists: input at 2i, output at 2i + 1. */
    for (size_t p = 0; p < 2; p++)
        for (size_t i = 0; i < rtc_pbjson_method_count(g_pj[p]); i++) {
            const rtc_pbjson_method *m = rtc_pbjson_method_at(g_pj[p], i);
            CHECK(g_ntargets + 2 <= sizeof(g_targets) / sizeof(g_targets[0]));
            g_targets[g_ntargets++] = (target){g_pj[p], m->input};
            g_targets[g_ntargets++] = (target){g_pj[p], m->output};
        }
}

static bool same_bytes(const rtc_buf *a, const rtc_buf *b)
{
    return a->len == b->len && (a->len == 0 || !memcmp(a->data, b->data, a->len));
}

/* j (decoded or written by to_json) must encode, decode back to itself and
 * encode to the same bytes again; *bytes gets its encoding. */
static void check_stable(const target *t, const json_t *j, rtc_buf *bytes)
{
    char err[512];
    rtc_buf again = RTC_BUF_INIT;
    json_t *j2 = NULL;
    CHECK(rtc_pbjson_encode(t->pj, t->desc, j, bytes, err, sizeof(err)) == 0);
    CHECK(rtc_pbjson_decode(t->pj, t->desc, bytes->data, bytes->len, &j2, err, sizeof(err)) == 0);
    CHECK(json_equal(j, j2));
    CHECK(rtc_pbjson_encode(t->pj, t->desc, j2, &again, err, sizeof(err)) == 0);
    CHECK(same_bytes(bytes, &again));
    json_decref(j2);
    rtc_buf_free(&again);
}

static void fuzz_json(const target *t, const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!in)
        return;
    char err[512] = "";
    ProtobufCMessage *msg = NULL;
    int rc = rtc_pbjson_from_json(t->pj, t->desc, in, &msg, err, sizeof(err));
    if (rc) {
        CHECK(rc == RTC_EINVAL && err[0] && !msg);
        /* encode refuses the same way. */
        char err2[512] = "";
        rtc_buf b = RTC_BUF_INIT;
        CHECK(rtc_pbjson_encode(t->pj, t->desc, in, &b, err2, sizeof(err2)) == rc);
        CHECK(!strcmp(err, err2) && b.len == 0);
        rtc_buf_free(&b);
        json_decref(in);
        return;
    }
    CHECK(msg && msg->descriptor == t->desc);

    /* to_json of what from_json built: accepted input is valid UTF-8 and
     * within the depth limit, so it cannot fail. */
    json_t *j1 = NULL;
    CHECK(rtc_pbjson_to_json(t->pj, msg, &j1, err, sizeof(err)) == 0);

    /* encode = from_json + pack, to the byte. */
    rtc_buf packed = RTC_BUF_INIT, encoded = RTC_BUF_INIT;
    size_t n = protobuf_c_message_get_packed_size(msg);
    CHECK(rtc_buf_reserve(&packed, n) == 0);
    if (n)
        packed.len = protobuf_c_message_pack(msg, packed.data);
    CHECK(packed.len == n);
    CHECK(rtc_pbjson_encode(t->pj, t->desc, in, &encoded, err, sizeof(err)) == 0);
    CHECK(same_bytes(&packed, &encoded));

    /* The wire says what the message says. */
    json_t *j2 = NULL;
    CHECK(rtc_pbjson_decode(t->pj, t->desc, packed.data, packed.len, &j2, err, sizeof(err)) == 0);
    CHECK(json_equal(j1, j2));

    /* And the canonical JSON is a fixed point. */
    rtc_buf b = RTC_BUF_INIT;
    check_stable(t, j1, &b);
    CHECK(same_bytes(&b, &packed));

    rtc_buf_free(&b);
    rtc_buf_free(&packed);
    rtc_buf_free(&encoded);
    json_decref(j1);
    json_decref(j2);
    protobuf_c_message_free_unpacked(msg, NULL);
    json_decref(in);
}

static void fuzz_wire(const target *t, const uint8_t *data, size_t size)
{
    char err[512] = "";
    json_t *j = NULL;
    int rc = rtc_pbjson_decode(t->pj, t->desc, data, size, &j, err, sizeof(err));
    /* The text writer agrees with decode: same verdict, same JSON. */
    rtc_buf text = RTC_BUF_INIT;
    int trc = rtc_pbjson_decode_text(t->pj, t->desc, data, size, &text, NULL, err, sizeof(err));
    CHECK(trc == rc);
    if (rc == 0) {
        json_error_t jerr;
        json_t *jt = json_loadb((const char *)text.data, text.len, 0, &jerr);
        CHECK(jt && json_equal(jt, j));
        json_decref(jt);
    } else {
        CHECK(text.len == 0);
    }
    rtc_buf_free(&text);
    if (rc) {
        CHECK((rc == RTC_EPROTO || rc == RTC_EINVAL) && err[0] && !j);
        return;
    }
    CHECK(json_is_object(j));
    rtc_buf b = RTC_BUF_INIT;
    check_stable(t, j, &b);
    rtc_buf_free(&b);
    json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    if (size < 1)
        return 0;
    const target *t = &g_targets[data[0] % g_ntargets];
    fuzz_json(t, data + 1, size - 1);
    fuzz_wire(t, data + 1, size - 1);
    return 0;
}

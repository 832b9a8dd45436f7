/* test_bridge_conn.c — the bridge's JSON-RPC session (rtc/bridge_conn.h)
 * against the real descriptors of proto/, with the transport faked: what
 * the conn sends, the gRPC calls it starts (their request bytes decoded
 * with protobuf-c), cancels and timers are recorded, and upstream results
 * are injected — including the failures a real upstream rarely gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rtc/bridge_conn.h"
#include "rtc/grpc.h"
#include "rtc_proto_fds.h"
#include "rtc/signaling/v1/signaling.pb-c.h"

#define MAX_REC 64

typedef struct rec_call {
    const rtc_bridge_route *route;
    uint8_t req[4096];
    size_t len;
    char bearer[256];
    bool has_bearer;
    bool wait_for_ready;
    uint64_t timeout_ms;
    rtc_bridge_upcall *up;
    bool cancelled;
} rec_call;

typedef struct fake {
    char *sent[MAX_REC];
    size_t nsent;
    rec_call calls[MAX_REC];
    size_t ncalls;
    rtc_bridge_upcall *timers[MAX_REC];
    uint64_t timer_ms[MAX_REC];
    bool timer_live[MAX_REC];
    size_t ntimers;
    bool fail_send;
    bool fail_call;
} fake;

static fake F;
static rtc_pbjson *PJ;
static rtc_bridge_routes *ROUTES;
static rtc_bridge_env ENV;
static rtc_bridge_conn *C;

static int f_send(void *ud, const char *text, size_t len)
{
    (void)ud;
    if (F.fail_send)
        return RTC_ECLOSED;
    assert_true(F.nsent < MAX_REC);
    F.sent[F.nsent++] = strndup(text, len);
    return 0;
}

static int f_call(void *ud, const rtc_bridge_route *r, const uint8_t *req, size_t len,
                  const char *bearer, bool wfr, uint64_t timeout_ms, rtc_bridge_upcall *up,
                  void **handle)
{
    (void)ud;
    if (F.fail_call)
        return RTC_EUNAVAIL;
    assert_true(F.ncalls < MAX_REC && len <= sizeof(F.calls[0].req));
    rec_call *c = &F.calls[F.ncalls];
    memset(c, 0, sizeof(*c));
    c->route = r;
    memcpy(c->req, req, len);
    c->len = len;
    if (bearer) {
        c->has_bearer = true;
        snprintf(c->bearer, sizeof(c->bearer), "%s", bearer);
    }
    c->wait_for_ready = wfr;
    c->timeout_ms = timeout_ms;
    c->up = up;
    *handle = c;
    F.ncalls++;
    return 0;
}

static void f_cancel(void *ud, void *handle)
{
    (void)ud;
    ((rec_call *)handle)->cancelled = true;
}

static void *f_timer_start(void *ud, uint64_t ms, rtc_bridge_upcall *up)
{
    (void)ud;
    assert_true(F.ntimers < MAX_REC);
    F.timers[F.ntimers] = up;
    F.timer_ms[F.ntimers] = ms;
    F.timer_live[F.ntimers] = true;
    return &F.timer_live[F.ntimers++];
}

static void f_timer_stop(void *ud, void *t)
{
    (void)ud;
    *(bool *)t = false;
}

static int setup_all(void **state)
{
    (void)state;
    char err[300] = "";
    assert_int_equal(rtc_pbjson_new(rtc_proto_fds, rtc_proto_fds_len, rtc_proto_fds_services,
                                    rtc_proto_fds_services_len, &PJ, err, sizeof(err)),
                     0);
    int rc = rtc_bridge_routes_new(
        PJ, "rtc.auth.v1.Auth=127.0.0.1:1;rtc.signaling.v1.Signaling=127.0.0.1:2,127.0.0.1:3",
        "rtc.signaling.v1.Signaling/*,rtc.auth.v1.Auth/DevLogin", "rtc.auth.v1.Auth/DevLogin",
        "rtc.signaling.v1.Signaling/Subscribe=afterEventId:id", &ROUTES, err, sizeof(err));
    if (rc < 0)
        fail_msg("routes: %s", err);
    return 0;
}

static int teardown_all(void **state)
{
    (void)state;
    rtc_bridge_routes_free(ROUTES);
    rtc_pbjson_free(PJ);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    memset(&ENV, 0, sizeof(ENV));
    ENV.pj = PJ;
    ENV.routes = ROUTES;
    rtc_bridge_limits_init(&ENV.limits);
    ENV.limits.rate = 0;
    ENV.ops = (rtc_bridge_conn_ops){f_send, f_call, f_cancel, f_timer_start, f_timer_stop};
    assert_int_equal(rtc_bridge_conn_new(&ENV, NULL, &C), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    rtc_bridge_conn_free(C);
    C = NULL;
    for (size_t i = 0; i < F.nsent; i++)
        free(F.sent[i]);
    return 0;
}

static void recv_text(const char *text)
{
    assert_int_equal(rtc_bridge_conn_recv(C, text, strlen(text), 1000), 0);
}

/* The last frame sent, parsed (caller decrefs). */
static json_t *last_sent(void)
{
    assert_true(F.nsent > 0);
    json_error_t e;
    json_t *j = json_loads(F.sent[F.nsent - 1], 0, &e);
    assert_non_null(j);
    return j;
}

/* Assert the last frame is an error with code and a message containing
 * `part`; returns nothing. */
static void expect_error(int code, const char *part)
{
    json_t *j = last_sent();
    json_t *e = json_object_get(j, "error");
    assert_non_null(e);
    assert_int_equal(json_integer_value(json_object_get(e, "code")), code);
    const char *m = json_string_value(json_object_get(e, "message"));
    assert_non_null(m);
    if (!strstr(m, part))
        fail_msg("error message '%s' lacks '%s'", m, part);
    json_decref(j);
}

static void expect_status_name(const char *name)
{
    json_t *j = last_sent();
    json_t *d = json_object_get(json_object_get(j, "error"), "data");
    assert_string_equal(json_string_value(json_object_get(d, "status")), name);
    json_decref(j);
}

static void deliver(size_t call, const ProtobufCMessage *m)
{
    uint8_t buf[4096];
    size_t n = protobuf_c_message_pack(m, buf);
    assert_int_equal(rtc_bridge_upcall_on_message(F.calls[call].up, buf, n), 0);
}

static Rtc__Signaling__V1__SubscribeRequest *decode_sub(size_t call)
{
    Rtc__Signaling__V1__SubscribeRequest *r =
        rtc__signaling__v1__subscribe_request__unpack(NULL, F.calls[call].len, F.calls[call].req);
    assert_non_null(r);
    return r;
}

/* ---- JSON and JSON-RPC envelope errors ---- */

static void test_parse_error(void **state)
{
    (void)state;
    recv_text("{\"jsonrpc\": \"2.0\", ");
    expect_error(RTC_JSONRPC_PARSE_ERROR, "parse error");
    json_t *j = last_sent();
    assert_true(json_is_null(json_object_get(j, "id")));
    json_decref(j);
    assert_int_equal(F.ncalls, 0);
}

static void test_depth_limit(void **state)
{
    (void)state;
    char text[200] = "";
    for (int i = 0; i < 40; i++)
        strcat(text, "[");
    recv_text(text); /* refused at the 33rd bracket, before the end */
    expect_error(RTC_JSONRPC_PARSE_ERROR, "nested deeper than 32");
    /* brackets inside strings do not count */
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"a\":\"[[[[[[[[[[[[[[["
              "[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}}");
    expect_error(RTC_JSONRPC_METHOD_NOT_FOUND, "method not found");
}

static void test_batch_and_non_objects(void **state)
{
    (void)state;
    recv_text("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"}]");
    expect_error(RTC_JSONRPC_INVALID_REQUEST, "batch requests are not supported");
    recv_text("42");
    expect_error(RTC_JSONRPC_INVALID_REQUEST, "expected a JSON-RPC 2.0 request object");
    recv_text("\"x\"");
    expect_error(RTC_JSONRPC_INVALID_REQUEST, "request object");
}

static void test_envelope_fields(void **state)
{
    (void)state;
    recv_text("{\"id\":7,\"method\":\"rtc.auth.v1.Auth/DevLogin\"}");
    expect_error(RTC_JSONRPC_INVALID_REQUEST, "\"jsonrpc\" must be \"2.0\"");
    json_t *j = last_sent();
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 7); /* id echoed */
    json_decref(j);
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"m\"}");
    expect_error(RTC_JSONRPC_INVALID_REQUEST, "\"id\" must be");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":3}");
    expect_error(RTC_JSONRPC_INVALID_REQUEST, "\"method\" must be");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"extra\":1}");
    expect_error(RTC_JSONRPC_INVALID_REQUEST, "unknown member \"extra\"");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.auth.v1.Auth/DevLogin\","
              "\"params\":[1]}");
    expect_error(RTC_JSONRPC_INVALID_PARAMS, "must be an object");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"m\"}");
    expect_error(RTC_JSONRPC_PARSE_ERROR, "duplicate");
    assert_int_equal(F.ncalls, 0);
}

static void test_unknown_and_unexposed_methods(void **state)
{
    (void)state;
    const char *names[] = {"rtc.signaling.v1.Nope/Join",
                           "rtc.signaling.v1.SignalingAdmin/"
                           "CreateRoom",
                           "rtc.auth.v1.Auth/IssueToken", "grpc.health.v1.Health/Check"};
    for (size_t i = 0; i < 4; i++) {
        char text[300];
        snprintf(text, sizeof(text), "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}", names[i]);
        recv_text(text);
        expect_error(RTC_JSONRPC_METHOD_NOT_FOUND, "method not found");
    }
    assert_int_equal(F.ncalls, 0);
}

static void test_admin_services_never_exposed(void **state)
{
    (void)state;
    rtc_bridge_routes *r = NULL;
    char err[300] = "";
    assert_int_equal(rtc_bridge_routes_new(PJ, "rtc.signaling.v1.SignalingAdmin=127.0.0.1:1",
                                           "rtc.signaling.v1.SignalingAdmin/*", NULL, NULL, &r, err,
                                           sizeof(err)),
                     RTC_EINVAL);
    assert_non_null(strstr(err, "admin service"));
    assert_int_equal(rtc_bridge_routes_new(PJ, "", "rtc.signaling.v1.Signaling/Join", NULL, NULL,
                                           &r, err, sizeof(err)),
                     RTC_EINVAL);
    assert_non_null(strstr(err, "no --upstream"));
    assert_int_equal(
        rtc_bridge_routes_new(PJ, "rtc.signaling.v1.Signaling=h:1", "rtc.signaling.v1.Signaling/*",
                              NULL, "rtc.signaling.v1.Signaling/Join=a:b", &r, err, sizeof(err)),
        RTC_EINVAL);
    assert_non_null(strstr(err, "not server-streaming"));
}

/* ---- authentication ---- */

static void test_token_required_except_public(void **state)
{
    (void)state;
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/Join\"}");
    expect_error(RTC_GRPC_UNAUTHENTICATED, "no access token");
    expect_status_name("UNAUTHENTICATED");
    assert_int_equal(F.ncalls, 0);
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"rtc.auth.v1.Auth/DevLogin\","
              "\"params\":{\"displayName\":\"Ann\",\"roomId\":\"r1\"}}");
    assert_int_equal(F.ncalls, 1);
    assert_false(F.calls[0].has_bearer);
}

static void test_authenticate_forwards_bearer(void **state)
{
    (void)state;
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"session.authenticate\","
              "\"params\":{\"accessToken\":\"\"}}");
    expect_error(RTC_JSONRPC_INVALID_PARAMS, "accessToken");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"session.authenticate\","
              "\"params\":{\"accessToken\":\"a b\"}}");
    expect_error(RTC_JSONRPC_INVALID_PARAMS, "accessToken");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"session.authenticate\","
              "\"params\":{\"accessToken\":\"tok.en.1\"}}");
    json_t *j = last_sent();
    assert_true(json_is_true(json_object_get(j, "result")));
    json_decref(j);
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"rtc.signaling.v1.Signaling/Join\","
              "\"params\":{\"metadata\":\"m\"}}");
    assert_int_equal(F.ncalls, 1);
    assert_string_equal(F.calls[0].bearer, "tok.en.1");
    assert_int_equal(F.calls[0].timeout_ms, 30000);
    assert_int_equal(rtc_bridge_conn_set_token(C, "x\x01y"), RTC_EINVAL);
}

/* ---- unary calls ---- */

static void test_params_errors_name_the_field(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/Signal\","
              "\"params\":{\"sessionId\":5}}");
    expect_error(RTC_JSONRPC_INVALID_PARAMS, "sessionId");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/Signal\","
              "\"params\":{\"payload\":{\"description\":{\"type\":\"OFFERX\"}}}}");
    expect_error(RTC_JSONRPC_INVALID_PARAMS, "payload.description.type");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/Signal\","
              "\"params\":{\"bogus\":1}}");
    expect_error(RTC_JSONRPC_INVALID_PARAMS, "bogus");
    assert_int_equal(F.ncalls, 0);
}

static void test_unary_result_and_error(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"method\":\"rtc.signaling.v1.Signaling/Signal\","
              "\"params\":{\"session_id\":\"S1\",\"toParticipantId\":\"p2\",\"payload\":{"
              "\"description\":{\"type\":\"SDP_TYPE_OFFER\",\"sdp\":\"v=0\"}}}}");
    assert_int_equal(F.ncalls, 1);
    assert_int_equal(F.nsent, 0); /* nothing until the upstream answers */
    Rtc__Signaling__V1__SignalRequest *req =
        rtc__signaling__v1__signal_request__unpack(NULL, F.calls[0].len, F.calls[0].req);
    assert_non_null(req);
    assert_string_equal(req->session_id, "S1");
    assert_string_equal(req->payload->description->sdp, "v=0");
    rtc__signaling__v1__signal_request__free_unpacked(req, NULL);

    Rtc__Signaling__V1__SignalResponse resp = RTC__SIGNALING__V1__SIGNAL_RESPONSE__INIT;
    resp.event_id = "1-0";
    rtc_bridge_upcall_on_headers(F.calls[0].up);
    deliver(0, &resp.base);
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_OK, "");
    json_t *j = last_sent();
    assert_string_equal(json_string_value(json_object_get(j, "id")), "a");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "result"), "eventId")),
                        "1-0");
    json_decref(j);

    recv_text("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"rtc.signaling.v1.Signaling/Leave\","
              "\"params\":{\"sessionId\":\"S1\"}}");
    rtc_bridge_upcall_on_close(F.calls[1].up, RTC_GRPC_NOT_FOUND, "no such session");
    expect_error(RTC_GRPC_NOT_FOUND, "no such session");
    expect_status_name("NOT_FOUND");
    assert_int_equal(rtc_bridge_conn_calls_in_flight(C), 0);
}

static void test_invalid_upstream_message(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/Heartbeat\","
              "\"params\":{\"sessionId\":\"S\"}}");
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    assert_int_not_equal(rtc_bridge_upcall_on_message(F.calls[0].up, junk, sizeof(junk)), 0);
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_CANCELLED, "cancelled");
    expect_error(RTC_GRPC_INTERNAL, "invalid");
}

static void test_ok_without_message_is_internal(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/Heartbeat\","
              "\"params\":{\"sessionId\":\"S\"}}");
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_OK, "");
    expect_error(RTC_GRPC_INTERNAL, "without a message");
}

static void test_notification_gets_no_answer(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text("{\"jsonrpc\":\"2.0\",\"method\":\"rtc.signaling.v1.Signaling/Heartbeat\","
              "\"params\":{\"sessionId\":\"S\"}}");
    assert_int_equal(F.ncalls, 1);
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_NOT_FOUND, "x");
    recv_text("{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}");
    assert_int_equal(F.nsent, 0);
    /* a subscription cannot be a notification: nothing could address it */
    recv_text("{\"jsonrpc\":\"2.0\",\"method\":\"rtc.signaling.v1.Signaling/Subscribe\"}");
    assert_int_equal(F.ncalls, 1);
}

static void test_upstream_not_startable(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    F.fail_call = true;
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/Heartbeat\","
              "\"params\":{\"sessionId\":\"S\"}}");
    expect_error(RTC_GRPC_UNAVAILABLE, "no upstream");
    assert_int_equal(rtc_bridge_conn_calls_in_flight(C), 0);
}

/* ---- streams ---- */

static void send_event(size_t call, const char *id)
{
    Rtc__Signaling__V1__Event ev = RTC__SIGNALING__V1__EVENT__INIT;
    Rtc__Signaling__V1__DataEvent d = RTC__SIGNALING__V1__DATA_EVENT__INIT;
    ev.id = (char *)id;
    ev.timestamp_ms = 5;
    d.from_participant_id = "p2";
    d.data.data = (uint8_t *)"hi";
    d.data.len = 2;
    ev.kind_case = RTC__SIGNALING__V1__EVENT__KIND_DATA;
    ev.data = &d;
    deliver(call, &ev.base);
}

static const char *SUB = "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"rtc.signaling.v1.Signaling/"
                         "Subscribe\",\"params\":{\"sessionId\":\"S1\"}}";

static void test_subscribe_events_and_end(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text(SUB);
    json_t *j = last_sent();
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j, "result"), "subscription")), "s1");
    json_decref(j);
    assert_int_equal(F.calls[0].timeout_ms, 0); /* streams have no deadline */
    rtc_bridge_upcall_on_headers(F.calls[0].up);
    send_event(0, "1-0");
    j = last_sent();
    assert_string_equal(json_string_value(json_object_get(j, "method")), "rpc.event");
    json_t *p = json_object_get(j, "params");
    assert_string_equal(json_string_value(json_object_get(p, "subscription")), "s1");
    json_t *res = json_object_get(p, "result");
    assert_string_equal(json_string_value(json_object_get(res, "id")), "1-0");
    assert_string_equal(json_string_value(json_object_get(res, "timestampMs")), "5");
    assert_string_equal(json_string_value(json_object_get(json_object_get(res, "data"), "data")),
                        "aGk=");
    json_decref(j);
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_OK, "");
    j = last_sent();
    assert_string_equal(json_string_value(json_object_get(j, "method")), "rpc.end");
    assert_null(json_object_get(json_object_get(j, "params"), "error"));
    json_decref(j);
}

static void test_stream_resumes_from_last_event(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text(SUB);
    rtc_bridge_upcall_on_headers(F.calls[0].up);
    send_event(0, "1-0");
    send_event(0, "2-0");
    size_t before = F.nsent;
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_UNAVAILABLE, "connection lost");
    assert_int_equal(F.nsent, before); /* the browser sees nothing */
    assert_int_equal(F.ncalls, 2);     /* re-opened at once */
    Rtc__Signaling__V1__SubscribeRequest *r = decode_sub(1);
    assert_string_equal(r->session_id, "S1");
    assert_string_equal(r->after_event_id, "2-0");
    rtc__signaling__v1__subscribe_request__free_unpacked(r, NULL);
    /* that attempt fails before headers: a backoff timer, then again */
    rtc_bridge_upcall_on_close(F.calls[1].up, RTC_GRPC_UNAVAILABLE, "no ready endpoint");
    assert_int_equal(F.ntimers, 1);
    assert_int_equal(F.timer_ms[0], 100);
    assert_int_equal(F.ncalls, 2);
    rtc_bridge_upcall_on_timer(F.timers[0]);
    assert_int_equal(F.ncalls, 3);
    rtc_bridge_upcall_on_headers(F.calls[2].up);
    send_event(2, "3-0");
    json_t *j = last_sent();
    json_t *res = json_object_get(json_object_get(j, "params"), "result");
    assert_string_equal(json_string_value(json_object_get(res, "id")), "3-0");
    json_decref(j);
    /* a later break resumes from 3-0, at once again (it had recovered) */
    rtc_bridge_upcall_on_close(F.calls[2].up, RTC_GRPC_UNAVAILABLE, "gone");
    assert_int_equal(F.ncalls, 4);
    r = decode_sub(3);
    assert_string_equal(r->after_event_id, "3-0");
    rtc__signaling__v1__subscribe_request__free_unpacked(r, NULL);
}

static void test_resume_gives_up(void **state)
{
    (void)state;
    ENV.limits.resume_for_ms = 700;
    rtc_bridge_conn_set_token(C, "t");
    recv_text(SUB);
    rtc_bridge_upcall_on_headers(F.calls[0].up);
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_UNAVAILABLE, "gone");
    /* 0 + 100 + 200 + 400 = 700 ms of backoff, then the next (800) is over */
    size_t expect_calls = 2;
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(F.ncalls, expect_calls);
        rtc_bridge_upcall_on_close(F.calls[expect_calls - 1].up, RTC_GRPC_UNAVAILABLE, "down");
        if (k == 3)
            break;
        assert_int_equal(F.ntimers, k + 1);
        rtc_bridge_upcall_on_timer(F.timers[k]);
        expect_calls++;
    }
    json_t *j = last_sent();
    assert_string_equal(json_string_value(json_object_get(j, "method")), "rpc.end");
    json_t *e = json_object_get(json_object_get(j, "params"), "error");
    assert_int_equal(json_integer_value(json_object_get(e, "code")), RTC_GRPC_UNAVAILABLE);
    json_decref(j);
}

static void test_stream_error_not_resumed(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text(SUB);
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_OUT_OF_RANGE, "dropped");
    assert_int_equal(F.ncalls, 1);
    json_t *j = last_sent();
    json_t *e = json_object_get(json_object_get(j, "params"), "error");
    assert_int_equal(json_integer_value(json_object_get(e, "code")), RTC_GRPC_OUT_OF_RANGE);
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "data"), "status")),
                        "OUT_OF_RANGE");
    json_decref(j);
}

static void test_cancel(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text(SUB);
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"rpc.cancel\","
              "\"params\":{\"subscription\":\"s7\"}}");
    expect_error(RTC_JSONRPC_INVALID_PARAMS, "no open subscription");
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"rpc.cancel\","
              "\"params\":{\"subscription\":\"s1\"}}");
    json_t *j = last_sent();
    assert_true(json_is_true(json_object_get(j, "result")));
    json_decref(j);
    assert_true(F.calls[0].cancelled);
}

static void test_draining_stops_resumes_and_calls(void **state)
{
    (void)state;
    rtc_bridge_conn_set_token(C, "t");
    recv_text(SUB);
    rtc_bridge_conn_set_draining(C);
    rtc_bridge_upcall_on_close(F.calls[0].up, RTC_GRPC_UNAVAILABLE, "gone");
    assert_int_equal(F.ncalls, 1);
    json_t *j = last_sent();
    assert_string_equal(json_string_value(json_object_get(j, "method")), "rpc.end");
    json_decref(j);
    recv_text("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/Heartbeat\","
              "\"params\":{\"sessionId\":\"S\"}}");
    expect_error(RTC_GRPC_UNAVAILABLE, "shutting down");
}

/* ---- limits ---- */

static void test_rate_limit(void **state)
{
    (void)state;
    ENV.limits.rate = 1;
    ENV.limits.burst = 2;
    rtc_bridge_conn_free(C);
    assert_int_equal(rtc_bridge_conn_new(&ENV, NULL, &C), 0);
    const char *req = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\"}";
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rtc_bridge_conn_recv(C, req, strlen(req), 5000), 0);
        expect_error(RTC_JSONRPC_METHOD_NOT_FOUND, "not found");
    }
    assert_int_equal(rtc_bridge_conn_recv(C, req, strlen(req), 5000), 0);
    expect_error(RTC_GRPC_RESOURCE_EXHAUSTED, "rate limit");
    expect_status_name("RESOURCE_EXHAUSTED");
    /* a second later one token is back */
    assert_int_equal(rtc_bridge_conn_recv(C, req, strlen(req), 6000), 0);
    expect_error(RTC_JSONRPC_METHOD_NOT_FOUND, "not found");
    assert_int_equal(rtc_bridge_conn_recv(C, req, strlen(req), 6000), 0);
    expect_error(RTC_GRPC_RESOURCE_EXHAUSTED, "rate limit");
    /* garbage is limited too (a flood of it must not be answered for free) */
    assert_int_equal(rtc_bridge_conn_recv(C, "{x", 2, 6000), 0);
    expect_error(RTC_GRPC_RESOURCE_EXHAUSTED, "rate limit");
    json_t *j = last_sent();
    assert_true(json_is_null(json_object_get(j, "id")));
    json_decref(j);
}

static void test_stream_and_call_limits(void **state)
{
    (void)state;
    ENV.limits.max_streams = 1;
    ENV.limits.max_calls = 1;
    rtc_bridge_conn_set_token(C, "t");
    recv_text(SUB);
    recv_text(SUB);
    expect_error(RTC_GRPC_RESOURCE_EXHAUSTED, "open subscriptions");
    const char *hb = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"rtc.signaling.v1.Signaling/"
                     "Heartbeat\",\"params\":{\"sessionId\":\"S\"}}";
    recv_text(hb);
    recv_text(hb);
    expect_error(RTC_GRPC_RESOURCE_EXHAUSTED, "calls in flight");
    assert_int_equal(F.ncalls, 2);
}

static void test_send_failure_is_reported(void **state)
{
    (void)state;
    F.fail_send = true;
    const char *req = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\"}";
    assert_true(rtc_bridge_conn_recv(C, req, strlen(req), 1) < 0);
    assert_true(rtc_bridge_conn_recv(C, req, strlen(req), 1) < 0);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_parse_error),
        T(test_depth_limit),
        T(test_batch_and_non_objects),
        T(test_envelope_fields),
        T(test_unknown_and_unexposed_methods),
        T(test_admin_services_never_exposed),
        T(test_token_required_except_public),
        T(test_authenticate_forwards_bearer),
        T(test_params_errors_name_the_field),
        T(test_unary_result_and_error),
        T(test_invalid_upstream_message),
        T(test_ok_without_message_is_internal),
        T(test_notification_gets_no_answer),
        T(test_upstream_not_startable),
        T(test_subscribe_events_and_end),
        T(test_stream_resumes_from_last_event),
        T(test_resume_gives_up),
        T(test_stream_error_not_resumed),
        T(test_cancel),
        T(test_draining_stops_resumes_and_calls),
        T(test_rate_limit),
        T(test_stream_and_call_limits),
        T(test_send_failure_is_reported),
    };
    return cmocka_run_group_tests(tests, setup_all, teardown_all);
}

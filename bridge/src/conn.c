/* One browser socket's JSON-RPC 2.0 session; see rtc/bridge_conn.h.
 *
 * Everything here is I/O-free: frames in, frames out through ops->send,
 * gRPC calls through ops->call. A call in flight is an upcall, linked into
 * its conn; the transport's gRPC callbacks come back through
 * rtc_bridge_upcall_on_*. A unary upcall answers its request and is freed
 * on close. A stream upcall answers {"subscription"} at once, turns each
 * response into an "rpc.event" and, when its upstream fails UNAVAILABLE
 * and the route is resumable, starts again from the last cursor delivered
 * (immediately, then with backoff) until it is re-established or its
 * resume budget is spent; then "rpc.end". */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/bridge_conn.h"
#include "rtc/grpc.h"

#define MAX_TOKEN         8192
#define RESUME_BACKOFF_MS 100 /* first delay after an immediate retry failed; doubles */
#define RESUME_MAX_DELAY  2000

struct rtc_bridge_upcall {
    rtc_bridge_conn *c;
    rtc_bridge_upcall *prev, *next;
    const rtc_bridge_route *route;
    json_t *id;     /* the request's id (unary); NULL for a notification */
    bool stream;    /* server-streaming: a subscription */
    char sub[24];   /* its subscription id */
    json_t *params; /* streams: the request, re-encoded with the cursor on resume */
    char *cursor;   /* last resume_resp value delivered */
    rtc_buf result; /* unary: the response's JSON text */
    bool has_result;
    void *handle;       /* transport call in flight, or NULL */
    void *timer;        /* resume backoff timer, or NULL */
    bool established;   /* current attempt got its response headers */
    unsigned attempts;  /* resume attempts since the stream last worked */
    uint64_t waited_ms; /* backoff spent on them */
    int fail_status;    /* set when a response could not be transcoded */
    char fail_msg[200];
};

struct rtc_bridge_conn {
    const rtc_bridge_env *env;
    void *ud;
    char *token;
    double tokens;
    uint64_t last_ms;
    bool bucket_started;
    bool draining;
    bool dead; /* ops->send failed: the transport is closing the socket */
    rtc_bridge_upcall *head;
    unsigned ncalls, nstreams;
    uint64_t next_sub;
};

void rtc_bridge_limits_init(rtc_bridge_limits *l)
{
    *l = (rtc_bridge_limits){
        .max_depth = 32,
        .rate = 50,
        .burst = 100,
        .max_calls = 64,
        .max_streams = 8,
        .call_timeout_ms = 30000,
        .resume_for_ms = 30000,
    };
}

static void inc(rtc_metric *m)
{
    if (m)
        rtc_metric_inc(m, 1);
}

/* ---- output ---------------------------------------------------------------- */

/* Send text[0..len) as one frame. */
static int send_text(rtc_bridge_conn *c, const char *text, size_t len)
{
    if (c->dead)
        return RTC_ECLOSED;
    if (c->env->ops.send(c->ud, text, len) < 0) {
        c->dead = true;
        return RTC_ECLOSED;
    }
    return 0;
}

/* Send obj (a reference is stolen) as one compact text frame. */
static int send_json(rtc_bridge_conn *c, json_t *obj)
{
    if (!obj)
        return RTC_ENOMEM;
    int rc = RTC_ECLOSED;
    if (!c->dead) {
        char *text = json_dumps(obj, JSON_COMPACT);
        rc = text ? send_text(c, text, strlen(text)) : RTC_ENOMEM;
        free(text);
    }
    json_decref(obj);
    return rc;
}

static json_t *error_obj(int code, const char *message, json_t *data)
{
    json_t *e = json_pack("{s:i,s:s}", "code", code, "message", message);
    if (e && data)
        json_object_set_new(e, "data", data);
    else
        json_decref(data);
    return e;
}

/* An error object for a gRPC status: data.status names it. */
static json_t *grpc_error_obj(int status, const char *message)
{
    const char *name = rtc_grpc_status_name(status);
    return error_obj(status, message && message[0] ? message : (name ? name : "error"),
                     json_pack("{s:s}", "status", name ? name : "UNKNOWN"));
}

static int reply_error(rtc_bridge_conn *c, json_t *id, json_t *err)
{
    if (!id) { /* a notification gets no answer, not even an error */
        json_decref(err);
        return 0;
    }
    return send_json(c, json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id, "error", err));
}

static int reply_result(rtc_bridge_conn *c, json_t *id, json_t *result)
{
    if (!id) {
        json_decref(result);
        return 0;
    }
    return send_json(c, json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id, "result", result));
}

/* A result given as JSON text (a response's): the envelope around it. */
static int reply_result_text(rtc_bridge_conn *c, json_t *id, const rtc_buf *result)
{
    if (!id)
        return 0;
    char *idtext = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
    rtc_buf out = RTC_BUF_INIT;
    int rc = idtext ? 0 : RTC_ENOMEM;
    if (rc == 0 &&
        (rtc_buf_printf(&out, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":", idtext) < 0 ||
         rtc_buf_append(&out, result->data, result->len) < 0 || rtc_buf_append(&out, "}", 1) < 0))
        rc = RTC_ENOMEM;
    if (rc == 0)
        rc = send_text(c, (const char *)out.data, out.len);
    free(idtext);
    rtc_buf_free(&out);
    return rc;
}

/* A -326xx error for a malformed request. id: the request's, NULL for a
 * notification (no answer), json_null() when it could not be read. */
static int bad_request(rtc_bridge_conn *c, json_t *id, int code, const char *message)
{
    inc(c->env->metrics.bad_requests);
    return reply_error(c, id, error_obj(code, message, NULL));
}

static int notify(rtc_bridge_conn *c, const char *method, json_t *params)
{
    return send_json(
        c, json_pack("{s:s,s:s,s:o}", "jsonrpc", "2.0", "method", method, "params", params));
}

static void count_call(rtc_bridge_conn *c, const rtc_bridge_route *r, int status)
{
    if (!c->env->metrics.calls)
        return;
    const char *labels[] = {r->method->name, rtc_grpc_status_name(status)};
    if (!labels[1])
        labels[1] = "UNKNOWN";
    inc(rtc_metric_child(c->env->metrics.calls, labels));
}

/* ---- upcalls ----------------------------------------------------------------- */

static void upcall_free(rtc_bridge_upcall *up)
{
    rtc_bridge_conn *c = up->c;
    if (up->handle)
        c->env->ops.cancel(c->ud, up->handle);
    if (up->timer)
        c->env->ops.timer_stop(c->ud, up->timer);
    if (up->prev)
        up->prev->next = up->next;
    else
        c->head = up->next;
    if (up->next)
        up->next->prev = up->prev;
    if (up->stream)
        c->nstreams--;
    else
        c->ncalls--;
    json_decref(up->id);
    json_decref(up->params);
    rtc_buf_free(&up->result);
    free(up->cursor);
    free(up);
}

static rtc_bridge_upcall *upcall_new(rtc_bridge_conn *c, const rtc_bridge_route *r, json_t *id)
{
    rtc_bridge_upcall *up = calloc(1, sizeof(*up));
    if (!up)
        return NULL;
    up->c = c;
    up->route = r;
    up->id = id ? json_incref(id) : NULL;
    up->stream = r->method->server_streaming;
    if (up->stream) {
        snprintf(up->sub, sizeof(up->sub), "s%llu", (unsigned long long)++c->next_sub);
        c->nstreams++;
    } else {
        c->ncalls++;
    }
    up->next = c->head;
    if (c->head)
        c->head->prev = up;
    c->head = up;
    return up;
}

/* Encode params (of the route's input type) and start the call. */
static int upcall_start(rtc_bridge_upcall *up, const json_t *params, bool resume, char *err,
                        size_t errlen)
{
    rtc_bridge_conn *c = up->c;
    rtc_buf req = RTC_BUF_INIT;
    int rc = rtc_pbjson_encode(c->env->pj, up->route->method->input, params, &req, err, errlen);
    if (rc < 0) {
        rtc_buf_free(&req);
        return rc;
    }
    up->established = false;
    rc = c->env->ops.call(c->ud, up->route, req.data ? req.data : (const uint8_t *)"", req.len,
                          c->token, resume, up->stream ? 0 : c->env->limits.call_timeout_ms, up,
                          &up->handle);
    rtc_buf_free(&req);
    if (rc < 0) {
        up->handle = NULL;
        snprintf(err, errlen, "no upstream for %s", up->route->method->service);
        return RTC_EUNAVAIL;
    }
    return 0;
}

/* A stream is over: tell the browser (error NULL = ended OK), free it. */
static void stream_end(rtc_bridge_upcall *up, json_t *error)
{
    rtc_bridge_conn *c = up->c;
    json_t *p = json_pack("{s:s}", "subscription", up->sub);
    if (p && error)
        json_object_set_new(p, "error", error);
    else
        json_decref(error);
    notify(c, "rpc.end", p);
    upcall_free(up);
}

static bool resumable(const rtc_bridge_upcall *up)
{
    return up->stream && up->route->resume_resp && !up->c->draining;
}

/* Try the stream again from its cursor: now when the last attempt worked,
 * else after a backoff, until the budget is spent. */
static void resume(rtc_bridge_upcall *up, int status, const char *message)
{
    rtc_bridge_conn *c = up->c;
    uint64_t delay = 0;
    if (up->attempts > 0) {
        delay = RESUME_BACKOFF_MS << (up->attempts - 1 < 5 ? up->attempts - 1 : 5);
        if (delay > RESUME_MAX_DELAY)
            delay = RESUME_MAX_DELAY;
    }
    if (up->waited_ms + delay > c->env->limits.resume_for_ms) {
        inc(c->env->metrics.resume_failures);
        count_call(c, up->route, status);
        stream_end(up, grpc_error_obj(status, message));
        return;
    }
    up->attempts++;
    up->waited_ms += delay;
    if (delay > 0 && (up->timer = c->env->ops.timer_start(c->ud, delay, up)))
        return;
    rtc_bridge_upcall_on_timer(up);
}

void rtc_bridge_upcall_on_timer(rtc_bridge_upcall *up)
{
    rtc_bridge_conn *c = up->c;
    up->timer = NULL;
    inc(c->env->metrics.resumes);
    json_t *p = json_deep_copy(up->params);
    char err[300] = "";
    int rc = p ? 0 : RTC_ENOMEM;
    if (rc == 0 && up->cursor)
        rc =
            json_object_set_new(p, up->route->resume_req, json_string(up->cursor)) ? RTC_ENOMEM : 0;
    if (rc == 0)
        rc = upcall_start(up, p, false, err, sizeof(err));
    json_decref(p);
    if (rc == RTC_EUNAVAIL) {
        /* Not even started: count it as a failed attempt, with backoff. */
        if (up->attempts == 0)
            up->attempts = 1;
        resume(up, RTC_GRPC_UNAVAILABLE, err);
    } else if (rc < 0) {
        count_call(c, up->route, RTC_GRPC_INTERNAL);
        stream_end(up, grpc_error_obj(RTC_GRPC_INTERNAL, err[0] ? err : "cannot resume"));
    }
}

void rtc_bridge_upcall_on_headers(rtc_bridge_upcall *up)
{
    up->established = true;
    up->attempts = 0;
    up->waited_ms = 0;
}

/* The response is written as JSON text straight from the protobuf message
 * into its envelope (rtc_pbjson_decode_text): building jansson values only
 * to print them was the largest cost of a relayed event in the bridge. */
int rtc_bridge_upcall_on_message(rtc_bridge_upcall *up, const uint8_t *data, size_t len)
{
    rtc_bridge_conn *c = up->c;
    char err[200] = "";
    rtc_buf *out = &up->result;
    rtc_buf ev = RTC_BUF_INIT;
    if (up->stream) {
        out = &ev;
        if (rtc_buf_printf(out,
                           "{\"jsonrpc\":\"2.0\",\"method\":\"rpc.event\",\"params\":{"
                           "\"subscription\":\"%s\",\"result\":",
                           up->sub) < 0)
            return 1;
    } else {
        rtc_buf_reset(out);
    }
    ProtobufCMessage *msg = NULL;
    int rc = rtc_pbjson_decode_text(c->env->pj, up->route->method->output, data, len, out,
                                    up->stream ? &msg : NULL, err, sizeof(err));
    if (rc < 0) {
        rtc_buf_free(&ev);
        up->fail_status = RTC_GRPC_INTERNAL;
        snprintf(up->fail_msg, sizeof(up->fail_msg), "upstream sent an invalid %s: %s",
                 up->route->method->output->name, err);
        return 1; /* the transport cancels; on_close reports fail_msg */
    }
    if (!up->stream) {
        up->has_result = true;
        return 0;
    }
    const ProtobufCFieldDescriptor *cf = up->route->resume_resp_field;
    if (cf) {
        const char *cur = *(char *const *)((const char *)msg + cf->offset);
        char *copy = cur && cur[0] ? strdup(cur) : NULL;
        if (copy) {
            free(up->cursor);
            up->cursor = copy;
        }
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    inc(c->env->metrics.events);
    rc =
        rtc_buf_append(&ev, "}}", 2) < 0 ? RTC_ENOMEM : send_text(c, (const char *)ev.data, ev.len);
    rtc_buf_free(&ev);
    return rc < 0 ? 1 : 0;
}

void rtc_bridge_upcall_on_close(rtc_bridge_upcall *up, int status, const char *message)
{
    rtc_bridge_conn *c = up->c;
    up->handle = NULL;
    if (up->fail_status) {
        status = up->fail_status;
        message = up->fail_msg;
    }
    if (!up->stream) {
        if (status == RTC_GRPC_OK && !up->has_result) {
            status = RTC_GRPC_INTERNAL;
            message = "upstream answered OK without a message";
        }
        count_call(c, up->route, status);
        if (status == RTC_GRPC_OK) {
            reply_result_text(c, up->id, &up->result);
        } else {
            reply_error(c, up->id, grpc_error_obj(status, message));
        }
        upcall_free(up);
        return;
    }
    if (status == RTC_GRPC_UNAVAILABLE && !up->fail_status && resumable(up) && !c->dead) {
        resume(up, status, message);
        return;
    }
    count_call(c, up->route, status);
    stream_end(up, status == RTC_GRPC_OK ? NULL : grpc_error_obj(status, message));
}

/* ---- the session ---------------------------------------------------------------- */

int rtc_bridge_conn_new(const rtc_bridge_env *env, void *ud, rtc_bridge_conn **out)
{
    rtc_bridge_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return RTC_ENOMEM;
    c->env = env;
    c->ud = ud;
    c->tokens = env->limits.burst;
    *out = c;
    return 0;
}

void rtc_bridge_conn_free(rtc_bridge_conn *c)
{
    if (!c)
        return;
    while (c->head)
        upcall_free(c->head);
    free(c->token);
    free(c);
}

static bool token_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > MAX_TOKEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (t[i] <= 0x20 || t[i] >= 0x7f)
            return false;
    return true;
}

int rtc_bridge_conn_set_token(rtc_bridge_conn *c, const char *token)
{
    if (token && !token_ok(token))
        return RTC_EINVAL;
    char *copy = token ? strdup(token) : NULL;
    if (token && !copy)
        return RTC_ENOMEM;
    free(c->token);
    c->token = copy;
    return 0;
}

void rtc_bridge_conn_set_draining(rtc_bridge_conn *c)
{
    c->draining = true;
}

size_t rtc_bridge_conn_calls_in_flight(const rtc_bridge_conn *c)
{
    return c->ncalls;
}

static bool rate_ok(rtc_bridge_conn *c, uint64_t now)
{
    const rtc_bridge_limits *l = &c->env->limits;
    if (l->rate <= 0)
        return true;
    if (c->bucket_started && now > c->last_ms) {
        c->tokens += (double)(now - c->last_ms) * l->rate / 1000.0;
        if (c->tokens > l->burst)
            c->tokens = l->burst;
    }
    c->bucket_started = true;
    c->last_ms = now;
    if (c->tokens < 1.0)
        return false;
    c->tokens -= 1.0;
    return true;
}

static int rate_limited(rtc_bridge_conn *c, json_t *id, const char *msg)
{
    inc(c->env->metrics.rate_limited);
    return reply_error(c, id, grpc_error_obj(RTC_GRPC_RESOURCE_EXHAUSTED, msg));
}

static rtc_bridge_upcall *find_stream(rtc_bridge_conn *c, const char *sub)
{
    for (rtc_bridge_upcall *up = c->head; up; up = up->next)
        if (up->stream && strcmp(up->sub, sub) == 0)
            return up;
    return NULL;
}

/* params of a bridge-local method: one string member `key`. */
static const char *local_param(json_t *params, const char *key)
{
    if (!json_is_object(params) || json_object_size(params) != 1)
        return NULL;
    return json_string_value(json_object_get(params, key));
}

static int local_method(rtc_bridge_conn *c, const char *method, json_t *id, json_t *params)
{
    if (strcmp(method, "session.authenticate") == 0) {
        const char *t = local_param(params, "accessToken");
        if (!t)
            t = local_param(params, "access_token");
        if (!t || rtc_bridge_conn_set_token(c, t) < 0)
            return bad_request(c, id, RTC_JSONRPC_INVALID_PARAMS,
                               "invalid params: expected {\"accessToken\": \"<token>\"} (1-8192 "
                               "printable ASCII characters)");
        return reply_result(c, id, json_true());
    }
    /* rpc.cancel */
    const char *sub = local_param(params, "subscription");
    if (!sub)
        return bad_request(c, id, RTC_JSONRPC_INVALID_PARAMS,
                           "invalid params: expected {\"subscription\": \"<id>\"}");
    rtc_bridge_upcall *up = find_stream(c, sub);
    if (!up)
        return bad_request(c, id, RTC_JSONRPC_INVALID_PARAMS,
                           "invalid params: no open subscription with that id");
    count_call(c, up->route, RTC_GRPC_CANCELLED);
    upcall_free(up);
    return reply_result(c, id, json_true());
}

static int call_method(rtc_bridge_conn *c, const rtc_bridge_route *r, json_t *id, json_t *params)
{
    const rtc_bridge_limits *l = &c->env->limits;
    char msg[400];
    if (c->draining)
        return reply_error(
            c, id, grpc_error_obj(RTC_GRPC_UNAVAILABLE, "the bridge is shutting down: reconnect"));
    if (!r->is_public && !c->token)
        return reply_error(c, id,
                           grpc_error_obj(RTC_GRPC_UNAUTHENTICATED,
                                          "no access token: connect with ?access_token= "
                                          "or call session.authenticate first"));
    if (r->method->server_streaming && !id)
        return bad_request(c, NULL, RTC_JSONRPC_INVALID_REQUEST, "a subscription needs an id");
    if (r->method->server_streaming ? c->nstreams >= l->max_streams : c->ncalls >= l->max_calls) {
        snprintf(msg, sizeof(msg), "too many %s on this socket (at most %u)",
                 r->method->server_streaming ? "open subscriptions" : "calls in flight",
                 r->method->server_streaming ? l->max_streams : l->max_calls);
        return reply_error(c, id, grpc_error_obj(RTC_GRPC_RESOURCE_EXHAUSTED, msg));
    }
    json_t *empty = NULL;
    if (!params && !(params = empty = json_object()))
        return RTC_ENOMEM;
    rtc_bridge_upcall *up = upcall_new(c, r, id);
    if (!up) {
        json_decref(empty);
        return RTC_ENOMEM;
    }
    char err[300] = "";
    int rc = upcall_start(up, params, false, err, sizeof(err));
    if (rc == RTC_EINVAL) {
        json_decref(empty);
        upcall_free(up);
        snprintf(msg, sizeof(msg), "invalid params: %s", err);
        return bad_request(c, id, RTC_JSONRPC_INVALID_PARAMS, msg);
    }
    if (rc < 0) {
        json_decref(empty);
        count_call(c, r, RTC_GRPC_UNAVAILABLE);
        upcall_free(up);
        return reply_error(
            c, id,
            grpc_error_obj(rc == RTC_EUNAVAIL ? RTC_GRPC_UNAVAILABLE : RTC_GRPC_INTERNAL,
                           err[0] ? err : rtc_strerror(rc)));
    }
    if (!up->stream) {
        json_decref(empty);
        return 0;
    }
    up->params = empty ? empty : json_incref(params);
    return reply_result(c, id, json_pack("{s:s}", "subscription", up->sub));
}

int rtc_bridge_conn_recv(rtc_bridge_conn *c, const char *text, size_t len, uint64_t now_ms)
{
    inc(c->env->metrics.requests);
    if (c->dead)
        return RTC_ECLOSED;
    /* Every message takes a token, well-formed or not: a flood of garbage
     * is limited like any other. The answer still carries the request's id
     * when it can be read. */
    bool limited = !rate_ok(c, now_ms);
    unsigned max_depth = c->env->limits.max_depth;
    char msg[300];
    if (limited)
        snprintf(msg, sizeof(msg), "rate limit: at most %g requests per second (burst %g)",
                 c->env->limits.rate, c->env->limits.burst);
    json_t *req;
    char why[200];
    int lrc = rtc_pbjson_load(text, len, max_depth, &req, why, sizeof(why));
    if (lrc) {
        if (limited)
            return rate_limited(c, json_null(), msg);
        if (lrc == RTC_ETOOBIG)
            snprintf(msg, sizeof(msg), "parse error: JSON nested deeper than %u levels", max_depth);
        else
            snprintf(msg, sizeof(msg), "parse error: %s", why);
        return bad_request(c, json_null(), RTC_JSONRPC_PARSE_ERROR, msg);
    }
    int rc;
    if (limited) {
        json_t *rid = json_is_object(req) ? json_object_get(req, "id") : NULL;
        rc = rate_limited(
            c, rid && (json_is_string(rid) || json_is_integer(rid)) ? rid : json_null(), msg);
        goto out;
    }
    if (json_is_array(req)) {
        rc = bad_request(c, json_null(), RTC_JSONRPC_INVALID_REQUEST,
                         "batch requests are not supported: send one request per message");
        goto out;
    }
    if (!json_is_object(req)) {
        rc = bad_request(c, json_null(), RTC_JSONRPC_INVALID_REQUEST,
                         "invalid request: expected a JSON-RPC 2.0 request object");
        goto out;
    }
    json_t *id = json_object_get(req, "id");
    if (id && !json_is_string(id) && !json_is_integer(id) && !json_is_null(id)) {
        rc = bad_request(c, json_null(), RTC_JSONRPC_INVALID_REQUEST,
                         "invalid request: \"id\" must be a string, an integer or null");
        goto out;
    }
    const char *version = json_string_value(json_object_get(req, "jsonrpc"));
    if (!version || strcmp(version, "2.0") != 0) {
        rc = bad_request(c, id, RTC_JSONRPC_INVALID_REQUEST,
                         "invalid request: \"jsonrpc\" must be \"2.0\"");
        goto out;
    }
    json_t *jm = json_object_get(req, "method");
    const char *method = json_string_value(jm);
    if (!method || !method[0]) {
        rc = bad_request(c, id, RTC_JSONRPC_INVALID_REQUEST,
                         "invalid request: \"method\" must be a non-empty string");
        goto out;
    }
    json_t *params = json_object_get(req, "params");
    if (params && !json_is_object(params) && !json_is_null(params)) {
        rc = bad_request(c, id, RTC_JSONRPC_INVALID_PARAMS,
                         "invalid params: \"params\" must be an object (by name)");
        goto out;
    }
    if (json_is_null(params))
        params = NULL;
    const char *key;
    json_t *v;
    json_object_foreach(req, key, v)
    {
        if (strcmp(key, "jsonrpc") && strcmp(key, "id") && strcmp(key, "method") &&
            strcmp(key, "params")) {
            snprintf(msg, sizeof(msg), "invalid request: unknown member \"%.64s\"", key);
            rc = bad_request(c, id, RTC_JSONRPC_INVALID_REQUEST, msg);
            goto out;
        }
    }
    if (strcmp(method, "session.authenticate") == 0 || strcmp(method, "rpc.cancel") == 0) {
        rc = local_method(c, method, id, params);
        goto out;
    }
    const rtc_bridge_route *r = rtc_bridge_routes_find(c->env->routes, method);
    if (!r) {
        snprintf(msg, sizeof(msg), "method not found: \"%.200s\"", method);
        rc = bad_request(c, id, RTC_JSONRPC_METHOD_NOT_FOUND, msg);
        goto out;
    }
    rc = call_method(c, r, id, params);
out:
    json_decref(req);
    return c->dead ? RTC_ECLOSED : (rc < 0 && rc != RTC_ECLOSED ? 0 : rc);
}

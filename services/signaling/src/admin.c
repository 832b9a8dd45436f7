/* admin.c — rtc.signaling.v1.SignalingAdmin: rooms and participants for
 * internal callers (API key with admin, or a token with the admin grant;
 * CreateRoom also with create for the token's room, ListRooms with list). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/core.h"
#include "rtc/log.h"
#include "rtc/utf8.h"
#include "sig.h"

#define DAY_MS (24ll * 3600 * 1000)

static bool room_arg_ok(rtc_grpc_call *call, const char *room)
{
    if (sig_valid_room(room))
        return true;
    rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                         "room_id must be 1-64 bytes of [A-Za-z0-9._-]");
    return false;
}

static bool reason_ok(sig_op *o, const char *reason)
{
    if (sig_valid_text(reason, SIG_MAX_REASON))
        return true;
    sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "reason: at most %d bytes of UTF-8", SIG_MAX_REASON);
    return false;
}

static void on_room(sig_op *o, const redisReply *reply)
{
    if (!sig_reply_array(reply, 5)) {
        sig_op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from Redis");
        return;
    }
    Rtc__Signaling__V1__Room room;
    Rtc__Signaling__V1__RoomSettings st;
    sig_room_from(reply->element, o->room, &room, &st);
    if (o->req->descriptor == &rtc__signaling__v1__create_room_request__descriptor) {
        Rtc__Signaling__V1__CreateRoomResponse resp =
            RTC__SIGNALING__V1__CREATE_ROOM_RESPONSE__INIT;
        resp.room = &room;
        rtc_log(RTC_LOG_INFO, "room created", "room", o->room, NULL);
        sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    } else {
        Rtc__Signaling__V1__GetRoomResponse resp = RTC__SIGNALING__V1__GET_ROOM_RESPONSE__INIT;
        resp.room = &room;
        sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    }
}

static void create_room_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__CreateRoomRequest *req = (const void *)o->req;
    const Rtc__Signaling__V1__RoomSettings *s = req->settings;
    uint32_t max =
        s && s->max_participants ? s->max_participants : (uint32_t)G.cfg.max_participants;
    int64_t empty = s && s->empty_timeout_ms ? s->empty_timeout_ms : (int64_t)G.cfg.empty_timeout;
    const char *meta = s ? s->metadata : "";
    if (max > 10000) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "settings.max_participants: at most 10000");
        return;
    }
    if (empty < 0 || empty > (int64_t)(30 * DAY_MS)) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "settings.empty_timeout_ms: 0 to 30 days");
        return;
    }
    if (!sig_valid_text(meta, SIG_MAX_META)) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "settings.metadata: at most %d bytes of UTF-8",
                    SIG_MAX_META);
        return;
    }
    char maxs[24], emptys[24];
    snprintf(maxs, sizeof(maxs), "%u", max);
    snprintf(emptys, sizeof(emptys), "%lld", (long long)empty);
    const char *argv[] = {req->room_id, maxs, emptys, meta};
    sig_op_fcall(o, "rtc_create_room", 4, argv, NULL, on_room);
}

static void create_room(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__CreateRoomRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        sig_admin_call(call, msg, req->room_id, ADMIN_CREATE, create_room_authorized);
}

static void get_room_authorized(sig_op *o)
{
    const char *argv[] = {o->room};
    sig_op_fcall(o, "rtc_get_room", 1, argv, NULL, on_room);
}

static void get_room(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__GetRoomRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        sig_admin_call(call, msg, req->room_id, ADMIN_ANY, get_room_authorized);
}

#define PAGE_PREFIX "r1."

static void on_rooms(sig_op *o, const redisReply *reply)
{
    /* {more, then per room: id, max, empty, meta, created, count} */
    if (!sig_reply_array(reply, 1) || (reply->elements - 1) % 6) {
        sig_op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_list_rooms");
        return;
    }
    size_t n = (reply->elements - 1) / 6;
    Rtc__Signaling__V1__Room *rooms = calloc(n ? n : 1, sizeof(*rooms));
    Rtc__Signaling__V1__RoomSettings *st = calloc(n ? n : 1, sizeof(*st));
    Rtc__Signaling__V1__Room **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    if (!rooms || !st || !ptrs) {
        free(rooms);
        free(st);
        free(ptrs);
        sig_op_fail(o, RTC_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        redisReply **e = reply->element + 1 + 6 * i;
        sig_room_from(e + 1, sig_rstr(e[0], NULL), &rooms[i], &st[i]);
        ptrs[i] = &rooms[i];
    }
    char token[SIG_MAX_ROOM + sizeof(PAGE_PREFIX)] = "";
    if (sig_rint64(reply->element[0]) && n)
        snprintf(token, sizeof(token), PAGE_PREFIX "%s", rooms[n - 1].id);
    Rtc__Signaling__V1__ListRoomsResponse resp = RTC__SIGNALING__V1__LIST_ROOMS_RESPONSE__INIT;
    resp.rooms = ptrs;
    resp.n_rooms = n;
    resp.next_page_token = token;
    sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    free(rooms);
    free(st);
    free(ptrs);
}

static void list_rooms_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__ListRoomsRequest *req = (const void *)o->req;
    char count[16];
    snprintf(count, sizeof(count), "%d",
             req->page_size == 0     ? 100
             : req->page_size > 1000 ? 1000
                                     : req->page_size);
    const char *after = *req->page_token ? req->page_token + strlen(PAGE_PREFIX) : "";
    const char *argv[] = {after, count};
    sig_op_fcall(o, "rtc_list_rooms", 2, argv, NULL, on_rooms);
}

static void list_rooms(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__ListRoomsRequest *req = (const void *)msg;
    if (req->page_size < 0) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT, "page_size must not be negative");
        return;
    }
    if (*req->page_token && (strncmp(req->page_token, PAGE_PREFIX, strlen(PAGE_PREFIX)) != 0 ||
                             !sig_valid_room(req->page_token + strlen(PAGE_PREFIX)))) {
        rtc_grpc_call_finish(call, RTC_GRPC_INVALID_ARGUMENT,
                             "page_token does not come from ListRooms");
        return;
    }
    sig_admin_call(call, msg, "", ADMIN_LIST, list_rooms_authorized);
}

static void on_ok(sig_op *o, const redisReply *reply)
{
    const ProtobufCMessageDescriptor *d = o->req->descriptor;
    union {
        Rtc__Signaling__V1__CloseRoomResponse close;
        Rtc__Signaling__V1__RemoveParticipantResponse remove;
        Rtc__Signaling__V1__SendDataResponse send;
    } u;
    if (d == &rtc__signaling__v1__close_room_request__descriptor) {
        rtc__signaling__v1__close_room_response__init(&u.close);
        rtc_log(RTC_LOG_INFO, "room closed", "room", o->room, NULL);
    } else if (d == &rtc__signaling__v1__remove_participant_request__descriptor) {
        rtc__signaling__v1__remove_participant_response__init(&u.remove);
    } else {
        rtc__signaling__v1__send_data_response__init(&u.send);
        u.send.recipient_count = (uint32_t)sig_rint64(reply);
    }
    sig_op_finish(o, RTC_GRPC_OK, NULL, (const ProtobufCMessage *)&u);
}

static void close_room_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__CloseRoomRequest *req = (const void *)o->req;
    if (!reason_ok(o, req->reason))
        return;
    const char *argv[] = {req->room_id, req->reason, G.maxlen};
    sig_op_fcall(o, "rtc_close_room", 3, argv, NULL, on_ok);
}

static void close_room(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__CloseRoomRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        sig_admin_call(call, msg, req->room_id, ADMIN_ANY, close_room_authorized);
}

static void on_participants(sig_op *o, const redisReply *reply)
{
    if (reply->type != REDIS_REPLY_ARRAY) {
        sig_op_fail(o, RTC_GRPC_INTERNAL, "unexpected reply from rtc_list_participants");
        return;
    }
    Rtc__Signaling__V1__Participant **v = sig_participants_from(reply->element, reply->elements);
    if (!v) {
        sig_op_fail(o, RTC_GRPC_INTERNAL, "undecodable participant in Redis");
        return;
    }
    Rtc__Signaling__V1__ListParticipantsResponse resp =
        RTC__SIGNALING__V1__LIST_PARTICIPANTS_RESPONSE__INIT;
    resp.participants = v;
    resp.n_participants = reply->elements;
    sig_op_finish(o, RTC_GRPC_OK, NULL, &resp.base);
    sig_free_participants(v, reply->elements);
}

static void list_participants_authorized(sig_op *o)
{
    const char *argv[] = {o->room};
    sig_op_fcall(o, "rtc_list_participants", 1, argv, NULL, on_participants);
}

static void list_participants(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__ListParticipantsRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        sig_admin_call(call, msg, req->room_id, ADMIN_ANY, list_participants_authorized);
}

static void remove_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__RemoveParticipantRequest *req = (const void *)o->req;
    if (!sig_valid_id(req->participant_id)) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "participant_id is malformed");
        return;
    }
    if (!reason_ok(o, req->reason))
        return;
    const char *argv[] = {req->room_id, req->participant_id, req->reason, G.maxlen};
    sig_op_fcall(o, "rtc_remove", 4, argv, NULL, on_ok);
}

static void remove_participant(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__RemoveParticipantRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        sig_admin_call(call, msg, req->room_id, ADMIN_ANY, remove_authorized);
}

static void send_data_authorized(sig_op *o)
{
    const Rtc__Signaling__V1__SendDataRequest *req = (const void *)o->req;
    if (*req->to_participant_id && !sig_valid_id(req->to_participant_id)) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "to_participant_id is malformed");
        return;
    }
    if (req->data.len == 0 || req->data.len > SIG_MAX_DATA) {
        sig_op_fail(o, RTC_GRPC_INVALID_ARGUMENT, "data must be 1 to %d bytes", SIG_MAX_DATA);
        return;
    }
    const char *argv[] = {req->room_id, req->to_participant_id, (const char *)req->data.data,
                          G.maxlen};
    size_t lens[] = {strlen(argv[0]), strlen(argv[1]), req->data.len, strlen(argv[3])};
    sig_op_fcall(o, "rtc_send_data", 4, argv, lens, on_ok);
}

static void send_data(rtc_grpc_call *call, const ProtobufCMessage *msg, void *ud)
{
    (void)ud;
    const Rtc__Signaling__V1__SendDataRequest *req = (const void *)msg;
    if (room_arg_ok(call, req->room_id))
        sig_admin_call(call, msg, req->room_id, ADMIN_ANY, send_data_authorized);
}

int sig_admin_register(void)
{
    static const struct {
        const char *method;
        rtc_grpc_handler_fn fn;
    } handlers[] = {
        {"CreateRoom", create_room},
        {"GetRoom", get_room},
        {"ListRooms", list_rooms},
        {"CloseRoom", close_room},
        {"ListParticipants", list_participants},
        {"RemoveParticipant", remove_participant},
        {"SendData", send_data},
    };
    for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
        int rc = rtc_grpc_server_handle(G.grpc, &rtc__signaling__v1__signaling_admin__descriptor,
                                        handlers[i].method, RTC_GRPC_UNARY, handlers[i].fn, NULL);
        if (rc < 0)
            return rc;
    }
    return 0;
}

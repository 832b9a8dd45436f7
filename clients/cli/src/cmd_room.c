/* cmd_room.c — rtc.signaling.v1.SignalingAdmin: `rtcctl room
 * create|get|list|close`, `participant list|remove` and `send`. Every call
 * carries the API key (or --token) and fails over across --signaling. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/signaling/v1/signaling.pb-c.h"

#include "cli_int.h"

#define ADMIN_PATH(m) "/rtc.signaling.v1.SignalingAdmin/" m
#define MAX_DATA_FILE (1024 * 1024) /* the service takes 16 KiB: it says so itself */

static void admin_call(cli *c, const char *path, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp, cli_done_fn done, void *ud)
{
    cli_unary(c, &c->sig, path, req, resp, cli_admin_authz(c), done, ud);
}

/* A new request of type d (freed by its done callback with free()) whose
 * room_id is ROOM, the first argument; NULL after failing the command. */
static void *room_request(cli *c, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = cli_calloc(c, d->sizeof_message);
    if (!m)
        return NULL;
    protobuf_c_message_init(d, m);
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(d, "room_id");
    *(const char **)((char *)m + f->offset) = c->args[0];
    return m;
}

/* The common end of a call: true when the text output is the caller's to
 * write; otherwise the command has finished (failure, or --json printed). */
static bool call_ok(cli *c, int status, const char *message, ProtobufCMessage *resp)
{
    return cli_call_ok(c, status, message) && !cli_json_reply(c, resp);
}

static void print_room(cli *c, const Rtc__Signaling__V1__Room *r)
{
    char created[40], empty[32];
    const Rtc__Signaling__V1__RoomSettings *s = r->settings;
    cli_fmt_time(r->created_at_ms, created, sizeof(created));
    cli_fmt_duration(s ? s->empty_timeout_ms : 0, empty, sizeof(empty));
    cli_table t;
    cli_table_init(&t, 2, NULL);
    cli_table_kv(&t, "room", "%s", r->id);
    cli_table_kv(&t, "participants", "%u", r->participant_count);
    cli_table_kv(&t, "max_participants", "%u", s ? s->max_participants : 0);
    cli_table_kv(&t, "empty_timeout", "%s", empty);
    cli_table_kv(&t, "created_at", "%s", created);
    cli_table_kv(&t, "metadata", "%s", s ? s->metadata : "");
    cli_table_print(&t, c->out);
    cli_table_free(&t);
}

/* ---- room create / get / close ---------------------------------------------- */

typedef struct create {
    Rtc__Signaling__V1__CreateRoomRequest req;
    Rtc__Signaling__V1__RoomSettings settings;
} create;

static void room_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    free(ud);
    if (!call_ok(c, status, message, resp))
        return;
    /* CreateRoomResponse and GetRoomResponse: both hold just the room. */
    const Rtc__Signaling__V1__Room *room =
        resp->descriptor == &rtc__signaling__v1__create_room_response__descriptor
            ? ((const Rtc__Signaling__V1__CreateRoomResponse *)resp)->room
            : ((const Rtc__Signaling__V1__GetRoomResponse *)resp)->room;
    if (room)
        print_room(c, room);
    cli_finish(c, RTC_CLI_EXIT_OK);
}

void cli_cmd_room_create(cli *c)
{
    create *s = cli_calloc(c, sizeof(*s));
    if (!s)
        return;
    rtc__signaling__v1__create_room_request__init(&s->req);
    rtc__signaling__v1__room_settings__init(&s->settings);
    s->req.room_id = c->args[0];
    s->req.settings = &s->settings;
    s->settings.max_participants = (uint32_t)c->v.max_participants;
    s->settings.empty_timeout_ms = (int64_t)c->v.empty_timeout_ms;
    s->settings.metadata = c->v.metadata ? c->v.metadata : "";
    admin_call(c, ADMIN_PATH("CreateRoom"), &s->req.base,
               &rtc__signaling__v1__create_room_response__descriptor, room_done, s);
}

void cli_cmd_room_get(cli *c)
{
    ProtobufCMessage *req = room_request(c, &rtc__signaling__v1__get_room_request__descriptor);
    if (req)
        admin_call(c, ADMIN_PATH("GetRoom"), req,
                   &rtc__signaling__v1__get_room_response__descriptor, room_done, req);
}

/* CloseRoom and RemoveParticipant: their responses say nothing, so the
 * text output says what was done. */
static void change_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    const ProtobufCMessage *req = ud;
    if (call_ok(c, status, message, resp)) {
        if (req->descriptor == &rtc__signaling__v1__close_room_request__descriptor) {
            const Rtc__Signaling__V1__CloseRoomRequest *r = ud;
            fprintf(c->out, "closed room %s\n", r->room_id);
        } else {
            const Rtc__Signaling__V1__RemoveParticipantRequest *r = ud;
            fprintf(c->out, "removed participant %s from room %s\n", r->participant_id, r->room_id);
        }
        cli_finish(c, RTC_CLI_EXIT_OK);
    }
    free(ud);
}

void cli_cmd_room_close(cli *c)
{
    Rtc__Signaling__V1__CloseRoomRequest *req =
        room_request(c, &rtc__signaling__v1__close_room_request__descriptor);
    if (!req)
        return;
    req->reason = c->v.reason ? c->v.reason : "";
    admin_call(c, ADMIN_PATH("CloseRoom"), &req->base,
               &rtc__signaling__v1__close_room_response__descriptor, change_done, req);
}

void cli_cmd_participant_remove(cli *c)
{
    Rtc__Signaling__V1__RemoveParticipantRequest *req =
        room_request(c, &rtc__signaling__v1__remove_participant_request__descriptor);
    if (!req)
        return;
    req->participant_id = c->args[1];
    req->reason = c->v.reason ? c->v.reason : "";
    admin_call(c, ADMIN_PATH("RemoveParticipant"), &req->base,
               &rtc__signaling__v1__remove_participant_response__descriptor, change_done, req);
}

/* ---- room list --------------------------------------------------------------- */

typedef struct list {
    Rtc__Signaling__V1__ListRoomsRequest req;
    char *token;   /* the page asked for now (owned) */
    cli_table tab; /* text output, printed after the last page */
    json_t *rooms; /* --json --all: every page's rooms */
    size_t pages;
} list;

static void list_free(list *s)
{
    cli_table_free(&s->tab);
    json_decref(s->rooms);
    free(s->token);
    free(s);
}

static int list_page(cli *c, list *s, const Rtc__Signaling__V1__ListRoomsResponse *r)
{
    if (c->json) {
        json_t *j = cli_to_json(c, &r->base);
        json_t *rooms = j ? json_object_get(j, "rooms") : NULL;
        int rc = j ? 0 : RTC_EINVAL;
        if (rooms && json_array_extend(s->rooms, rooms) < 0)
            rc = RTC_ENOMEM;
        json_decref(j);
        return rc;
    }
    for (size_t i = 0; i < r->n_rooms; i++) {
        const Rtc__Signaling__V1__Room *room = r->rooms[i];
        char count[16], max[16], created[40];
        snprintf(count, sizeof(count), "%u", room->participant_count);
        snprintf(max, sizeof(max), "%u", room->settings ? room->settings->max_participants : 0);
        cli_fmt_time(room->created_at_ms, created, sizeof(created));
        const char *cells[4] = {room->id, count, max, created};
        if (cli_table_add(&s->tab, cells) < 0)
            return RTC_ENOMEM;
    }
    return 0;
}

static void list_next(cli *c, list *s);

static void list_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    list *s = ud;
    const Rtc__Signaling__V1__ListRoomsResponse *r =
        (const Rtc__Signaling__V1__ListRoomsResponse *)resp;
    if (c->finished) {
        list_free(s);
        return;
    }
    if (status != RTC_GRPC_OK) {
        char what[256];
        snprintf(what, sizeof(what), "%s (page %zu)", c->what, s->pages + 1);
        cli_fail_status(c, s->pages ? what : c->what, status, message);
        list_free(s);
        return;
    }
    s->pages++;
    if (!c->v.all && cli_json_reply(c, resp)) { /* one page: the response as it is */
        list_free(s);
        return;
    }
    if (list_page(c, s, r) < 0) {
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
        list_free(s);
        return;
    }
    bool more = r->next_page_token[0] != '\0';
    if (more && c->v.all) {
        if (s->token && strcmp(s->token, r->next_page_token) == 0) {
            cli_fail(c, RTC_CLI_EXIT_FAILURE, "the server returned the same page token twice");
            list_free(s);
            return;
        }
        free(s->token);
        s->token = strdup(r->next_page_token);
        if (!s->token) {
            cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
            list_free(s);
            return;
        }
        list_next(c, s);
        return;
    }
    if (c->json) {
        json_t *o = json_pack("{sO}", "rooms", s->rooms);
        int rc = o ? cli_print_json_value(c, o) : RTC_ENOMEM;
        json_decref(o);
        cli_finish(c, rc == 0 ? RTC_CLI_EXIT_OK : RTC_CLI_EXIT_FAILURE);
    } else {
        cli_table_print(&s->tab, c->out);
        if (more) /* the text table cannot carry the token: say how to go on */
            fprintf(c->err, "rtcctl: more rooms: rtcctl room list --all, or --page-token %s\n",
                    r->next_page_token);
        cli_finish(c, RTC_CLI_EXIT_OK);
    }
    list_free(s);
}

static void list_next(cli *c, list *s)
{
    s->req.page_token = s->token ? s->token : "";
    admin_call(c, ADMIN_PATH("ListRooms"), &s->req.base,
               &rtc__signaling__v1__list_rooms_response__descriptor, list_done, s);
}

void cli_cmd_room_list(cli *c)
{
    static const char *const headers[4] = {"ID", "PARTICIPANTS", "MAX", "CREATED"};
    list *s = calloc(1, sizeof(*s));
    if (!s || cli_table_init(&s->tab, 4, headers) < 0 || !(s->rooms = json_array()) ||
        (c->v.page_token && !(s->token = strdup(c->v.page_token)))) {
        if (s)
            list_free(s);
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
        return;
    }
    rtc__signaling__v1__list_rooms_request__init(&s->req);
    s->req.page_size = (int32_t)c->v.page_size;
    list_next(c, s);
}

/* ---- participant list --------------------------------------------------------- */

static void participants_done(cli *c, void *ud, int status, const char *message,
                              ProtobufCMessage *resp)
{
    free(ud);
    if (!call_ok(c, status, message, resp))
        return;
    static const char *const headers[4] = {"ID", "IDENTITY", "NAME", "JOINED"};
    const Rtc__Signaling__V1__ListParticipantsResponse *r =
        (const Rtc__Signaling__V1__ListParticipantsResponse *)resp;
    cli_table t;
    int rc = cli_table_init(&t, 4, headers);
    for (size_t i = 0; i < r->n_participants && rc == 0; i++) {
        const Rtc__Signaling__V1__Participant *p = r->participants[i];
        char joined[40];
        cli_fmt_time(p->joined_at_ms, joined, sizeof(joined));
        const char *cells[4] = {p->id, p->identity, p->display_name, joined};
        rc = cli_table_add(&t, cells);
    }
    if (rc == 0)
        cli_table_print(&t, c->out);
    cli_table_free(&t);
    if (rc < 0)
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
    cli_finish(c, RTC_CLI_EXIT_OK);
}

void cli_cmd_participant_list(cli *c)
{
    ProtobufCMessage *req =
        room_request(c, &rtc__signaling__v1__list_participants_request__descriptor);
    if (req)
        admin_call(c, ADMIN_PATH("ListParticipants"), req,
                   &rtc__signaling__v1__list_participants_response__descriptor, participants_done,
                   req);
}

/* ---- send ------------------------------------------------------------------------ */

typedef struct send_state {
    Rtc__Signaling__V1__SendDataRequest req;
    char *file; /* --data-file contents */
} send_state;

static void send_done(cli *c, void *ud, int status, const char *message, ProtobufCMessage *resp)
{
    send_state *s = ud;
    free(s->file);
    free(s);
    if (!call_ok(c, status, message, resp))
        return;
    unsigned n = ((const Rtc__Signaling__V1__SendDataResponse *)resp)->recipient_count;
    fprintf(c->out, "sent to %u participant%s\n", n, n == 1 ? "" : "s");
    cli_finish(c, RTC_CLI_EXIT_OK);
}

void cli_cmd_send(cli *c)
{
    if (!c->v.data == !c->v.data_file) {
        cli_usage_error(c, "give exactly one of --data and --data-file");
        return;
    }
    send_state *s = cli_calloc(c, sizeof(*s));
    if (!s)
        return;
    rtc__signaling__v1__send_data_request__init(&s->req);
    s->req.room_id = c->args[0];
    s->req.to_participant_id = c->v.to ? c->v.to : "";
    if (c->v.data) {
        s->req.data.data = (uint8_t *)c->v.data;
        s->req.data.len = strlen(c->v.data);
    } else {
        /* Read before the loop runs: a file or a pipe the caller filled. */
        const char *path = strcmp(c->v.data_file, "-") == 0 ? "/dev/stdin" : c->v.data_file;
        size_t len = 0;
        int rc = rtc_read_file(path, MAX_DATA_FILE, &s->file, &len);
        if (rc < 0) {
            free(s);
            cli_usage_error(c, "--data-file: cannot read '%.200s': %s", c->v.data_file,
                            rc == RTC_ETOOBIG ? "larger than 1 MiB" : strerror(errno));
            return;
        }
        s->req.data.data = (uint8_t *)s->file;
        s->req.data.len = len;
    }
    admin_call(c, ADMIN_PATH("SendData"), &s->req.base,
               &rtc__signaling__v1__send_data_response__descriptor, send_done, s);
}

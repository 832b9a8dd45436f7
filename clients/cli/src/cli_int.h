/* cli_int.h — rtcctl's internals, shared by its sources only.
 *
 * cli.c parses the command line and runs the loop; call.c makes calls with
 * failover and deadlines and reports failures; output.c formats tables,
 * times and JSON; cmd_*.c are the commands. A command's run() starts its
 * calls (or fails at once); every path ends in exactly one cli_finish(),
 * which closes the channels so that the loop run ends. */
#ifndef RTC_CLI_INT_H
#define RTC_CLI_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <uv.h>

#include "rtc/buf.h"
#include "rtc/cli.h"
#include "rtc/config.h"
#include "rtc/core.h"
#include "rtc/grpc.h"
#include "rtc/log.h"
#include "rtc/pbjson.h"

#define CLI_MAX_ENDPOINTS 16

/* One gRPC server; its channel is made on first use. */
typedef struct cli_endpoint {
    char name[300]; /* "host:port" */
    rtc_grpc_channel *ch;
} cli_endpoint;

/* The endpoints of one service (auth: one; signaling: --signaling). */
typedef struct cli_group {
    const char *what; /* "auth", "signaling": for messages */
    cli_endpoint eps[CLI_MAX_ENDPOINTS];
    size_t n;
    size_t cur; /* where the next call starts: the endpoint that answered last */
} cli_group;

/* Values of the command options (the union over every command; each
 * command's option table points into this). */
typedef struct cli_values {
    char *identity, *room, *grant, *name, *metadata, *reason, *to, *data, *data_file;
    char *page_token, *after;
    uint64_t ttl_ms, empty_timeout_ms;
    int64_t expires_at_ms, max_participants, page_size;
    bool all, create;
} cli_values;

typedef struct cli cli;

typedef struct cli_command {
    const char *group;          /* "room" */
    const char *name;           /* "create"; NULL for one-word commands ("send") */
    const char *args;           /* positionals, "[X]" optional: "ROOM PARTICIPANT_ID" */
    const char *synopsis;       /* positionals and options, for usage lines */
    const char *const *options; /* names of its own options, NULL-terminated */
    const char *summary;        /* --help text */
    void (*run)(cli *c);
} cli_command;

struct cli {
    uv_loop_t loop;
    FILE *out, *err;
    /* global settings */
    rtc_hostport auth_hp;
    char *signaling, *api_key, *api_key_file, *token;
    bool json;
    uint64_t timeout_ms;
    rtc_log_level log_level;
    cli_values v;
    /* derived */
    char *basic;  /* "Basic base64(key_id:secret)", NULL without an API key */
    char *bearer; /* "Bearer <--token>", NULL without one */
    cli_group auth, sig;
    const cli_command *cmd;
    char *cmd_name; /* "room create": prefix of usage errors */
    char *what;     /* "room create demo": what failed, in failure messages */
    char **args;    /* positionals after the command words (point into argv) */
    size_t nargs;
    rtc_pbjson *pj; /* made on first use (--json) */
    rtc_signals *signals;
    void (*on_signal)(cli *c); /* set by a command that handles SIGINT/SIGTERM */
    void *state;               /* the running command's; freed by the command */
    int status;
    bool finished;
};

/* ---- cli.c ------------------------------------------------------------- */

/* End the command with an exit status: closes every channel (calls still
 * open end with CANCELLED; their callbacks must check c->finished) and the
 * signal watchers, so the loop run ends. Only the first call counts. */
void cli_finish(cli *c, int status);
/* A usage error found after parsing: one line on err, status 2. */
void cli_usage_error(cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A failure that is not a gRPC status: one line on err, then finish. */
void cli_fail(cli *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* calloc(1, size), or NULL after failing the command (out of memory). */
void *cli_calloc(cli *c, size_t size);
/* Wipe and free a string that holds a secret (NULL is fine). */
void cli_free_secret(char *s);

/* ---- call.c ------------------------------------------------------------ */

typedef void (*cli_done_fn)(cli *c, void *ud, int status, const char *message,
                            ProtobufCMessage *resp);

/* A unary call on group g. The endpoints are tried in order from g->cur:
 * one that answers UNAVAILABLE (down, refused, not ready) passes the call
 * to the next, and g->cur becomes the endpoint that answered. One deadline
 * (--timeout) covers every attempt. req must stay valid until done runs;
 * resp is NULL unless status is OK and is freed after done returns. done
 * runs exactly once: from the loop, or at once (INTERNAL) when the call
 * cannot even start; also when the command finishes first (CANCELLED,
 * c->finished set), so it is where the caller frees what it holds.
 * authz: the `authorization` value (NULL: none). */
void cli_unary(cli *c, cli_group *g, const char *path, const ProtobufCMessage *req,
               const ProtobufCMessageDescriptor *resp_desc, const char *authz, cli_done_fn done,
               void *ud);
/* The same on endpoint i of g only, without failover. */
void cli_unary_at(cli *c, cli_group *g, size_t i, const char *path, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, const char *authz, cli_done_fn done,
                  void *ud);
/* The channel of endpoint i of g, made on first use; NULL on failure. */
rtc_grpc_channel *cli_channel(cli *c, cli_group *g, size_t i);
/* Close every channel of g (from cli_finish). */
void cli_group_close(cli_group *g);
/* Print `rtcctl: <what>: <STATUS_NAME>: <message>` (one line) on err. */
void cli_report_status(cli *c, const char *what, int status, const char *message);
/* The same, then finish with the exit status for status. */
void cli_fail_status(cli *c, const char *what, int status, const char *message);
/* The common start of a done callback: true when the call succeeded and
 * the command still runs; else the failure is reported under c->what and
 * the command finished (or had finished already). */
bool cli_call_ok(cli *c, int status, const char *message);
/* True for the statuses that mean "could not reach it" (exit 3). */
bool cli_status_unreachable(int status);

/* ---- output.c ---------------------------------------------------------- */

/* A table printed with aligned columns once every row is in. Cells are
 * copied, made valid UTF-8 and stripped of control characters (names and
 * metadata come from other users). headers NULL: no header line (the
 * key/value blocks of cli_table_kv). */
typedef struct cli_table {
    size_t ncols;
    bool has_header;
    char **cells; /* row-major, (nrows + has_header) * ncols */
    size_t nrows, cap;
} cli_table;

int cli_table_init(cli_table *t, size_t ncols, const char *const *headers);
/* 0 or RTC_ENOMEM. */
int cli_table_add(cli_table *t, const char *const *cells);
/* A "key:" / printf-style value row of a two-column table. */
int cli_table_kv(cli_table *t, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void cli_table_print(const cli_table *t, FILE *out);
void cli_table_free(cli_table *t);

/* "2026-11-26T10:00:05.123Z" (UTC); "-" for 0. out >= 32 bytes. */
void cli_fmt_time(int64_t ms, char *out, size_t outlen);
/* "90s" → "1m30s"; "0" for 0. */
void cli_fmt_duration(int64_t ms, char *out, size_t outlen);
/* Bytes as a one-line text appended to out: a quoted JSON string when
 * they are UTF-8, else "base64:…"; NUL-terminated (the NUL not counted in
 * out->len). 0 or RTC_ENOMEM. */
int cli_fmt_bytes(const uint8_t *data, size_t len, rtc_buf *out);
/* The enum value's name ("GRANT_JOIN"), or its number as text. */
const char *cli_enum_name(const ProtobufCEnumDescriptor *d, int value, char *buf, size_t len);

/* The response as canonical proto3 JSON (one line). 0, or prints why not
 * and returns a negative code. */
int cli_print_json(cli *c, const ProtobufCMessage *msg);
/* The JSON object of a message (caller owns it); NULL after printing why. */
json_t *cli_to_json(cli *c, const ProtobufCMessage *msg);
/* Print a JSON value as one line on c->out. */
int cli_print_json_value(cli *c, const json_t *v);
/* With --json: print resp, finish the command and return true. */
bool cli_json_reply(cli *c, const ProtobufCMessage *resp);

/* ---- commands ---------------------------------------------------------- */

void cli_cmd_token_issue(cli *c);
void cli_cmd_token_verify(cli *c);
void cli_cmd_token_revoke(cli *c);
void cli_cmd_room_create(cli *c);
void cli_cmd_room_get(cli *c);
void cli_cmd_room_list(cli *c);
void cli_cmd_room_close(cli *c);
void cli_cmd_participant_list(cli *c);
void cli_cmd_participant_remove(cli *c);
void cli_cmd_send(cli *c);
void cli_cmd_watch(cli *c);
void cli_cmd_health(cli *c);

/* The credentials of admin calls: the API key when given, else --token. */
const char *cli_admin_authz(const cli *c);

#endif

/* cli.c — rtcctl's command line: which command, which flags, which
 * positionals; the global settings (endpoints, credentials, output); help
 * texts; and the one loop run a command is.
 *
 * rtc_config_parse takes flags only, so the command line is split first:
 * a flag that takes a value (known from the union of every option table)
 * keeps its value with it, everything else is positional. The first
 * positionals name the command; the rest are its arguments. Flags may stand
 * anywhere, before or after the command words. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cli_int.h"

#define MAX_OPTS     40
#define MAX_KEY_FILE (1024 * 1024)

static const char EXIT_CODES[] =
    "Exit codes:\n"
    "  0  success\n"
    "  1  any other failure\n"
    "  2  usage or configuration error (bad flag, missing argument, unreadable key file)\n"
    "  3  unreachable: UNAVAILABLE, DEADLINE_EXCEEDED, connection refused\n"
    "  4  NOT_FOUND\n"
    "  5  ALREADY_EXISTS or FAILED_PRECONDITION\n"
    "  6  UNAUTHENTICATED or PERMISSION_DENIED (token verify: the token is refused)\n"
    "  7  health: some service is not SERVING\n"
    "  8  INVALID_ARGUMENT\n";

/* ---- commands and their options ------------------------------------------ */

static const char *const o_issue[] = {"identity", "room", "grant", "ttl", "name", NULL};
static const char *const o_revoke[] = {"expires-at-ms", NULL};
static const char *const o_create[] = {"max-participants", "empty-timeout", "metadata", NULL};
static const char *const o_list[] = {"page-size", "all", "page-token", NULL};
static const char *const o_reason[] = {"reason", NULL};
static const char *const o_send[] = {"to", "data", "data-file", NULL};
static const char *const o_watch[] = {"identity", "name", "metadata", "after", "create", NULL};
static const char *const o_none[] = {NULL};

static const cli_command COMMANDS[] = {
    {"token", "issue", "",
     "--identity ID [--room ROOM] [--grant join,create,list,admin] [--ttl 15m] [--name DISPLAY]",
     o_issue,
     "Auth/IssueToken: mint an access token for an end user; needs an API key with the issue "
     "right. Prints the token, its id and its expiry. --identity is required; --room may be "
     "empty only for a token without the join and create grants.",
     cli_cmd_token_issue},
    {"token", "verify", "TOKEN", "TOKEN", o_none,
     "Auth/VerifyToken: check a token (needs an API key with the verify right) and print its "
     "claims, or why it is refused (exit 6).",
     cli_cmd_token_verify},
    {"token", "revoke", "TOKEN_ID", "TOKEN_ID [--expires-at-ms MS]", o_revoke,
     "Auth/RevokeToken: deny a token (by its id) until it would have expired; needs an API key "
     "with the revoke right or --token with the admin grant.",
     cli_cmd_token_revoke},
    {"room", "create", "ROOM",
     "ROOM [--max-participants N] [--empty-timeout DURATION] [--metadata TEXT]", o_create,
     "SignalingAdmin/CreateRoom: create an empty room; unset settings take the server "
     "defaults. ALREADY_EXISTS (exit 5) if it is open already.",
     cli_cmd_room_create},
    {"room", "get", "ROOM", "ROOM", o_none, "SignalingAdmin/GetRoom: show one open room.",
     cli_cmd_room_get},
    {"room", "list", "", "[--page-size N] [--all] [--page-token TOKEN]", o_list,
     "SignalingAdmin/ListRooms: list open rooms, one page (--page-size), or every page with "
     "--all.",
     cli_cmd_room_list},
    {"room", "close", "ROOM", "ROOM [--reason TEXT]", o_reason,
     "SignalingAdmin/CloseRoom: close a room; every participant gets room_closed (with "
     "--reason) and its session ends.",
     cli_cmd_room_close},
    {"participant", "list", "ROOM", "ROOM", o_none,
     "SignalingAdmin/ListParticipants: who is in a room, by join time.", cli_cmd_participant_list},
    {"participant", "remove", "ROOM PARTICIPANT_ID", "ROOM PARTICIPANT_ID [--reason TEXT]",
     o_reason,
     "SignalingAdmin/RemoveParticipant: end one participant's session; it gets kicked (with "
     "--reason), the others participant_left.",
     cli_cmd_participant_remove},
    {"send", NULL, "ROOM", "ROOM [--to PARTICIPANT_ID] (--data TEXT | --data-file PATH|-)", o_send,
     "SignalingAdmin/SendData: send app data to everyone in a room, or to one participant "
     "with --to. The data comes from --data TEXT or --data-file PATH ('-' = standard input); "
     "exactly one of them.",
     cli_cmd_send},
    {"watch", NULL, "[ROOM]",
     "(ROOM --identity ID [--name NAME] [--create] | --token TOKEN) [--after EVENT_ID] [--metadata "
     "TEXT]",
     o_watch,
     "Join ROOM as --identity (a join token is issued with the API key; --create adds the "
     "create grant) or with the participant token given by --token, subscribe, and print every "
     "event, one per line (--json: one JSON object per line), until SIGINT/SIGTERM (then "
     "Leave, exit 0) or the stream ends (kicked, room closed: exit 0). --after EVENT_ID "
     "starts after that event. Join and Leave have the --timeout deadline; the stream has "
     "none, and moves to the next --signaling endpoint if its pod becomes UNAVAILABLE.",
     cli_cmd_watch},
    {"health", NULL, "", "", o_none,
     "grpc.health.v1.Health/Check of every service on every endpoint: auth (\"\" and "
     "rtc.auth.v1.Auth) and each signaling endpoint (\"\", rtc.signaling.v1.Signaling, "
     "rtc.signaling.v1.SignalingAdmin). Prints a table; exit 0 only if all are SERVING, 3 if "
     "an endpoint is unreachable, else 7.",
     cli_cmd_health},
};
#define NCOMMANDS (sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static size_t global_options(cli *c, rtc_option *o)
{
    const rtc_option g[] = {
        {"auth", RTC_OPT_HOSTPORT, "127.0.0.1:8081", "rtc-auth gRPC endpoint", &c->auth_hp, 0, 0},
        {"signaling", RTC_OPT_STRING, "127.0.0.1:50051",
         "rtc-signaling endpoints HOST:PORT[,HOST:PORT...]: a call goes to the next when one "
         "is UNAVAILABLE; health checks each",
         &c->signaling, 0, 0},
        {"api-key", RTC_OPT_STRING, NULL,
         "internal API key KEYID:SECRET (sent as authorization: Basic); never printed", &c->api_key,
         0, 0},
        {"api-key-file", RTC_OPT_STRING, NULL,
         "file with the API key: KEYID:SECRET, or the first '<key_id> <secret> <rights>' entry "
         "of an rtc-auth/rtc-signaling --api-keys-file",
         &c->api_key_file, 0, 0},
        {"token", RTC_OPT_STRING, NULL,
         "bearer token: for admin calls when no API key is given (e.g. a token with the admin "
         "grant); for watch, the participant token to join with",
         &c->token, 0, 0},
        {"json", RTC_OPT_BOOL, "false",
         "print responses as canonical proto3 JSON, one object per line", &c->json, 0, 0},
        {"timeout", RTC_OPT_DURATION, "10s", "deadline of each call (failover included)",
         &c->timeout_ms, 1, 86400000},
        {"log-level", RTC_OPT_LOG_LEVEL, "warn",
         "debug, info, warn or error (JSON lines on stderr)", &c->log_level, 0, 0},
    };
    memcpy(o, g, sizeof(g));
    return sizeof(g) / sizeof(g[0]);
}

static size_t command_options(cli *c, rtc_option *o)
{
    cli_values *v = &c->v;
    const rtc_option all[] = {
        {"identity", RTC_OPT_STRING, NULL, "the end user's identity (the token's sub)",
         &v->identity, 0, 0},
        {"room", RTC_OPT_STRING, NULL, "the room the token is bound to", &v->room, 0, 0},
        {"grant", RTC_OPT_STRING, "join", "grants, comma-separated: join, create, list, admin",
         &v->grant, 0, 0},
        {"ttl", RTC_OPT_DURATION, NULL, "token lifetime (unset: the server default)", &v->ttl_ms, 1,
         INT64_MAX},
        {"name", RTC_OPT_STRING, NULL, "display name shown to the other participants", &v->name, 0,
         0},
        {"expires-at-ms", RTC_OPT_INT, NULL,
         "the token's expiry, Unix ms (unset: kept for the server's max token lifetime)",
         &v->expires_at_ms, 0, INT64_MAX},
        {"max-participants", RTC_OPT_INT, NULL, "most participants at once (unset: server default)",
         &v->max_participants, 0, UINT32_MAX},
        {"empty-timeout", RTC_OPT_DURATION, NULL,
         "how long the room lives empty before it closes (unset: server default)",
         &v->empty_timeout_ms, 0, INT64_MAX},
        {"metadata", RTC_OPT_STRING, NULL, "opaque application data (e.g. JSON), at most 4 KiB",
         &v->metadata, 0, 0},
        {"page-size", RTC_OPT_INT, NULL, "rooms per page (unset: server default, 100)",
         &v->page_size, 0, INT32_MAX},
        {"all", RTC_OPT_BOOL, "false", "follow next_page_token to the last page", &v->all, 0, 0},
        {"page-token", RTC_OPT_STRING, NULL, "start at this page (a previous next_page_token)",
         &v->page_token, 0, 0},
        {"reason", RTC_OPT_STRING, NULL, "why, passed to the participants", &v->reason, 0, 0},
        {"to", RTC_OPT_STRING, NULL, "the one participant id to send to (unset: everyone)", &v->to,
         0, 0},
        {"data", RTC_OPT_STRING, NULL, "the data, as text", &v->data, 0, 0},
        {"data-file", RTC_OPT_STRING, NULL, "read the data from this file ('-': standard input)",
         &v->data_file, 0, 0},
        {"after", RTC_OPT_STRING, NULL, "deliver only the events after this event id", &v->after, 0,
         0},
        {"create", RTC_OPT_BOOL, "false", "issue the join token with the create grant too",
         &v->create, 0, 0},
    };
    memcpy(o, all, sizeof(all));
    return sizeof(all) / sizeof(all[0]);
}

/* The option table of cmd: its own options, then the global ones; or,
 * with cmd NULL, every option (for splitting the command line). */
static size_t option_table(cli *c, const cli_command *cmd, rtc_option *out)
{
    rtc_option all[MAX_OPTS];
    size_t nall = command_options(c, all), n = 0;
    for (size_t i = 0; i < nall; i++) {
        bool take = !cmd;
        for (const char *const *k = cmd ? cmd->options : NULL; k && *k && !take; k++)
            take = strcmp(*k, all[i].name) == 0;
        if (take)
            out[n++] = all[i];
    }
    return n + global_options(c, out + n);
}

/* ---- finishing ---------------------------------------------------------- */

static void vreport(cli *c, const char *fmt, va_list ap)
{
    fprintf(c->err, "rtcctl: %s: ", c->what);
    vfprintf(c->err, fmt, ap);
    fputc('\n', c->err);
    fflush(c->err);
}

void cli_finish(cli *c, int status)
{
    if (c->finished)
        return;
    c->finished = true;
    c->status = status;
    fflush(c->out);
    cli_group_close(&c->auth);
    cli_group_close(&c->sig);
    if (c->signals) {
        rtc_signals_close(c->signals);
        c->signals = NULL;
    }
}

void cli_usage_error(cli *c, const char *fmt, ...)
{
    if (c->finished)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(c->err, "rtcctl: %s: ", c->cmd_name);
    vfprintf(c->err, fmt, ap);
    fprintf(c->err, " (see rtcctl %s --help)\n", c->cmd_name);
    va_end(ap);
    cli_finish(c, RTC_CLI_EXIT_USAGE);
}

void cli_fail(cli *c, int status, const char *fmt, ...)
{
    if (c->finished)
        return;
    va_list ap;
    va_start(ap, fmt);
    vreport(c, fmt, ap);
    va_end(ap);
    cli_finish(c, status);
}

void cli_free_secret(char *s)
{
    if (s)
        OPENSSL_cleanse(s, strlen(s));
    free(s);
}

void *cli_calloc(cli *c, size_t size)
{
    void *p = calloc(1, size);
    if (!p)
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "out of memory");
    return p;
}

const char *cli_admin_authz(const cli *c)
{
    return c->basic ? c->basic : c->bearer;
}

/* ---- credentials and endpoints -------------------------------------------- */

static bool key_id_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
            return false;
    return true;
}

/* c->basic = "Basic base64(id:secret)". The messages never quote the secret. */
static int set_basic(cli *c, const char *id, size_t idn, const char *secret, size_t sn,
                     const char *src, char *err, size_t errlen)
{
    if (!key_id_ok(id, idn)) {
        snprintf(err, errlen, "%s: the key id must be 1-64 of [A-Za-z0-9_.-]", src);
        return RTC_EINVAL;
    }
    for (size_t i = 0; i < sn; i++) {
        if ((unsigned char)secret[i] <= 0x20 || (unsigned char)secret[i] >= 0x7f) {
            snprintf(err, errlen, "%s: the secret has spaces or control characters", src);
            return RTC_EINVAL;
        }
    }
    if (sn == 0 || sn > 512) {
        snprintf(err, errlen, "%s: the secret must be 1-512 bytes", src);
        return RTC_EINVAL;
    }
    size_t rawn = idn + 1 + sn;
    char raw[64 + 1 + 512];
    char *out = malloc(6 + 4 * ((rawn + 2) / 3) + 1);
    if (!out) {
        snprintf(err, errlen, "out of memory");
        return RTC_ENOMEM;
    }
    memcpy(raw, id, idn);
    raw[idn] = ':';
    memcpy(raw + idn + 1, secret, sn);
    memcpy(out, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, (const unsigned char *)raw, (int)rawn);
    OPENSSL_cleanse(raw, sizeof(raw));
    c->basic = out;
    return 0;
}

/* The first entry of an API key file: "KEYID:SECRET" or, as in the
 * services' --api-keys-file, "<key_id> <secret> <rights>" (fields split at
 * white space and ':', entries at newlines and ';', '#' comments). */
static int load_key_file(cli *c, const char *path, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len = 0;
    int rc = rtc_read_file(path, MAX_KEY_FILE, &text, &len);
    if (rc < 0) {
        snprintf(err, errlen, "--api-key-file: cannot read '%s': %s", path,
                 rc == RTC_ETOOBIG ? "larger than 1 MiB" : strerror(errno));
        return RTC_EINVAL;
    }
    const char *f[3] = {NULL};
    size_t fn[3] = {0}, nf = 0;
    for (size_t i = 0; i < len && nf == 0;) {
        size_t end = i;
        while (end < len && text[end] != '\n' && text[end] != ';')
            end++;
        size_t stop = i;
        while (stop < end && text[stop] != '#')
            stop++;
        for (size_t j = i; j < stop && nf < 3;) {
            while (j < stop && (isspace((unsigned char)text[j]) || text[j] == ':'))
                j++;
            size_t k = j;
            while (k < stop && !isspace((unsigned char)text[k]) && text[k] != ':')
                k++;
            if (k > j) {
                f[nf] = text + j;
                fn[nf++] = k - j;
            }
            j = k;
        }
        i = end + 1;
    }
    if (nf < 2) {
        snprintf(err, errlen,
                 "--api-key-file: '%s' holds no KEYID:SECRET or "
                 "'<key_id> <secret> <rights>' entry",
                 path);
        rc = RTC_EINVAL;
    } else if (fn[1] == 6 && memcmp(f[1], "sha256", 6) == 0) {
        snprintf(err, errlen,
                 "--api-key-file: '%s' holds only the sha256 digest of the secret; "
                 "rtcctl needs the secret itself",
                 path);
        rc = RTC_EINVAL;
    } else {
        rc = set_basic(c, f[0], fn[0], f[1], fn[1], "--api-key-file", err, errlen);
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

static int setup_credentials(cli *c, char *err, size_t errlen)
{
    if (c->api_key && c->api_key_file) {
        snprintf(err, errlen, "--api-key and --api-key-file exclude each other");
        return RTC_EINVAL;
    }
    if (c->api_key) {
        const char *colon = strchr(c->api_key, ':');
        if (!colon) {
            snprintf(err, errlen, "--api-key: expected KEYID:SECRET");
            return RTC_EINVAL;
        }
        int rc = set_basic(c, c->api_key, (size_t)(colon - c->api_key), colon + 1,
                           strlen(colon + 1), "--api-key", err, errlen);
        OPENSSL_cleanse(c->api_key, strlen(c->api_key));
        if (rc < 0)
            return rc;
    } else if (c->api_key_file) {
        int rc = load_key_file(c, c->api_key_file, err, errlen);
        if (rc < 0)
            return rc;
    }
    if (c->token) {
        size_t n = strlen(c->token);
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)c->token[i] <= 0x20 || (unsigned char)c->token[i] >= 0x7f) {
                snprintf(err, errlen, "--token: not a token (spaces or control characters)");
                return RTC_EINVAL;
            }
        }
        if (n == 0 || n > 16384) {
            snprintf(err, errlen, "--token: not a token (empty or longer than 16 KiB)");
            return RTC_EINVAL;
        }
        c->bearer = malloc(n + 8);
        if (!c->bearer) {
            snprintf(err, errlen, "out of memory");
            return RTC_ENOMEM;
        }
        snprintf(c->bearer, n + 8, "Bearer %s", c->token);
    }
    return 0;
}

static int setup_endpoints(cli *c, char *err, size_t errlen)
{
    c->auth.what = "auth";
    c->sig.what = "signaling";
    c->auth.n = 1;
    rtc_hostport_format(&c->auth_hp, c->auth.eps[0].name, sizeof(c->auth.eps[0].name));
    if (c->auth_hp.port == 0) {
        snprintf(err, errlen, "--auth: port 0 is not an endpoint");
        return RTC_EINVAL;
    }
    const char *p = c->signaling;
    while (true) {
        size_t n = strcspn(p, ",");
        while (n > 0 && isspace((unsigned char)*p)) {
            p++;
            n--;
        }
        size_t m = n;
        while (m > 0 && isspace((unsigned char)p[m - 1]))
            m--;
        char tok[300];
        rtc_hostport hp;
        if (m == 0 || m >= sizeof(tok)) {
            snprintf(err, errlen, "--signaling: expected HOST:PORT[,HOST:PORT...]");
            return RTC_EINVAL;
        }
        memcpy(tok, p, m);
        tok[m] = '\0';
        if (rtc_parse_hostport(tok, &hp) < 0 || hp.port == 0) {
            snprintf(err, errlen, "--signaling: expected HOST:PORT, got '%.64s'", tok);
            return RTC_EINVAL;
        }
        if (c->sig.n == CLI_MAX_ENDPOINTS) {
            snprintf(err, errlen, "--signaling: at most %d endpoints", CLI_MAX_ENDPOINTS);
            return RTC_EINVAL;
        }
        rtc_hostport_format(&hp, c->sig.eps[c->sig.n].name, sizeof(c->sig.eps[0].name));
        c->sig.n++;
        if (p[n] != ',')
            break;
        p += n + 1;
    }
    return 0;
}

/* ---- help ------------------------------------------------------------------ */

static void command_words(const cli_command *cmd, char *out, size_t outlen)
{
    snprintf(out, outlen, "rtcctl %s%s%s", cmd->group, cmd->name ? " " : "",
             cmd->name ? cmd->name : "");
}

static void print_synopsis(FILE *out, const cli_command *cmd)
{
    char words[64];
    command_words(cmd, words, sizeof(words));
    fprintf(out, "  %s%s%s\n", words, cmd->synopsis[0] ? " " : "", cmd->synopsis);
}

static void top_help(cli *c, FILE *out)
{
    rtc_option opts[MAX_OPTS];
    size_t n = global_options(c, opts);
    rtc_buf s = RTC_BUF_INIT;
    rtc_buf_append_str(&s, "rtcctl calls rtc-auth and rtc-signaling over gRPC as an internal "
                           "caller (API key or admin token).\n\nCommands (each takes --help):\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char words[64];
        command_words(&COMMANDS[i], words, sizeof(words));
        rtc_buf_printf(&s, "  %s%s%s\n", words, COMMANDS[i].synopsis[0] ? " " : "",
                       COMMANDS[i].synopsis);
    }
    rtc_buf_append_str(&s, "\nGlobal options may stand before or after the command words.");
    rtc_buf_reserve(&s, 1);
    s.data[s.len] = 0;
    rtc_config_usage(out, "rtcctl COMMAND [ARGS]", (const char *)s.data, opts, n);
    fprintf(out, "\n%s", EXIT_CODES);
    rtc_buf_free(&s);
}

static void group_help(FILE *out, const char *group)
{
    fprintf(out, "Usage: rtcctl %s COMMAND [ARGS] [OPTIONS]\n\nCommands:\n", group);
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(COMMANDS[i].group, group) == 0)
            print_synopsis(out, &COMMANDS[i]);
    fprintf(out, "\nSee rtcctl %s COMMAND --help, and rtcctl --help for the global options.\n\n%s",
            group, EXIT_CODES);
}

static void command_help(cli *c, const cli_command *cmd, FILE *out)
{
    rtc_option opts[MAX_OPTS];
    size_t n = option_table(c, cmd, opts);
    char prog[256];
    command_words(cmd, prog, sizeof(prog));
    size_t l = strlen(prog);
    snprintf(prog + l, sizeof(prog) - l, "%s%s", cmd->synopsis[0] ? " " : "", cmd->synopsis);
    rtc_config_usage(out, prog, cmd->summary, opts, n);
    fprintf(out, "\n%s", EXIT_CODES);
}

/* ---- the command line -------------------------------------------------------- */

static bool is_group(const char *w)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(COMMANDS[i].group, w) == 0)
            return true;
    return false;
}

static const cli_command *find_command(const char *group, const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        const cli_command *k = &COMMANDS[i];
        if (strcmp(k->group, group) == 0 && (!k->name || (name && strcmp(k->name, name) == 0)))
            return k;
    }
    return NULL;
}

static bool has_subcommands(const char *group)
{
    const cli_command *k = find_command(group, NULL);
    return !k || k->name;
}

static const rtc_option *opt_named(const rtc_option *o, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(o[i].name) == len && memcmp(o[i].name, name, len) == 0)
            return &o[i];
    return NULL;
}

/* argv[1..] → flags (with their values, after flags[0] = argv[0]) and
 * positionals, the way rtc_config_parse will read the flags. There are no
 * one-dash options but -h, so "-x…" is positional: participant ids are
 * base64url and may start with '-'. After "--" everything is positional. */
static void split_args(int argc, char **argv, const rtc_option *opts, size_t nopts, char **flags,
                       int *nflags, char **pos, size_t *npos, bool *help)
{
    bool rest = false;
    *nflags = 0;
    *npos = 0;
    flags[(*nflags)++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (rest || a[0] != '-' || a[1] == '\0' || (a[1] != '-' && strcmp(a, "-h") != 0)) {
            pos[(*npos)++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            rest = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            *help = true;
        flags[(*nflags)++] = argv[i];
        if (a[1] != '-' || strchr(a, '='))
            continue;
        const rtc_option *o = opt_named(opts, nopts, a + 2, strlen(a + 2));
        if (o && o->type != RTC_OPT_BOOL && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            flags[(*nflags)++] = argv[++i];
    }
}

/* Positionals a command takes: required (words without '[') and at most. */
static void arg_counts(const cli_command *cmd, size_t *min, size_t *max)
{
    *min = *max = 0;
    const char *p = cmd->args;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        if (*p != '[')
            (*min)++;
        (*max)++;
        while (*p && *p != ' ')
            p++;
    }
}

/* "room create demo": the command and its positionals, to say what failed.
 * A TOKEN positional is a secret and is left out. */
static char *make_what(const cli *c)
{
    rtc_buf b = RTC_BUF_INIT;
    const char *spec = c->cmd->args;
    int rc = rtc_buf_append_str(&b, c->cmd_name);
    for (size_t i = 0; i < c->nargs && rc == 0; i++) {
        while (*spec == ' ')
            spec++;
        size_t n = strcspn(spec, " ");
        bool secret = n == 5 && memcmp(spec, "TOKEN", 5) == 0;
        spec += n;
        if (secret)
            continue;
        rc = rtc_buf_append_str(&b, " ");
        for (const char *a = c->args[i]; *a && rc == 0 && a - c->args[i] < 64; a++)
            rc = rtc_buf_append(&b, (unsigned char)*a < 0x20 || *a == 0x7f ? "?" : a, 1);
    }
    if (rc == 0)
        rc = rtc_buf_append(&b, "", 1);
    if (rc < 0) {
        rtc_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

static void on_signal(int signum, void *ud)
{
    cli *c = ud;
    (void)signum;
    if (c->on_signal)
        c->on_signal(c);
    else
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "interrupted");
}

static void free_all(cli *c, const rtc_option *opts, size_t nopts)
{
    if (c->token)
        OPENSSL_cleanse(c->token, strlen(c->token));
    rtc_config_free(opts, nopts);
    cli_free_secret(c->basic);
    cli_free_secret(c->bearer);
    rtc_pbjson_free(c->pj);
    free(c->cmd_name);
    free(c->what);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int rtc_cli_main(int argc, char **argv, char **envp, FILE *out, FILE *err)
{
    cli C;
    cli *c = &C;
    memset(c, 0, sizeof(*c));
    c->out = out;
    c->err = err;
    rtc_option opts[MAX_OPTS];
    size_t nopts = 0;
    char **flags = calloc((size_t)argc + 1, sizeof(char *));
    char **pos = calloc((size_t)argc + 1, sizeof(char *));
    int nflags = 0, status = RTC_CLI_EXIT_USAGE;
    size_t npos = 0;
    bool help = false, loop_open = false;
    char msg[512];
    if (!flags || !pos) {
        fprintf(err, "rtcctl: out of memory\n");
        status = RTC_CLI_EXIT_FAILURE;
        goto out;
    }
    nopts = option_table(c, NULL, opts);
    split_args(argc, argv, opts, nopts, flags, &nflags, pos, &npos, &help);
    nopts = 0;

    size_t k = 0;
    if (k < npos && strcmp(pos[k], "help") == 0) {
        help = true;
        k++;
    }
    if (k >= npos) {
        if (help) {
            top_help(c, out);
            status = RTC_CLI_EXIT_OK;
        } else {
            fprintf(err, "rtcctl: missing command (see rtcctl --help)\n");
        }
        goto out;
    }
    const char *group = pos[k++];
    if (!is_group(group)) {
        fprintf(err, "rtcctl: unknown command '%.64s' (see rtcctl --help)\n", group);
        goto out;
    }
    const char *sub = has_subcommands(group) && k < npos ? pos[k++] : NULL;
    c->cmd = find_command(group, sub);
    if (!c->cmd || (has_subcommands(group) && !sub)) {
        if (help && !sub) {
            group_help(out, group);
            status = RTC_CLI_EXIT_OK;
        } else if (!sub) {
            fprintf(err, "rtcctl: %s: missing command (see rtcctl %s --help)\n", group, group);
        } else {
            fprintf(err, "rtcctl: %s: unknown command '%.64s' (see rtcctl %s --help)\n", group, sub,
                    group);
        }
        goto out;
    }
    const char *cname = c->cmd->name ? c->cmd->name : "";
    size_t wlen = strlen(c->cmd->group) + strlen(cname) + 2;
    if ((c->cmd_name = malloc(wlen)))
        snprintf(c->cmd_name, wlen, "%s%s%s", c->cmd->group, cname[0] ? " " : "", cname);
    if (!c->cmd_name) {
        status = RTC_CLI_EXIT_FAILURE;
        goto out;
    }
    const char *words = c->cmd_name;
    nopts = option_table(c, c->cmd, opts);
    int rc = rtc_config_parse(opts, nopts, nflags, flags, envp, msg, sizeof(msg));
    if (rc == RTC_EHELP || help) {
        command_help(c, c->cmd, out);
        status = RTC_CLI_EXIT_OK;
        goto out;
    }
    if (rc < 0) {
        fprintf(err, "rtcctl: %s: %s (see rtcctl %s --help)\n", words, msg, words);
        goto out;
    }
    c->args = pos + k;
    c->nargs = npos - k;
    size_t amin, amax;
    arg_counts(c->cmd, &amin, &amax);
    if (c->nargs < amin || c->nargs > amax) {
        fprintf(err, "rtcctl: %s: %s: expected %s (see rtcctl %s --help)\n", words,
                c->nargs < amin ? "missing argument" : "too many arguments",
                amax ? c->cmd->args : "none", words);
        goto out;
    }
    if (setup_endpoints(c, msg, sizeof(msg)) < 0 || setup_credentials(c, msg, sizeof(msg)) < 0) {
        fprintf(err, "rtcctl: %s: %s (see rtcctl %s --help)\n", words, msg, words);
        goto out;
    }
    if (!(c->what = make_what(c))) {
        status = RTC_CLI_EXIT_FAILURE;
        goto out;
    }
    rtc_log_init("rtcctl", c->log_level);
    rtc_log_set_output(err);
    /* A server closing the connection mid-write must be an error of that
     * call, not the end of the process. */
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&c->loop) < 0) {
        fprintf(err, "rtcctl: %s: cannot create the event loop\n", words);
        status = RTC_CLI_EXIT_FAILURE;
        goto out;
    }
    loop_open = true;
    if (rtc_signals_start(&c->loop, on_signal, c, &c->signals) < 0) {
        fprintf(err, "rtcctl: %s: cannot watch signals\n", words);
        status = RTC_CLI_EXIT_FAILURE;
        goto out;
    }
    c->status = RTC_CLI_EXIT_FAILURE;
    c->cmd->run(c);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    if (!c->finished) /* the loop ran dry without an answer: a bug, say so */
        cli_fail(c, RTC_CLI_EXIT_FAILURE, "internal error: the command ended without a result");
    status = c->status;
out:
    if (loop_open) {
        cli_finish(c, c->status);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        uv_walk(&c->loop, close_walk, NULL);
        uv_run(&c->loop, UV_RUN_DEFAULT);
        uv_loop_close(&c->loop);
    }
    if (fflush(out) != 0 && status == RTC_CLI_EXIT_OK)
        status = RTC_CLI_EXIT_FAILURE; /* output lost (EPIPE, disk full) */
    rtc_log_set_output(NULL);
    free_all(c, opts, nopts);
    free(flags);
    free(pos);
    return status;
}

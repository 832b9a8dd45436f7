/* bench_relay.c — load generator for the browser path: WebSocket clients
 * ping-pong SDP-sized offers and answers through two rtc-bridges (and
 * behind them two rtc-signaling pods and Redis), or through the npm `peer`
 * (PeerJS) server for comparison.
 *
 * --target rtc: each client opens ws://BRIDGE/ws (subprotocol
 * rtc.v1.jsonrpc), calls rtc.auth.v1.Auth/DevLogin (public),
 * session.authenticate, Signaling/Join and Signaling/Subscribe. Pair i is
 * A and B in room <prefix><i>; A connects to bridge 1, B to bridge 2, so
 * with each bridge on its own pod every message crosses bridge → pod →
 * Redis → pod → bridge. A Signals B an offer; B answers when the offer's
 * rpc.event arrives; A sends the next offer when the answer arrives.
 *
 * --target peerjs: each client opens ws://PEERJS/peerjs?key=…&id=…&token=…,
 * waits for OPEN, then the same ping-pong with OFFER / ANSWER messages
 * (dst / src), the same SDP text in payload.sdp.sdp.
 *
 * Every message is parsed and checked: a signal comes from the peer, has
 * the expected type, carries this pair's o= line with the next sequence
 * number and is byte for byte the SDP sent; every JSON-RPC answer is a
 * result. Loss, duplicate, an unexpected message or an error fails the
 * run (exit 1); a reordered signal is counted and fails it at the end.
 *
 * Ping-pong mode prints relayed msgs/s in a measured window after a
 * warm-up, RTT (offer sent → answer received) p50/p99, connect+join
 * latency (TCP connect started → Subscribe answered / OPEN received)
 * p50/p99, and the CPU time of the --cpu-pids processes per relayed message.
 *
 * --idle N: connect and join N sessions (N/2 pairs; rtc: until every pair
 * saw its participant_joined and the pods report N open streams), hold
 * them, and report the VmRSS growth of the --rss-pids processes per
 * session. A process holds at most RLIMIT_NOFILE sockets, so idle mode
 * forks --procs workers, each with a share of the pairs.
 *
 * One libuv loop per process; the WebSocket clients are ws_client.c's
 * (libuv TCP and wslay: libwebsockets 4.1's client, used before, spent
 * ~40 % of the generator's CPU framing a byte at a time). Output: a readable report and one "RESULT
 * key=value …" line for scripts (bench/relay/run). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "bench_common.h"
#include "rtc/buf.h"
#include "rtc/config.h"
#include "rtc/error.h"
#include "ws_client.h"

#define SUBPROTOCOL "rtc.v1.jsonrpc"
#define M_DEVLOGIN  "rtc.auth.v1.Auth/DevLogin"
#define M_JOIN      "rtc.signaling.v1.Signaling/Join"
#define M_SUBSCRIBE "rtc.signaling.v1.Signaling/Subscribe"
#define M_SIGNAL    "rtc.signaling.v1.Signaling/Signal"
#define M_LEAVE     "rtc.signaling.v1.Signaling/Leave"
#define MAX_PIDS    12
#define MAX_SOURCES 64
/* JSON-RPC ids: the setup and teardown steps have fixed ids, Signal calls
 * count up from RPC_SIGNAL0. */
#define RPC_LOGIN   1
#define RPC_AUTH    2
#define RPC_JOIN    3
#define RPC_SUB     4
#define RPC_CANCEL  5
#define RPC_LEAVE   6
#define RPC_SIGNAL0 16
/* Signals may arrive at most this far ahead of the oldest missing one
 * (reordered); beyond, the missing one counts as lost. */
#define REORDER_SPAN 64
#define RING(w)      ((uint64_t)(w) + REORDER_SPAN + 1)
/* PeerJS drops a client 90 s after its last HEARTBEAT; idle clients send
 * one every HEARTBEAT_S seconds (the browser client sends one every 5 s). */
#define HEARTBEAT_S 30

/* ---- a small validating JSON tokenizer -----------------------------------------------
 * jansson needs ~25 us to parse one 1.3 KB signal on this machine, as much as
 * a server hop; the generator shares the CPUs with the servers, so it
 * tokenizes instead (jsmn-style, no tree): one flat token array per
 * message, strings decoded on demand. It checks the whole grammar (RFC
 * 8259: strings with their escapes and no control characters, numbers,
 * literals, nesting) and fails on anything else. */

enum { JT_OBJ = 1, JT_ARR, JT_STR, JT_NUM, JT_TRUE, JT_FALSE, JT_NULL };
#define JSON_MAX_DEPTH 32

typedef struct jtok {
    uint8_t type;
    uint8_t esc;         /* string: has backslash escapes */
    uint8_t decoded;     /* string: decoded into the arena at dec */
    uint32_t start, end; /* string: the bytes between the quotes; others: the value */
    uint32_t next;       /* index of the first token after this value */
    uint32_t dec, declen;
} jtok;

typedef struct jdoc {
    const char *s;
    size_t len, pos;
    jtok *t;
    uint32_t n, cap;
    char *arena; /* decoded strings; never more than len + n bytes */
    size_t alen, acap;
    const char *err;
} jdoc;

static int jnew(jdoc *d, int type, size_t start)
{
    if (d->n == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 64;
        jtok *t = realloc(d->t, cap * sizeof(*t));
        if (!t) {
            d->err = "out of memory";
            return -1;
        }
        d->t = t;
        d->cap = cap;
    }
    jtok *t = &d->t[d->n];
    memset(t, 0, sizeof(*t));
    t->type = (uint8_t)type;
    t->start = t->end = (uint32_t)start;
    return (int)d->n++;
}

static void jws(jdoc *d)
{
    while (d->pos < d->len) {
        char ch = d->s[d->pos];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r')
            break;
        d->pos++;
    }
}

static int jhex(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* At the opening quote. */
static int jstring_tok(jdoc *d)
{
    int i = jnew(d, JT_STR, d->pos + 1);
    if (i < 0)
        return -1;
    size_t p = d->pos + 1;
    const unsigned char *s = (const unsigned char *)d->s;
    for (;;) {
        if (p >= d->len) {
            d->err = "unterminated string";
            return -1;
        }
        unsigned char ch = s[p];
        if (ch == '"')
            break;
        if (ch < 0x20) {
            d->err = "control character in a string";
            return -1;
        }
        if (ch == '\\') {
            d->t[i].esc = 1;
            if (p + 1 >= d->len) {
                d->err = "unterminated escape";
                return -1;
            }
            char e = (char)s[p + 1];
            if (e == 'u') {
                if (p + 5 >= d->len || jhex((char)s[p + 2]) < 0 || jhex((char)s[p + 3]) < 0 ||
                    jhex((char)s[p + 4]) < 0 || jhex((char)s[p + 5]) < 0) {
                    d->err = "bad \\u escape";
                    return -1;
                }
                p += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == '\0') {
                d->err = "bad escape";
                return -1;
            }
            p += 2;
            continue;
        }
        p++;
    }
    d->t[i].end = (uint32_t)p;
    d->t[i].next = (uint32_t)i + 1;
    d->pos = p + 1;
    return i;
}

static int jvalue(jdoc *d, int depth)
{
    jws(d);
    if (d->pos >= d->len) {
        d->err = "value expected";
        return -1;
    }
    if (depth > JSON_MAX_DEPTH) {
        d->err = "nested too deep";
        return -1;
    }
    const char *s = d->s;
    char ch = s[d->pos];
    int i;
    if (ch == '{' || ch == '[') {
        bool obj = ch == '{';
        i = jnew(d, obj ? JT_OBJ : JT_ARR, d->pos);
        if (i < 0)
            return -1;
        d->pos++;
        jws(d);
        if (d->pos < d->len && s[d->pos] == (obj ? '}' : ']')) {
            d->pos++;
        } else {
            for (;;) {
                if (obj) {
                    jws(d);
                    if (d->pos >= d->len || s[d->pos] != '"') {
                        d->err = "member name expected";
                        return -1;
                    }
                    if (jstring_tok(d) < 0)
                        return -1;
                    jws(d);
                    if (d->pos >= d->len || s[d->pos] != ':') {
                        d->err = "':' expected";
                        return -1;
                    }
                    d->pos++;
                }
                if (jvalue(d, depth + 1) < 0)
                    return -1;
                jws(d);
                if (d->pos < d->len && s[d->pos] == ',') {
                    d->pos++;
                    continue;
                }
                if (d->pos < d->len && s[d->pos] == (obj ? '}' : ']')) {
                    d->pos++;
                    break;
                }
                d->err = obj ? "',' or '}' expected" : "',' or ']' expected";
                return -1;
            }
        }
    } else if (ch == '"') {
        return jstring_tok(d);
    } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
        size_t p = d->pos;
        i = jnew(d, JT_NUM, p);
        if (i < 0)
            return -1;
        if (s[p] == '-')
            p++;
        if (p < d->len && s[p] == '0')
            p++;
        else if (p < d->len && s[p] >= '1' && s[p] <= '9')
            while (p < d->len && s[p] >= '0' && s[p] <= '9')
                p++;
        else {
            d->err = "bad number";
            return -1;
        }
        if (p < d->len && s[p] == '.') {
            size_t q = ++p;
            while (p < d->len && s[p] >= '0' && s[p] <= '9')
                p++;
            if (p == q) {
                d->err = "bad number";
                return -1;
            }
        }
        if (p < d->len && (s[p] == 'e' || s[p] == 'E')) {
            p++;
            if (p < d->len && (s[p] == '+' || s[p] == '-'))
                p++;
            size_t q = p;
            while (p < d->len && s[p] >= '0' && s[p] <= '9')
                p++;
            if (p == q) {
                d->err = "bad number";
                return -1;
            }
        }
        d->pos = p;
    } else {
        static const struct {
            const char *lit;
            int type;
        } lits[] = {{"true", JT_TRUE}, {"false", JT_FALSE}, {"null", JT_NULL}};
        i = -1;
        for (size_t k = 0; k < 3; k++) {
            size_t n = strlen(lits[k].lit);
            if (d->len - d->pos >= n && memcmp(s + d->pos, lits[k].lit, n) == 0) {
                i = jnew(d, lits[k].type, d->pos);
                if (i < 0)
                    return -1;
                d->pos += n;
                break;
            }
        }
        if (i < 0) {
            d->err = "unexpected character";
            return -1;
        }
    }
    d->t[i].end = (uint32_t)d->pos;
    d->t[i].next = d->n;
    return i;
}

/* Tokenizes one JSON text; 0, or -1 with d->err. */
static int jparse(jdoc *d, const char *s, size_t len)
{
    d->s = s;
    d->len = len;
    d->pos = 0;
    d->n = 0;
    d->alen = 0;
    d->err = NULL;
    if (len > UINT32_MAX / 2) {
        d->err = "too long";
        return -1;
    }
    if (jvalue(d, 0) < 0)
        return -1;
    jws(d);
    if (d->pos != len) {
        d->err = "text after the value";
        return -1;
    }
    size_t need = len + d->n + 1;
    if (d->acap < need) {
        char *a = realloc(d->arena, need);
        if (!a) {
            d->err = "out of memory";
            return -1;
        }
        d->arena = a;
        d->acap = need;
    }
    return 0;
}

static bool jtype(const jdoc *d, int i, int type)
{
    return i >= 0 && (uint32_t)i < d->n && d->t[i].type == type;
}

/* The value of member key of object obj, or -1. */
static int jget(const jdoc *d, int obj, const char *key)
{
    if (!jtype(d, obj, JT_OBJ))
        return -1;
    size_t kl = strlen(key);
    uint32_t i = (uint32_t)obj + 1;
    while (i < d->t[obj].next) {
        const jtok *k = &d->t[i];
        if (!k->esc && k->end - k->start == kl && memcmp(d->s + k->start, key, kl) == 0)
            return (int)i + 1;
        i = d->t[i + 1].next;
    }
    return -1;
}

static void jutf8(char **o, uint32_t cp)
{
    char *w = *o;
    if (cp < 0x80)
        *w++ = (char)cp;
    else if (cp < 0x800) {
        *w++ = (char)(0xc0 | (cp >> 6));
        *w++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *w++ = (char)(0xe0 | (cp >> 12));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *w++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *w++ = (char)(0xf0 | (cp >> 18));
        *w++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *w++ = (char)(0x80 | (cp & 0x3f));
    }
    *o = w;
}

/* The decoded string value of token i (NUL-terminated, valid until the
 * next jparse), or NULL when it is not a string. */
static const char *jstring(jdoc *d, int i, size_t *lenp)
{
    if (!jtype(d, i, JT_STR))
        return NULL;
    jtok *t = &d->t[i];
    if (!t->decoded) {
        const char *s = d->s + t->start, *e = d->s + t->end;
        char *o = d->arena + d->alen, *o0 = o;
        if (!t->esc) {
            memcpy(o, s, (size_t)(e - s));
            o += e - s;
        } else
            while (s < e) {
                if (*s != '\\') {
                    *o++ = *s++;
                    continue;
                }
                char esc = s[1];
                s += 2;
                switch (esc) {
                case 'b':
                    *o++ = '\b';
                    break;
                case 'f':
                    *o++ = '\f';
                    break;
                case 'n':
                    *o++ = '\n';
                    break;
                case 'r':
                    *o++ = '\r';
                    break;
                case 't':
                    *o++ = '\t';
                    break;
                case 'u': {
                    uint32_t cp = (uint32_t)(jhex(s[0]) << 12 | jhex(s[1]) << 8 | jhex(s[2]) << 4 |
                                             jhex(s[3]));
                    s += 4;
                    if (cp >= 0xd800 && cp < 0xdc00 && e - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                        uint32_t lo = (uint32_t)(jhex(s[2]) << 12 | jhex(s[3]) << 8 |
                                                 jhex(s[4]) << 4 | jhex(s[5]));
                        if (lo >= 0xdc00 && lo < 0xe000) {
                            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                            s += 6;
                        }
                    }
                    jutf8(&o, cp);
                    break;
                }
                default:
                    *o++ = esc;
                    break; /* " \ / */
                }
            }
        *o++ = '\0';
        t->dec = (uint32_t)(o0 - d->arena);
        t->declen = (uint32_t)(o - o0 - 1);
        t->decoded = 1;
        d->alen += (size_t)(o - o0);
    }
    if (lenp)
        *lenp = t->declen;
    return d->arena + t->dec;
}

/* The string value of member key of obj, or NULL. */
static const char *jstr(jdoc *d, int obj, const char *key)
{
    return jstring(d, jget(d, obj, key), NULL);
}

/* An integer (JSON number without fraction or exponent) into *v. */
static bool jint(const jdoc *d, int i, int64_t *v)
{
    if (!jtype(d, i, JT_NUM))
        return false;
    char buf[32];
    size_t n = d->t[i].end - d->t[i].start;
    if (n >= sizeof(buf))
        return false;
    memcpy(buf, d->s + d->t[i].start, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *v = x;
    return true;
}

/* The raw JSON text of value i, for messages. */
static void jraw(const jdoc *d, int i, char *out, size_t n)
{
    if (i < 0 || (uint32_t)i >= d->n) {
        snprintf(out, n, "(none)");
        return;
    }
    const jtok *t = &d->t[i];
    size_t a = t->type == JT_STR ? t->start - 1 : t->start,
           b = t->type == JT_STR ? t->end + 1 : t->end;
    snprintf(out, n, "%.*s", (int)(b - a > 300 ? 300 : b - a), d->s + a);
}

/* ---- state --------------------------------------------------------------------- */

typedef enum { TGT_RTC, TGT_PEERJS } target;

typedef enum {
    CS_NEW,
    CS_CONNECTING, /* TCP connect + WebSocket upgrade */
    CS_LOGIN,      /* rtc: DevLogin sent */
    CS_AUTH,       /* rtc: session.authenticate sent */
    CS_JOIN,       /* rtc: Join sent */
    CS_SUBSCRIBE,  /* rtc: Subscribe sent */
    CS_OPENWAIT,   /* peerjs: waiting for OPEN */
    CS_READY,
    CS_CANCEL, /* rtc: rpc.cancel sent */
    CS_CANCELLED,
    CS_LEAVE, /* rtc: Leave sent */
    CS_LEFT,
    CS_CLOSING,
    CS_CLOSED,
    CS_COUNT
} cstate;

static const char *const cstate_names[] = {
    "new",   "connecting", "DevLogin",  "authenticate", "Join", "Subscribe", "OPEN wait",
    "ready", "rpc.cancel", "cancelled", "Leave",        "left", "closing",   "closed"};

typedef struct pair pair;

typedef struct client {
    pair *pair;
    bool is_b;
    wsc *ws;
    cstate st;
    bool established;
    uint64_t t0_ns; /* connect started */
    char name[96];  /* rtc display name / PeerJS id */
    char path[256]; /* request path */
    char *session_id, *participant_id, *sub, *joined_pid;
    int64_t next_rpc;  /* id of the next Signal call */
    uint64_t next_seq; /* lowest sequence number not yet received */
    uint64_t early;    /* bit k: next_seq + 1 + k already received (out of order) */
    unsigned joined_events;
    char last_event_id[80];
} client;

struct pair {
    unsigned idx;
    client a, b;
    uint64_t next_send;   /* A: sequence number of the next offer */
    uint64_t next_answer; /* A: answers received */
    uint64_t *sent_ns;    /* A: send time of offer seq at [seq % RING(window)] */
    bool ready;
};

typedef enum {
    PH_SETUP,
    PH_WARMUP,
    PH_MEASURE,
    PH_DRAIN,
    PH_CANCEL,
    PH_LEAVE,
    PH_CLOSE,
    PH_HOLD,
    PH_DONE,
} phase;

static const char *const phase_names[] = {
    "connect+join", "warm-up", "measure", "drain", "rpc.cancel", "Leave", "close", "hold", "done"};

typedef struct named_pid {
    char name[32];
    int pid;
} named_pid;

typedef struct snapshot {
    uint64_t ns;
    double cpu[MAX_PIDS];
    double self_cpu;
    double machine_busy;
    double machine_irq; /* of which hard + soft interrupts (the loopback TCP stack) */
    uint64_t relayed;
} snapshot;

/* What an idle-mode worker tells its parent once its sessions are up. */
typedef struct worker_report {
    int ok;
    uint64_t clients;
    double setup_s;
    double cpu_s;
    bench_hist cj;
} worker_report;

typedef struct gen {
    /* options */
    char *target_s, *cpu_pids_s, *rss_pids_s, *rss_extra_s, *metrics_s, *prefix, *peerjs_key;
    rtc_hostport bridge1, bridge2, peerjs;
    int64_t pairs, window, seconds, warmup, idle, procs, conc, sources, hold;
    uint64_t size, timeout_ms;
    target tgt;
    named_pid cpu_pids[MAX_PIDS], rss_pids[MAX_PIDS], rss_extra[MAX_PIDS];
    int ncpu, nrss, nextra;
    char src[MAX_SOURCES][16];

    /* this process's share: pairs [plo, phi) */
    int64_t plo, phi, npairs;
    size_t nclients;
    pair *p;

    uv_loop_t *loop;
    uv_timer_t ph_timer, dl_timer, stop_timer, hb_timer;
    uv_poll_t release_poll;
    int report_fd, release_fd;
    unsigned hb_tick;

    phase ph;
    uint64_t ph_start_ns, last_progress_ns;
    bool stopping, failed;

    size_t next_connect, connecting, setup_done, ready_pairs, step_done, closed;
    size_t signals_inflight;
    bool measuring;
    uint64_t relayed, reordered;
    char first_reorder[200];
    bench_hist rtt, cj;
    double setup_s;
    snapshot s0, s1;
    double rss_kib[MAX_PIDS];
    double cj_cpu_s;

    rtc_buf sdp, expect, out;
    jdoc doc;
} gen;

static gen G;

static void phase_next(void);
static void deadline_cb(uv_timer_t *t);
static void teardown_cb(uv_timer_t *t);
static void send_offer(pair *p);

/* ---- helpers ---------------------------------------------------------------------- */

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        fprintf(stderr, "bench_relay: out of memory\n");
        exit(1);
    }
    return d;
}

/* First failure wins: print it, then tear down from the loop (never
 * inside a WebSocket callback). */
__attribute__((format(printf, 1, 2))) static void fail(const char *fmt, ...)
{
    if (G.failed || G.stopping)
        return;
    G.failed = true;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_relay: FAIL (%s, %s phase): ", G.tgt == TGT_RTC ? "rtc" : "peerjs",
            phase_names[G.ph]);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    G.stopping = true;
    if (G.loop)
        uv_timer_start(&G.stop_timer, teardown_cb, 0, 0);
}

static const char *who(const client *c)
{
    static char buf[4][96];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof(buf[0]), "pair %u %s", c->pair->idx,
             c->is_b ? "B (bridge 2)" : "A (bridge 1)");
    if (G.tgt == TGT_PEERJS)
        snprintf(b, sizeof(buf[0]), "pair %u %s", c->pair->idx, c->is_b ? "B" : "A");
    return b;
}

static client *peer_of(client *c)
{
    return c->is_b ? &c->pair->a : &c->pair->b;
}

/* Appends s as a JSON string (with quotes). */
static int json_str(rtc_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (rtc_buf_reserve(b, len * 6 + 2) < 0)
        return RTC_ENOMEM;
    char *o = (char *)b->data + b->len;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            *o++ = (char)ch;
            continue;
        }
        *o++ = '\\';
        switch (ch) {
        case '"':
            *o++ = '"';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[ch >> 4];
            *o++ = hex[ch & 15];
            break;
        }
    }
    *o++ = '"';
    b->len = (size_t)(o - (char *)b->data);
    return 0;
}

static int json_cstr(rtc_buf *b, const char *s)
{
    return json_str(b, s, strlen(s));
}

/* ---- CPU time, RSS, metrics --------------------------------------------------------- */

static void take_snapshot(snapshot *s)
{
    memset(s, 0, sizeof(*s));
    s->ns = now_ns();
    s->relayed = G.relayed;
    s->self_cpu = bench_self_cpu();
    s->machine_busy = bench_machine_busy(&s->machine_irq);
    for (int i = 0; i < G.ncpu; i++)
        s->cpu[i] = bench_proc_cpu(G.cpu_pids[i].pid);
}

/* Sum of the samples of metric family `name` over every --metrics
 * endpoint; -1 when one cannot be read. */
static double metrics_sum(const char *name)
{
    if (!G.metrics_s || !G.metrics_s[0])
        return -1;
    rtc_buf text = RTC_BUF_INIT;
    char *list = xstrdup(G.metrics_s), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save))
        if (bench_http_get_metrics("bench_relay", t, &text) < 0)
            rc = -1;
    free(list);
    double v = 0;
    if (rc == 0 && rtc_buf_append(&text, "", 1) == 0) {
        size_t nl = strlen(name);
        for (const char *l = (const char *)text.data; l && *l;
             l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
            if (strncmp(l, name, nl) != 0 || (l[nl] != '{' && l[nl] != ' '))
                continue;
            const char *eol = strchr(l, '\n');
            const char *sp = eol ? eol : l + strlen(l);
            while (sp > l && sp[-1] != ' ')
                sp--;
            v += strtod(sp, NULL);
        }
    } else
        v = -1;
    rtc_buf_free(&text);
    return v;
}

/* ---- sending ------------------------------------------------------------------------ */

static int client_send(client *c, const void *text, size_t len)
{
    if (!c->ws || !c->established || c->st == CS_CLOSING || c->st == CS_CLOSED)
        return RTC_ECLOSED;
    /* Written now; what the socket does not take is queued in order. */
    return wsc_send_text(c->ws, text, len) < 0 ? RTC_EIO : 0;
}

static void send_buf(client *c, rtc_buf *b)
{
    int rc = client_send(c, b->data, b->len);
    if (rc < 0)
        fail("%s: cannot send: %s", who(c), rtc_strerror(rc));
}

/* {"jsonrpc":"2.0","id":ID,"method":METHOD,"params":{KEY: VALUE, ...}}
 * with string values; kv is NULL-terminated pairs. */
static void rpc_call(client *c, int64_t id, const char *method, const char *const *kv)
{
    rtc_buf *b = &G.out;
    rtc_buf_reset(b);
    int rc = rtc_buf_printf(
        b, "{\"jsonrpc\":\"2.0\",\"id\":%" PRId64 ",\"method\":\"%s\",\"params\":{", id, method);
    for (size_t i = 0; kv && kv[i] && rc >= 0; i += 2) {
        if (i > 0)
            rc = rtc_buf_append(b, ",", 1);
        if (rc >= 0)
            rc = json_cstr(b, kv[i]);
        if (rc >= 0)
            rc = rtc_buf_append(b, ":", 1);
        if (rc >= 0)
            rc = json_cstr(b, kv[i + 1]);
    }
    if (rc >= 0)
        rc = rtc_buf_append(b, "}}", 2);
    if (rc < 0) {
        fail("out of memory");
        return;
    }
    send_buf(c, b);
}

/* from sends offer (A) or answer (B) number seq to its peer. */
static void send_signal(client *from, uint64_t seq)
{
    pair *p = from->pair;
    client *to = peer_of(from);
    rtc_buf *b = &G.out;
    if (bench_make_sdp(&G.sdp, from->is_b, p->idx, seq, (size_t)G.size) < 0) {
        fail("cannot build the SDP");
        return;
    }
    rtc_buf_reset(b);
    int rc;
    if (G.tgt == TGT_RTC) {
        rc = rtc_buf_printf(b,
                            "{\"jsonrpc\":\"2.0\",\"id\":%" PRId64 ",\"method\":\"" M_SIGNAL
                            "\",\"params\":{\"sessionId\":",
                            from->next_rpc++);
        if (rc >= 0)
            rc = json_cstr(b, from->session_id);
        if (rc >= 0)
            rc = rtc_buf_append_str(b, ",\"toParticipantId\":");
        if (rc >= 0)
            rc = json_cstr(b, to->participant_id);
        if (rc >= 0)
            rc = rtc_buf_printf(b,
                                ",\"payload\":{\"description\":{\"type\":\"SDP_TYPE_%s\",\"sdp\":",
                                from->is_b ? "ANSWER" : "OFFER");
        if (rc >= 0)
            rc = json_str(b, (const char *)G.sdp.data, G.sdp.len);
        if (rc >= 0)
            rc = rtc_buf_append_str(b, "}}}}");
    } else {
        /* What the PeerJS browser client sends for a data connection. */
        rc = rtc_buf_printf(b, "{\"type\":\"%s\",\"dst\":", from->is_b ? "ANSWER" : "OFFER");
        if (rc >= 0)
            rc = json_cstr(b, to->name);
        if (rc >= 0)
            rc = rtc_buf_printf(b, ",\"payload\":{\"sdp\":{\"type\":\"%s\",\"sdp\":",
                                from->is_b ? "answer" : "offer");
        if (rc >= 0)
            rc = json_str(b, (const char *)G.sdp.data, G.sdp.len);
        if (rc >= 0)
            rc = rtc_buf_printf(
                b, "},\"type\":\"data\",\"connectionId\":\"dc_%u\",\"browser\":\"bench\"}}",
                p->idx);
    }
    if (rc < 0) {
        fail("out of memory");
        return;
    }
    send_buf(from, b);
    if (G.tgt == TGT_RTC)
        G.signals_inflight++;
}

static void send_offer(pair *p)
{
    uint64_t seq = p->next_send++;
    p->sent_ns[seq % RING(G.window)] = now_ns();
    send_signal(&p->a, seq);
}

/* ---- connecting --------------------------------------------------------------------- */

static client *client_at(size_t i)
{
    pair *p = &G.p[i / 2];
    return i % 2 ? &p->b : &p->a;
}

static const wsc_callbacks ws_callbacks;

static void client_connect(client *c)
{
    size_t i = (size_t)(c->pair - G.p) * 2 + (c->is_b ? 1 : 0);
    const rtc_hostport *hp = G.tgt == TGT_PEERJS ? &G.peerjs : c->is_b ? &G.bridge2 : &G.bridge1;
    if (G.tgt == TGT_RTC)
        snprintf(c->path, sizeof(c->path), "/ws");
    else
        snprintf(c->path, sizeof(c->path), "/peerjs?key=%s&id=%s&token=t%u%c", G.peerjs_key,
                 c->name, c->pair->idx, c->is_b ? 'b' : 'a');
    const char *src =
        G.sources > 0 ? G.src[(size_t)(G.plo * 2 + (int64_t)i) % (size_t)G.sources] : NULL;
    c->st = CS_CONNECTING;
    c->t0_ns = now_ns();
    G.connecting++;
    int rc = wsc_connect(G.loop, hp->host, hp->port, src, c->path,
                         G.tgt == TGT_RTC ? SUBPROTOCOL : NULL, &ws_callbacks, c, &c->ws);
    if (rc < 0)
        fail("%s: cannot start the connection to %s:%u: %s", who(c), hp->host, hp->port,
             uv_strerror(rc));
}

static void connect_more(void)
{
    while (!G.stopping && G.ph == PH_SETUP && G.next_connect < G.nclients &&
           G.connecting < (size_t)G.conc)
        client_connect(client_at(G.next_connect++));
}

static void progress(void)
{
    uint64_t t = now_ns();
    if (t - G.last_progress_ns > 200000000ULL) {
        G.last_progress_ns = t;
        uv_timer_again(&G.dl_timer);
    }
}

/* Connected and joined (rtc: Subscribe answered; peerjs: OPEN). */
static void setup_complete(client *c)
{
    c->st = CS_READY;
    G.connecting--;
    G.setup_done++;
    bench_hist_add(&G.cj, (now_ns() - c->t0_ns) / 1000);
    progress();
    connect_more();
    pair *p = c->pair;
    if (G.tgt == TGT_PEERJS && !p->ready && p->a.st == CS_READY && p->b.st == CS_READY) {
        p->ready = true;
        G.ready_pairs++;
    }
    phase_next();
}

/* rtc: a pair is ready when the participant_joined event (exactly one, to
 * whichever joined first) named the other and both know their ids. */
static void pair_check_ready(pair *p)
{
    if (p->ready)
        return;
    client *got = p->a.joined_pid ? &p->a : p->b.joined_pid ? &p->b : NULL;
    if (!got)
        return;
    client *other = peer_of(got);
    if (!other->participant_id)
        return;
    if (strcmp(got->joined_pid, other->participant_id) != 0) {
        fail("%s: participant_joined about '%s', expected the peer '%s'", who(got), got->joined_pid,
             other->participant_id);
        return;
    }
    p->ready = true;
    G.ready_pairs++;
    progress();
    phase_next();
}

/* ---- checking signals ------------------------------------------------------------- */

/* A signal event with SDP text sdp arrived at c (already checked: from the
 * peer, of the right type). */
static void on_signal(client *c, const char *sdp, size_t sdp_len)
{
    pair *p = c->pair;
    if (G.ph < PH_WARMUP || G.ph > PH_DRAIN) {
        fail("%s: a signal outside the ping-pong", who(c));
        return;
    }
    static const char hdr[] = "v=0\r\no=bench ";
    char *end = NULL;
    unsigned long idx = ULONG_MAX;
    uint64_t seq = 0;
    if (strncmp(sdp, hdr, sizeof(hdr) - 1) == 0) {
        idx = strtoul(sdp + sizeof(hdr) - 1, &end, 10);
        if (*end == ' ')
            seq = strtoull(end + 1, &end, 10);
    }
    if (idx != p->idx || !end || *end != ' ') {
        fail("%s: SDP without this pair's o= line", who(c));
        return;
    }
    const char *what = c->is_b ? "offer" : "answer";
    uint64_t ahead = seq > c->next_seq ? seq - c->next_seq - 1 : 0;
    if (seq < c->next_seq ||
        (seq > c->next_seq && ahead < REORDER_SPAN && ((c->early >> ahead) & 1))) {
        fail("%s: got %s #%" PRIu64 " twice", who(c), what, seq);
        return;
    }
    if (ahead >= REORDER_SPAN) {
        fail("%s: got %s #%" PRIu64 " while #%" PRIu64 " never came (lost)", who(c), what, seq,
             c->next_seq);
        return;
    }
    if (bench_make_sdp(&G.expect, !c->is_b, p->idx, seq, (size_t)G.size) < 0 ||
        sdp_len != G.expect.len || memcmp(sdp, G.expect.data, G.expect.len) != 0) {
        fail("%s: SDP of %s #%" PRIu64 " differs from what was sent (%zu bytes, sent %zu)", who(c),
             what, seq, sdp_len, G.expect.len);
        return;
    }
    if (seq == c->next_seq) {
        c->next_seq++;
        while (c->early & 1) {
            c->early >>= 1;
            c->next_seq++;
        }
        c->early >>= 1;
    } else {
        c->early |= 1ULL << ahead;
        if (G.reordered++ == 0)
            snprintf(G.first_reorder, sizeof(G.first_reorder),
                     "%s got %s #%" PRIu64 " before #%" PRIu64 " (%s phase)", who(c), what, seq,
                     c->next_seq, phase_names[G.ph]);
    }
    if (G.measuring)
        G.relayed++;
    if (c->is_b) {
        send_signal(c, seq); /* the answer */
        return;
    }
    if (seq >= p->next_send) {
        fail("%s: answer #%" PRIu64 " to an offer never sent", who(c), seq);
        return;
    }
    if (G.measuring)
        bench_hist_add(&G.rtt, (now_ns() - p->sent_ns[seq % RING(G.window)]) / 1000);
    p->next_answer++;
    if (G.ph == PH_WARMUP || G.ph == PH_MEASURE)
        send_offer(p);
    else if (G.ph == PH_DRAIN)
        phase_next();
}

/* ---- rtc: JSON-RPC over the bridge ------------------------------------------------- */

static void rtc_step_done(client *c, cstate st)
{
    c->st = st;
    G.step_done++;
    phase_next();
}

static void rtc_response(client *c, jdoc *d, int64_t id)
{
    int err = jget(d, 0, "error");
    int res = jget(d, 0, "result");
    if (err >= 0 || res < 0) {
        const char *msg = err >= 0 ? jstr(d, err, "message") : "answer without a result";
        const char *st = jstr(d, jget(d, err, "data"), "status");
        int64_t code = 0;
        (void)jint(d, jget(d, err, "code"), &code);
        fail("%s: call id %" PRId64 " (%s) failed: %" PRId64 " %s %s", who(c), id,
             cstate_names[c->st], code, st ? st : "", msg ? msg : "?");
        return;
    }
    if (id >= RPC_SIGNAL0) {
        const char *ev = jstr(d, res, "eventId");
        if (!ev || !ev[0]) {
            fail("%s: Signal answered without an eventId", who(c));
            return;
        }
        if (G.signals_inflight == 0) {
            fail("%s: a Signal answer nobody waits for", who(c));
            return;
        }
        G.signals_inflight--;
        if (G.ph == PH_DRAIN)
            phase_next();
        return;
    }
    static const cstate want[] = {
        [RPC_LOGIN] = CS_LOGIN,   [RPC_AUTH] = CS_AUTH,     [RPC_JOIN] = CS_JOIN,
        [RPC_SUB] = CS_SUBSCRIBE, [RPC_CANCEL] = CS_CANCEL, [RPC_LEAVE] = CS_LEAVE};
    if (id < RPC_LOGIN || id > RPC_LEAVE || c->st != want[id]) {
        fail("%s: an answer to call id %" PRId64 " in state %s", who(c), id, cstate_names[c->st]);
        return;
    }
    switch (id) {
    case RPC_LOGIN: {
        const char *tok = jstr(d, res, "accessToken");
        if (!tok || !tok[0]) {
            fail("%s: DevLogin without accessToken", who(c));
            return;
        }
        c->st = CS_AUTH;
        rpc_call(c, RPC_AUTH, "session.authenticate", (const char *[]){"accessToken", tok, NULL});
        break;
    }
    case RPC_AUTH:
        if (!jtype(d, res, JT_TRUE)) {
            fail("%s: session.authenticate did not answer true", who(c));
            return;
        }
        c->st = CS_JOIN;
        rpc_call(c, RPC_JOIN, M_JOIN, NULL);
        break;
    case RPC_JOIN: {
        const char *sid = jstr(d, res, "sessionId");
        const char *pid = jstr(d, jget(d, res, "participant"), "id");
        if (!sid || !sid[0] || !pid || !pid[0]) {
            fail("%s: Join without sessionId or participant.id", who(c));
            return;
        }
        c->session_id = xstrdup(sid);
        c->participant_id = xstrdup(pid);
        c->st = CS_SUBSCRIBE;
        rpc_call(c, RPC_SUB, M_SUBSCRIBE, (const char *[]){"sessionId", sid, NULL});
        pair_check_ready(c->pair);
        break;
    }
    case RPC_SUB: {
        const char *sub = jstr(d, res, "subscription");
        if (!sub || !sub[0]) {
            fail("%s: Subscribe without a subscription id", who(c));
            return;
        }
        c->sub = xstrdup(sub);
        setup_complete(c);
        break;
    }
    case RPC_CANCEL:
        if (!jtype(d, res, JT_TRUE)) {
            fail("%s: rpc.cancel did not answer true", who(c));
            return;
        }
        rtc_step_done(c, CS_CANCELLED);
        break;
    case RPC_LEAVE:
        if (!jtype(d, res, JT_OBJ)) {
            fail("%s: Leave did not answer an object", who(c));
            return;
        }
        rtc_step_done(c, CS_LEFT);
        break;
    default:
        break;
    }
}

static void rtc_event(client *c, jdoc *d, int params)
{
    const char *sub = jstr(d, params, "subscription");
    int ev = jget(d, params, "result");
    if (!c->sub || !sub || strcmp(sub, c->sub) != 0 || !jtype(d, ev, JT_OBJ)) {
        fail("%s: rpc.event of subscription '%s', mine is '%s'", who(c), sub ? sub : "(none)",
             c->sub ? c->sub : "(none)");
        return;
    }
    const char *id = jstr(d, ev, "id");
    if (!id || !id[0] || strcmp(id, c->last_event_id) == 0 ||
        strlen(id) >= sizeof(c->last_event_id)) {
        fail("%s: event id '%s' empty, repeated or too long", who(c), id ? id : "");
        return;
    }
    memcpy(c->last_event_id, id, strlen(id) + 1);
    int sig = jget(d, ev, "signal");
    int joined = jget(d, ev, "participantJoined");
    if (sig >= 0) {
        const char *from = jstr(d, sig, "fromParticipantId");
        client *peer = peer_of(c);
        if (!from || !peer->participant_id || strcmp(from, peer->participant_id) != 0) {
            fail("%s: signal from '%s', expected the peer '%s'", who(c), from ? from : "",
                 peer->participant_id ? peer->participant_id : "(unknown)");
            return;
        }
        int desc = jget(d, jget(d, sig, "payload"), "description");
        const char *type = jstr(d, desc, "type");
        size_t sdp_len = 0;
        const char *sdp = jstring(d, jget(d, desc, "sdp"), &sdp_len);
        const char *want = c->is_b ? "SDP_TYPE_OFFER" : "SDP_TYPE_ANSWER";
        if (!type || strcmp(type, want) != 0 || !sdp) {
            fail("%s: signal payload is not the expected %s description", who(c), want);
            return;
        }
        on_signal(c, sdp, sdp_len);
    } else if (joined >= 0) {
        const char *pid = jstr(d, jget(d, joined, "participant"), "id");
        c->joined_events++;
        if (c->pair->a.joined_events + c->pair->b.joined_events > 1 || !pid) {
            fail("pair %u: participant_joined delivered %u times to A, %u to B (want 1 in all)",
                 c->pair->idx, c->pair->a.joined_events, c->pair->b.joined_events);
            return;
        }
        c->joined_pid = xstrdup(pid);
        pair_check_ready(c->pair);
    } else {
        char raw[320];
        jraw(d, ev, raw, sizeof(raw));
        fail("%s: unexpected event %s", who(c), raw);
    }
}

static void rtc_message(client *c, const char *text, size_t len)
{
    jdoc *d = &G.doc;
    if (jparse(d, text, len) < 0 || !jtype(d, 0, JT_OBJ)) {
        fail("%s: not a JSON object (%s): %.200s", who(c), d->err ? d->err : "not an object", text);
        return;
    }
    const char *version = jstr(d, 0, "jsonrpc");
    int id = jget(d, 0, "id");
    const char *method = jstr(d, 0, "method");
    int64_t idv = 0;
    if (!version || strcmp(version, "2.0") != 0)
        fail("%s: not JSON-RPC 2.0: %.200s", who(c), text);
    else if (id >= 0) {
        if (!jint(d, id, &idv))
            fail("%s: answer with a non-integer id: %.200s", who(c), text);
        else
            rtc_response(c, d, idv);
    } else if (method && strcmp(method, "rpc.event") == 0) {
        rtc_event(c, d, jget(d, 0, "params"));
    } else {
        fail("%s: unexpected message: %.300s", who(c), text);
    }
}

/* ---- peerjs ------------------------------------------------------------------------ */

static void peerjs_message(client *c, const char *text, size_t len)
{
    jdoc *d = &G.doc;
    const char *type = NULL;
    if (jparse(d, text, len) < 0 || !(type = jstr(d, 0, "type"))) {
        fail("%s: not a PeerJS message (%s): %.200s", who(c), d->err ? d->err : "no type", text);
        return;
    }
    if (strcmp(type, "OPEN") == 0) {
        if (c->st != CS_OPENWAIT)
            fail("%s: OPEN in state %s", who(c), cstate_names[c->st]);
        else
            setup_complete(c);
    } else if (strcmp(type, "OFFER") == 0 || strcmp(type, "ANSWER") == 0) {
        const char *want = c->is_b ? "OFFER" : "ANSWER";
        const char *src = jstr(d, 0, "src"), *dst = jstr(d, 0, "dst");
        int psdp = jget(d, jget(d, 0, "payload"), "sdp");
        size_t sdp_len = 0;
        const char *sdp = jstring(d, jget(d, psdp, "sdp"), &sdp_len);
        const char *stype = jstr(d, psdp, "type");
        if (strcmp(type, want) != 0 || !src || strcmp(src, peer_of(c)->name) != 0 || !dst ||
            strcmp(dst, c->name) != 0 || !sdp || !stype ||
            strcmp(stype, c->is_b ? "offer" : "answer") != 0)
            fail("%s: unexpected %s (src %s, dst %s)", who(c), type, src ? src : "-",
                 dst ? dst : "-");
        else
            on_signal(c, sdp, sdp_len);
    } else {
        fail("%s: unexpected PeerJS message: %.300s", who(c), text);
    }
}

/* ---- WebSocket callbacks ------------------------------------------------------------ */

static void on_established(client *c)
{
    c->established = true;
    if (G.tgt == TGT_PEERJS) {
        c->st = CS_OPENWAIT;
        return;
    }
    c->st = CS_LOGIN;
    char room[120];
    snprintf(room, sizeof(room), "%s%u", G.prefix, c->pair->idx);
    rpc_call(c, RPC_LOGIN, M_DEVLOGIN,
             (const char *[]){"displayName", c->name, "roomId", room, NULL});
}

static void on_closed(client *c, const char *why)
{
    bool expected = c->st == CS_CLOSING;
    c->ws = NULL;
    if (c->st == CS_CONNECTING)
        G.connecting--;
    c->st = CS_CLOSED;
    if (G.stopping)
        return;
    if (!expected) {
        fail("%s: %s", who(c), why);
        return;
    }
    G.closed++;
    phase_next();
}

static void ws_open(void *ud)
{
    client *c = ud;
    if (!G.stopping)
        on_established(c);
}

static void ws_text(void *ud, const char *text, size_t len)
{
    client *c = ud;
    if (G.stopping)
        return;
    if (G.tgt == TGT_RTC)
        rtc_message(c, text, len);
    else
        peerjs_message(c, text, len);
}

static void ws_closed(void *ud, const char *why)
{
    client *c = ud;
    c->ws = NULL;
    if (c->st != CS_CLOSED)
        on_closed(c, why);
}

static const wsc_callbacks ws_callbacks = {ws_open, ws_text, ws_closed};

/* ---- phases ----------------------------------------------------------------------- */

static void enter(phase ph)
{
    uint64_t t = now_ns();
    G.ph = ph;
    G.ph_start_ns = G.last_progress_ns = t;
    uv_timer_stop(&G.dl_timer);
    if (ph == PH_SETUP || ph == PH_DRAIN || ph == PH_CANCEL || ph == PH_LEAVE || ph == PH_CLOSE)
        uv_timer_start(&G.dl_timer, deadline_cb, G.timeout_ms, G.timeout_ms);
}

static void count_states(char *out, size_t n)
{
    size_t cnt[CS_COUNT] = {0};
    for (size_t i = 0; i < G.nclients; i++)
        cnt[client_at(i)->st]++;
    size_t o = 0;
    out[0] = '\0';
    for (int s = 0; s < CS_COUNT && o < n; s++)
        if (cnt[s])
            o += (size_t)snprintf(out + o, n - o, "%s%zu %s", o ? ", " : "", cnt[s],
                                  cstate_names[s]);
}

static void deadline_cb(uv_timer_t *t)
{
    char states[400];
    count_states(states, sizeof(states));
    if (G.ph == PH_DRAIN) {
        uint64_t missing = 0;
        for (int64_t i = 0; i < G.npairs; i++)
            missing += G.p[i].next_send - G.p[i].next_answer;
        fail("%" PRIu64 " offers without an answer and %zu Signal calls unanswered %" PRIu64
             " ms after the window",
             missing, G.signals_inflight, G.timeout_ms);
    } else
        fail("no progress for %" PRIu64 " ms: %zu of %zu clients set up, %zu of %" PRId64
             " pairs ready; clients: %s",
             G.timeout_ms, G.setup_done, G.nclients, G.ready_pairs, G.npairs, states);
}

static void phase_timer_cb(uv_timer_t *t)
{
    phase_next();
}

static void heartbeat_cb(uv_timer_t *t)
{
    /* PeerJS clients: one HEARTBEAT every HEARTBEAT_S seconds each,
     * spread over the seconds. */
    unsigned tick = G.hb_tick++ % HEARTBEAT_S;
    static const char hb[] = "{\"type\":\"HEARTBEAT\"}";
    for (size_t i = tick; i < G.nclients; i += HEARTBEAT_S) {
        client *c = client_at(i);
        if (c->st == CS_READY)
            (void)client_send(c, hb, sizeof(hb) - 1);
    }
}

static void start_close_all(void)
{
    enter(PH_CLOSE);
    G.closed = 0;
    for (size_t i = 0; i < G.nclients; i++) {
        client *c = client_at(i);
        if (c->st == CS_CLOSED) {
            G.closed++;
            continue;
        }
        c->st = CS_CLOSING;
        if (c->ws)
            wsc_close(c->ws, 1000, "bye");
    }
    phase_next();
}

static void write_report(void)
{
    worker_report r;
    memset(&r, 0, sizeof(r));
    r.ok = 1;
    r.clients = G.nclients;
    r.setup_s = G.setup_s;
    r.cpu_s = bench_self_cpu();
    r.cj = G.cj;
    const char *p = (const char *)&r;
    size_t left = sizeof(r);
    while (left > 0) {
        ssize_t w = write(G.report_fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            fail("cannot report to the parent: %s", strerror(errno));
            return;
        }
        p += w;
        left -= (size_t)w;
    }
}

static void release_cb(uv_poll_t *h, int status, int events)
{
    /* The parent closed the pipe (or wrote): let go of the sessions. */
    uv_poll_stop(h);
    G.ph = PH_DONE;
    G.stopping = true;
    uv_timer_start(&G.stop_timer, teardown_cb, 0, 0);
}

/* Moves on when the current phase is complete. */
static void phase_next(void)
{
    if (G.stopping)
        return;
    switch (G.ph) {
    case PH_SETUP:
        if (G.setup_done < G.nclients || G.ready_pairs < (size_t)G.npairs)
            break;
        G.setup_s = secs(now_ns() - G.ph_start_ns);
        if (G.idle > 0) {
            enter(PH_HOLD);
            write_report();
            uv_poll_start(&G.release_poll, UV_READABLE | UV_DISCONNECT, release_cb);
            break;
        }
        enter(PH_WARMUP);
        for (int64_t i = 0; i < G.npairs; i++)
            for (int64_t w = 0; w < G.window && !G.stopping; w++)
                send_offer(&G.p[i]);
        uv_timer_start(&G.ph_timer, phase_timer_cb, (uint64_t)G.warmup * 1000, 0);
        break;
    case PH_WARMUP:
        take_snapshot(&G.s0);
        enter(PH_MEASURE);
        G.relayed = 0;
        G.s0.relayed = 0;
        G.measuring = true;
        uv_timer_start(&G.ph_timer, phase_timer_cb, (uint64_t)G.seconds * 1000, 0);
        break;
    case PH_MEASURE:
        G.measuring = false;
        take_snapshot(&G.s1);
        for (int i = 0; i < G.nrss; i++)
            G.rss_kib[i] = bench_proc_rss_kib(G.rss_pids[i].pid);
        enter(PH_DRAIN);
        /* fall through */
    case PH_DRAIN:
        if (G.signals_inflight > 0)
            break;
        for (int64_t i = 0; i < G.npairs; i++) {
            pair *p = &G.p[i];
            if (p->next_answer != p->next_send)
                return;
            if (p->b.next_seq != p->next_send || p->a.next_seq != p->next_send || p->a.early ||
                p->b.early) {
                fail("pair %u: B got %" PRIu64 " offers, A sent %" PRIu64, p->idx, p->b.next_seq,
                     p->next_send);
                return;
            }
        }
        if (G.tgt == TGT_PEERJS) {
            start_close_all();
            break;
        }
        /* rtc: cancel every stream first, so that the Leaves produce no
         * events nobody waits for; then Leave; then close. */
        enter(PH_CANCEL);
        G.step_done = 0;
        for (size_t i = 0; i < G.nclients && !G.stopping; i++) {
            client *c = client_at(i);
            c->st = CS_CANCEL;
            rpc_call(c, RPC_CANCEL, "rpc.cancel", (const char *[]){"subscription", c->sub, NULL});
        }
        break;
    case PH_CANCEL:
        if (G.step_done < G.nclients)
            break;
        enter(PH_LEAVE);
        G.step_done = 0;
        for (size_t i = 0; i < G.nclients && !G.stopping; i++) {
            client *c = client_at(i);
            c->st = CS_LEAVE;
            rpc_call(c, RPC_LEAVE, M_LEAVE, (const char *[]){"sessionId", c->session_id, NULL});
        }
        break;
    case PH_LEAVE:
        if (G.step_done < G.nclients)
            break;
        start_close_all();
        break;
    case PH_CLOSE:
        if (G.closed < G.nclients)
            break;
        enter(PH_DONE);
        G.stopping = true;
        uv_timer_start(&G.stop_timer, teardown_cb, 0, 0);
        break;
    case PH_HOLD:
    case PH_DONE:
        break;
    }
}

static void teardown_cb(uv_timer_t *t)
{
    G.stopping = true;
    for (size_t i = 0; G.p && i < G.nclients; i++) {
        client *c = client_at(i);
        if (c->ws) {
            wsc_abort(c->ws);
            c->ws = NULL;
        }
    }
    uv_close((uv_handle_t *)&G.ph_timer, NULL);
    uv_close((uv_handle_t *)&G.dl_timer, NULL);
    uv_close((uv_handle_t *)&G.hb_timer, NULL);
    uv_close((uv_handle_t *)&G.stop_timer, NULL);
    if (G.release_fd >= 0)
        uv_close((uv_handle_t *)&G.release_poll, NULL);
}

/* ---- one process's run --------------------------------------------------------------- */

static int raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return (int)(rl.rlim_cur > INT_MAX ? INT_MAX : rl.rlim_cur);
}

/* Runs pairs [plo, phi) to completion (ping-pong) or until released (idle
 * worker). 0 when everything went as it should. */
static int run_loop(int64_t plo, int64_t phi)
{
    G.plo = plo;
    G.phi = phi;
    G.npairs = phi - plo;
    G.nclients = 2 * (size_t)G.npairs;
    G.p = calloc((size_t)G.npairs, sizeof(pair));
    if (!G.p)
        return 1;
    for (int64_t i = 0; i < G.npairs; i++) {
        pair *p = &G.p[i];
        p->idx = (unsigned)(plo + i);
        p->a.pair = p->b.pair = p;
        p->b.is_b = true;
        p->a.next_rpc = p->b.next_rpc = RPC_SIGNAL0;
        snprintf(p->a.name, sizeof(p->a.name), "%s%u-a", G.prefix, p->idx);
        snprintf(p->b.name, sizeof(p->b.name), "%s%u-b", G.prefix, p->idx);
        p->sent_ns = calloc((size_t)RING(G.window), sizeof(uint64_t));
        if (!p->sent_ns)
            return 1;
    }
    int nofile = raise_nofile();
    if (nofile > 0 && (size_t)nofile < G.nclients + 64) {
        fprintf(stderr,
                "bench_relay: %zu sockets need more than RLIMIT_NOFILE %d: use --procs (idle) or "
                "fewer pairs\n",
                G.nclients, nofile);
        return 1;
    }

    G.loop = uv_default_loop();
    uv_timer_init(G.loop, &G.ph_timer);
    uv_timer_init(G.loop, &G.dl_timer);
    uv_timer_init(G.loop, &G.stop_timer);
    uv_timer_init(G.loop, &G.hb_timer);
    if (G.release_fd >= 0)
        uv_poll_init(G.loop, &G.release_poll, G.release_fd);

    enter(PH_SETUP);
    if (G.tgt == TGT_PEERJS)
        uv_timer_start(&G.hb_timer, heartbeat_cb, 1000, 1000);
    connect_more();
    uv_run(G.loop, UV_RUN_DEFAULT);
    return G.failed || G.ph != PH_DONE ? 1 : 0;
}

/* ---- reports ------------------------------------------------------------------------- */

static void print_cj(const bench_hist *h, double setup_s, size_t n)
{
    printf("  connect+join: %zu clients in %.3f s = %.0f/s (at most %" PRId64
           " at once); per client p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           n, setup_s, setup_s > 0 ? (double)n / setup_s : 0, G.conc,
           bench_hist_quantile(h, 0.50) / 1000, bench_hist_quantile(h, 0.99) / 1000,
           (double)h->max / 1000);
}

static void report_pingpong(void)
{
    const snapshot *a = &G.s0, *b = &G.s1;
    double wall = secs(b->ns - a->ns);
    uint64_t relayed = b->relayed;
    double rate = wall > 0 ? (double)relayed / wall : 0;
    double p50 = bench_hist_quantile(&G.rtt, 0.50) / 1000,
           p99 = bench_hist_quantile(&G.rtt, 0.99) / 1000;
    double mean = G.rtt.n ? (double)G.rtt.sum / (double)G.rtt.n / 1000 : 0;
    double gen_cpu = b->self_cpu - a->self_cpu;
    double cj50 = bench_hist_quantile(&G.cj, 0.50) / 1000,
           cj99 = bench_hist_quantile(&G.cj, 0.99) / 1000;

    print_cj(&G.cj, G.setup_s, G.nclients);
    printf("  relayed: %" PRIu64 " signal messages in %.3f s = %.0f msgs/s\n", relayed, wall, rate);
    printf("  RTT offer -> answer: p50 %.2f ms, p99 %.2f ms, mean %.2f ms, max %.2f ms (%" PRIu64
           " round trips)\n",
           p50, p99, mean, (double)G.rtt.max / 1000, G.rtt.n);
    double known = gen_cpu, mach = b->machine_busy - a->machine_busy, server = 0;
    for (int i = 0; i < G.ncpu; i++)
        if (a->cpu[i] >= 0 && b->cpu[i] >= 0) {
            known += b->cpu[i] - a->cpu[i];
            server += b->cpu[i] - a->cpu[i];
        }
    double other = a->machine_busy >= 0 && b->machine_busy >= 0 && mach > known ? mach - known : 0;
    double irq = a->machine_irq >= 0 && b->machine_irq >= 0 ? b->machine_irq - a->machine_irq : 0;
    if (irq > other)
        irq = other;
    printf("  CPU in the window (busy = CPU s / wall s, 100%% = one of %ld CPUs; us per relayed "
           "msg):\n",
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("    %-10s %5.0f%%  %6.1f us\n", "generator", wall > 0 ? gen_cpu * 100 / wall : 0,
           relayed ? gen_cpu * 1e6 / (double)relayed : 0);
    for (int i = 0; i < G.ncpu; i++) {
        double c = b->cpu[i] - a->cpu[i];
        if (a->cpu[i] < 0 || b->cpu[i] < 0)
            printf("    %-10s (pid %d not readable)\n", G.cpu_pids[i].name, G.cpu_pids[i].pid);
        else
            printf("    %-10s %5.0f%%  %6.1f us\n", G.cpu_pids[i].name,
                   wall > 0 ? c * 100 / wall : 0, relayed ? c * 1e6 / (double)relayed : 0);
    }
    printf("    %-10s %5.0f%%  %6.1f us   (all server processes above)\n", "servers",
           wall > 0 ? server * 100 / wall : 0, relayed ? server * 1e6 / (double)relayed : 0);
    printf("    %-10s %5.0f%%  %6.1f us   (the rest, from /proc/stat: interrupts %.0f%% (the "
           "loopback TCP stack), other processes %.0f%%)\n",
           "other", wall > 0 ? other * 100 / wall : 0, relayed ? other * 1e6 / (double)relayed : 0,
           wall > 0 ? irq * 100 / wall : 0, wall > 0 ? (other - irq) * 100 / wall : 0);
    if (G.nrss > 0) {
        printf("  RSS at the end of the window:");
        for (int i = 0; i < G.nrss; i++)
            printf("%s %s %.1f MiB", i ? "," : "", G.rss_pids[i].name, G.rss_kib[i] / 1024);
        printf("\n");
    }
    if (G.reordered)
        printf("  checks: every signal received once, as sent, from the peer; every call OK; but "
               "%" PRIu64 " arrived out of order (first: %s)\n",
               G.reordered, G.first_reorder);
    else
        printf("  checks: every signal received once, in order, as sent, from the peer; %s\n",
               G.tgt == TGT_RTC ? "every call answered with a result" : "no error message");

    printf("RESULT target=%s pairs=%" PRId64 " size=%" PRIu64 " window=%" PRId64
           " seconds=%.3f relayed=%" PRIu64 " msgs_per_s=%.0f rtt_p50_ms=%.3f rtt_p99_ms=%.3f"
           " rtt_mean_ms=%.3f cj_p50_ms=%.3f cj_p99_ms=%.3f setup_s=%.3f reordered=%" PRIu64
           " server_us_per_msg=%.2f gen_us_per_msg=%.2f busy_generator=%.0f busy_servers=%.0f"
           " busy_other=%.0f busy_irq=%.0f",
           G.tgt == TGT_RTC ? "rtc" : "peerjs", G.npairs, G.size, G.window, wall, relayed, rate,
           p50, p99, mean, cj50, cj99, G.setup_s, G.reordered,
           relayed ? server * 1e6 / (double)relayed : 0,
           relayed ? gen_cpu * 1e6 / (double)relayed : 0, wall > 0 ? gen_cpu * 100 / wall : 0,
           wall > 0 ? server * 100 / wall : 0, wall > 0 ? other * 100 / wall : 0,
           wall > 0 ? irq * 100 / wall : 0);
    for (int i = 0; i < G.ncpu; i++)
        if (a->cpu[i] >= 0 && b->cpu[i] >= 0)
            printf(" busy_%s=%.0f", G.cpu_pids[i].name,
                   wall > 0 ? (b->cpu[i] - a->cpu[i]) * 100 / wall : 0);
    for (int i = 0; i < G.nrss; i++)
        printf(" rss_%s_kib=%.0f", G.rss_pids[i].name, G.rss_kib[i]);
    printf("\n");
}

/* ---- idle mode: workers and the parent ------------------------------------------------ */

static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void sample_rss(const named_pid *pids, int n, double *out)
{
    for (int i = 0; i < n; i++)
        out[i] = bench_proc_rss_kib(pids[i].pid);
}

static int run_idle(void)
{
    int64_t npairs = G.idle / 2;
    int nofile = raise_nofile();
    int64_t per_proc = nofile > 0 ? (nofile - 256) / 2 : 5000; /* pairs per worker */
    if (per_proc < 1)
        per_proc = 1;
    int64_t procs = G.procs > 0 ? G.procs : (npairs + per_proc - 1) / per_proc;
    if (procs < 1)
        procs = 1;
    if (procs > 64)
        procs = 64;
    double before[MAX_PIDS], after[MAX_PIDS], ebefore[MAX_PIDS], eafter[MAX_PIDS];
    double streams0 = G.tgt == TGT_RTC ? metrics_sum("rtc_signaling_streams") : -1;
    sample_rss(G.rss_pids, G.nrss, before);
    sample_rss(G.rss_extra, G.nextra, ebefore);

    printf("bench_relay: idle %" PRId64 " sessions (%" PRId64 " pairs) against %s, %" PRId64
           " worker process(es) (RLIMIT_NOFILE %d), at most %" PRId64 " connecting at once\n",
           2 * npairs, npairs, G.tgt == TGT_RTC ? "rtc (bridge 1: A, bridge 2: B)" : "peerjs",
           procs, nofile, G.conc);
    fflush(stdout);

    pid_t pids[64];
    int up[64], rel[64];
    int64_t conc_total = G.conc;
    uint64_t t0 = now_ns();
    for (int64_t k = 0; k < procs; k++) {
        int u[2], r[2];
        if (pipe(u) < 0 || pipe(r) < 0) {
            perror("bench_relay: pipe");
            return 1;
        }
        int64_t lo = npairs * k / procs, hi = npairs * (k + 1) / procs;
        pid_t pid = fork();
        if (pid < 0) {
            perror("bench_relay: fork");
            return 1;
        }
        if (pid == 0) {
            close(u[0]);
            close(r[1]);
            for (int64_t j = 0; j < k; j++) {
                close(up[j]);
                close(rel[j]);
            }
            G.report_fd = u[1];
            G.release_fd = r[0];
            G.conc = conc_total / procs > 0 ? conc_total / procs : 1;
            int rc = run_loop(lo, hi);
            fflush(stdout);
            _exit(rc);
        }
        close(u[1]);
        close(r[0]);
        pids[k] = pid;
        up[k] = u[0];
        rel[k] = r[1];
    }

    worker_report total;
    memset(&total, 0, sizeof(total));
    int failed = 0;
    for (int64_t k = 0; k < procs; k++) {
        static worker_report r;
        if (read_full(up[k], &r, sizeof(r)) < 0 || !r.ok) {
            fprintf(stderr,
                    "bench_relay: worker %" PRId64 " (pid %d) failed before its sessions "
                    "were up\n",
                    k, (int)pids[k]);
            failed = 1;
            break;
        }
        total.clients += r.clients;
        total.cpu_s += r.cpu_s;
        bench_hist_merge(&total.cj, &r.cj);
    }
    double setup_s = secs(now_ns() - t0);
    double streams = -1;
    if (!failed && G.tgt == TGT_RTC && G.metrics_s && G.metrics_s[0]) {
        /* Every Subscribe is open at the pods (the bridge answers
         * {"subscription"} before its stream reaches a pod). */
        uint64_t deadline = now_ns() + G.timeout_ms * 1000000ULL;
        for (;;) {
            streams = metrics_sum("rtc_signaling_streams");
            if (streams < 0 || streams - (streams0 > 0 ? streams0 : 0) >= (double)(2 * npairs) ||
                now_ns() > deadline)
                break;
            usleep(100000);
        }
        if (streams < 0 || streams - (streams0 > 0 ? streams0 : 0) < (double)(2 * npairs)) {
            fprintf(stderr, "bench_relay: the pods report %.0f open streams, want %" PRId64 "\n",
                    streams, 2 * npairs);
            failed = 1;
        }
    }
    if (!failed) {
        /* Let the servers settle (allocator, GC), then sample. */
        sleep((unsigned)G.hold);
        for (int64_t k = 0; k < procs; k++) {
            int st = 0;
            if (waitpid(pids[k], &st, WNOHANG) != 0) {
                fprintf(stderr, "bench_relay: worker %" PRId64 " exited while holding\n", k);
                failed = 1;
            }
        }
        sample_rss(G.rss_pids, G.nrss, after);
        sample_rss(G.rss_extra, G.nextra, eafter);
    }
    /* Release the workers (or stop them after a failure). */
    for (int64_t k = 0; k < procs; k++) {
        close(rel[k]);
        close(up[k]);
        if (failed)
            kill(pids[k], SIGTERM);
    }
    for (int64_t k = 0; k < procs; k++) {
        int st = 0;
        if (waitpid(pids[k], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            if (!failed)
                fprintf(stderr, "bench_relay: worker %" PRId64 " ended with status %d\n", k, st);
            failed = 1;
        }
    }
    if (failed)
        return 1;

    size_t n = (size_t)(2 * npairs);
    print_cj(&total.cj, setup_s, n);
    if (streams >= 0)
        printf("  open Subscribe streams at the pods: %.0f\n", streams);
    printf("  held %" PRId64 " s after every session was up; VmRSS before (0 sessions) -> after "
           "(%zu sessions):\n",
           G.hold, n);
    double sum = 0;
    for (int i = 0; i < G.nrss; i++) {
        double d = after[i] - before[i];
        sum += d;
        printf("    %-10s %9.1f MiB -> %9.1f MiB: +%9.1f MiB = %6.2f KiB per session\n",
               G.rss_pids[i].name, before[i] / 1024, after[i] / 1024, d / 1024, d / (double)n);
    }
    printf("    %-10s %26s +%9.1f MiB = %6.2f KiB per session (counted)\n", "sum", "", sum / 1024,
           sum / (double)n);
    for (int i = 0; i < G.nextra; i++) {
        double d = eafter[i] - ebefore[i];
        printf("    %-10s %9.1f MiB -> %9.1f MiB: +%9.1f MiB = %6.2f KiB per session (not "
               "counted)\n",
               G.rss_extra[i].name, ebefore[i] / 1024, eafter[i] / 1024, d / 1024, d / (double)n);
    }
    printf("  generator CPU (all workers, setup): %.2f s\n", total.cpu_s);
    printf(
        "RESULT target=%s idle=%zu setup_s=%.3f cj_p50_ms=%.3f cj_p99_ms=%.3f kib_per_session=%.3f",
        G.tgt == TGT_RTC ? "rtc" : "peerjs", n, setup_s, bench_hist_quantile(&total.cj, 0.5) / 1000,
        bench_hist_quantile(&total.cj, 0.99) / 1000, sum / (double)n);
    for (int i = 0; i < G.nrss; i++)
        printf(" rss0_%s_kib=%.0f rss1_%s_kib=%.0f", G.rss_pids[i].name, before[i],
               G.rss_pids[i].name, after[i]);
    for (int i = 0; i < G.nextra; i++)
        printf(" rss0_%s_kib=%.0f rss1_%s_kib=%.0f", G.rss_extra[i].name, ebefore[i],
               G.rss_extra[i].name, eafter[i]);
    printf("\n");
    return 0;
}

/* ---- main ------------------------------------------------------------------------------ */

static int parse_pids(const char *flag, const char *s, named_pid *out, int *n)
{
    if (!s || !s[0])
        return 0;
    char *list = xstrdup(s), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        char *end = NULL;
        long pid = eq ? strtol(eq + 1, &end, 10) : 0;
        if (!eq || eq == t || (size_t)(eq - t) >= sizeof(out[0].name) || pid <= 0 || *end ||
            *n == MAX_PIDS) {
            fprintf(stderr, "bench_relay: %s: expected NAME=PID[,...] (at most %d), got '%s'\n",
                    flag, MAX_PIDS, t);
            rc = -1;
            break;
        }
        named_pid *c = &out[(*n)++];
        memcpy(c->name, t, (size_t)(eq - t));
        c->name[eq - t] = '\0';
        c->pid = (int)pid;
    }
    free(list);
    return rc;
}

int main(int argc, char **argv)
{
    gen *g = &G;
    int status = 1;
    g->report_fd = g->release_fd = -1;
    const rtc_option opts[] = {
        {"target", RTC_OPT_STRING, "rtc", "rtc (through the bridges) or peerjs", &g->target_s, 0,
         0},
        {"bridge1", RTC_OPT_HOSTPORT, "127.0.0.1:8080", "rtc-bridge of the A clients", &g->bridge1,
         0, 0},
        {"bridge2", RTC_OPT_HOSTPORT, "127.0.0.1:8090", "rtc-bridge of the B clients", &g->bridge2,
         0, 0},
        {"peerjs", RTC_OPT_HOSTPORT, "127.0.0.1:9000", "PeerJS server (--target peerjs)",
         &g->peerjs, 0, 0},
        {"peerjs-key", RTC_OPT_STRING, "peerjs", "PeerJS key", &g->peerjs_key, 0, 0},
        {"pairs", RTC_OPT_INT, "100", "pairs of clients P (2P WebSockets, P rooms)", &g->pairs, 1,
         100000},
        {"size", RTC_OPT_SIZE, "1024", "bytes of each offer / answer SDP", &g->size, 128, 65536},
        {"window", RTC_OPT_INT, "1", "offers in flight per pair (1 = strict ping-pong)", &g->window,
         1, 1000},
        {"seconds", RTC_OPT_INT, "10", "seconds measured", &g->seconds, 1, 3600},
        {"warmup", RTC_OPT_INT, "2", "seconds of ping-pong before the measurement", &g->warmup, 0,
         3600},
        {"idle", RTC_OPT_INT, "0",
         "idle mode: connect and join N sessions (even), hold them, report RSS per session",
         &g->idle, 0, 10000000},
        {"hold", RTC_OPT_INT, "5", "idle mode: seconds held before RSS is sampled", &g->hold, 0,
         3600},
        {"procs", RTC_OPT_INT, "0",
         "idle mode: worker processes (0 = as many as RLIMIT_NOFILE needs)", &g->procs, 0, 64},
        {"concurrency", RTC_OPT_INT, "128", "clients connecting / joining at once", &g->conc, 1,
         100000},
        {"sources", RTC_OPT_INT, "8",
         "spread client source addresses over 127.0.0.2 .. 127.0.0.(1+N) (0 = kernel's choice)",
         &g->sources, 0, MAX_SOURCES},
        {"cpu-pids", RTC_OPT_STRING, "",
         "NAME=PID[,...] server processes whose CPU time in the window is reported", &g->cpu_pids_s,
         0, 0},
        {"rss-pids", RTC_OPT_STRING, "",
         "NAME=PID[,...] server processes whose RSS is reported (idle: counted per session)",
         &g->rss_pids_s, 0, 0},
        {"rss-extra", RTC_OPT_STRING, "", "NAME=PID[,...] idle mode: RSS reported but not counted",
         &g->rss_extra_s, 0, 0},
        {"metrics", RTC_OPT_STRING, "",
         "HOST:PORT[,...] pods' admin endpoints: idle mode waits for rtc_signaling_streams",
         &g->metrics_s, 0, 0},
        {"prefix", RTC_OPT_STRING, "bench-",
         "rooms are <prefix><i>, names / PeerJS ids <prefix><i>-a / -b", &g->prefix, 0, 0},
        {"timeout", RTC_OPT_DURATION, "30s",
         "a setup phase without progress, or the drain, fails after this", &g->timeout_ms, 100,
         3600000},
    };
    const size_t nopts = sizeof(opts) / sizeof(opts[0]);
    int rc = rtc_config_main(opts, nopts, argc, argv, "bench_relay",
                             "Load generator for the browser path: WebSocket clients in pairs "
                             "ping-pong offer/answer SDPs through two rtc-bridges or a PeerJS "
                             "server (see bench/relay/README.md).");
    if (rc >= 0)
        return rc;
    if (strcmp(g->target_s, "rtc") == 0)
        g->tgt = TGT_RTC;
    else if (strcmp(g->target_s, "peerjs") == 0)
        g->tgt = TGT_PEERJS;
    else {
        fprintf(stderr, "bench_relay: --target: rtc or peerjs, got '%s'\n", g->target_s);
        goto out;
    }
    if (strlen(g->prefix) > 40 ||
        strspn(g->prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP"
                          "QRSTUVWXYZ0123456789._-") != strlen(g->prefix)) {
        fprintf(stderr, "bench_relay: --prefix: at most 40 bytes of [A-Za-z0-9._-]\n");
        goto out;
    }
    if (g->idle % 2) {
        fprintf(stderr, "bench_relay: --idle: an even number of sessions (pairs)\n");
        goto out;
    }
    if (parse_pids("--cpu-pids", g->cpu_pids_s, g->cpu_pids, &g->ncpu) < 0 ||
        parse_pids("--rss-pids", g->rss_pids_s, g->rss_pids, &g->nrss) < 0 ||
        parse_pids("--rss-extra", g->rss_extra_s, g->rss_extra, &g->nextra) < 0)
        goto out;
    for (int64_t i = 0; i < g->sources; i++)
        snprintf(g->src[i], sizeof(g->src[i]), "127.0.0.%d", (int)(2 + i));
    signal(SIGPIPE, SIG_IGN);

    if (g->idle > 0) {
        status = run_idle();
        goto out;
    }
    printf("bench_relay: %s, %" PRId64 " pairs (%s), %" PRIu64 "-byte SDP, window %" PRId64
           ", %" PRId64 " s warm-up, %" PRId64 " s measured\n",
           g->tgt == TGT_RTC ? "rtc" : "peerjs", g->pairs,
           g->tgt == TGT_RTC ? "A on bridge 1, B on bridge 2" : "A and B on the PeerJS server",
           g->size, g->window, g->warmup, g->seconds);
    fflush(stdout);
    rc = run_loop(0, g->pairs);
    if (rc == 0 && !g->failed) {
        report_pingpong();
        status = 0;
        if (g->reordered) {
            fprintf(stderr,
                    "bench_relay: FAIL: %" PRIu64 " signals arrived out of order (none lost or "
                    "duplicated); first: %s\n",
                    g->reordered, g->first_reorder);
            status = 1;
        }
    }
out:
    fflush(stdout);
    rtc_config_free(opts, nopts);
    return status;
}

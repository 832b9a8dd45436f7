/* fuzz_signaling_wire.c — libFuzzer target for rtc-signaling's wire.h.
 *
 * The input is first a pub/sub wake message, as a pod receives it from
 * Redis: when it parses, its (id, t, a, b) go through sig_event_build like
 * a mailbox entry, the built Event must pack, and a signal's payload goes
 * through sig_payload_check. Then a NUL-terminated copy of the input is
 * every other client-supplied string: room / participant / event id, UTF-8
 * text, resume token and session id. Checks each function's promises, not
 * only that it returns. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "rtc/error.h"
#include "rtc/signaling/v1/signaling.pb-c.h"
#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_signaling_wire: %s:%d: %s\n", __FILE__, __LINE__, #c);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool within(sig_slice s, const char *buf, size_t len)
{
    return s.p >= buf && s.len <= len && s.p - buf <= (ptrdiff_t)(len - s.len);
}

/* A slice as a C string, or NULL when it holds a NUL (or is too long). */
static char *cstr(sig_slice s, char *out, size_t cap)
{
    if (s.len >= cap || memchr(s.p, '\0', s.len))
        return NULL;
    memcpy(out, s.p, s.len);
    out[s.len] = '\0';
    return out;
}

/* The canonical form of w (what signaling.lua writes) must parse to the
 * same bytes: a field is never read differently from how it is written. */
static void check_reparse(const sig_wake *w, size_t size)
{
    const sig_slice f[7] = {w->room, w->part, w->op, w->id, w->t, w->a, w->b};
    char *out = malloc(size + 7 * 24);
    CHECK(out);
    size_t n = 0;
    for (int i = 0; i < 7; i++) {
        n += (size_t)sprintf(out + n, "%zu:", f[i].len);
        memcpy(out + n, f[i].p, f[i].len);
        n += f[i].len;
    }
    sig_wake r;
    CHECK(sig_wake_parse(out, n, &r) == 0);
    const sig_slice g[7] = {r.room, r.part, r.op, r.id, r.t, r.a, r.b};
    for (int i = 0; i < 7; i++)
        CHECK(g[i].len == f[i].len && memcmp(g[i].p, f[i].p, f[i].len) == 0);
    free(out);
}

static void check_event(const sig_wake *w)
{
    sig_event e;
    int rc = sig_event_build(w->id, w->t, w->a, w->b, &e);
    if (rc < 0) {
        CHECK(rc == RTC_EPROTO);
        CHECK(!e.participant && !e.payload);
        return;
    }
    CHECK(strlen(e.id) == w->id.len && sig_valid_event_id(e.id));
    CHECK(e.ev.id == e.id && e.ev.timestamp_ms == sig_event_id_ms(e.id));
    CHECK(w->t.len == 1);
    Rtc__Signaling__V1__Event__KindCase want;
    switch (w->t.p[0]) {
    case 'j':
        want = RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_JOINED;
        CHECK(e.ev.participant_joined->participant == e.participant && e.participant);
        break;
    case 'l':
        want = RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_LEFT;
        CHECK(e.ev.participant_left->participant == e.participant && e.participant);
        CHECK(e.ev.participant_left->reason >= 0 && e.ev.participant_left->reason <= 4);
        break;
    case 's': {
        want = RTC__SIGNALING__V1__EVENT__KIND_SIGNAL;
        CHECK(strlen(e.ev.signal->from_participant_id) == w->a.len);
        CHECK(e.ev.signal->payload == e.payload && e.payload);
        /* what protobuf-c makes of these bytes is what a Signal request
         * carries: the limit checks must cope with any of it */
        const char *nego = NULL;
        char why[96];
        if (sig_payload_check(e.payload, 65536, &nego, why, sizeof(why)) == 0)
            CHECK(nego && (!strcmp(nego, "") || !strcmp(nego, "o") || !strcmp(nego, "a")));
        else
            CHECK(memchr(why, '\0', sizeof(why)) && why[0]);
        break;
    }
    case 'd':
        want = RTC__SIGNALING__V1__EVENT__KIND_DATA;
        CHECK(strlen(e.ev.data->from_participant_id) == w->a.len);
        CHECK(e.ev.data->data.data == (const uint8_t *)w->b.p && e.ev.data->data.len == w->b.len);
        break;
    case 'c':
        want = RTC__SIGNALING__V1__EVENT__KIND_ROOM_CLOSED;
        CHECK(strlen(e.ev.room_closed->reason) == w->a.len);
        break;
    case 'k':
        want = RTC__SIGNALING__V1__EVENT__KIND_KICKED;
        CHECK(strlen(e.ev.kicked->reason) == w->a.len);
        break;
    default:
        CHECK(!"built an event of an unknown kind");
        return;
    }
    CHECK(e.ev.kind_case == want);
    CHECK(e.terminal == (w->t.p[0] == 'c' || w->t.p[0] == 'k'));
    /* it is sent as is: it must pack, to the size it announced */
    size_t n = rtc__signaling__v1__event__get_packed_size(&e.ev);
    uint8_t *buf = malloc(n ? n : 1);
    CHECK(buf);
    CHECK(rtc__signaling__v1__event__pack(&e.ev, buf) == n);
    free(buf);
    sig_event_clear(&e);
    CHECK(!e.participant && !e.payload);
}

static void check_wake(const uint8_t *data, size_t size)
{
    /* an exact-size copy: ASan sees any read past the message */
    char *msg = malloc(size ? size : 1);
    CHECK(msg);
    memcpy(msg, data, size);
    sig_wake w;
    if (sig_wake_parse(msg, size, &w) == 0) {
        const sig_slice f[7] = {w.room, w.part, w.op, w.id, w.t, w.a, w.b};
        const char *end = msg;
        for (int i = 0; i < 7; i++) {
            CHECK(within(f[i], msg, size) && f[i].p > end);
            end = f[i].p + f[i].len;
        }
        CHECK(end == msg + size);
        check_reparse(&w, size);
        char room[SIG_MAX_ROOM + 1], part[SIG_MAX_ID + 1];
        if (cstr(w.room, room, sizeof(room)))
            (void)sig_valid_room(room);
        if (cstr(w.part, part, sizeof(part)))
            (void)sig_valid_id(part);
        check_event(&w);
        /* ids compare as numbers: never after itself */
        CHECK(!sig_event_id_after(w.id, "18446744073709551615-18446744073709551615"));
    }
    sig_slice nf, ni, np;
    if (sig_nego_parse(msg, size, &nf, &ni, &np) == 0)
        CHECK(within(nf, msg, size) && within(ni, msg, size) && np.p + np.len == msg + size);
    free(msg);
}

static void sha256_hex(const char *p, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    CHECK(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL) == 1 && mdlen == 32);
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool all_of(const char *s, size_t n, const char *set)
{
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(set, s[i]))
            return false;
    return true;
}

#define ID_CHARS  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#define DIGITS    "0123456789"
#define LOBBY_SID "kM1v9Q2hXw_-aB3cD4eF5g.3d2d2e4f" /* any well-formed id */

static void check_strings(const char *s)
{
    size_t n = strlen(s);

    bool room = sig_valid_room(s), id = sig_valid_id(s);
    CHECK(!room || (n >= 1 && n <= SIG_MAX_ROOM && all_of(s, n, ID_CHARS ".")));
    CHECK(!id || (n >= 1 && n <= SIG_MAX_ID && all_of(s, n, ID_CHARS)));
    CHECK(!id || room); /* every participant id is also a room id */

    if (sig_valid_event_id(s)) {
        const char *dash = strchr(s, '-');
        CHECK(dash && n <= SIG_MAX_EVENT_ID);
        size_t a = (size_t)(dash - s), b = n - a - 1;
        CHECK(a >= 1 && a <= 20 && b >= 1 && b <= 20);
        CHECK(all_of(s, a, DIGITS) && all_of(dash + 1, b, DIGITS));
    }
    CHECK(sig_event_id_ms(s) >= 0);

    if (sig_valid_text(s, SIG_MAX_REASON))
        CHECK(n <= SIG_MAX_REASON);

    char sid[SIG_SESSION_LEN + 1], digest[65];
    if (sig_resume_parse(s, sid, digest) == 0) {
        char want[65];
        CHECK(n == SIG_SESSION_LEN + 1 + 44 && s[SIG_SESSION_LEN] == '.');
        CHECK(strlen(sid) == SIG_SESSION_LEN && memcmp(sid, s, SIG_SESSION_LEN) == 0);
        sha256_hex(s + SIG_SESSION_LEN + 1, 44, want);
        CHECK(strcmp(digest, want) == 0);
        int rc = sig_session_check("lobby", sid);
        CHECK(rc == 0 || rc == RTC_EINVAL || rc == RTC_EDENIED);
    }

    int rc = sig_session_check("lobby", s);
    CHECK(rc == 0 || rc == RTC_EINVAL || rc == RTC_EDENIED);
    if (rc != RTC_EINVAL)
        CHECK(n == SIG_SESSION_LEN && s[22] == '.' && all_of(s, 22, ID_CHARS) &&
              all_of(s + 23, 8, "0123456789abcdef"));
    /* the input as a room: a well-formed session id is its or another's */
    rc = sig_session_check(s, LOBBY_SID);
    CHECK(rc == 0 || rc == RTC_EDENIED);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256 * 1024)
        return 0;
    check_wake(data, size);
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    check_strings(s);
    free(s);
    return 0;
}

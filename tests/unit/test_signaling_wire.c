/* test_signaling_wire.c — rtc-signaling's pure helpers (wire.h): id
 * validators, session ids and resume tokens, SignalPayload limits, the
 * pub/sub wake message and mailbox entry → Event.
 *
 * Inputs are what signaling.lua and signaling.proto say they are: wakes are
 * seven netstrings, mailbox entries are (id, t, a, b) with the kinds
 * j/l/s/d/c/k. Every built Event is packed and unpacked again with
 * protobuf-c, so a field left dangling or unset shows up here and not on a
 * client. Event cases share a fixture that owns the sig_event and clears
 * it, whatever the case asserted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "rtc/error.h"
#include "rtc/signaling/v1/signaling.pb-c.h"
#include "wire.h"

/* ---- helpers -------------------------------------------------------------- */

/* A slice of a literal that may hold NUL bytes. */
#define SL(lit) ((sig_slice){(lit), sizeof(lit) - 1})

static sig_slice S(const char *s)
{
    return (sig_slice){s, strlen(s)};
}

/* n copies of c, NUL-terminated; free it. */
static char *rep(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    assert_int_equal(EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL), 1);
    assert_int_equal(mdlen, 32);
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* ---- room ids ------------------------------------------------------------- */

static void test_room_accepts_charset(void **state)
{
    (void)state;
    assert_true(sig_valid_room("lobby"));
    assert_true(sig_valid_room("Room-42_b.v2"));
    assert_true(sig_valid_room("0123456789"));
    assert_true(sig_valid_room("a"));
}

static void test_room_accepts_dot(void **state)
{
    (void)state;
    /* signaling.proto: 1-64 bytes of [A-Za-z0-9._-]; '.' is one of them,
     * also alone (participant ids do not allow it: see below). */
    assert_true(sig_valid_room("."));
    assert_true(sig_valid_room(".."));
    assert_true(sig_valid_room("team.alpha"));
}

static void test_room_accepts_64_bytes(void **state)
{
    (void)state;
    char *s = rep('r', SIG_MAX_ROOM);
    assert_true(sig_valid_room(s));
    free(s);
}

static void test_room_rejects_65_bytes(void **state)
{
    (void)state;
    char *s = rep('r', SIG_MAX_ROOM + 1);
    assert_false(sig_valid_room(s));
    free(s);
}

static void test_room_rejects_empty(void **state)
{
    (void)state;
    assert_false(sig_valid_room(""));
}

static void test_room_rejects_bad_chars(void **state)
{
    (void)state;
    /* '{' '}' would break the Redis hash tag, '|' the deadline members,
     * ':' the key layout; the rest is simply not in the charset. */
    static const char *const bad[] = {
        "a b",  "a{b",         "a}b",   "a|b", "a:b", "a/b", "a+b", "a*b", "a\tb",
        "a\nb", "caf\xc3\xa9", "a\xff", " a",  "a ",  "a@b", "a=b", "a%b", "a~b",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sig_valid_room(bad[i]))
            fail_msg("room '%s' accepted", bad[i]);
}

/* ---- participant ids ------------------------------------------------------ */

static void test_id_accepts(void **state)
{
    (void)state;
    assert_true(sig_valid_id("p"));
    assert_true(sig_valid_id("AbC_09-xyz"));
    assert_true(sig_valid_id("kM1v9Q2hXw_-aB3cD4eF5g")); /* base64url, as the service makes */
    char *s = rep('p', SIG_MAX_ID);
    assert_true(sig_valid_id(s));
    free(s);
}

static void test_id_rejects_65_bytes(void **state)
{
    (void)state;
    char *s = rep('p', SIG_MAX_ID + 1);
    assert_false(sig_valid_id(s));
    free(s);
}

static void test_id_rejects_empty(void **state)
{
    (void)state;
    assert_false(sig_valid_id(""));
}

static void test_id_rejects_dot(void **state)
{
    (void)state;
    assert_false(sig_valid_id("."));
    assert_false(sig_valid_id("a.b"));
}

static void test_id_rejects_bad_chars(void **state)
{
    (void)state;
    static const char *const bad[] = {"a b", "a:b", "a|b",      "a{b",   "a+b",
                                      "a/b", "a=b", "\xc3\xa9", "a\x01", "a\x7f"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sig_valid_id(bad[i]))
            fail_msg("id '%s' accepted", bad[i]);
}

/* ---- event ids ------------------------------------------------------------ */

static void test_event_id_accepts(void **state)
{
    (void)state;
    assert_true(sig_valid_event_id("0-0"));
    assert_true(sig_valid_event_id("1700000000000-0"));
    assert_true(sig_valid_event_id("1700000000000-42"));
    assert_true(sig_valid_event_id("18446744073709551615-18446744073709551615"));
    assert_int_equal(strlen("18446744073709551615-18446744073709551615"), SIG_MAX_EVENT_ID);
}

static void test_event_id_rejects_overflow(void **state)
{
    (void)state;
    /* 2^64 in either half, and 21 digits even when the value is small. */
    assert_false(sig_valid_event_id("18446744073709551616-0"));
    assert_false(sig_valid_event_id("0-18446744073709551616"));
    assert_false(sig_valid_event_id("99999999999999999999-0"));
    assert_false(sig_valid_event_id("100000000000000000000-0"));
    assert_false(sig_valid_event_id("000000000000000000001-0"));
    assert_false(sig_valid_event_id("1-000000000000000000001"));
}

static void test_event_id_rejects_missing_half(void **state)
{
    (void)state;
    assert_false(sig_valid_event_id("1-"));
    assert_false(sig_valid_event_id("-1"));
    assert_false(sig_valid_event_id("-"));
    assert_false(sig_valid_event_id("1"));
    assert_false(sig_valid_event_id("1700000000000"));
    assert_false(sig_valid_event_id(""));
}

static void test_event_id_leading_zeros_accepted(void **state)
{
    (void)state;
    /* "decimal without sign" says nothing against leading zeros; Redis
     * reads "01-2" as 1-2, so accepting it is harmless. */
    assert_true(sig_valid_event_id("01-2"));
    assert_true(sig_valid_event_id("00-00"));
    assert_true(sig_valid_event_id("00000000000000000001-0")); /* 20 digits, small */
}

static void test_event_id_rejects_sign(void **state)
{
    (void)state;
    assert_false(sig_valid_event_id("+1-2"));
    assert_false(sig_valid_event_id("1-+2"));
    assert_false(sig_valid_event_id("-1-2"));
    assert_false(sig_valid_event_id("1--2"));
}

static void test_event_id_rejects_spaces(void **state)
{
    (void)state;
    assert_false(sig_valid_event_id(" 1-2"));
    assert_false(sig_valid_event_id("1-2 "));
    assert_false(sig_valid_event_id("1 -2"));
    assert_false(sig_valid_event_id("1- 2"));
    assert_false(sig_valid_event_id("1-2\n"));
    assert_false(sig_valid_event_id("\t1-2"));
}

static void test_event_id_rejects_trailing(void **state)
{
    (void)state;
    assert_false(sig_valid_event_id("1-2-3"));
    assert_false(sig_valid_event_id("1-2x"));
    assert_false(sig_valid_event_id("1x-2"));
    assert_false(sig_valid_event_id("0x1-2"));
    assert_false(sig_valid_event_id("1.5-2"));
}

/* ---- UTF-8 text ----------------------------------------------------------- */

static void test_text_accepts(void **state)
{
    (void)state;
    assert_true(sig_valid_text("", 0));
    assert_true(sig_valid_text("hello", 5));
    assert_true(sig_valid_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\xa5", 64));
    assert_true(sig_valid_text("\xc3\xa9", 2)); /* exactly max bytes */
}

static void test_text_rejects_over_max(void **state)
{
    (void)state;
    assert_false(sig_valid_text("hello", 4));
    /* max counts bytes, not characters */
    assert_false(sig_valid_text("\xc3\xa9", 1));
    assert_false(sig_valid_text("x", 0));
}

static void test_text_rejects_invalid_utf8(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "\xff",             /* never a UTF-8 byte */
        "a\x80",            /* lone continuation byte */
        "\xc0\xaf",         /* overlong '/' */
        "\xed\xa0\x80",     /* surrogate U+D800 */
        "\xe2\x82",         /* truncated */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xc3\x28",         /* lead byte without its continuation */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sig_valid_text(bad[i], 64))
            fail_msg("invalid UTF-8 #%zu accepted", i);
}

/* ---- session ids ---------------------------------------------------------- */

static void new_session(const char *room, char sid[SIG_SESSION_LEN + 1])
{
    memset(sid, 'Z', SIG_SESSION_LEN + 1);
    assert_int_equal(sig_session_new(room, sid), 0);
}

static void test_session_new_round_trip(void **state)
{
    (void)state;
    char sid[SIG_SESSION_LEN + 1];
    new_session("lobby", sid);
    assert_int_equal(strlen(sid), SIG_SESSION_LEN);
    assert_int_equal(sid[22], '.');
    for (size_t i = 0; i < 22; i++)
        assert_true(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                           sid[i]) != NULL);
    /* The tag is the first 4 bytes of SHA-256(room): session ids outlive a
     * pod (they are in Redis), so the tag must not change between builds. */
    char hex[65];
    sha256_hex("lobby", 5, hex);
    assert_memory_equal(sid + 23, hex, 8);
    assert_int_equal(sig_session_check("lobby", sid), 0);
}

static void test_session_other_room_denied(void **state)
{
    (void)state;
    char sid[SIG_SESSION_LEN + 1];
    new_session("lobby", sid);
    assert_int_equal(sig_session_check("lobby2", sid), RTC_EDENIED);
    assert_int_equal(sig_session_check("Lobby", sid), RTC_EDENIED);
    assert_int_equal(sig_session_check("", sid), RTC_EDENIED);
}

static void test_session_malformed(void **state)
{
    (void)state;
    char sid[SIG_SESSION_LEN + 1], m[SIG_SESSION_LEN + 8];
    new_session("lobby", sid);

    assert_int_equal(sig_session_check("lobby", ""), RTC_EINVAL);
    snprintf(m, sizeof(m), "%.30s", sid); /* one short */
    assert_int_equal(sig_session_check("lobby", m), RTC_EINVAL);
    snprintf(m, sizeof(m), "%sa", sid); /* one long */
    assert_int_equal(sig_session_check("lobby", m), RTC_EINVAL);
    snprintf(m, sizeof(m), "%s", sid); /* no '.' before the tag */
    m[22] = '-';
    assert_int_equal(sig_session_check("lobby", m), RTC_EINVAL);
    static const char bad_rand[] = {'.', '+', '/', '=', ' ', '\x80'};
    for (size_t i = 0; i < sizeof(bad_rand); i++) {
        snprintf(m, sizeof(m), "%s", sid);
        m[5] = bad_rand[i];
        assert_int_equal(sig_session_check("lobby", m), RTC_EINVAL);
    }
    static const char bad_tag[] = {'A', 'F', 'g', 'z', '-', '.'};
    for (size_t i = 0; i < sizeof(bad_tag); i++) {
        snprintf(m, sizeof(m), "%s", sid);
        m[30] = bad_tag[i];
        /* malformed wins over "another room" */
        assert_int_equal(sig_session_check("lobby", m), RTC_EINVAL);
        assert_int_equal(sig_session_check("elsewhere", m), RTC_EINVAL);
    }
}

static int cmp_sid(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_session_unique_1000(void **state)
{
    (void)state;
    enum { N = 1000 };
    char(*ids)[SIG_SESSION_LEN + 1] = calloc(N, sizeof(*ids));
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        assert_int_equal(sig_session_new("lobby", ids[i]), 0);
        assert_int_equal(sig_session_check("lobby", ids[i]), 0);
    }
    qsort(ids, N, sizeof(*ids), cmp_sid);
    for (int i = 1; i < N; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            fail_msg("duplicate session id %s", ids[i]);
    free(ids);
}

/* ---- resume tokens -------------------------------------------------------- */

#define RESUME_LEN (SIG_SESSION_LEN + 1 + 44)

static void test_resume_round_trip(void **state)
{
    (void)state;
    char sid[SIG_SESSION_LEN + 1], token[128], digest[65], sid2[SIG_SESSION_LEN + 1], digest2[65];
    new_session("lobby", sid);
    assert_int_equal(sig_resume_new(sid, token, sizeof(token), digest), 0);
    assert_int_equal(strlen(token), RESUME_LEN);
    assert_memory_equal(token, sid, SIG_SESSION_LEN);
    assert_int_equal(token[SIG_SESSION_LEN], '.');
    assert_int_equal(strlen(digest), 64);

    memset(sid2, 'Z', sizeof(sid2));
    assert_int_equal(sig_resume_parse(token, sid2, digest2), 0);
    assert_string_equal(sid2, sid);
    assert_string_equal(digest2, digest);
    assert_int_equal(sig_session_check("lobby", sid2), 0);

    /* a second token for the same session is another secret */
    char token2[128], digest3[65];
    assert_int_equal(sig_resume_new(sid, token2, sizeof(token2), digest3), 0);
    assert_string_not_equal(token2, token);
    assert_string_not_equal(digest3, digest);
}

static void test_resume_digest_is_sha256_of_secret(void **state)
{
    (void)state;
    char sid[SIG_SESSION_LEN + 1], token[128], digest[65], want[65];
    new_session("lobby", sid);
    assert_int_equal(sig_resume_new(sid, token, sizeof(token), digest), 0);
    /* Only the secret is hashed (not the session id in front of it). */
    const char *secret = token + SIG_SESSION_LEN + 1;
    assert_int_equal(strlen(secret), 44);
    sha256_hex(secret, 44, want);
    assert_string_equal(digest, want);
    for (size_t i = 0; i < 44; i++)
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", secret[i]));
}

static void test_resume_new_buffer_too_small(void **state)
{
    (void)state;
    char sid[SIG_SESSION_LEN + 1], token[RESUME_LEN + 1], digest[65];
    new_session("lobby", sid);
    assert_int_equal(sig_resume_new(sid, token, RESUME_LEN, digest), RTC_EINVAL);
    assert_int_equal(sig_resume_new(sid, token, RESUME_LEN + 1, digest), 0);
    assert_int_equal(strlen(token), RESUME_LEN);
}

static void test_resume_parse_malformed(void **state)
{
    (void)state;
    char sid[SIG_SESSION_LEN + 1], token[128], digest[65], m[160], osid[SIG_SESSION_LEN + 1],
        odig[65];
    new_session("lobby", sid);
    assert_int_equal(sig_resume_new(sid, token, sizeof(token), digest), 0);

    assert_int_equal(sig_resume_parse("", osid, odig), RTC_EINVAL);
    assert_int_equal(sig_resume_parse(sid, osid, odig), RTC_EINVAL); /* a session id alone */
    snprintf(m, sizeof(m), "%.*s", RESUME_LEN - 1, token);
    assert_int_equal(sig_resume_parse(m, osid, odig), RTC_EINVAL);
    snprintf(m, sizeof(m), "%sA", token);
    assert_int_equal(sig_resume_parse(m, osid, odig), RTC_EINVAL);
    snprintf(m, sizeof(m), "%s", token);
    m[SIG_SESSION_LEN] = '_'; /* no '.' between session and secret */
    assert_int_equal(sig_resume_parse(m, osid, odig), RTC_EINVAL);
    static const char bad[] = {'.', '+', '/', '=', ' ', '\xc3'};
    for (size_t i = 0; i < sizeof(bad); i++) {
        snprintf(m, sizeof(m), "%s", token);
        m[RESUME_LEN - 1] = bad[i]; /* in the secret */
        assert_int_equal(sig_resume_parse(m, osid, odig), RTC_EINVAL);
        snprintf(m, sizeof(m), "%s", token);
        m[3] = bad[i]; /* in the session's random part */
        assert_int_equal(sig_resume_parse(m, osid, odig), RTC_EINVAL);
    }
}

static void test_resume_parse_leaves_tag_to_session_check(void **state)
{
    (void)state;
    /* sig_resume_parse checks the shape; the room tag is for
     * sig_session_check, which must then refuse a bad one. */
    char sid[SIG_SESSION_LEN + 1], token[128], digest[65], osid[SIG_SESSION_LEN + 1], odig[65];
    new_session("lobby", sid);
    assert_int_equal(sig_resume_new(sid, token, sizeof(token), digest), 0);
    memcpy(token + 23, "zzzzzzzz", 8);
    assert_int_equal(sig_resume_parse(token, osid, odig), 0);
    assert_string_equal(odig, digest);
    assert_int_equal(sig_session_check("lobby", osid), RTC_EINVAL);
}

/* ---- SignalPayload limits ------------------------------------------------- */

#define MAX_SDP 65536 /* signaling.proto: at most 64 KiB */

typedef struct payload {
    Rtc__Signaling__V1__SignalPayload p;
    Rtc__Signaling__V1__SessionDescription d;
    Rtc__Signaling__V1__IceCandidate c;
    Rtc__Signaling__V1__EndOfCandidates eoc;
} payload;

static Rtc__Signaling__V1__SignalPayload *mk_desc(payload *x, Rtc__Signaling__V1__SdpType type,
                                                  const char *sdp)
{
    rtc__signaling__v1__signal_payload__init(&x->p);
    rtc__signaling__v1__session_description__init(&x->d);
    x->d.type = type;
    x->d.sdp = (char *)sdp;
    x->p.kind_case = RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DESCRIPTION;
    x->p.description = &x->d;
    return &x->p;
}

static Rtc__Signaling__V1__SignalPayload *mk_cand(payload *x, const char *cand, const char *mid,
                                                  int index, const char *ufrag)
{
    rtc__signaling__v1__signal_payload__init(&x->p);
    rtc__signaling__v1__ice_candidate__init(&x->c);
    x->c.candidate = (char *)cand;
    x->c.sdp_mid = (char *)mid;
    if (index >= 0) {
        x->c.mline_index_case = RTC__SIGNALING__V1__ICE_CANDIDATE__MLINE_INDEX_SDP_MLINE_INDEX;
        x->c.sdp_mline_index = (uint32_t)index;
    }
    x->c.username_fragment = (char *)ufrag;
    x->p.kind_case = RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_CANDIDATE;
    x->p.candidate = &x->c;
    return &x->p;
}

static Rtc__Signaling__V1__SignalPayload *mk_eoc(payload *x, const char *mid, const char *ufrag)
{
    rtc__signaling__v1__signal_payload__init(&x->p);
    rtc__signaling__v1__end_of_candidates__init(&x->eoc);
    x->eoc.sdp_mid = (char *)mid;
    x->eoc.username_fragment = (char *)ufrag;
    x->p.kind_case = RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_END_OF_CANDIDATES;
    x->p.end_of_candidates = &x->eoc;
    return &x->p;
}

static Rtc__Signaling__V1__SignalPayload *mk_data(payload *x, const void *data, size_t len)
{
    rtc__signaling__v1__signal_payload__init(&x->p);
    x->p.kind_case = RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DATA;
    x->p.data.data = (uint8_t *)data;
    x->p.data.len = len;
    return &x->p;
}

/* Accepted, with nego. */
static void payload_ok(const Rtc__Signaling__V1__SignalPayload *p, const char *want_nego)
{
    const char *nego = NULL;
    char why[256] = "";
    int rc = sig_payload_check(p, MAX_SDP, &nego, why, sizeof(why));
    if (rc != 0)
        fail_msg("refused: %s", why);
    assert_non_null(nego);
    assert_string_equal(nego, want_nego);
}

/* Refused, with a reason that mentions want (nego is only promised on
 * success, so it is not looked at). */
static void payload_refused(const Rtc__Signaling__V1__SignalPayload *p, const char *want)
{
    const char *nego = NULL;
    char why[256];
    memset(why, 'Z', sizeof(why));
    assert_int_equal(sig_payload_check(p, MAX_SDP, &nego, why, sizeof(why)), RTC_EINVAL);
    assert_non_null(memchr(why, '\0', sizeof(why)));
    if (!strstr(why, want))
        fail_msg("reason '%s' does not mention '%s'", why, want);
}

#define SDP_OFFER                                                                                  \
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"                        \
    "a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"                  \
    "a=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"
#define CAND "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0"

static void test_payload_null_refused(void **state)
{
    (void)state;
    payload_refused(NULL, "required");
}

static void test_payload_kind_not_set_refused(void **state)
{
    (void)state;
    Rtc__Signaling__V1__SignalPayload p = RTC__SIGNALING__V1__SIGNAL_PAYLOAD__INIT;
    payload_refused(&p, "payload is empty");
}

static void test_payload_offer(void **state)
{
    (void)state;
    payload x;
    payload_ok(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER, SDP_OFFER), "o");
}

static void test_payload_answer(void **state)
{
    (void)state;
    payload x;
    payload_ok(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ANSWER, SDP_OFFER), "a");
}

static void test_payload_pranswer(void **state)
{
    (void)state;
    payload x;
    payload_ok(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_PRANSWER, SDP_OFFER), "a");
}

static void test_payload_sdp_exactly_max(void **state)
{
    (void)state;
    payload x;
    char *sdp = rep('a', MAX_SDP);
    memcpy(sdp, "v=0\r\n", 5);
    payload_ok(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER, sdp), "o");
    free(sdp);
}

static void test_payload_sdp_max_plus_one(void **state)
{
    (void)state;
    payload x;
    char *sdp = rep('a', MAX_SDP + 1);
    memcpy(sdp, "v=0\r\n", 5);
    payload_refused(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER, sdp),
                    "65537 bytes; the limit is 65536");
    /* the limit is the configured one, not a constant */
    const char *nego;
    char why[128];
    assert_int_equal(sig_payload_check(&x.p, MAX_SDP + 1, &nego, why, sizeof(why)), 0);
    assert_int_equal(sig_payload_check(&x.p, 100, &nego, why, sizeof(why)), RTC_EINVAL);
    free(sdp);
}

static void test_payload_sdp_empty_refused(void **state)
{
    (void)state;
    payload x;
    payload_refused(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER, ""),
                    "description.sdp is required");
    payload_refused(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ANSWER, ""),
                    "description.sdp is required");
}

static void test_payload_rollback(void **state)
{
    (void)state;
    payload x;
    payload_ok(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ROLLBACK, ""), "");
}

static void test_payload_rollback_with_sdp_refused(void **state)
{
    (void)state;
    payload x;
    payload_refused(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ROLLBACK, SDP_OFFER),
                    "rollback carries no sdp");
}

static void test_payload_missing_type_refused(void **state)
{
    (void)state;
    payload x;
    payload_refused(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_UNSPECIFIED, SDP_OFFER),
                    "description.type is required");
    /* an enum value from a newer client is not one we know either */
    payload_refused(mk_desc(&x, (Rtc__Signaling__V1__SdpType)9, SDP_OFFER),
                    "description.type is required");
}

static void test_payload_sdp_invalid_utf8_refused(void **state)
{
    (void)state;
    payload x;
    payload_refused(mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER, "v=0\r\ns=\xff\r\n"),
                    "not valid UTF-8");
    payload_refused(
        mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ANSWER, "v=0\r\ns=\xed\xa0\x80\r\n"),
        "not valid UTF-8");
}

static void test_payload_candidate_with_mid(void **state)
{
    (void)state;
    payload x;
    payload_ok(mk_cand(&x, CAND, "0", -1, ""), "");
    payload_ok(mk_cand(&x, CAND, "audio", 1, "EsAw"), "");
}

static void test_payload_candidate_index_zero(void **state)
{
    (void)state;
    /* 0 is a valid m-line index: the oneof tells it from "not set" */
    payload x;
    payload_ok(mk_cand(&x, CAND, "", 0, ""), "");
}

static void test_payload_candidate_without_mid_and_index(void **state)
{
    (void)state;
    payload x;
    payload_refused(mk_cand(&x, CAND, "", -1, "EsAw"), "sdp_mid or sdp_mline_index");
}

static void test_payload_candidate_empty_refused(void **state)
{
    (void)state;
    payload x;
    payload_refused(mk_cand(&x, "", "0", 0, ""), "candidate.candidate is required");
}

static void test_payload_candidate_limit(void **state)
{
    (void)state;
    payload x;
    char *c = rep('c', SIG_MAX_CAND);
    payload_ok(mk_cand(&x, c, "0", -1, ""), "");
    free(c);
    c = rep('c', SIG_MAX_CAND + 1);
    payload_refused(mk_cand(&x, c, "0", -1, ""), "1025 bytes; the limit is 1024");
    free(c);
}

static void test_payload_candidate_invalid_utf8(void **state)
{
    (void)state;
    payload x;
    payload_refused(mk_cand(&x, "candidate:\xc0\xaf", "0", -1, ""), "candidate is not valid UTF-8");
}

static void test_payload_candidate_mid_limit(void **state)
{
    (void)state;
    payload x;
    char *mid = rep('m', SIG_MAX_MID);
    payload_ok(mk_cand(&x, CAND, mid, -1, ""), "");
    free(mid);
    mid = rep('m', SIG_MAX_MID + 1);
    payload_refused(mk_cand(&x, CAND, mid, -1, ""), "candidate.sdp_mid");
    free(mid);
    payload_refused(mk_cand(&x, CAND, "\xff", 0, ""), "candidate.sdp_mid");
}

static void test_payload_candidate_ufrag_limit(void **state)
{
    (void)state;
    payload x;
    char *u = rep('u', SIG_MAX_UFRAG);
    payload_ok(mk_cand(&x, CAND, "0", -1, u), "");
    free(u);
    u = rep('u', SIG_MAX_UFRAG + 1);
    payload_refused(mk_cand(&x, CAND, "0", -1, u), "candidate.username_fragment");
    free(u);
    payload_refused(mk_cand(&x, CAND, "0", -1, "a\x80"), "candidate.username_fragment");
}

static void test_payload_end_of_candidates(void **state)
{
    (void)state;
    payload x;
    payload_ok(mk_eoc(&x, "", ""), ""); /* every media stream, current ufrag */
    payload_ok(mk_eoc(&x, "0", "EsAw"), "");
    char *mid = rep('m', SIG_MAX_MID), *u = rep('u', SIG_MAX_UFRAG);
    payload_ok(mk_eoc(&x, mid, u), "");
    free(mid);
    free(u);
}

static void test_payload_end_of_candidates_limits(void **state)
{
    (void)state;
    payload x;
    char *mid = rep('m', SIG_MAX_MID + 1), *u = rep('u', SIG_MAX_UFRAG + 1);
    payload_refused(mk_eoc(&x, mid, ""), "end_of_candidates.sdp_mid");
    payload_refused(mk_eoc(&x, "", u), "end_of_candidates.username_fragment");
    payload_refused(mk_eoc(&x, "\xff", ""), "end_of_candidates.sdp_mid");
    payload_refused(mk_eoc(&x, "", "\xc3"), "end_of_candidates.username_fragment");
    free(mid);
    free(u);
}

static void test_payload_data_empty_refused(void **state)
{
    (void)state;
    payload x;
    payload_refused(mk_data(&x, NULL, 0), "data is empty");
}

static void test_payload_data_16k(void **state)
{
    (void)state;
    payload x;
    char *d = rep('\0', SIG_MAX_DATA); /* opaque bytes: NULs are fine */
    payload_ok(mk_data(&x, d, SIG_MAX_DATA), "");
    payload_ok(mk_data(&x, "\xff\x00\x01", 3), "");
    free(d);
}

static void test_payload_data_16k_plus_one_refused(void **state)
{
    (void)state;
    payload x;
    char *d = rep('d', SIG_MAX_DATA + 1);
    payload_refused(mk_data(&x, d, SIG_MAX_DATA + 1), "16385 bytes; the limit is 16384");
    free(d);
}

static void test_payload_why_truncated(void **state)
{
    (void)state;
    /* a short why buffer is cut, still a string */
    payload x;
    const char *nego;
    char why[8];
    memset(why, 'Z', sizeof(why));
    assert_int_equal(sig_payload_check(mk_data(&x, NULL, 0), MAX_SDP, &nego, why, sizeof(why)),
                     RTC_EINVAL);
    assert_string_equal(why, "data is");
}

/* ---- wake messages -------------------------------------------------------- */

/* The netstrings of f[0..6], as signaling.lua's publish() writes them. */
static size_t put_wake(char *out, size_t cap, const sig_slice f[7])
{
    size_t n = 0;
    for (int i = 0; i < 7; i++) {
        int k = snprintf(out + n, cap - n, "%zu:", f[i].len);
        assert_true(k > 0 && (size_t)k < cap - n);
        n += (size_t)k;
        assert_true(f[i].len <= cap - n);
        memcpy(out + n, f[i].p, f[i].len);
        n += f[i].len;
    }
    return n;
}

static void assert_slice(sig_slice s, sig_slice want)
{
    assert_int_equal(s.len, want.len);
    assert_memory_equal(s.p, want.p, want.len);
}

static void assert_wake(const sig_wake *w, const sig_slice f[7])
{
    assert_slice(w->room, f[0]);
    assert_slice(w->part, f[1]);
    assert_slice(w->op, f[2]);
    assert_slice(w->id, f[3]);
    assert_slice(w->t, f[4]);
    assert_slice(w->a, f[5]);
    assert_slice(w->b, f[6]);
}

static const sig_slice wake_fields[7] = {
    {"lobby", 5}, {"kM1v9Q2hXw_-aB3cD4eF5g", 22},
    {"e", 1},     {"1700000000001-0", 15},
    {"d", 1},     {"p-alice", 7},
    {"hello", 5},
};

static void test_wake_valid(void **state)
{
    (void)state;
    char msg[256];
    size_t n = put_wake(msg, sizeof(msg), wake_fields);
    sig_wake w;
    assert_int_equal(sig_wake_parse(msg, n, &w), 0);
    assert_wake(&w, wake_fields);
    /* slices point into msg, not into a copy */
    assert_ptr_equal(w.room.p, msg + 2);
}

static void test_wake_empty_fields(void **state)
{
    (void)state;
    /* op "x" with empty id/t/a/b, and all-empty: both well formed */
    static const char msg[] = "5:lobby4:p-aa1:x0:0:0:0:";
    sig_wake w;
    assert_int_equal(sig_wake_parse(msg, sizeof(msg) - 1, &w), 0);
    assert_slice(w.op, SL("x"));
    assert_int_equal(w.b.len, 0);
    assert_int_equal(sig_wake_parse("0:0:0:0:0:0:0:", 14, &w), 0);
    assert_int_equal(w.room.len, 0);
}

static void test_wake_empty_message(void **state)
{
    (void)state;
    sig_wake w;
    assert_int_equal(sig_wake_parse("", 0, &w), RTC_EPROTO);
}

static void test_wake_truncated(void **state)
{
    (void)state;
    char msg[256];
    size_t n = put_wake(msg, sizeof(msg), wake_fields);
    sig_wake w;
    /* every proper prefix, parsed from a buffer of exactly that size (ASan
     * sees a read past its end) */
    for (size_t i = 0; i < n; i++) {
        char *p = malloc(i ? i : 1);
        assert_non_null(p);
        memcpy(p, msg, i);
        if (sig_wake_parse(p, i, &w) != RTC_EPROTO)
            fail_msg("prefix of %zu bytes accepted", i);
        free(p);
    }
}

static void test_wake_six_fields(void **state)
{
    (void)state;
    static const char msg[] = "5:lobby4:p-aa1:e3:1-01:d1:a";
    sig_wake w;
    assert_int_equal(sig_wake_parse(msg, sizeof(msg) - 1, &w), RTC_EPROTO);
}

static void test_wake_extra_bytes(void **state)
{
    (void)state;
    char msg[256];
    size_t n = put_wake(msg, sizeof(msg), wake_fields);
    sig_wake w;
    msg[n] = 'x';
    assert_int_equal(sig_wake_parse(msg, n + 1, &w), RTC_EPROTO);
    memcpy(msg + n, "0:", 2); /* an eighth netstring */
    assert_int_equal(sig_wake_parse(msg, n + 2, &w), RTC_EPROTO);
    msg[n] = '\0'; /* a trailing NUL counted in len */
    assert_int_equal(sig_wake_parse(msg, n + 1, &w), RTC_EPROTO);
}

static void test_wake_length_too_long(void **state)
{
    (void)state;
    sig_wake w;
    /* the last field claims one byte more than there is */
    static const char m1[] = "5:lobby4:p-aa1:e3:1-01:d1:a6:hello";
    assert_int_equal(sig_wake_parse(m1, sizeof(m1) - 1, &w), RTC_EPROTO);
    /* the first field claims far more than the message */
    static const char m2[] = "999999999:lobby4:p-aa1:e3:1-01:d1:a5:hello";
    assert_int_equal(sig_wake_parse(m2, sizeof(m2) - 1, &w), RTC_EPROTO);
    /* the first field swallows the rest: then fields are missing */
    static const char m3[] = "32:lobby4:p-aa1:e3:1-01:d1:a5:hello";
    assert_int_equal(sig_wake_parse(m3, sizeof(m3) - 1, &w), RTC_EPROTO);
}

static void test_wake_ten_digit_length(void **state)
{
    (void)state;
    sig_wake w;
    static const char m10[] = "0000000005:lobby4:p-aa1:e3:1-01:d1:a5:hello";
    assert_int_equal(sig_wake_parse(m10, sizeof(m10) - 1, &w), RTC_EPROTO);
    static const char big[] = "1000000000:x0:0:0:0:0:0:";
    assert_int_equal(sig_wake_parse(big, sizeof(big) - 1, &w), RTC_EPROTO);
    /* nine digits are still a length */
    static const char m9[] = "000000005:lobby4:p-aa1:e3:1-01:d1:a5:hello";
    assert_int_equal(sig_wake_parse(m9, sizeof(m9) - 1, &w), 0);
    assert_slice(w.room, SL("lobby"));
}

static void test_wake_missing_colon(void **state)
{
    (void)state;
    sig_wake w;
    static const char m1[] = "5lobby4:p-aa1:e3:1-01:d1:a5:hello";
    assert_int_equal(sig_wake_parse(m1, sizeof(m1) - 1, &w), RTC_EPROTO);
    static const char m2[] = "5;lobby4:p-aa1:e3:1-01:d1:a5:hello";
    assert_int_equal(sig_wake_parse(m2, sizeof(m2) - 1, &w), RTC_EPROTO);
    static const char m3[] = "5:lobby4:p-aa1:e3:1-01:d1:a5"; /* ends after the digits */
    assert_int_equal(sig_wake_parse(m3, sizeof(m3) - 1, &w), RTC_EPROTO);
}

static void test_wake_bad_length_digits(void **state)
{
    (void)state;
    sig_wake w;
    static const char *const bad[] = {
        ":lobby4:p-aa1:e3:1-01:d1:a5:hello",   /* no digits */
        "-5:lobby4:p-aa1:e3:1-01:d1:a5:hello", /* sign */
        "+5:lobby4:p-aa1:e3:1-01:d1:a5:hello",  " 5:lobby4:p-aa1:e3:1-01:d1:a5:hello", /* space */
        "0x5:lobby4:p-aa1:e3:1-01:d1:a5:hello",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(sig_wake_parse(bad[i], strlen(bad[i]), &w), RTC_EPROTO);
}

static void test_wake_binary_fields(void **state)
{
    (void)state;
    /* Fields are bytes: NUL, 0xff, ':' and digits inside a field are its
     * content, never a delimiter. */
    const sig_slice f[7] = {
        SL("lobby"),
        SL("p\0x"),
        SL("e"),
        SL("1-1"),
        SL("s"),
        SL("\0\0:3:"),
        SL("\x0a\x05\x08\x01\x12\x01\x00\xff"),
    };
    char msg[256];
    size_t n = put_wake(msg, sizeof(msg), f);
    sig_wake w;
    assert_int_equal(sig_wake_parse(msg, n, &w), 0);
    assert_wake(&w, f);
}

/* ---- mailbox entries → Event ---------------------------------------------- */

static int ev_setup(void **state)
{
    sig_event *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    *state = e;
    return 0;
}

static int ev_teardown(void **state)
{
    sig_event *e = *state;
    sig_event_clear(e);
    free(e);
    return 0;
}

/* The Event packed and unpacked again; free with ..._free_unpacked. */
static Rtc__Signaling__V1__Event *repack(const sig_event *e)
{
    size_t n = rtc__signaling__v1__event__get_packed_size(&e->ev);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    assert_int_equal(rtc__signaling__v1__event__pack(&e->ev, buf), n);
    Rtc__Signaling__V1__Event *u = rtc__signaling__v1__event__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(u);
    assert_string_equal(u->id, e->ev.id);
    assert_int_equal(u->timestamp_ms, e->ev.timestamp_ms);
    assert_int_equal(u->kind_case, e->ev.kind_case);
    return u;
}

/* A Participant as signaling_service.c stores it in pinfo. */
static uint8_t alice_buf[512];

static sig_slice alice(void)
{
    Rtc__Signaling__V1__Participant p = RTC__SIGNALING__V1__PARTICIPANT__INIT;
    p.id = "kM1v9Q2hXw_-aB3cD4eF5g";
    p.identity = "alice@example.com";
    p.display_name = "Al\xc3\xaf"
                     "ce";
    p.metadata = "{\"role\":\"host\"}";
    p.joined_at_ms = 1700000000000;
    size_t n = rtc__signaling__v1__participant__get_packed_size(&p);
    assert_true(n <= sizeof(alice_buf));
    assert_int_equal(rtc__signaling__v1__participant__pack(&p, alice_buf), n);
    return (sig_slice){(const char *)alice_buf, n};
}

static void assert_alice(const Rtc__Signaling__V1__Participant *p)
{
    assert_non_null(p);
    assert_string_equal(p->id, "kM1v9Q2hXw_-aB3cD4eF5g");
    assert_string_equal(p->identity, "alice@example.com");
    assert_string_equal(p->display_name, "Al\xc3\xaf"
                                         "ce");
    assert_string_equal(p->metadata, "{\"role\":\"host\"}");
    assert_int_equal(p->joined_at_ms, 1700000000000);
}

/* A packed SignalPayload in buf. */
static sig_slice pack_payload(const Rtc__Signaling__V1__SignalPayload *p, uint8_t *buf, size_t cap)
{
    size_t n = rtc__signaling__v1__signal_payload__get_packed_size(p);
    assert_true(n <= cap);
    assert_int_equal(rtc__signaling__v1__signal_payload__pack(p, buf), n);
    return (sig_slice){(const char *)buf, n};
}

static void test_event_joined(void **state)
{
    sig_event *e = *state;
    assert_int_equal(sig_event_build(SL("1700000000001-0"), SL("j"), alice(), SL(""), e), 0);
    assert_string_equal(e->ev.id, "1700000000001-0");
    assert_int_equal(e->ev.kind_case, RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_JOINED);
    assert_false(e->terminal);
    assert_alice(e->ev.participant_joined->participant);
    Rtc__Signaling__V1__Event *u = repack(e);
    assert_alice(u->participant_joined->participant);
    rtc__signaling__v1__event__free_unpacked(u, NULL);
}

static void test_event_left_every_reason(void **state)
{
    sig_event *e = *state;
    for (char r = '0'; r <= '4'; r++) {
        sig_slice b = {&r, 1};
        assert_int_equal(sig_event_build(SL("1700000000002-3"), SL("l"), alice(), b, e), 0);
        assert_int_equal(e->ev.kind_case, RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_LEFT);
        assert_false(e->terminal);
        assert_int_equal(e->ev.participant_left->reason, r - '0');
        Rtc__Signaling__V1__Event *u = repack(e);
        assert_alice(u->participant_left->participant);
        assert_int_equal(u->participant_left->reason, r - '0');
        rtc__signaling__v1__event__free_unpacked(u, NULL);
        sig_event_clear(e);
    }
    assert_int_equal(RTC__SIGNALING__V1__LEAVE_REASON__LEAVE_REASON_ROOM_CLOSED, 4);
}

static void test_event_left_bad_reason(void **state)
{
    sig_event *e = *state;
    static const sig_slice bad[] = {{"5", 1}, {"", 0},   {"12", 2}, {"a", 1},
                                    {"/", 1}, {"-1", 2}, {"1 ", 2}, {"\0", 1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(sig_event_build(SL("1-0"), SL("l"), alice(), bad[i], e), RTC_EPROTO);
        /* e is clear: the Participant unpacked before the reason is freed */
        assert_null(e->participant);
        assert_null(e->payload);
    }
}

static void check_signal(sig_event *e, const Rtc__Signaling__V1__SignalPayload *p,
                         Rtc__Signaling__V1__Event **out)
{
    uint8_t buf[1024];
    sig_slice b = pack_payload(p, buf, sizeof(buf));
    assert_int_equal(sig_event_build(SL("1700000000003-1"), SL("s"), SL("p-bob"), b, e), 0);
    assert_int_equal(e->ev.kind_case, RTC__SIGNALING__V1__EVENT__KIND_SIGNAL);
    assert_false(e->terminal);
    assert_string_equal(e->ev.signal->from_participant_id, "p-bob");
    assert_non_null(e->ev.signal->payload);
    assert_int_equal(e->ev.signal->payload->kind_case, p->kind_case);
    *out = repack(e);
    assert_string_equal((*out)->signal->from_participant_id, "p-bob");
    assert_int_equal((*out)->signal->payload->kind_case, p->kind_case);
}

static void test_event_signal_description(void **state)
{
    sig_event *e = *state;
    payload x;
    Rtc__Signaling__V1__Event *u;
    check_signal(e, mk_desc(&x, RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER, SDP_OFFER), &u);
    assert_int_equal(u->signal->payload->description->type,
                     RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER);
    assert_string_equal(u->signal->payload->description->sdp, SDP_OFFER);
    rtc__signaling__v1__event__free_unpacked(u, NULL);
}

static void test_event_signal_candidate(void **state)
{
    sig_event *e = *state;
    payload x;
    Rtc__Signaling__V1__Event *u;
    check_signal(e, mk_cand(&x, CAND, "", 0, "EsAw"), &u);
    const Rtc__Signaling__V1__IceCandidate *c = u->signal->payload->candidate;
    assert_string_equal(c->candidate, CAND);
    assert_string_equal(c->sdp_mid, "");
    /* index 0 survives as "set" */
    assert_int_equal(c->mline_index_case,
                     RTC__SIGNALING__V1__ICE_CANDIDATE__MLINE_INDEX_SDP_MLINE_INDEX);
    assert_int_equal(c->sdp_mline_index, 0);
    assert_string_equal(c->username_fragment, "EsAw");
    rtc__signaling__v1__event__free_unpacked(u, NULL);
}

static void test_event_signal_end_of_candidates(void **state)
{
    sig_event *e = *state;
    payload x;
    Rtc__Signaling__V1__Event *u;
    check_signal(e, mk_eoc(&x, "0", ""), &u);
    assert_string_equal(u->signal->payload->end_of_candidates->sdp_mid, "0");
    rtc__signaling__v1__event__free_unpacked(u, NULL);
}

static void test_event_signal_data(void **state)
{
    sig_event *e = *state;
    payload x;
    Rtc__Signaling__V1__Event *u;
    check_signal(e, mk_data(&x, "mute\0\xff", 6), &u);
    assert_int_equal(u->signal->payload->data.len, 6);
    assert_memory_equal(u->signal->payload->data.data, "mute\0\xff", 6);
    rtc__signaling__v1__event__free_unpacked(u, NULL);
}

static void test_event_signal_from_limit(void **state)
{
    sig_event *e = *state;
    payload x;
    uint8_t buf[64];
    sig_slice b = pack_payload(mk_eoc(&x, "", ""), buf, sizeof(buf));
    char *from = rep('p', SIG_MAX_ID);
    assert_int_equal(sig_event_build(SL("1-0"), SL("s"), S(from), b, e), 0);
    assert_string_equal(e->ev.signal->from_participant_id, from);
    sig_event_clear(e);
    free(from);
    from = rep('p', SIG_MAX_ID + 1);
    assert_int_equal(sig_event_build(SL("1-0"), SL("s"), S(from), b, e), RTC_EPROTO);
    assert_null(e->payload);
    free(from);
}

static void test_event_data(void **state)
{
    sig_event *e = *state;
    static const char blob[] = "{\"mute\":true}\0\xff";
    sig_slice b = SL(blob);
    assert_int_equal(sig_event_build(SL("1700000000004-0"), SL("d"), SL("p-bob"), b, e), 0);
    assert_int_equal(e->ev.kind_case, RTC__SIGNALING__V1__EVENT__KIND_DATA);
    assert_false(e->terminal);
    assert_string_equal(e->ev.data->from_participant_id, "p-bob");
    /* the data is not copied: it points into the entry */
    assert_ptr_equal(e->ev.data->data.data, (const uint8_t *)blob);
    assert_int_equal(e->ev.data->data.len, sizeof(blob) - 1);
    Rtc__Signaling__V1__Event *u = repack(e);
    assert_int_equal(u->data->data.len, sizeof(blob) - 1);
    assert_memory_equal(u->data->data.data, blob, sizeof(blob) - 1);
    rtc__signaling__v1__event__free_unpacked(u, NULL);
}

static void test_event_data_from_service(void **state)
{
    sig_event *e = *state;
    /* SendData: a = "" (the service), b may even be empty */
    assert_int_equal(sig_event_build(SL("1-0"), SL("d"), SL(""), SL("x"), e), 0);
    assert_string_equal(e->ev.data->from_participant_id, "");
    Rtc__Signaling__V1__Event *u = repack(e);
    assert_string_equal(u->data->from_participant_id, "");
    rtc__signaling__v1__event__free_unpacked(u, NULL);
    sig_event_clear(e);
    assert_int_equal(sig_event_build(SL("1-1"), SL("d"), SL(""), SL(""), e), 0);
    assert_int_equal(e->ev.data->data.len, 0);
}

static void test_event_room_closed(void **state)
{
    sig_event *e = *state;
    assert_int_equal(sig_event_build(SL("1700000000005-0"), SL("c"), SL("empty"), SL(""), e), 0);
    assert_int_equal(e->ev.kind_case, RTC__SIGNALING__V1__EVENT__KIND_ROOM_CLOSED);
    assert_true(e->terminal);
    Rtc__Signaling__V1__Event *u = repack(e);
    assert_string_equal(u->room_closed->reason, "empty");
    rtc__signaling__v1__event__free_unpacked(u, NULL);
    sig_event_clear(e);
    /* the reason may be empty */
    assert_int_equal(sig_event_build(SL("1-0"), SL("c"), SL(""), SL(""), e), 0);
    assert_string_equal(e->ev.room_closed->reason, "");
}

static void test_event_kicked(void **state)
{
    sig_event *e = *state;
    assert_int_equal(sig_event_build(SL("1700000000006-0"), SL("k"), SL("sp\xc3\xa4m"), SL(""), e),
                     0);
    assert_int_equal(e->ev.kind_case, RTC__SIGNALING__V1__EVENT__KIND_KICKED);
    assert_true(e->terminal);
    Rtc__Signaling__V1__Event *u = repack(e);
    assert_string_equal(u->kicked->reason, "sp\xc3\xa4m");
    rtc__signaling__v1__event__free_unpacked(u, NULL);
}

static void test_event_reason_limit(void **state)
{
    sig_event *e = *state;
    char *r = rep('r', SIG_MAX_REASON);
    assert_int_equal(sig_event_build(SL("1-0"), SL("k"), S(r), SL(""), e), 0);
    assert_int_equal(strlen(e->ev.kicked->reason), SIG_MAX_REASON);
    free(r);
    r = rep('r', SIG_MAX_REASON + 1);
    assert_int_equal(sig_event_build(SL("1-0"), SL("c"), S(r), SL(""), e), RTC_EPROTO);
    free(r);
}

static void test_event_embedded_nul(void **state)
{
    sig_event *e = *state;
    /* a string field cannot carry a NUL: refused, not cut short */
    assert_int_equal(sig_event_build(SL("1-0"), SL("c"), SL("bye\0now"), SL(""), e), RTC_EPROTO);
    assert_int_equal(sig_event_build(SL("1-0"), SL("k"), SL("\0"), SL(""), e), RTC_EPROTO);
    assert_int_equal(sig_event_build(SL("1-0"), SL("d"), SL("p-bob\0"), SL("x"), e), RTC_EPROTO);
    payload x;
    uint8_t buf[64];
    sig_slice b = pack_payload(mk_eoc(&x, "", ""), buf, sizeof(buf));
    assert_int_equal(sig_event_build(SL("1-0"), SL("s"), SL("p\0bob"), b, e), RTC_EPROTO);
}

static void test_event_unknown_kind(void **state)
{
    sig_event *e = *state;
    static const sig_slice bad[] = {{"x", 1}, {"J", 1},  {"T", 1},   {"e", 1},
                                    {"", 0},  {"jj", 2}, {"j\0", 2}, {"\0", 1}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(sig_event_build(SL("1-0"), bad[i], alice(), SL("1"), e), RTC_EPROTO);
        assert_null(e->participant);
        assert_null(e->payload);
    }
}

static void test_event_undecodable_blob(void **state)
{
    sig_event *e = *state;
    const sig_slice bad[] = {
        SL("\x0a\x7f\x61\x62\x63"), /* field 1 claims 127 bytes, 3 follow */
        SL("\x28\xff"),             /* field 5 varint cut short */
        SL("\x0f"),                 /* wire type 7 does not exist */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(sig_event_build(SL("1-0"), SL("j"), bad[i], SL(""), e), RTC_EPROTO);
        assert_null(e->participant);
        assert_int_equal(sig_event_build(SL("1-0"), SL("l"), bad[i], SL("1"), e), RTC_EPROTO);
        assert_null(e->participant);
        assert_int_equal(sig_event_build(SL("1-0"), SL("s"), SL("p-bob"), bad[i], e), RTC_EPROTO);
        assert_null(e->payload);
    }
}

static void test_event_id_not_event_id(void **state)
{
    sig_event *e = *state;
    const sig_slice bad[] = {
        SL(""),
        SL("abc"),
        SL("1-"),
        SL("-1"),
        SL("1"),
        SL("1-2\0"),
        SL("1\0-2"),
        SL("+1-2"),
        SL("18446744073709551616-0"),
        SL("000000000000000000001-0000000000000000001"),  /* 21 digits */
        SL("18446744073709551615-184467440737095516150"), /* longer than any id */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (sig_event_build(bad[i], SL("d"), SL(""), SL("x"), e) != RTC_EPROTO)
            fail_msg("id #%zu accepted", i);
}

static void test_event_timestamp_from_id(void **state)
{
    sig_event *e = *state;
    assert_int_equal(sig_event_build(SL("1700000000123-7"), SL("d"), SL(""), SL("x"), e), 0);
    assert_int_equal(e->ev.timestamp_ms, 1700000000123);
    assert_int_equal(sig_event_build(SL("0-1"), SL("d"), SL(""), SL("x"), e), 0);
    assert_int_equal(e->ev.timestamp_ms, 0);
    assert_int_equal(sig_event_build(SL("9223372036854775807-0"), SL("d"), SL(""), SL("x"), e), 0);
    assert_int_equal(e->ev.timestamp_ms, INT64_MAX);
    /* 20 digits do not fit an int64 */
    assert_int_equal(sig_event_build(SL("18446744073709551615-0"), SL("d"), SL(""), SL("x"), e), 0);
    assert_int_equal(e->ev.timestamp_ms, 0);
}

static void test_event_id_ms(void **state)
{
    (void)state;
    assert_int_equal(sig_event_id_ms("1700000000000-0"), 1700000000000);
    assert_int_equal(sig_event_id_ms("42-1"), 42);
    assert_int_equal(sig_event_id_ms(""), 0);
    assert_int_equal(sig_event_id_ms("-1"), 0);
    assert_int_equal(sig_event_id_ms("1700000000000"), 0);
    assert_int_equal(sig_event_id_ms("abc-1"), 0);
}

static void test_event_from_wake(void **state)
{
    sig_event *e = *state;
    /* end to end: what signaling.lua publishes for a signal to Bob */
    payload x;
    uint8_t buf[1024];
    sig_slice b = pack_payload(mk_cand(&x, CAND, "0", 0, ""), buf, sizeof(buf));
    const sig_slice f[7] = {SL("lobby"), SL("p-bob"),   SL("e"), SL("1700000000009-0"),
                            SL("s"),     SL("p-alice"), b};
    char msg[2048];
    size_t n = put_wake(msg, sizeof(msg), f);
    sig_wake w;
    assert_int_equal(sig_wake_parse(msg, n, &w), 0);
    assert_int_equal(sig_event_build(w.id, w.t, w.a, w.b, e), 0);
    assert_string_equal(e->ev.id, "1700000000009-0");
    assert_int_equal(e->ev.timestamp_ms, 1700000000009);
    assert_string_equal(e->ev.signal->from_participant_id, "p-alice");
    assert_string_equal(e->ev.signal->payload->candidate->candidate, CAND);
}

/* An id whose ms part has 19 digits but is above INT64_MAX passes
 * sig_valid_event_id (it fits 64 unsigned bits); its time is 0, as for the
 * 20-digit case above, with no signed overflow on the way (UBSan). */
static void test_event_id_ms_beyond_int64(void **state)
{
    sig_event *e = *state;
    assert_true(sig_valid_event_id("9223372036854775808-0"));
    assert_int_equal(sig_event_id_ms("9223372036854775808-0"), 0);
    assert_int_equal(sig_event_id_ms("9999999999999999999-0"), 0);
    assert_int_equal(sig_event_build(SL("9999999999999999999-0"), SL("d"), SL(""), SL("x"), e), 0);
    assert_int_equal(e->ev.timestamp_ms, 0);
}

static void test_event_id_after(void **state)
{
    (void)state;
    assert_true(sig_event_id_after(SL("1-0"), ""));
    assert_true(sig_event_id_after(SL("2-0"), "1-5"));
    assert_true(sig_event_id_after(SL("1-6"), "1-5"));
    assert_false(sig_event_id_after(SL("1-5"), "1-5"));
    assert_false(sig_event_id_after(SL("1-4"), "1-5"));
    assert_false(sig_event_id_after(SL("0-9"), "1-0"));
    /* numbers, not text: 10 comes after 9 */
    assert_true(sig_event_id_after(SL("10-0"), "9-0"));
    assert_true(sig_event_id_after(SL("1-10"), "1-9"));
    assert_true(sig_event_id_after(SL("18446744073709551615-18446744073709551615"),
                                   "18446744073709551615-18446744073709551614"));
    /* malformed on either side: never after */
    assert_false(sig_event_id_after(SL("abc"), ""));
    assert_false(sig_event_id_after(SL("1-"), ""));
    assert_false(sig_event_id_after(SL(""), ""));
    assert_false(sig_event_id_after(SL("2-0"), "x"));
    assert_false(sig_event_id_after(SL("1-0\0"), ""));
}

static void test_nego_parse(void **state)
{
    (void)state;
    sig_slice f, i, p;
    static const char v[] = "7:p-alice15:1700000000000-0\x0a\x03\x08\x01\x12";
    assert_int_equal(sig_nego_parse(v, sizeof(v) - 1, &f, &i, &p), 0);
    assert_slice(f, SL("p-alice"));
    assert_slice(i, SL("1700000000000-0"));
    assert_slice(p, SL("\x0a\x03\x08\x01\x12"));
    assert_int_equal(sig_nego_parse("7:p-alice", 9, &f, &i, &p), RTC_EPROTO);
    assert_int_equal(sig_nego_parse("9:p-alice", 9, &f, &i, &p), RTC_EPROTO);
    assert_int_equal(sig_nego_parse("", 0, &f, &i, &p), RTC_EPROTO);
    /* an empty payload is well formed here (the caller then fails to use it) */
    assert_int_equal(sig_nego_parse("1:a3:1-0", 8, &f, &i, &p), 0);
    assert_int_equal(p.len, 0);
}

static void test_resume_new_refuses_other_ids(void **state)
{
    (void)state;
    char token[128], digest[65];
    assert_int_equal(sig_resume_new("short", token, sizeof(token), digest), RTC_EINVAL);
}

int main(void)
{
#define EV(t) cmocka_unit_test_setup_teardown(t, ev_setup, ev_teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_room_accepts_charset),
        cmocka_unit_test(test_room_accepts_dot),
        cmocka_unit_test(test_room_accepts_64_bytes),
        cmocka_unit_test(test_room_rejects_65_bytes),
        cmocka_unit_test(test_room_rejects_empty),
        cmocka_unit_test(test_room_rejects_bad_chars),
        cmocka_unit_test(test_id_accepts),
        cmocka_unit_test(test_id_rejects_65_bytes),
        cmocka_unit_test(test_id_rejects_empty),
        cmocka_unit_test(test_id_rejects_dot),
        cmocka_unit_test(test_id_rejects_bad_chars),
        cmocka_unit_test(test_event_id_accepts),
        cmocka_unit_test(test_event_id_rejects_overflow),
        cmocka_unit_test(test_event_id_rejects_missing_half),
        cmocka_unit_test(test_event_id_leading_zeros_accepted),
        cmocka_unit_test(test_event_id_rejects_sign),
        cmocka_unit_test(test_event_id_rejects_spaces),
        cmocka_unit_test(test_event_id_rejects_trailing),
        cmocka_unit_test(test_text_accepts),
        cmocka_unit_test(test_text_rejects_over_max),
        cmocka_unit_test(test_text_rejects_invalid_utf8),
        cmocka_unit_test(test_session_new_round_trip),
        cmocka_unit_test(test_session_other_room_denied),
        cmocka_unit_test(test_session_malformed),
        cmocka_unit_test(test_session_unique_1000),
        cmocka_unit_test(test_resume_round_trip),
        cmocka_unit_test(test_resume_digest_is_sha256_of_secret),
        cmocka_unit_test(test_resume_new_buffer_too_small),
        cmocka_unit_test(test_resume_parse_malformed),
        cmocka_unit_test(test_resume_parse_leaves_tag_to_session_check),
        cmocka_unit_test(test_payload_null_refused),
        cmocka_unit_test(test_payload_kind_not_set_refused),
        cmocka_unit_test(test_payload_offer),
        cmocka_unit_test(test_payload_answer),
        cmocka_unit_test(test_payload_pranswer),
        cmocka_unit_test(test_payload_sdp_exactly_max),
        cmocka_unit_test(test_payload_sdp_max_plus_one),
        cmocka_unit_test(test_payload_sdp_empty_refused),
        cmocka_unit_test(test_payload_rollback),
        cmocka_unit_test(test_payload_rollback_with_sdp_refused),
        cmocka_unit_test(test_payload_missing_type_refused),
        cmocka_unit_test(test_payload_sdp_invalid_utf8_refused),
        cmocka_unit_test(test_payload_candidate_with_mid),
        cmocka_unit_test(test_payload_candidate_index_zero),
        cmocka_unit_test(test_payload_candidate_without_mid_and_index),
        cmocka_unit_test(test_payload_candidate_empty_refused),
        cmocka_unit_test(test_payload_candidate_limit),
        cmocka_unit_test(test_payload_candidate_invalid_utf8),
        cmocka_unit_test(test_payload_candidate_mid_limit),
        cmocka_unit_test(test_payload_candidate_ufrag_limit),
        cmocka_unit_test(test_payload_end_of_candidates),
        cmocka_unit_test(test_payload_end_of_candidates_limits),
        cmocka_unit_test(test_payload_data_empty_refused),
        cmocka_unit_test(test_payload_data_16k),
        cmocka_unit_test(test_payload_data_16k_plus_one_refused),
        cmocka_unit_test(test_payload_why_truncated),
        cmocka_unit_test(test_wake_valid),
        cmocka_unit_test(test_wake_empty_fields),
        cmocka_unit_test(test_wake_empty_message),
        cmocka_unit_test(test_wake_truncated),
        cmocka_unit_test(test_wake_six_fields),
        cmocka_unit_test(test_wake_extra_bytes),
        cmocka_unit_test(test_wake_length_too_long),
        cmocka_unit_test(test_wake_ten_digit_length),
        cmocka_unit_test(test_wake_missing_colon),
        cmocka_unit_test(test_wake_bad_length_digits),
        cmocka_unit_test(test_wake_binary_fields),
        EV(test_event_joined),
        EV(test_event_left_every_reason),
        EV(test_event_left_bad_reason),
        EV(test_event_signal_description),
        EV(test_event_signal_candidate),
        EV(test_event_signal_end_of_candidates),
        EV(test_event_signal_data),
        EV(test_event_signal_from_limit),
        EV(test_event_data),
        EV(test_event_data_from_service),
        EV(test_event_room_closed),
        EV(test_event_kicked),
        EV(test_event_reason_limit),
        EV(test_event_embedded_nul),
        EV(test_event_unknown_kind),
        EV(test_event_undecodable_blob),
        EV(test_event_id_not_event_id),
        EV(test_event_timestamp_from_id),
        cmocka_unit_test(test_event_id_ms),
        EV(test_event_from_wake),
        EV(test_event_id_ms_beyond_int64),
        cmocka_unit_test(test_resume_new_refuses_other_ids),
        cmocka_unit_test(test_event_id_after),
        cmocka_unit_test(test_nego_parse),
    };
#undef EV
    return cmocka_run_group_tests_name("signaling_wire", tests, NULL, NULL);
}

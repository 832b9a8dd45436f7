/* wire.c — see wire.h. */
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "rtc/error.h"
#include "rtc/jwt.h"
#include "rtc/utf8.h"

static bool id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

bool sig_valid_room(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SIG_MAX_ROOM)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char((unsigned char)s[i]) && s[i] != '.')
            return false;
    return true;
}

bool sig_valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SIG_MAX_ID)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!id_char((unsigned char)s[i]))
            return false;
    return true;
}

/* Decimal digits that fit in uint64: at most 20 digits, and 20 only when
 * not above 18446744073709551615. Returns the count consumed, 0 if none. */
static size_t u64_digits(const char *s)
{
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    if (n == 0 || n > 20 || (n == 20 && strncmp(s, "18446744073709551615", 20) > 0))
        return 0;
    return n;
}

bool sig_valid_event_id(const char *s)
{
    size_t a = u64_digits(s);
    if (!a || s[a] != '-')
        return false;
    size_t b = u64_digits(s + a + 1);
    return b && s[a + 1 + b] == '\0';
}

bool sig_valid_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n <= max && rtc_utf8_valid(s, n);
}

/* SHA-256 with the algorithm fetched once: a one-shot SHA256() looks it up
 * in OpenSSL's provider store on every call, which showed as 6 % of a pod's
 * CPU in the relay benchmark (room_tag runs on every call). The loop thread
 * is the only user. Falls back to the one-shot form if the fetch fails. */
static void sha256(const void *data, size_t len, unsigned char md[SHA256_DIGEST_LENGTH])
{
    static EVP_MD *alg;
    static EVP_MD_CTX *ctx;
    unsigned int n = 0;
    if (!alg && (alg = EVP_MD_fetch(NULL, "SHA256", NULL)) && !(ctx = EVP_MD_CTX_new())) {
        EVP_MD_free(alg);
        alg = NULL;
    }
    if (!alg || EVP_DigestInit_ex2(ctx, alg, NULL) != 1 || EVP_DigestUpdate(ctx, data, len) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &n) != 1 || n != SHA256_DIGEST_LENGTH)
        SHA256(data, len, md);
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static void room_tag(const char *room, char out[9])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    sha256(room, strlen(room), md);
    hex(md, 4, out);
}

int sig_session_new(const char *room, char *out)
{
    char rnd[23], tag[9];
    if (rtc_jwt_new_id(rnd, sizeof(rnd)) < 0)
        return RTC_EIO;
    room_tag(room, tag);
    snprintf(out, SIG_SESSION_LEN + 1, "%s.%s", rnd, tag);
    return 0;
}

int sig_session_check(const char *room, const char *sid)
{
    if (strlen(sid) != SIG_SESSION_LEN || sid[22] != '.')
        return RTC_EINVAL;
    for (size_t i = 0; i < 22; i++)
        if (!id_char((unsigned char)sid[i]))
            return RTC_EINVAL;
    for (size_t i = 23; i < SIG_SESSION_LEN; i++)
        if (!((sid[i] >= '0' && sid[i] <= '9') || (sid[i] >= 'a' && sid[i] <= 'f')))
            return RTC_EINVAL;
    char tag[9];
    room_tag(room, tag);
    return memcmp(sid + 23, tag, 8) == 0 ? 0 : RTC_EDENIED;
}

static void digest_hex(const char *s, size_t n, char out[65])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    sha256(s, n, md);
    hex(md, sizeof(md), out);
}

int sig_resume_new(const char *session_id, char *token, size_t tokenlen, char digest[65])
{
    char a[23], b[23];
    if (strlen(session_id) != SIG_SESSION_LEN)
        return RTC_EINVAL;
    if (rtc_jwt_new_id(a, sizeof(a)) < 0 || rtc_jwt_new_id(b, sizeof(b)) < 0)
        return RTC_EIO;
    int n = snprintf(token, tokenlen, "%s.%s%s", session_id, a, b);
    if (n < 0 || (size_t)n >= tokenlen)
        return RTC_EINVAL;
    digest_hex(token + SIG_SESSION_LEN + 1, 44, digest);
    return 0;
}

int sig_resume_parse(const char *token, char *session_id, char digest[65])
{
    size_t n = strlen(token);
    if (n != SIG_SESSION_LEN + 1 + 44 || token[SIG_SESSION_LEN] != '.')
        return RTC_EINVAL;
    for (size_t i = SIG_SESSION_LEN + 1; i < n; i++)
        if (!id_char((unsigned char)token[i]))
            return RTC_EINVAL;
    memcpy(session_id, token, SIG_SESSION_LEN);
    session_id[SIG_SESSION_LEN] = '\0';
    /* The room tag is checked by the caller (sig_session_check). */
    for (size_t i = 0; i < 22; i++)
        if (!id_char((unsigned char)session_id[i]))
            return RTC_EINVAL;
    digest_hex(token + SIG_SESSION_LEN + 1, 44, digest);
    return 0;
}

#define WHY(...) (snprintf(why, whylen, __VA_ARGS__), RTC_EINVAL)

int sig_payload_check(const Rtc__Signaling__V1__SignalPayload *p, size_t max_sdp, const char **nego,
                      char *why, size_t whylen)
{
    *nego = "";
    if (!p)
        return WHY("payload is required");
    switch (p->kind_case) {
    case RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DESCRIPTION: {
        const Rtc__Signaling__V1__SessionDescription *d = p->description;
        size_t n = strlen(d->sdp);
        switch (d->type) {
        case RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_OFFER:
            *nego = "o";
            break;
        case RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ANSWER:
        case RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_PRANSWER:
            *nego = "a";
            break;
        case RTC__SIGNALING__V1__SDP_TYPE__SDP_TYPE_ROLLBACK:
            if (n)
                return WHY("a rollback carries no sdp");
            return 0;
        default:
            return WHY("description.type is required (offer, answer, pranswer or rollback)");
        }
        if (n == 0)
            return WHY("description.sdp is required");
        if (n > max_sdp)
            return WHY("description.sdp is %zu bytes; the limit is %zu", n, max_sdp);
        if (!rtc_utf8_valid(d->sdp, n))
            return WHY("description.sdp is not valid UTF-8");
        return 0;
    }
    case RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_CANDIDATE: {
        const Rtc__Signaling__V1__IceCandidate *c = p->candidate;
        size_t n = strlen(c->candidate);
        if (n == 0)
            return WHY("candidate.candidate is required");
        if (n > SIG_MAX_CAND)
            return WHY("candidate.candidate is %zu bytes; the limit is %d", n, SIG_MAX_CAND);
        if (!rtc_utf8_valid(c->candidate, n))
            return WHY("candidate.candidate is not valid UTF-8");
        if (!sig_valid_text(c->sdp_mid, SIG_MAX_MID))
            return WHY("candidate.sdp_mid: at most %d bytes of UTF-8", SIG_MAX_MID);
        if (!sig_valid_text(c->username_fragment, SIG_MAX_UFRAG))
            return WHY("candidate.username_fragment: at most %d bytes of UTF-8", SIG_MAX_UFRAG);
        if (!*c->sdp_mid &&
            c->mline_index_case != RTC__SIGNALING__V1__ICE_CANDIDATE__MLINE_INDEX_SDP_MLINE_INDEX)
            return WHY("candidate needs sdp_mid or sdp_mline_index");
        return 0;
    }
    case RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_END_OF_CANDIDATES: {
        const Rtc__Signaling__V1__EndOfCandidates *e = p->end_of_candidates;
        if (!sig_valid_text(e->sdp_mid, SIG_MAX_MID))
            return WHY("end_of_candidates.sdp_mid: at most %d bytes of UTF-8", SIG_MAX_MID);
        if (!sig_valid_text(e->username_fragment, SIG_MAX_UFRAG))
            return WHY("end_of_candidates.username_fragment: at most %d bytes of UTF-8",
                       SIG_MAX_UFRAG);
        return 0;
    }
    case RTC__SIGNALING__V1__SIGNAL_PAYLOAD__KIND_DATA:
        if (p->data.len == 0)
            return WHY("data is empty");
        if (p->data.len > SIG_MAX_DATA)
            return WHY("data is %zu bytes; the limit is %d", p->data.len, SIG_MAX_DATA);
        return 0;
    default:
        return WHY("payload is empty: set description, candidate, end_of_candidates or data");
    }
}

/* One netstring "<len>:<bytes>" at *pos. */
static int netstring(const char *msg, size_t len, size_t *pos, sig_slice *out)
{
    size_t i = *pos, n = 0, digits = 0;
    while (i < len && msg[i] >= '0' && msg[i] <= '9') {
        if (++digits > 9)
            return RTC_EPROTO;
        n = n * 10 + (size_t)(msg[i] - '0');
        i++;
    }
    if (!digits || i >= len || msg[i] != ':' || n > len - i - 1)
        return RTC_EPROTO;
    out->p = msg + i + 1;
    out->len = n;
    *pos = i + 1 + n;
    return 0;
}

int sig_wake_parse(const char *msg, size_t len, sig_wake *w)
{
    sig_slice *f[] = {&w->room, &w->part, &w->op, &w->id, &w->t, &w->a, &w->b};
    size_t pos = 0;
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
        if (netstring(msg, len, &pos, f[i]) < 0)
            return RTC_EPROTO;
    return pos == len ? 0 : RTC_EPROTO;
}

int sig_nego_parse(const char *v, size_t len, sig_slice *from, sig_slice *id, sig_slice *payload)
{
    size_t pos = 0;
    if (netstring(v, len, &pos, from) < 0 || netstring(v, len, &pos, id) < 0)
        return RTC_EPROTO;
    payload->p = v + pos;
    payload->len = len - pos;
    return 0;
}

/* "<ms>-<seq>" → two numbers. false when malformed. */
static bool id_parse(const char *s, size_t len, uint64_t *ms, uint64_t *seq)
{
    char buf[SIG_MAX_EVENT_ID + 1];
    if (len >= sizeof(buf) || memchr(s, '\0', len))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (!sig_valid_event_id(buf))
        return false;
    char *dash;
    *ms = strtoull(buf, &dash, 10);
    *seq = strtoull(dash + 1, NULL, 10);
    return true;
}

bool sig_event_id_after(sig_slice id, const char *last)
{
    uint64_t ims, iseq, lms, lseq;
    if (!id_parse(id.p, id.len, &ims, &iseq))
        return false;
    if (!*last)
        return true;
    if (!id_parse(last, strlen(last), &lms, &lseq))
        return false;
    return ims > lms || (ims == lms && iseq > lseq);
}

static bool copy_text(sig_slice s, char *out, size_t cap)
{
    if (s.len >= cap || memchr(s.p, '\0', s.len))
        return false;
    memcpy(out, s.p, s.len);
    out[s.len] = '\0';
    return true;
}

int64_t sig_event_id_ms(const char *id)
{
    uint64_t ms = 0;
    size_t i = 0;
    for (; id[i] >= '0' && id[i] <= '9' && i < 19; i++)
        ms = ms * 10 + (uint64_t)(id[i] - '0'); /* < 10^19: no overflow */
    return i && id[i] == '-' && ms <= INT64_MAX ? (int64_t)ms : 0;
}

void sig_event_clear(sig_event *e)
{
    if (e->participant)
        rtc__signaling__v1__participant__free_unpacked(e->participant, NULL);
    if (e->payload)
        rtc__signaling__v1__signal_payload__free_unpacked(e->payload, NULL);
    e->participant = NULL;
    e->payload = NULL;
}

static int leave_reason(sig_slice b, Rtc__Signaling__V1__LeaveReason *out)
{
    if (b.len != 1 || b.p[0] < '0' || b.p[0] > '4')
        return RTC_EPROTO;
    *out = (Rtc__Signaling__V1__LeaveReason)(b.p[0] - '0');
    return 0;
}

static int build(sig_slice t, sig_slice a, sig_slice b, sig_event *e)
{
    Rtc__Signaling__V1__Event *ev = &e->ev;
    if (t.len != 1)
        return RTC_EPROTO;
    switch (t.p[0]) {
    case 'j':
    case 'l':
        e->participant = rtc__signaling__v1__participant__unpack(NULL, a.len, (const uint8_t *)a.p);
        if (!e->participant)
            return RTC_EPROTO;
        if (t.p[0] == 'j') {
            rtc__signaling__v1__participant_joined_event__init(&e->joined);
            e->joined.participant = e->participant;
            ev->kind_case = RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_JOINED;
            ev->participant_joined = &e->joined;
            return 0;
        }
        rtc__signaling__v1__participant_left_event__init(&e->left);
        e->left.participant = e->participant;
        if (leave_reason(b, &e->left.reason) < 0)
            return RTC_EPROTO;
        ev->kind_case = RTC__SIGNALING__V1__EVENT__KIND_PARTICIPANT_LEFT;
        ev->participant_left = &e->left;
        return 0;
    case 's':
        rtc__signaling__v1__signal_event__init(&e->signal);
        if (!copy_text(a, e->from, sizeof(e->from)))
            return RTC_EPROTO;
        e->payload = rtc__signaling__v1__signal_payload__unpack(NULL, b.len, (const uint8_t *)b.p);
        if (!e->payload)
            return RTC_EPROTO;
        e->signal.from_participant_id = e->from;
        e->signal.payload = e->payload;
        ev->kind_case = RTC__SIGNALING__V1__EVENT__KIND_SIGNAL;
        ev->signal = &e->signal;
        return 0;
    case 'd':
        rtc__signaling__v1__data_event__init(&e->data);
        if (!copy_text(a, e->from, sizeof(e->from)))
            return RTC_EPROTO;
        e->data.from_participant_id = e->from;
        e->data.data.data = (uint8_t *)b.p;
        e->data.data.len = b.len;
        ev->kind_case = RTC__SIGNALING__V1__EVENT__KIND_DATA;
        ev->data = &e->data;
        return 0;
    case 'c':
    case 'k':
        if (!copy_text(a, e->reason, sizeof(e->reason)))
            return RTC_EPROTO;
        e->terminal = true;
        if (t.p[0] == 'c') {
            rtc__signaling__v1__room_closed_event__init(&e->closed);
            e->closed.reason = e->reason;
            ev->kind_case = RTC__SIGNALING__V1__EVENT__KIND_ROOM_CLOSED;
            ev->room_closed = &e->closed;
        } else {
            rtc__signaling__v1__kicked_event__init(&e->kicked);
            e->kicked.reason = e->reason;
            ev->kind_case = RTC__SIGNALING__V1__EVENT__KIND_KICKED;
            ev->kicked = &e->kicked;
        }
        return 0;
    default:
        return RTC_EPROTO;
    }
}

int sig_event_build(sig_slice id, sig_slice t, sig_slice a, sig_slice b, sig_event *e)
{
    memset(e, 0, sizeof(*e));
    rtc__signaling__v1__event__init(&e->ev);
    if (!copy_text(id, e->id, sizeof(e->id)) || !sig_valid_event_id(e->id))
        return RTC_EPROTO;
    e->ev.id = e->id;
    e->ev.timestamp_ms = sig_event_id_ms(e->id);
    int rc = build(t, a, b, e);
    if (rc < 0)
        sig_event_clear(e);
    return rc;
}

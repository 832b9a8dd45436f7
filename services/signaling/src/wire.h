/* wire.h — rtc-signaling's pure helpers (no I/O, fuzzed): id formats,
 * request payload checks, the pub/sub wake message and mailbox entries →
 * rtc.signaling.v1.Event. */
#ifndef RTC_SIGNALING_WIRE_H
#define RTC_SIGNALING_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rtc/signaling/v1/signaling.pb-c.h"

#define SIG_MAX_ID       64 /* participant / session ids, client_msg_id (proto) */
#define SIG_MAX_ROOM     64
#define SIG_MAX_EVENT_ID 41 /* "<20 digits>-<20 digits>" */
#define SIG_MAX_META     4096
#define SIG_MAX_DATA     16384
#define SIG_MAX_CAND     1024
#define SIG_MAX_MID      32
#define SIG_MAX_UFRAG    256
#define SIG_MAX_REASON   256
#define SIG_SESSION_LEN  31 /* 22 random base64url + '.' + 8 hex room tag */

/* Room ids: 1-64 bytes of [A-Za-z0-9._-]. */
bool sig_valid_room(const char *s);
/* Participant ids and client_msg_ids: 1-64 bytes of [A-Za-z0-9_-] (every
 * id the service makes is of that form; anything else cannot be one). */
bool sig_valid_id(const char *s);
/* Event ids: "<ms>-<seq>", both decimal without sign, fitting in 64 bits. */
bool sig_valid_event_id(const char *s);
/* UTF-8 of at most max bytes. */
bool sig_valid_text(const char *s, size_t max);

/* A new session id for room: 22 random base64url characters, '.', and an
 * 8-hex tag of the room (so a session used with another room's token is
 * told apart without Redis). out >= SIG_SESSION_LEN + 1. 0 or RTC_EIO. */
int sig_session_new(const char *room, char *out);
/* 0: well formed and of room; RTC_EINVAL: malformed; RTC_EDENIED: of
 * another room. */
int sig_session_check(const char *room, const char *session_id);

/* Resume token "<session id>.<secret>": a new one for session_id, and its
 * digest (hex SHA-256, 65 bytes) kept in Redis. */
int sig_resume_new(const char *session_id, char *token, size_t tokenlen, char digest[65]);
/* Split a presented resume token: session id (>= SIG_SESSION_LEN + 1) and
 * digest. 0 or RTC_EINVAL. */
int sig_resume_parse(const char *token, char *session_id, char digest[65]);

/* Check a SignalPayload against signaling.proto's limits; max_sdp is the
 * configured SDP limit. On success *nego is "o" (offer), "a" (answer or
 * pranswer) or "" (nothing to cache). On failure why says what is wrong.
 * 0 or RTC_EINVAL. */
int sig_payload_check(const Rtc__Signaling__V1__SignalPayload *p, size_t max_sdp, const char **nego,
                      char *why, size_t whylen);

/* A byte slice into someone else's buffer. */
typedef struct sig_slice {
    const char *p;
    size_t len;
} sig_slice;

/* The pub/sub wake message (see signaling.lua): netstrings of room,
 * participant, op, id, t, a, b. */
typedef struct sig_wake {
    sig_slice room, part, op, id, t, a, b;
} sig_wake;

/* 0 or RTC_EPROTO (anything but exactly seven well-formed netstrings). */
int sig_wake_parse(const char *msg, size_t len, sig_wake *out);

/* A cached offer/answer as rtc_signal stores it: netstrings of the sender
 * and the event id, then the SignalPayload bytes. 0 or RTC_EPROTO. */
int sig_nego_parse(const char *v, size_t len, sig_slice *from, sig_slice *id, sig_slice *payload);

/* True when event id `id` comes after `last` in a mailbox ("" = before
 * everything). A malformed id is never after anything. */
bool sig_event_id_after(sig_slice id, const char *last);

/* An Event built from a mailbox entry, with the storage it points into
 * (data still points into the entry's bytes: send before freeing them). */
typedef struct sig_event {
    Rtc__Signaling__V1__Event ev;
    Rtc__Signaling__V1__ParticipantJoinedEvent joined;
    Rtc__Signaling__V1__ParticipantLeftEvent left;
    Rtc__Signaling__V1__SignalEvent signal;
    Rtc__Signaling__V1__DataEvent data;
    Rtc__Signaling__V1__RoomClosedEvent closed;
    Rtc__Signaling__V1__KickedEvent kicked;
    Rtc__Signaling__V1__Participant *participant; /* unpacked, owned */
    Rtc__Signaling__V1__SignalPayload *payload;   /* unpacked, owned */
    char id[SIG_MAX_EVENT_ID + 1];
    char from[SIG_MAX_ID + 1];
    char reason[SIG_MAX_REASON + 1];
    bool terminal; /* kicked or room_closed: the mailbox's last event */
} sig_event;

/* Build e from a mailbox entry (id, t, a, b). 0, or RTC_EPROTO for an
 * unknown kind or fields that do not decode (e is then clear). Free with
 * sig_event_clear. */
int sig_event_build(sig_slice id, sig_slice t, sig_slice a, sig_slice b, sig_event *e);
void sig_event_clear(sig_event *e);

/* Time part of a stream id (ms), 0 when malformed. */
int64_t sig_event_id_ms(const char *id);

#endif

/* rtc/error.h — the project's error codes.
 *
 * Every function that can fail returns int: 0 on success or a negative
 * RTC_E* code; results come back through out-parameters. */
#ifndef RTC_ERROR_H
#define RTC_ERROR_H

enum {
    RTC_OK = 0,
    RTC_EINVAL = -1, /* invalid argument or input */
    RTC_ENOMEM = -2, /* allocation failed */
    RTC_EIO = -3,    /* system / socket error */
    RTC_ERANGE = -4, /* value out of range */
    RTC_EPROTO = -5, /* peer violated the protocol */
    RTC_ENOTFOUND = -6,
    RTC_EEXIST = -7,
    RTC_ECLOSED = -8,    /* object already closed / finished */
    RTC_EAGAIN = -9,     /* try again later (backpressure, not connected yet) */
    RTC_ETOOBIG = -10,   /* exceeds a configured limit */
    RTC_EHELP = -11,     /* config: --help was asked for (not an error for main) */
    RTC_ETIMEDOUT = -12, /* a deadline passed before the operation finished */
    RTC_EUNAVAIL = -13,  /* a backend (Redis, upstream) is not reachable right now */
    RTC_EDENIED = -14,   /* authentication or authorization refused */
};

/* Static string for an RTC_E* code; never NULL. */
const char *rtc_strerror(int err);

#endif

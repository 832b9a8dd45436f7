/* error.c — names for the RTC_E* codes. */
#include "rtc/error.h"

const char *rtc_strerror(int err)
{
    switch (err) {
    case RTC_OK:
        return "success";
    case RTC_EINVAL:
        return "invalid argument";
    case RTC_ENOMEM:
        return "out of memory";
    case RTC_EIO:
        return "I/O error";
    case RTC_ERANGE:
        return "value out of range";
    case RTC_EPROTO:
        return "protocol error";
    case RTC_ENOTFOUND:
        return "not found";
    case RTC_EEXIST:
        return "already exists";
    case RTC_ECLOSED:
        return "closed";
    case RTC_EAGAIN:
        return "try again";
    case RTC_ETOOBIG:
        return "too big";
    case RTC_EHELP:
        return "help requested";
    case RTC_ETIMEDOUT:
        return "timed out";
    case RTC_EUNAVAIL:
        return "unavailable";
    case RTC_EDENIED:
        return "denied";
    default:
        return "unknown error";
    }
}

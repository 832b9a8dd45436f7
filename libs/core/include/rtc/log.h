/* rtc/log.h — structured JSON logging, one object per line on stderr.
 *
 *   {"ts":"2026-11-25T19:30:00.123Z","level":"info","service":"rtc-auth",
 *    "msg":"listening","addr":"127.0.0.1:8081"}
 *
 * Fields are given as NULL-terminated key/value string pairs. Never log a
 * token or a secret. */
#ifndef RTC_LOG_H
#define RTC_LOG_H

#include <stdio.h>

typedef enum {
    RTC_LOG_DEBUG = 0,
    RTC_LOG_INFO = 1,
    RTC_LOG_WARN = 2,
    RTC_LOG_ERROR = 3,
} rtc_log_level;

/* Set the service name and the minimum level. Output defaults to stderr. */
void rtc_log_init(const char *service, rtc_log_level min_level);
void rtc_log_set_level(rtc_log_level min_level);
/* Redirect output (tests). NULL restores stderr. */
void rtc_log_set_output(FILE *out);
int rtc_log_enabled(rtc_log_level level);
/* Parse "debug"/"info"/"warn"/"error". 0 or RTC_EINVAL. */
int rtc_log_level_parse(const char *s, rtc_log_level *out);
const char *rtc_log_level_name(rtc_log_level level);

/* rtc_log(RTC_LOG_INFO, "listening", "addr", "127.0.0.1:8081", NULL);
 * Keys and values are strings; a NULL value is written as JSON null. */
void rtc_log(rtc_log_level level, const char *msg, ...) __attribute__((sentinel));

#define rtc_debug(...) rtc_log(RTC_LOG_DEBUG, __VA_ARGS__, (const char *)NULL)
#define rtc_info(...)  rtc_log(RTC_LOG_INFO, __VA_ARGS__, (const char *)NULL)
#define rtc_warn(...)  rtc_log(RTC_LOG_WARN, __VA_ARGS__, (const char *)NULL)
#define rtc_error(...) rtc_log(RTC_LOG_ERROR, __VA_ARGS__, (const char *)NULL)

#endif

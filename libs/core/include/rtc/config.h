/* rtc/config.h — configuration from flags and RTC_* environment variables.
 *
 * A binary declares a table of options; each option `name` is accepted as
 * `--name VALUE`, `--name=VALUE` and the environment variable RTC_NAME
 * (upper-cased, '-' → '_'). Flags win over the environment, the environment
 * over the default. Parsing validates types and ranges and reports the first
 * problem as one line in `err` ("--listen: expected HOST:PORT, got 'x'").
 * A flag given twice: the last wins (RTC_OPT_LIST flags accumulate). An empty environment variable
 * counts as unset. A value may start with '-' but not "--" (use --name=--x for that). */
#ifndef RTC_CONFIG_H
#define RTC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct rtc_hostport {
    char host[256]; /* literal IPv4/IPv6 address or a host name, no brackets */
    uint16_t port;
} rtc_hostport;

typedef enum {
    RTC_OPT_STRING,    /* dest: char ** (malloc'd copy, freed by rtc_config_free) */
    RTC_OPT_HOSTPORT,  /* dest: rtc_hostport * */
    RTC_OPT_INT,       /* dest: int64_t *, within [min, max] */
    RTC_OPT_BOOL,      /* dest: bool *; flag alone means true; env true/false/1/0/yes/no */
    RTC_OPT_DURATION,  /* dest: uint64_t * milliseconds; "250ms", "5s", "2m", "1h"; bare = ms */
    RTC_OPT_SIZE,      /* dest: uint64_t * bytes; "512", "64KiB", "1MiB", "1GiB"; suffixes
                        * are binary: B, k/K/Ki/KiB, M/Mi/MiB, G/Gi/GiB, T/Ti/TiB. "KB"/"MB"
                        * are refused as ambiguous (1000 or 1024?). No fractions. */
    RTC_OPT_LOG_LEVEL, /* dest: rtc_log_level * */
    RTC_OPT_LIST,      /* dest: char ** like RTC_OPT_STRING, but the flag may be repeated:
                        * the values are joined with ';' in order (the environment
                        * variable and the default are taken as they are, ';'-separated) */
} rtc_opt_type;

typedef struct rtc_option {
    const char *name; /* "listen" → --listen and RTC_LISTEN */
    rtc_opt_type type;
    const char *def;  /* default as text, parsed like user input; NULL = unset */
    const char *help; /* one line for --help */
    void *dest;
    int64_t min, max; /* RTC_OPT_INT / DURATION / SIZE bounds when max > min */
} rtc_option;

/* Parse argv and envp (NULL envp = environ) into the option table.
 * Returns 0; RTC_EHELP when --help/-h was given (caller prints usage, exits
 * 0); RTC_EINVAL with a one-line message in err for unknown flags, missing
 * values, bad values or positional arguments. */
int rtc_config_parse(const rtc_option *opts, size_t nopts, int argc, char **argv, char **envp,
                     char *err, size_t errlen);

/* Print --help text: usage, summary, each option with its env name and default. */
void rtc_config_usage(FILE *out, const char *prog, const char *summary, const rtc_option *opts,
                      size_t nopts);

/* Free strings allocated into RTC_OPT_STRING destinations. */
void rtc_config_free(const rtc_option *opts, size_t nopts);

/* What every main() does with its flags: parse argv and the environment;
 * on --help print usage (with summary) to stdout; on bad config print
 * "<prog>: <error> (see --help)" to stderr. Returns -1 when the options
 * are set and the program goes on; otherwise the exit status (0 after
 * --help, 2 for bad config), the options already freed. */
int rtc_config_main(const rtc_option *opts, size_t nopts, int argc, char **argv, const char *prog,
                    const char *summary);

/* Individual parsers, exposed for tests and other callers. 0 or RTC_EINVAL. */
int rtc_parse_hostport(const char *s, rtc_hostport *out);
int rtc_parse_duration_ms(const char *s, uint64_t *out);
int rtc_parse_size(const char *s, uint64_t *out);
int rtc_parse_bool(const char *s, bool *out);

/* "host:port", with [ ] around IPv6 literals. */
void rtc_hostport_format(const rtc_hostport *hp, char *out, size_t outlen);

#endif

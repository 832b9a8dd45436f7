/* test_config.c — flags, environment, defaults, every parser and error path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "rtc/config.h"
#include "rtc/error.h"
#include "rtc/log.h"

struct cfg {
    char *name;
    rtc_hostport listen;
    int64_t workers;
    bool dev;
    uint64_t timeout_ms;
    uint64_t max_body;
    rtc_log_level level;
    char *secret;
};

static struct cfg g;
static char errbuf[256];

#define NOPTS 8
static rtc_option opts[NOPTS];

static void init_opts(void)
{
    memset(&g, 0, sizeof(g));
    rtc_option o[NOPTS] = {
        {"name", RTC_OPT_STRING, "rtc", "service name", &g.name, 0, 0},
        {"listen", RTC_OPT_HOSTPORT, "127.0.0.1:8081", "main port", &g.listen, 0, 0},
        {"workers", RTC_OPT_INT, "4", "worker count", &g.workers, 1, 64},
        {"dev", RTC_OPT_BOOL, "false", "development mode", &g.dev, 0, 0},
        {"drain-timeout", RTC_OPT_DURATION, "5s", "drain deadline", &g.timeout_ms, 100, 60000},
        {"max-body", RTC_OPT_SIZE, "64KiB", "body limit", &g.max_body, 0, 0},
        {"log-level", RTC_OPT_LOG_LEVEL, "info", "log level", &g.level, 0, 0},
        {"secret", RTC_OPT_STRING, NULL, "no default", &g.secret, 0, 0},
    };
    memcpy(opts, o, sizeof(o));
}

static int setup(void **state)
{
    init_opts();
    errbuf[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    rtc_config_free(opts, NOPTS);
    return 0;
}

/* argv from a NULL-terminated list; argv[0] is "prog". */
static int parse(char **envp, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    argv[argc++] = "prog";
    va_start(ap, envp);
    for (char *a; (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    static char *empty_env[] = {NULL};
    return rtc_config_parse(opts, NOPTS, argc, argv, envp ? envp : empty_env, errbuf,
                            sizeof(errbuf));
}

/* ---- defaults, every type ---- */

static void test_defaults(void **state)
{
    assert_int_equal(parse(NULL, NULL), 0);
    assert_string_equal(g.name, "rtc");
    assert_string_equal(g.listen.host, "127.0.0.1");
    assert_int_equal(g.listen.port, 8081);
    assert_int_equal(g.workers, 4);
    assert_false(g.dev);
    assert_int_equal(g.timeout_ms, 5000);
    assert_int_equal(g.max_body, 65536);
    assert_int_equal(g.level, RTC_LOG_INFO);
    assert_null(g.secret); /* no default: untouched */
}

static void test_flags_every_type(void **state)
{
    assert_int_equal(parse(NULL, "--name", "auth", "--listen", "[::1]:9000", "--workers", "8",
                           "--dev", "--drain-timeout", "250ms", "--max-body", "1MiB", "--log-level",
                           "debug", "--secret", "s3", NULL),
                     0);
    assert_string_equal(g.name, "auth");
    assert_string_equal(g.listen.host, "::1");
    assert_int_equal(g.listen.port, 9000);
    assert_int_equal(g.workers, 8);
    assert_true(g.dev);
    assert_int_equal(g.timeout_ms, 250);
    assert_int_equal(g.max_body, 1048576);
    assert_int_equal(g.level, RTC_LOG_DEBUG);
    assert_string_equal(g.secret, "s3");
}

static void test_equals_form(void **state)
{
    assert_int_equal(parse(NULL, "--name=a=b", "--listen=localhost:80", "--dev=false",
                           "--workers=2", "--secret=", NULL),
                     0);
    assert_string_equal(g.name, "a=b"); /* split at the first '=' only */
    assert_string_equal(g.listen.host, "localhost");
    assert_int_equal(g.listen.port, 80);
    assert_false(g.dev);
    assert_int_equal(g.workers, 2);
    assert_string_equal(g.secret, "");
}

static void test_bool_flag_does_not_take_next_arg(void **state)
{
    assert_int_equal(parse(NULL, "--dev", "false", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "unexpected argument 'false'");
}

static void test_last_flag_wins(void **state)
{
    assert_int_equal(
        parse(NULL, "--workers", "2", "--workers=3", "--name", "x", "--name", "y", NULL), 0);
    assert_int_equal(g.workers, 3);
    assert_string_equal(g.name, "y");
}

/* RTC_OPT_LIST: a repeated flag accumulates in order; the environment and
 * the default are taken whole; a flag replaces both. */
static void test_list_flag_accumulates(void **state)
{
    opts[7].type = RTC_OPT_LIST;
    assert_int_equal(parse(NULL, "--secret", "a=1,2", "--secret=b=3", "--secret", "c", NULL), 0);
    assert_string_equal(g.secret, "a=1,2;b=3;c");
    rtc_config_free(opts, NOPTS);
    char *env[] = {"RTC_SECRET=x;y", NULL};
    assert_int_equal(parse(env, NULL), 0);
    assert_string_equal(g.secret, "x;y");
    rtc_config_free(opts, NOPTS);
    assert_int_equal(parse(env, "--secret", "z", NULL), 0);
    assert_string_equal(g.secret, "z");
    rtc_config_free(opts, NOPTS);
    opts[7].def = "d1;d2";
    assert_int_equal(parse(NULL, NULL), 0);
    assert_string_equal(g.secret, "d1;d2");
}

/* rtc_config_main: -1 to go on, 0 after --help, 2 for bad config. */
static void test_config_main(void **state)
{
    char *help[] = {"prog", "--help", NULL};
    assert_int_equal(rtc_config_main(opts, NOPTS, 2, help, "prog", "a test"), 0);
    char *bad[] = {"prog", "--no-such-flag", NULL};
    assert_int_equal(rtc_config_main(opts, NOPTS, 2, bad, "prog", "a test"), 2);
    char *ok[] = {"prog", "--workers", "7", NULL};
    assert_int_equal(rtc_config_main(opts, NOPTS, 3, ok, "prog", "a test"), -1);
    assert_int_equal(g.workers, 7);
}

static void test_negative_value_is_a_value(void **state)
{
    opts[2].min = -10;
    assert_int_equal(parse(NULL, "--workers", "-5", NULL), 0);
    assert_int_equal(g.workers, -5);
}

/* ---- environment ---- */

static void test_env_used(void **state)
{
    char *env[] = {"PATH=/bin",           "RTC_NAME=from-env",
                   "RTC_LOG_LEVEL=error", "RTC_DRAIN_TIMEOUT=1m",
                   "RTC_DEV=yes",         NULL};
    assert_int_equal(parse(env, NULL), 0);
    assert_string_equal(g.name, "from-env");
    assert_int_equal(g.level, RTC_LOG_ERROR); /* "log-level" → RTC_LOG_LEVEL */
    assert_int_equal(g.timeout_ms, 60000);
    assert_true(g.dev);
}

static void test_flag_beats_env_beats_default(void **state)
{
    char *env[] = {"RTC_NAME=env", "RTC_WORKERS=7", NULL};
    assert_int_equal(parse(env, "--name", "flag", NULL), 0);
    assert_string_equal(g.name, "flag");
    assert_int_equal(g.workers, 7);
    assert_int_equal(g.listen.port, 8081);
}

static void test_env_prefix_not_confused(void **state)
{
    /* RTC_NAMESPACE must not be read as RTC_NAME. */
    char *env[] = {"RTC_NAMESPACE=x", "RTC_NAME_=y", NULL};
    assert_int_equal(parse(env, NULL), 0);
    assert_string_equal(g.name, "rtc");
}

static void test_empty_env_is_unset(void **state)
{
    char *env[] = {"RTC_LISTEN=", NULL};
    assert_int_equal(parse(env, NULL), 0);
    assert_int_equal(g.listen.port, 8081);
}

static void test_bad_env_names_variable(void **state)
{
    char *env[] = {"RTC_LISTEN=abc", NULL};
    assert_int_equal(parse(env, NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "RTC_LISTEN: expected HOST:PORT, got 'abc'");
}

static void test_null_envp_uses_environ(void **state)
{
    char *argv[] = {"prog", NULL};
    setenv("RTC_WORKERS", "9", 1);
    assert_int_equal(rtc_config_parse(opts, NOPTS, 1, argv, NULL, errbuf, sizeof(errbuf)), 0);
    unsetenv("RTC_WORKERS");
    assert_int_equal(g.workers, 9);
}

/* ---- help ---- */

static void test_help_long(void **state)
{
    assert_int_equal(parse(NULL, "--help", NULL), RTC_EHELP);
}

static void test_help_short(void **state)
{
    assert_int_equal(parse(NULL, "-h", NULL), RTC_EHELP);
}

static void test_help_wins_over_errors(void **state)
{
    assert_int_equal(parse(NULL, "--bogus", "--help", NULL), RTC_EHELP);
    assert_null(g.name); /* nothing was applied */
}

/* ---- error paths, one each ---- */

static void test_err_unknown_flag(void **state)
{
    assert_int_equal(parse(NULL, "--bogus", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "unknown flag '--bogus'");
}

static void test_err_unknown_flag_hides_value(void **state)
{
    assert_int_equal(parse(NULL, "--pasword=hunter2", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "unknown flag '--pasword'");
    assert_null(strstr(errbuf, "hunter2"));
}

static void test_err_unknown_short_flag(void **state)
{
    assert_int_equal(parse(NULL, "-x", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "unknown flag '-x'");
}

static void test_err_missing_value_at_end(void **state)
{
    assert_int_equal(parse(NULL, "--listen", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--listen: missing value");
}

static void test_err_missing_value_before_flag(void **state)
{
    assert_int_equal(parse(NULL, "--listen", "--dev", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--listen: missing value");
}

static void test_err_positional(void **state)
{
    assert_int_equal(parse(NULL, "extra", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "unexpected argument 'extra'");
}

static void test_err_positional_after_double_dash(void **state)
{
    assert_int_equal(parse(NULL, "--", NULL), 0);
    assert_int_equal(parse(NULL, "--", "--dev", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "unexpected argument '--dev'");
}

static void test_err_bad_hostport_flag(void **state)
{
    assert_int_equal(parse(NULL, "--listen", "abc", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--listen: expected HOST:PORT, got 'abc'");
}

static void test_err_bad_int(void **state)
{
    assert_int_equal(parse(NULL, "--workers", "12abc", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--workers: expected an integer, got '12abc'");
}

static void test_err_int_out_of_range(void **state)
{
    assert_int_equal(parse(NULL, "--workers", "65", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--workers: '65' is out of range [1, 64]");
    assert_int_equal(parse(NULL, "--workers", "0", NULL), RTC_EINVAL);
}

static void test_err_int_overflow(void **state)
{
    opts[2].min = opts[2].max = 0; /* unbounded: still must fit int64 */
    assert_int_equal(parse(NULL, "--workers", "99999999999999999999", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--workers: '99999999999999999999' is out of range");
}

static void test_err_bad_bool(void **state)
{
    assert_int_equal(parse(NULL, "--dev=maybe", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--dev: expected true or false, got 'maybe'");
}

static void test_err_bad_duration(void **state)
{
    assert_int_equal(parse(NULL, "--drain-timeout", "5 s", NULL), RTC_EINVAL);
    assert_string_equal(errbuf,
                        "--drain-timeout: expected a duration like 250ms, 5s, 2m or 1h, got '5 s'");
}

static void test_err_duration_out_of_range(void **state)
{
    assert_int_equal(parse(NULL, "--drain-timeout", "2m", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--drain-timeout: '2m' is out of range [100ms, 60000ms]");
}

static void test_err_bad_size(void **state)
{
    assert_int_equal(parse(NULL, "--max-body", "1KB", NULL), RTC_EINVAL);
    assert_string_equal(errbuf,
                        "--max-body: expected a size like 512, 64KiB, 1MiB or 1GiB, got '1KB'");
}

static void test_err_size_out_of_range(void **state)
{
    opts[5].min = 1;
    opts[5].max = 1024;
    assert_int_equal(parse(NULL, "--max-body", "2KiB", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--max-body: '2KiB' is out of range [1 bytes, 1024 bytes]");
}

static void test_err_bad_log_level(void **state)
{
    assert_int_equal(parse(NULL, "--log-level", "loud", NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--log-level: expected debug, info, warn or error, got 'loud'");
}

static void test_err_bad_default(void **state)
{
    opts[1].def = "nope";
    assert_int_equal(parse(NULL, NULL), RTC_EINVAL);
    assert_string_equal(errbuf, "--listen (default): expected HOST:PORT, got 'nope'");
}

static void test_err_value_sanitised_in_message(void **state)
{
    assert_int_equal(parse(NULL, "--listen", "a\nb", NULL), RTC_EINVAL);
    assert_null(strchr(errbuf, '\n')); /* always one line */
}

static void test_err_frees_strings(void **state)
{
    /* name is applied before the bad workers value: it must not leak or stay set. */
    assert_int_equal(parse(NULL, "--name", "x", "--workers", "0", NULL), RTC_EINVAL);
    assert_null(g.name);
}

static void test_err_null_errbuf(void **state)
{
    char *argv[] = {"prog", "--bogus", NULL};
    char *env[] = {NULL};
    assert_int_equal(rtc_config_parse(opts, NOPTS, 2, argv, env, NULL, 0), RTC_EINVAL);
}

static void test_err_bad_table(void **state)
{
    rtc_option bad[] = {{"Bad Name", RTC_OPT_BOOL, NULL, "", &g.dev, 0, 0}};
    char *argv[] = {"prog", NULL};
    char *env[] = {NULL};
    assert_int_equal(rtc_config_parse(bad, 1, 1, argv, env, errbuf, sizeof(errbuf)), RTC_EINVAL);
}

/* ---- free ---- */

static void test_free_resets(void **state)
{
    assert_int_equal(parse(NULL, "--secret", "x", NULL), 0);
    assert_non_null(g.name);
    rtc_config_free(opts, NOPTS);
    assert_null(g.name);
    assert_null(g.secret);
    rtc_config_free(opts, NOPTS); /* twice is harmless */
}

/* ---- individual parsers ---- */

static void test_parse_hostport_valid(void **state)
{
    rtc_hostport hp;
    char s[300];
    assert_int_equal(rtc_parse_hostport("127.0.0.1:8081", &hp), 0);
    assert_string_equal(hp.host, "127.0.0.1");
    assert_int_equal(hp.port, 8081);
    assert_int_equal(rtc_parse_hostport("[::1]:8081", &hp), 0);
    assert_string_equal(hp.host, "::1");
    rtc_hostport_format(&hp, s, sizeof(s));
    assert_string_equal(s, "[::1]:8081");
    assert_int_equal(rtc_parse_hostport("localhost:80", &hp), 0);
    rtc_hostport_format(&hp, s, sizeof(s));
    assert_string_equal(s, "localhost:80");
    assert_int_equal(rtc_parse_hostport("0.0.0.0:0", &hp), 0);
    assert_int_equal(hp.port, 0);
    assert_int_equal(rtc_parse_hostport("redis-0.redis.svc_x:65535", &hp), 0);
    assert_int_equal(hp.port, 65535);
    assert_int_equal(rtc_parse_hostport("[fe80::1:2]:1", &hp), 0);
    assert_string_equal(hp.host, "fe80::1:2");
}

static void test_parse_hostport_invalid(void **state)
{
    static const char *const bad[] = {
        "",           "abc",         ":80",          "host:",
        "host:65536", "host:80x",    "host: 80",     "host:-1",
        "host:+80",   "[::1]8081",   "::1:80",       "[]:80",
        "[zz]:80",    "[::1]",       "[::1:80",      "1.2.3.400:80",
        "ho st:80",   "host:123456", "[::1]:80junk", "a/b:1",
    };
    rtc_hostport hp;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (rtc_parse_hostport(bad[i], &hp) != RTC_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
    char longhost[400];
    memset(longhost, 'a', 300);
    strcpy(longhost + 300, ":80");
    assert_int_equal(rtc_parse_hostport(longhost, &hp), RTC_EINVAL);
    assert_int_equal(rtc_parse_hostport(NULL, &hp), RTC_EINVAL);
}

static void test_parse_duration(void **state)
{
    uint64_t v;
    assert_int_equal(rtc_parse_duration_ms("250ms", &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(rtc_parse_duration_ms("5s", &v), 0);
    assert_int_equal(v, 5000);
    assert_int_equal(rtc_parse_duration_ms("2m", &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(rtc_parse_duration_ms("1h", &v), 0);
    assert_int_equal(v, 3600000);
    assert_int_equal(rtc_parse_duration_ms("100", &v), 0);
    assert_int_equal(v, 100);
    assert_int_equal(rtc_parse_duration_ms("0", &v), 0);
    assert_int_equal(v, 0);
    static const char *const bad[] = {"",
                                      "s",
                                      "5x",
                                      "-1s",
                                      "1.5s",
                                      "5 s",
                                      " 5s",
                                      "5S",
                                      "99999999999999999999",
                                      "9999999999999999h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (rtc_parse_duration_ms(bad[i], &v) != RTC_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
}

static void test_parse_size(void **state)
{
    uint64_t v;
    assert_int_equal(rtc_parse_size("512", &v), 0);
    assert_int_equal(v, 512);
    assert_int_equal(rtc_parse_size("64KiB", &v), 0);
    assert_int_equal(v, 65536);
    assert_int_equal(rtc_parse_size("1MiB", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(rtc_parse_size("1GiB", &v), 0);
    assert_int_equal(v, 1073741824);
    assert_int_equal(rtc_parse_size("4k", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(rtc_parse_size("2M", &v), 0);
    assert_int_equal(v, 2097152);
    assert_int_equal(rtc_parse_size("3G", &v), 0);
    assert_int_equal(v, 3221225472ull);
    assert_int_equal(rtc_parse_size("10B", &v), 0);
    assert_int_equal(v, 10);
    static const char *const bad[] = {"",   "KiB",   "1KB",  "1MB",           "1.5MiB",
                                      "-1", "1 KiB", "1kib", "99999999999TiB"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (rtc_parse_size(bad[i], &v) != RTC_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
}

static void test_parse_bool(void **state)
{
    static const char *const yes[] = {"true", "TRUE", "1", "yes", "on"};
    static const char *const no[] = {"false", "False", "0", "no", "off"};
    bool b;
    for (size_t i = 0; i < 5; i++) {
        b = false;
        assert_int_equal(rtc_parse_bool(yes[i], &b), 0);
        assert_true(b);
        assert_int_equal(rtc_parse_bool(no[i], &b), 0);
        assert_false(b);
    }
    assert_int_equal(rtc_parse_bool("", &b), RTC_EINVAL);
    assert_int_equal(rtc_parse_bool("2", &b), RTC_EINVAL);
    assert_int_equal(rtc_parse_bool("truee", &b), RTC_EINVAL);
}

/* ---- usage ---- */

static void test_usage(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    rtc_config_usage(f, "rtc-auth", "Issues tokens.", opts, NOPTS);
    fclose(f);
    assert_true(strncmp(text, "Usage: rtc-auth [OPTIONS]\n", 26) == 0);
    assert_non_null(strstr(text, "\nIssues tokens.\n"));
    assert_non_null(strstr(text, "  --listen HOST:PORT"));
    assert_non_null(strstr(text, "main port (env RTC_LISTEN, default 127.0.0.1:8081)\n"));
    assert_non_null(strstr(text, "  --dev "));
    assert_non_null(strstr(text, "(env RTC_DRAIN_TIMEOUT, default 5s)"));
    assert_non_null(strstr(text, "no default (env RTC_SECRET)\n"));
    assert_non_null(strstr(text, "-h, --help"));
    /* Help columns line up. */
    assert_int_equal(strstr(text, "service name") - strstr(text, "  --name "),
                     strstr(text, "main port") - strstr(text, "  --listen "));
    free(text);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_flags_every_type),
        T(test_equals_form),
        T(test_bool_flag_does_not_take_next_arg),
        T(test_last_flag_wins),
        T(test_negative_value_is_a_value),
        T(test_env_used),
        T(test_flag_beats_env_beats_default),
        T(test_env_prefix_not_confused),
        T(test_empty_env_is_unset),
        T(test_bad_env_names_variable),
        T(test_null_envp_uses_environ),
        T(test_help_long),
        T(test_help_short),
        T(test_help_wins_over_errors),
        T(test_err_unknown_flag),
        T(test_err_unknown_flag_hides_value),
        T(test_err_unknown_short_flag),
        T(test_err_missing_value_at_end),
        T(test_err_missing_value_before_flag),
        T(test_err_positional),
        T(test_err_positional_after_double_dash),
        T(test_err_bad_hostport_flag),
        T(test_err_bad_int),
        T(test_err_int_out_of_range),
        T(test_err_int_overflow),
        T(test_err_bad_bool),
        T(test_err_bad_duration),
        T(test_err_duration_out_of_range),
        T(test_err_bad_size),
        T(test_err_size_out_of_range),
        T(test_err_bad_log_level),
        T(test_err_bad_default),
        T(test_err_value_sanitised_in_message),
        T(test_err_frees_strings),
        T(test_err_null_errbuf),
        T(test_err_bad_table),
        T(test_free_resets),
        cmocka_unit_test_setup_teardown(test_list_flag_accumulates, setup, teardown),
        cmocka_unit_test(test_parse_hostport_valid),
        cmocka_unit_test(test_parse_hostport_invalid),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_config_main),
        T(test_usage),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}

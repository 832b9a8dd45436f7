/* config.c — options from flags, RTC_* environment variables and defaults.
 *
 * Parsing happens in two steps so that a bad command line changes nothing:
 * first argv is scanned and the raw text of each option is recorded (the
 * last occurrence wins, as with most Unix tools), then every option is
 * resolved flag → environment → default and converted. The first problem is
 * reported as one line naming where the bad value came from, because an
 * operator reading a crash-looping pod's log needs to know whether to fix
 * the manifest's args or its env. */
#include "rtc/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rtc/error.h"
#include "rtc/log.h"

extern char **environ;

#define OPT_NAME_MAX 100

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A user value quoted into an error message: bounded, one line. */
static void quote_value(const char *v, char *out, size_t outlen)
{
    size_t i = 0, n = 0;
    for (; v[i] && n + 4 < outlen && i < 64; i++) {
        unsigned char c = (unsigned char)v[i];
        out[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (v[i] && n + 4 < outlen) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
}

static bool name_ok(const char *name)
{
    if (!name || !name[0] || strlen(name) > OPT_NAME_MAX)
        return false;
    for (const char *p = name; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' || *p == '_'))
            return false;
    return true;
}

static void env_name(const char *name, char *out, size_t outlen)
{
    size_t n = (size_t)snprintf(out, outlen, "RTC_");
    for (const char *p = name; *p && n + 1 < outlen; p++)
        out[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

static const char *env_lookup(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

/* ---- individual parsers ---- */

static bool all_digits(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static bool hostname_ok(const char *h, size_t n)
{
    bool numeric = true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (!(isalnum(c) || c == '-' || c == '.' || c == '_'))
            return false;
        if (!(isdigit(c) || c == '.'))
            numeric = false;
    }
    if (numeric) { /* looks like IPv4: must be one ("1.2.3.400" is a typo, not a name) */
        char tmp[INET_ADDRSTRLEN];
        struct in_addr a;
        if (n >= sizeof(tmp))
            return false;
        memcpy(tmp, h, n);
        tmp[n] = '\0';
        return inet_pton(AF_INET, tmp, &a) == 1;
    }
    return true;
}

int rtc_parse_hostport(const char *s, rtc_hostport *out)
{
    if (!s)
        return RTC_EINVAL;
    const char *host, *colon;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return RTC_EINVAL;
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
        char tmp[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        if (hlen == 0 || hlen >= sizeof(tmp))
            return RTC_EINVAL;
        memcpy(tmp, host, hlen);
        tmp[hlen] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return RTC_EINVAL;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return RTC_EINVAL;
        host = s;
        hlen = (size_t)(colon - s);
        /* An unbracketed IPv6 literal is ambiguous ("::1:80"): refuse it. */
        if (hlen == 0 || memchr(host, ':', hlen) || !hostname_ok(host, hlen))
            return RTC_EINVAL;
    }
    if (hlen >= sizeof(out->host))
        return RTC_EINVAL;
    const char *port = colon + 1;
    size_t plen = strlen(port);
    if (plen > 5 || !all_digits(port, plen))
        return RTC_EINVAL;
    unsigned long p = strtoul(port, NULL, 10);
    if (p > 65535)
        return RTC_EINVAL;
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->port = (uint16_t)p;
    return 0;
}

void rtc_hostport_format(const rtc_hostport *hp, char *out, size_t outlen)
{
    if (strchr(hp->host, ':'))
        snprintf(out, outlen, "[%s]:%u", hp->host, (unsigned)hp->port);
    else
        snprintf(out, outlen, "%s:%u", hp->host, (unsigned)hp->port);
}

/* Leading decimal digits into *v with overflow check; returns the suffix. */
static const char *parse_u64_prefix(const char *s, uint64_t *v)
{
    uint64_t n = 0;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return NULL;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10)
            return NULL;
        n = n * 10 + d;
    }
    *v = n;
    return p;
}

struct unit {
    const char *suffix;
    uint64_t mult;
};

static int scaled(const char *s, const struct unit *units, size_t nunits, uint64_t *out)
{
    uint64_t n;
    const char *suf = s ? parse_u64_prefix(s, &n) : NULL;
    if (!suf)
        return RTC_EINVAL;
    for (size_t i = 0; i < nunits; i++) {
        if (strcmp(suf, units[i].suffix) != 0)
            continue;
        if (n != 0 && units[i].mult > UINT64_MAX / n)
            return RTC_EINVAL;
        *out = n * units[i].mult;
        return 0;
    }
    return RTC_EINVAL;
}

int rtc_parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct unit units[] = {
        {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000},
    };
    return scaled(s, units, sizeof(units) / sizeof(units[0]), out);
}

int rtc_parse_size(const char *s, uint64_t *out)
{
    /* Binary multiples only. "KB"/"MB" are refused rather than guessed:
     * half the world reads them as 1000, the other half as 1024. */
    static const struct unit units[] = {
        {"", 1},           {"B", 1},           {"k", 1ull << 10},
        {"K", 1ull << 10}, {"Ki", 1ull << 10}, {"KiB", 1ull << 10},
        {"M", 1ull << 20}, {"Mi", 1ull << 20}, {"MiB", 1ull << 20},
        {"G", 1ull << 30}, {"Gi", 1ull << 30}, {"GiB", 1ull << 30},
        {"T", 1ull << 40}, {"Ti", 1ull << 40}, {"TiB", 1ull << 40},
    };
    return scaled(s, units, sizeof(units) / sizeof(units[0]), out);
}

int rtc_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    if (!s)
        return RTC_EINVAL;
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return RTC_EINVAL;
}

/* RTC_EINVAL: not an integer; RTC_ERANGE: does not fit int64. */
static int parse_int(const char *s, int64_t *out)
{
    char c = s[0];
    if (!(isdigit((unsigned char)c) || ((c == '-' || c == '+') && isdigit((unsigned char)s[1]))))
        return RTC_EINVAL;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end)
        return RTC_EINVAL;
    if (errno == ERANGE)
        return RTC_ERANGE;
    *out = v;
    return 0;
}

/* ---- the option table ---- */

static const char *metavar(rtc_opt_type t)
{
    switch (t) {
    case RTC_OPT_HOSTPORT:
        return "HOST:PORT";
    case RTC_OPT_INT:
        return "N";
    case RTC_OPT_BOOL:
        return NULL;
    case RTC_OPT_DURATION:
        return "DURATION";
    case RTC_OPT_SIZE:
        return "SIZE";
    case RTC_OPT_LOG_LEVEL:
        return "LEVEL";
    case RTC_OPT_STRING:
    case RTC_OPT_LIST:
    default:
        return "VALUE";
    }
}

static const char *expected(rtc_opt_type t)
{
    switch (t) {
    case RTC_OPT_HOSTPORT:
        return "HOST:PORT";
    case RTC_OPT_INT:
        return "an integer";
    case RTC_OPT_BOOL:
        return "true or false";
    case RTC_OPT_DURATION:
        return "a duration like 250ms, 5s, 2m or 1h";
    case RTC_OPT_SIZE:
        return "a size like 512, 64KiB, 1MiB or 1GiB";
    case RTC_OPT_LOG_LEVEL:
        return "debug, info, warn or error";
    case RTC_OPT_STRING:
    case RTC_OPT_LIST:
    default:
        return "a string";
    }
}

/* Convert val for option o and store it; src names where val came from. */
static int apply(const rtc_option *o, const char *val, const char *src, char *err, size_t errlen)
{
    char q[80];
    quote_value(val, q, sizeof(q));
    bool ranged = o->max > o->min;
    int rc;

    switch (o->type) {
    case RTC_OPT_STRING:
    case RTC_OPT_LIST: {
        char *copy = strdup(val);
        if (!copy) {
            set_err(err, errlen, "%s: out of memory", src);
            return RTC_ENOMEM;
        }
        *(char **)o->dest = copy;
        return 0;
    }
    case RTC_OPT_HOSTPORT: {
        rtc_hostport hp;
        if (rtc_parse_hostport(val, &hp) < 0)
            goto bad;
        *(rtc_hostport *)o->dest = hp;
        return 0;
    }
    case RTC_OPT_INT: {
        int64_t v;
        rc = parse_int(val, &v);
        if (rc == RTC_EINVAL)
            goto bad;
        if (rc == RTC_ERANGE || (ranged && (v < o->min || v > o->max))) {
            if (ranged)
                set_err(err, errlen, "%s: '%s' is out of range [%lld, %lld]", src, q,
                        (long long)o->min, (long long)o->max);
            else
                set_err(err, errlen, "%s: '%s' is out of range", src, q);
            return RTC_EINVAL;
        }
        *(int64_t *)o->dest = v;
        return 0;
    }
    case RTC_OPT_BOOL: {
        bool b;
        if (rtc_parse_bool(val, &b) < 0)
            goto bad;
        *(bool *)o->dest = b;
        return 0;
    }
    case RTC_OPT_DURATION:
    case RTC_OPT_SIZE: {
        uint64_t v;
        rc = o->type == RTC_OPT_DURATION ? rtc_parse_duration_ms(val, &v) : rtc_parse_size(val, &v);
        if (rc < 0)
            goto bad;
        uint64_t lo = o->min > 0 ? (uint64_t)o->min : 0;
        uint64_t hi = o->max > 0 ? (uint64_t)o->max : 0;
        if (ranged && (v < lo || v > hi)) {
            const char *unit = o->type == RTC_OPT_DURATION ? "ms" : " bytes";
            set_err(err, errlen, "%s: '%s' is out of range [%llu%s, %llu%s]", src, q,
                    (unsigned long long)lo, unit, (unsigned long long)hi, unit);
            return RTC_EINVAL;
        }
        *(uint64_t *)o->dest = v;
        return 0;
    }
    case RTC_OPT_LOG_LEVEL: {
        rtc_log_level l;
        if (rtc_log_level_parse(val, &l) < 0)
            goto bad;
        *(rtc_log_level *)o->dest = l;
        return 0;
    }
    }
    set_err(err, errlen, "%s: unknown option type", src);
    return RTC_EINVAL;
bad:
    set_err(err, errlen, "%s: expected %s, got '%s'", src, expected(o->type), q);
    return RTC_EINVAL;
}

static const rtc_option *find_opt(const rtc_option *opts, size_t nopts, const char *name,
                                  size_t len)
{
    for (size_t i = 0; i < nopts; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

int rtc_config_parse(const rtc_option *opts, size_t nopts, int argc, char **argv, char **envp,
                     char *err, size_t errlen)
{
    const char **flagval = NULL;
    char **joined = NULL; /* RTC_OPT_LIST: the repeated flag's values so far */
    bool *allocated = NULL;
    bool help = false, flags_done = false;
    int rc = 0;

    if (err && errlen)
        err[0] = '\0';
    if (!envp)
        envp = environ;
    for (size_t i = 0; i < nopts; i++) {
        if (!name_ok(opts[i].name) || !opts[i].dest) {
            set_err(err, errlen, "option table: bad entry %zu", i);
            return RTC_EINVAL;
        }
    }
    flagval = calloc(nopts ? nopts : 1, sizeof(*flagval));
    allocated = calloc(nopts ? nopts : 1, sizeof(*allocated));
    joined = calloc(nopts ? nopts : 1, sizeof(*joined));
    if (!flagval || !allocated || !joined) {
        set_err(err, errlen, "out of memory");
        rc = RTC_ENOMEM;
        goto out;
    }

    /* Step 1: scan argv. Keep going after an error so --help anywhere wins. */
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!flags_done && (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)) {
            help = true;
            continue;
        }
        if (!flags_done && strcmp(arg, "--") == 0) {
            flags_done = true;
            continue;
        }
        char q[80];
        quote_value(arg, q, sizeof(q));
        if (flags_done || arg[0] != '-' || arg[1] == '\0') {
            if (rc == 0)
                set_err(err, errlen, "unexpected argument '%s'", q);
            rc = RTC_EINVAL;
            continue;
        }
        const char *name = arg[1] == '-' ? arg + 2 : NULL;
        const char *eq = name ? strchr(name, '=') : NULL;
        size_t nlen = name ? (eq ? (size_t)(eq - name) : strlen(name)) : 0;
        const rtc_option *o = name ? find_opt(opts, nopts, name, nlen) : NULL;
        if (!o) {
            if (rc == 0) {
                if (eq) /* do not echo a value that may be a secret */
                    q[(size_t)(eq - arg) < sizeof(q) ? (size_t)(eq - arg) : sizeof(q) - 1] = '\0';
                set_err(err, errlen, "unknown flag '%s'", q);
            }
            rc = RTC_EINVAL;
            continue;
        }
        const char *val;
        if (eq)
            val = eq + 1;
        else if (o->type == RTC_OPT_BOOL)
            val = "true";
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            val = argv[++i]; /* a value may start with '-' ("-5"), not with "--" */
        else {
            if (rc == 0)
                set_err(err, errlen, "--%s: missing value", o->name);
            rc = RTC_EINVAL;
            continue;
        }
        size_t k = (size_t)(o - opts);
        if (o->type == RTC_OPT_LIST && joined[k]) {
            size_t a = strlen(joined[k]), b = strlen(val);
            char *j = realloc(joined[k], a + b + 2);
            if (!j) {
                set_err(err, errlen, "out of memory");
                rc = RTC_ENOMEM;
                goto out;
            }
            j[a] = ';';
            memcpy(j + a + 1, val, b + 1);
            joined[k] = j;
            val = j;
        } else if (o->type == RTC_OPT_LIST) {
            if (!(joined[k] = strdup(val))) {
                set_err(err, errlen, "out of memory");
                rc = RTC_ENOMEM;
                goto out;
            }
            val = joined[k];
        }
        flagval[k] = val;
    }
    if (help) {
        rc = RTC_EHELP;
        goto out;
    }
    if (rc < 0)
        goto out;

    /* Step 2: resolve and convert, flag → env → default. */
    for (size_t i = 0; i < nopts && rc == 0; i++) {
        const rtc_option *o = &opts[i];
        char src[OPT_NAME_MAX + 32], ename[OPT_NAME_MAX + 8];
        const char *val = flagval[i];
        env_name(o->name, ename, sizeof(ename));
        if (val) {
            snprintf(src, sizeof(src), "--%s", o->name);
        } else if ((val = env_lookup(envp, ename)) && val[0]) {
            /* An empty variable counts as unset: compose files and k8s
             * manifests often declare RTC_X= to mean "not configured". */
            snprintf(src, sizeof(src), "%s", ename);
        } else if ((val = o->def)) {
            snprintf(src, sizeof(src), "--%s (default)", o->name);
        } else {
            continue;
        }
        rc = apply(o, val, src, err, errlen);
        if (rc == 0 && (o->type == RTC_OPT_STRING || o->type == RTC_OPT_LIST))
            allocated[i] = true;
    }
    if (rc < 0) {
        /* Leave no half-parsed strings behind. */
        for (size_t i = 0; i < nopts; i++) {
            if (allocated[i]) {
                free(*(char **)opts[i].dest);
                *(char **)opts[i].dest = NULL;
            }
        }
        if (rc != RTC_ENOMEM)
            rc = RTC_EINVAL;
    }
out:
    if (joined)
        for (size_t i = 0; i < nopts; i++)
            free(joined[i]);
    free(joined);
    free(flagval);
    free(allocated);
    return rc;
}

int rtc_config_main(const rtc_option *opts, size_t nopts, int argc, char **argv, const char *prog,
                    const char *summary)
{
    char err[512];
    int rc = rtc_config_parse(opts, nopts, argc, argv, NULL, err, sizeof(err));
    if (rc == 0)
        return -1;
    if (rc == RTC_EHELP)
        rtc_config_usage(stdout, prog, summary, opts, nopts);
    else
        fprintf(stderr, "%s: %s (see --help)\n", prog, err);
    rtc_config_free(opts, nopts);
    return rc == RTC_EHELP ? 0 : 2;
}

void rtc_config_usage(FILE *out, const char *prog, const char *summary, const rtc_option *opts,
                      size_t nopts)
{
    char left[OPT_NAME_MAX + 32], ename[OPT_NAME_MAX + 8];
    int width = (int)strlen("-h, --help");
    for (size_t i = 0; i < nopts; i++) {
        const char *mv = metavar(opts[i].type);
        int w = snprintf(left, sizeof(left), "--%s%s%s", opts[i].name, mv ? " " : "", mv ? mv : "");
        if (w > width)
            width = w;
    }
    fprintf(out, "Usage: %s [OPTIONS]\n", prog ? prog : "prog");
    if (summary && summary[0])
        fprintf(out, "\n%s\n", summary);
    fprintf(out, "\nOptions:\n");
    for (size_t i = 0; i < nopts; i++) {
        const rtc_option *o = &opts[i];
        const char *mv = metavar(o->type);
        snprintf(left, sizeof(left), "--%s%s%s", o->name, mv ? " " : "", mv ? mv : "");
        env_name(o->name, ename, sizeof(ename));
        fprintf(out, "  %-*s  %s (env %s", width, left, o->help ? o->help : "", ename);
        if (o->def)
            fprintf(out, ", default %s", o->def[0] ? o->def : "\"\"");
        fprintf(out, ")\n");
    }
    fprintf(out, "  %-*s  show this help and exit\n", width, "-h, --help");
}

void rtc_config_free(const rtc_option *opts, size_t nopts)
{
    for (size_t i = 0; i < nopts; i++) {
        if ((opts[i].type == RTC_OPT_STRING || opts[i].type == RTC_OPT_LIST) && opts[i].dest) {
            free(*(char **)opts[i].dest);
            *(char **)opts[i].dest = NULL;
        }
    }
}

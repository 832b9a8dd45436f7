/* The bridge's routing policy: which gRPC methods browsers may call, on
 * which upstream, with or without a token, and which streams resume.
 * Parsed once from flags; read-only afterwards. See rtc/bridge_conn.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/bridge_conn.h"

#define MAX_UPSTREAMS 32

typedef struct upstream {
    char *service;
    char *targets;
} upstream;

struct rtc_bridge_routes {
    upstream up[MAX_UPSTREAMS];
    size_t nup;
    rtc_bridge_route *routes; /* in the order exposed (a dozen: scanned) */
    size_t n;
    char **strings; /* resume field names, owned */
    size_t nstrings;
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return RTC_EINVAL;
}

/* Split s at sep into trimmed, non-empty items; fn(item) for each. */
typedef int (*item_fn)(rtc_bridge_routes *r, const rtc_pbjson *pj, char *item, char *err,
                       size_t errlen);
static int each_item(rtc_bridge_routes *r, const rtc_pbjson *pj, const char *s, char sep,
                     item_fn fn, char *err, size_t errlen)
{
    if (!s)
        return 0;
    char *copy = strdup(s);
    if (!copy)
        return RTC_ENOMEM;
    int rc = 0;
    char *save = NULL, seps[2] = {sep, '\0'};
    for (char *it = strtok_r(copy, seps, &save); it && rc == 0; it = strtok_r(NULL, seps, &save)) {
        while (*it == ' ')
            it++;
        size_t l = strlen(it);
        while (l && it[l - 1] == ' ')
            it[--l] = '\0';
        if (l)
            rc = fn(r, pj, it, err, errlen);
    }
    free(copy);
    return rc;
}

static bool service_known(const rtc_pbjson *pj, const char *svc)
{
    for (size_t i = 0; i < rtc_pbjson_method_count(pj); i++)
        if (strcmp(rtc_pbjson_method_at(pj, i)->service, svc) == 0)
            return true;
    return false;
}

static int add_upstream(rtc_bridge_routes *r, const rtc_pbjson *pj, char *item, char *err,
                        size_t errlen)
{
    char *eq = strchr(item, '=');
    if (!eq || eq == item || !eq[1])
        return fail(err, errlen, "--upstream: expected SERVICE=HOST:PORT[,…], got '%s'", item);
    *eq = '\0';
    if (!service_known(pj, item))
        return fail(err, errlen, "--upstream: unknown service '%s'", item);
    for (size_t i = 0; i < r->nup; i++)
        if (strcmp(r->up[i].service, item) == 0)
            return fail(err, errlen, "--upstream: service '%s' given twice", item);
    if (r->nup == MAX_UPSTREAMS)
        return fail(err, errlen, "--upstream: more than %d services", MAX_UPSTREAMS);
    upstream *u = &r->up[r->nup];
    if (!(u->service = strdup(item)) || !(u->targets = strdup(eq + 1))) {
        free(u->service);
        return RTC_ENOMEM;
    }
    r->nup++;
    return 0;
}

static int upstream_of(const rtc_bridge_routes *r, const char *svc)
{
    for (size_t i = 0; i < r->nup; i++)
        if (strcmp(r->up[i].service, svc) == 0)
            return (int)i;
    return -1;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static rtc_bridge_route *find_mut(const rtc_bridge_routes *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->routes[i].method->name, name) == 0)
            return &r->routes[i];
    return NULL;
}

static int expose_one(rtc_bridge_routes *r, const rtc_pbjson_method *m, char *err, size_t errlen)
{
    if (find_mut(r, m->name))
        return 0;
    if (ends_with(m->service, "Admin"))
        return fail(err, errlen, "--expose: %s is an admin service: never exposed to browsers",
                    m->service);
    if (m->client_streaming)
        return fail(err, errlen, "--expose: %s is client-streaming: not supported", m->name);
    int u = upstream_of(r, m->service);
    if (u < 0)
        return fail(err, errlen, "--expose: no --upstream for %s (needed by %s)", m->service,
                    m->name);
    rtc_bridge_route *nr = realloc(r->routes, (r->n + 1) * sizeof(*nr));
    if (!nr)
        return RTC_ENOMEM;
    r->routes = nr;
    r->routes[r->n++] = (rtc_bridge_route){.method = m, .upstream = u};
    return 0;
}

static int add_expose(rtc_bridge_routes *r, const rtc_pbjson *pj, char *item, char *err,
                      size_t errlen)
{
    size_t l = strlen(item);
    if (l > 2 && strcmp(item + l - 2, "/*") == 0) {
        item[l - 2] = '\0';
        if (!service_known(pj, item))
            return fail(err, errlen, "--expose: unknown service '%s'", item);
        for (size_t i = 0; i < rtc_pbjson_method_count(pj); i++) {
            const rtc_pbjson_method *m = rtc_pbjson_method_at(pj, i);
            int rc;
            if (strcmp(m->service, item) == 0 && (rc = expose_one(r, m, err, errlen)) < 0)
                return rc;
        }
        return 0;
    }
    const rtc_pbjson_method *m = rtc_pbjson_method_find(pj, item);
    if (!m)
        return fail(err, errlen,
                    "--expose: unknown method '%s' (expected Service/Method or "
                    "Service/*)",
                    item);
    return expose_one(r, m, err, errlen);
}

static int add_public(rtc_bridge_routes *r, const rtc_pbjson *pj, char *item, char *err,
                      size_t errlen)
{
    (void)pj;
    rtc_bridge_route *rt = find_mut(r, item);
    if (!rt)
        return fail(err, errlen, "--public: '%s' is not an exposed method", item);
    rt->is_public = true;
    return 0;
}

static const ProtobufCFieldDescriptor *
json_field(const rtc_pbjson *pj, const ProtobufCMessageDescriptor *d, const char *name)
{
    for (unsigned i = 0; i < d->n_fields; i++) {
        const char *jn = rtc_pbjson_json_name(pj, d, &d->fields[i]);
        if (jn && strcmp(jn, name) == 0)
            return &d->fields[i];
    }
    return NULL;
}

static char *keep(rtc_bridge_routes *r, const char *s)
{
    char **ns = realloc(r->strings, (r->nstrings + 1) * sizeof(*ns));
    if (!ns)
        return NULL;
    r->strings = ns;
    char *c = strdup(s);
    if (c)
        r->strings[r->nstrings++] = c;
    return c;
}

static int add_resume(rtc_bridge_routes *r, const rtc_pbjson *pj, char *item, char *err,
                      size_t errlen)
{
    char *eq = strchr(item, '=');
    char *colon = eq ? strchr(eq + 1, ':') : NULL;
    if (!eq || !colon || colon == eq + 1 || !colon[1])
        return fail(err, errlen, "--resume: expected Service/Method=reqField:respField, got '%s'",
                    item);
    *eq = '\0';
    *colon = '\0';
    rtc_bridge_route *rt = find_mut(r, item);
    if (!rt)
        return fail(err, errlen, "--resume: '%s' is not an exposed method", item);
    if (!rt->method->server_streaming)
        return fail(err, errlen, "--resume: %s is not server-streaming", item);
    const ProtobufCFieldDescriptor *fq = json_field(pj, rt->method->input, eq + 1);
    const ProtobufCFieldDescriptor *fr = json_field(pj, rt->method->output, colon + 1);
    if (!fq || fq->type != PROTOBUF_C_TYPE_STRING || fq->label == PROTOBUF_C_LABEL_REPEATED)
        return fail(err, errlen, "--resume: %s has no string field '%s'", rt->method->input->name,
                    eq + 1);
    if (!fr || fr->type != PROTOBUF_C_TYPE_STRING || fr->label == PROTOBUF_C_LABEL_REPEATED)
        return fail(err, errlen, "--resume: %s has no string field '%s'", rt->method->output->name,
                    colon + 1);
    if (!(rt->resume_req = keep(r, eq + 1)) || !(rt->resume_resp = keep(r, colon + 1)))
        return RTC_ENOMEM;
    rt->resume_resp_field = fr;
    return 0;
}

int rtc_bridge_routes_new(const rtc_pbjson *pj, const char *upstreams, const char *expose,
                          const char *pub, const char *resume, rtc_bridge_routes **out, char *err,
                          size_t errlen)
{
    rtc_bridge_routes *r = calloc(1, sizeof(*r));
    if (!r)
        return RTC_ENOMEM;
    int rc;
    if ((rc = each_item(r, pj, upstreams, ';', add_upstream, err, errlen)) < 0 ||
        (rc = each_item(r, pj, expose, ',', add_expose, err, errlen)) < 0 ||
        (rc = each_item(r, pj, pub, ',', add_public, err, errlen)) < 0 ||
        (rc = each_item(r, pj, resume, ',', add_resume, err, errlen)) < 0) {
        rtc_bridge_routes_free(r);
        return rc;
    }
    if (r->n == 0) {
        rtc_bridge_routes_free(r);
        return fail(err, errlen, "--expose: no method exposed");
    }
    *out = r;
    return 0;
}

void rtc_bridge_routes_free(rtc_bridge_routes *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nup; i++) {
        free(r->up[i].service);
        free(r->up[i].targets);
    }
    for (size_t i = 0; i < r->nstrings; i++)
        free(r->strings[i]);
    free(r->strings);
    free(r->routes);
    free(r);
}

const rtc_bridge_route *rtc_bridge_routes_find(const rtc_bridge_routes *r, const char *name)
{
    return find_mut(r, name);
}

size_t rtc_bridge_routes_upstream_count(const rtc_bridge_routes *r)
{
    return r->nup;
}

void rtc_bridge_routes_upstream(const rtc_bridge_routes *r, size_t i, const char **service,
                                const char **targets)
{
    *service = r->up[i].service;
    *targets = r->up[i].targets;
}

size_t rtc_bridge_routes_count(const rtc_bridge_routes *r)
{
    return r->n;
}

const rtc_bridge_route *rtc_bridge_routes_at(const rtc_bridge_routes *r, size_t i)
{
    return &r->routes[i];
}

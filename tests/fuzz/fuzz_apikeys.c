/* fuzz_apikeys.c — libFuzzer target for the API key parsers: the key file
 * text (--api-keys-file / RTC_API_KEYS) and the `authorization: Basic`
 * header checked on every internal call. The first byte picks the mode;
 * the header mode checks against a fixed key set: whatever it accepts must
 * name the one known key. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtc/authn.h"
#include "rtc/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static rtc_apikeys *fixed;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    char *s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    if (data[0] & 1) {
        rtc_apikeys *k = NULL;
        char err[256];
        int rc = rtc_apikeys_parse(s, &k, err, sizeof(err));
        if (rc == 0) {
            (void)rtc_apikeys_check(
                k, "Basic YmFja2VuZDpzM2NyZXQtczNjcmV0LXMzY3JldA==", RTC_APIKEY_ISSUE, NULL);
            rtc_apikeys_free(k);
        } else if (rc != RTC_EINVAL || !memchr(err, '\0', sizeof(err))) {
            abort();
        }
    } else {
        if (!fixed) {
            char err[128];
            if (rtc_apikeys_parse("backend s3cret-s3cret-s3cret issue", &fixed, err, sizeof(err)) <
                0)
                abort();
        }
        char id[65] = "";
        rtc_authn_result r = rtc_apikeys_check(fixed, s, RTC_APIKEY_ISSUE, id);
        if (r == RTC_AUTHN_OK && strcmp(id, "backend") != 0)
            abort();
        const char *tok;
        size_t n;
        if (rtc_authn_bearer(s, &tok, &n) && (n == 0 || tok + n > s + size - 1))
            abort();
    }
    free(s);
    return 0;
}

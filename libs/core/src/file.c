/* file.c — reading small configuration files (keys, secrets, API keys). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "rtc/core.h"

int rtc_read_file(const char *path, size_t max, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return RTC_EIO;
    char *buf = malloc(max + 1);
    if (!buf) {
        fclose(f);
        return RTC_ENOMEM;
    }
    size_t n = fread(buf, 1, max + 1, f);
    int saved = errno;
    bool err = ferror(f);
    fclose(f);
    if (err || n > max) {
        free(buf);
        errno = saved;
        return err ? RTC_EIO : RTC_ETOOBIG;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

/* See h2out.h. */
#include "h2out.h"

int rtc_h2_collect(nghttp2_session *h2, rtc_buf *out, size_t max)
{
    while (out->len < max) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(h2, &data);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return 0;
        if (rtc_buf_append(out, data, (size_t)n) < 0)
            return NGHTTP2_ERR_NOMEM;
    }
    return 0;
}

/* gRPC length-prefixed message framing: 1-byte compressed flag, 4-byte
 * big-endian length, then the message. HTTP/2 DATA frames split these at
 * arbitrary points, so the deframer keeps a partial header and body. The
 * length is checked against the limit as soon as the header is complete, so
 * an oversized message is refused before any of it is buffered. */
#include <string.h>

#include "rtc/grpc.h"

void rtc_grpc_frame_header(uint8_t out[RTC_GRPC_FRAME_HEADER_LEN], bool compressed, uint32_t len)
{
    out[0] = compressed ? 1 : 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

void rtc_grpc_deframer_init(rtc_grpc_deframer *d, size_t max_message)
{
    memset(d, 0, sizeof(*d));
    d->max_message = max_message;
}

int rtc_grpc_deframer_feed(rtc_grpc_deframer *d, const uint8_t *data, size_t len,
                           rtc_grpc_message_fn fn, void *ud)
{
    while (len > 0) {
        if (d->hdr_len < RTC_GRPC_FRAME_HEADER_LEN) {
            size_t take = RTC_GRPC_FRAME_HEADER_LEN - d->hdr_len;
            if (take > len)
                take = len;
            memcpy(d->hdr + d->hdr_len, data, take);
            d->hdr_len += take;
            data += take;
            len -= take;
            if (d->hdr_len < RTC_GRPC_FRAME_HEADER_LEN)
                return 0;
            if (d->hdr[0] > 1)
                return RTC_EPROTO;
            d->body_len = (uint32_t)d->hdr[1] << 24 | (uint32_t)d->hdr[2] << 16 |
                          (uint32_t)d->hdr[3] << 8 | (uint32_t)d->hdr[4];
            if (d->body_len > d->max_message)
                return RTC_ETOOBIG;
            rtc_buf_reset(&d->body);
        }
        size_t want = d->body_len - d->body.len;
        bool compressed = d->hdr[0] == 1;
        if (d->body.len == 0 && len >= want) {
            /* Whole message inside this chunk: hand it over without copying. */
            d->hdr_len = 0;
            int rc = fn(ud, data, want, compressed);
            if (rc < 0)
                return rc;
            data += want;
            len -= want;
            continue;
        }
        size_t take = want < len ? want : len;
        if (rtc_buf_append(&d->body, data, take) < 0)
            return RTC_ENOMEM;
        data += take;
        len -= take;
        if (d->body.len == d->body_len) {
            d->hdr_len = 0;
            int rc = fn(ud, d->body.data, d->body.len, compressed);
            rtc_buf_reset(&d->body);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

bool rtc_grpc_deframer_idle(const rtc_grpc_deframer *d)
{
    return d->hdr_len == 0;
}

void rtc_grpc_deframer_free(rtc_grpc_deframer *d)
{
    rtc_buf_free(&d->body);
    d->hdr_len = 0;
    d->body_len = 0;
}

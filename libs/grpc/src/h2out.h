/* Output side of an nghttp2 session, shared by the gRPC server and client
 * (private to libs/grpc). */
#ifndef RTC_GRPC_H2OUT_H
#define RTC_GRPC_H2OUT_H

#include <nghttp2/nghttp2.h>

#include "rtc/buf.h"

/* Append what the session wants to send to out until it has nothing more
 * or out holds at least max bytes. Returns 0, or the negative nghttp2
 * error code (NGHTTP2_ERR_NOMEM when out cannot grow). */
int rtc_h2_collect(nghttp2_session *h2, rtc_buf *out, size_t max);

#endif

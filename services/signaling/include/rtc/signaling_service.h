/* rtc/signaling_service.h — rtc.signaling.v1.Signaling and SignalingAdmin
 * (see services/signaling/README.md), as hooks for rtc_service_main. */
#ifndef RTC_SIGNALING_SERVICE_H
#define RTC_SIGNALING_SERVICE_H

#include <stddef.h>
#include "rtc/config.h"
#include "rtc/service.h"

/* The service's own flags (--redis, --auth, --session-ttl, …). */
const rtc_option *rtc_signaling_options(size_t *n);
/* Connect Redis (and its pub/sub), the token verifier and rtc-auth, and
 * register every RPC. Bad configuration → RTC_EINVAL (logged). */
int rtc_signaling_service_setup(rtc_service *svc, void *ud);
/* Stop the sweeper and stream refreshes. */
void rtc_signaling_service_drain(rtc_service *svc, void *ud);
/* End open streams and close every connection. */
void rtc_signaling_service_cleanup(rtc_service *svc, void *ud);

#endif

/* rtc/signaling_service.h — rtc.signaling.v1.Signaling and SignalingAdmin. */
#ifndef RTC_SIGNALING_SERVICE_H
#define RTC_SIGNALING_SERVICE_H

#include "rtc/service.h"

/* Declare both services on the process's gRPC server. RPCs not written
 * yet answer UNIMPLEMENTED. */
int rtc_signaling_service_setup(rtc_service *svc, void *ud);

#endif

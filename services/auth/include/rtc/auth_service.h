/* rtc/auth_service.h — the rtc.auth.v1.Auth service (rtc-auth). */
#ifndef RTC_AUTH_SERVICE_H
#define RTC_AUTH_SERVICE_H

#include "rtc/service.h"

/* Declare rtc.auth.v1.Auth on the process's gRPC server. RPCs not
 * written yet answer UNIMPLEMENTED. */
int rtc_auth_service_setup(rtc_service *svc, void *ud);

#endif

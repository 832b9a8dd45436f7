/* rtc/auth_service.h — the rtc.auth.v1.Auth service (rtc-auth): access
 * tokens, API keys, revocation, TURN credentials. See
 * services/auth/README.md for who may call what. */
#ifndef RTC_AUTH_SERVICE_H
#define RTC_AUTH_SERVICE_H

#include "rtc/service.h"

/* The service's own flags (added to the common ones). */
const rtc_option *rtc_auth_options(size_t *n);

/* Load keys, API keys and the TURN secret, connect to Redis, and register
 * every Auth RPC. Negative on bad configuration (logged). */
int rtc_auth_service_setup(rtc_service *svc, void *ud);

/* Release what setup made (also runs once the service has drained). */
void rtc_auth_service_cleanup(rtc_service *svc, void *ud);

#endif

/* rtc.auth.v1.Auth. The RPCs arrive with the auth issue; until then the
 * service is declared so every method answers UNIMPLEMENTED by name and
 * health reports the service. */
#include "rtc/auth/v1/auth.pb-c.h"
#include "rtc/auth_service.h"

int rtc_auth_service_setup(rtc_service *svc, void *ud)
{
    (void)ud;
    return rtc_grpc_server_add_service(rtc_service_grpc(svc), &rtc__auth__v1__auth__descriptor);
}

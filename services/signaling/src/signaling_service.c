/* rtc.signaling.v1.Signaling and SignalingAdmin. The RPCs arrive with the
 * signaling issue; until then both services are declared so every method
 * answers UNIMPLEMENTED by name and health reports them. */
#include "rtc/signaling/v1/signaling.pb-c.h"
#include "rtc/signaling_service.h"

int rtc_signaling_service_setup(rtc_service *svc, void *ud)
{
    (void)ud;
    rtc_grpc_server *g = rtc_service_grpc(svc);
    int rc = rtc_grpc_server_add_service(g, &rtc__signaling__v1__signaling__descriptor);
    if (rc == 0)
        rc = rtc_grpc_server_add_service(g, &rtc__signaling__v1__signaling_admin__descriptor);
    return rc;
}

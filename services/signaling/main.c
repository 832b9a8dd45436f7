/* rtc-signaling: rooms, sessions and the relay; all state in Redis. */
#include "rtc/signaling_service.h"

int main(int argc, char **argv)
{
    const rtc_service_def def = {
        .name = "rtc-signaling",
        .summary = "rtc signaling service: rtc.signaling.v1.Signaling and SignalingAdmin over "
                   "gRPC (h2c), health, metrics.",
        .default_listen = "127.0.0.1:50051",
        .default_admin = "127.0.0.1:9051",
        .setup = rtc_signaling_service_setup,
    };
    return rtc_service_main(&def, argc, argv);
}

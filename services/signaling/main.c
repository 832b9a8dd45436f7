/* rtc-signaling: rooms, sessions and the relay; all state in Redis. */
#include "rtc/signaling_service.h"

int main(int argc, char **argv)
{
    size_t nopts;
    const rtc_option *opts = rtc_signaling_options(&nopts);
    const rtc_service_def def = {
        .name = "rtc-signaling",
        .summary = "rtc signaling service: rtc.signaling.v1.Signaling and SignalingAdmin over "
                   "gRPC (h2c) — rooms, sessions and a lossless relay, all state in Redis.",
        .default_listen = "127.0.0.1:50051",
        .default_admin = "127.0.0.1:9051",
        .default_max_streams = "100000",
        .options = opts,
        .noptions = nopts,
        .setup = rtc_signaling_service_setup,
        .drain = rtc_signaling_service_drain,
        .cleanup = rtc_signaling_service_cleanup,
    };
    return rtc_service_main(&def, argc, argv);
}

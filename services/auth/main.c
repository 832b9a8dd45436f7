/* rtc-auth: access tokens, API keys, revocation, TURN credentials. */
#include "rtc/auth_service.h"

int main(int argc, char **argv)
{
    const rtc_service_def def = {
        .name = "rtc-auth",
        .summary = "rtc auth service: rtc.auth.v1.Auth over gRPC (h2c), health, metrics.",
        .default_listen = "127.0.0.1:8081",
        .default_admin = "127.0.0.1:9081",
        .setup = rtc_auth_service_setup,
    };
    return rtc_service_main(&def, argc, argv);
}

/* rtc-auth: access tokens, API keys, revocation, TURN credentials. */
#include "rtc/auth_service.h"

int main(int argc, char **argv)
{
    size_t nopts;
    const rtc_option *opts = rtc_auth_options(&nopts);
    const rtc_service_def def = {
        .name = "rtc-auth",
        .summary = "rtc auth service: rtc.auth.v1.Auth over gRPC (h2c) — ES256 access tokens, "
                   "API keys, revocation, TURN credentials.",
        .default_listen = "127.0.0.1:8081",
        .default_admin = "127.0.0.1:9081",
        .options = opts,
        .noptions = nopts,
        .setup = rtc_auth_service_setup,
        .cleanup = rtc_auth_service_cleanup,
    };
    return rtc_service_main(&def, argc, argv);
}

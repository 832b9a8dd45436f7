/* rtc-bridge: browser WebSocket JSON-RPC 2.0 ⇄ gRPC (see rtc/bridge.h). */
#include "rtc/bridge.h"

int main(int argc, char **argv)
{
    return rtc_bridge_main(argc, argv);
}

/* rtc/bridge.h — rtc-bridge: browser WebSocket JSON-RPC 2.0 ⇄ gRPC.
 *
 * One process: libwebsockets on the shared libuv loop serves GET /ws
 * (subprotocol rtc.v1.jsonrpc) and /healthz, /readyz, /metrics on
 * --listen; the admin port serves the same probes; every browser request
 * becomes a gRPC call on the configured upstreams (rtc/bridge_conn.h has
 * the protocol). main() is one call to rtc_bridge_main(). */
#ifndef RTC_BRIDGE_H
#define RTC_BRIDGE_H

/* Run the process: parse flags / RTC_* environment, serve until SIGTERM or
 * SIGINT, drain (close 1001), exit. Returns the exit status: 0 after a
 * clean drain, 2 for bad configuration, 1 when start-up fails otherwise. */
int rtc_bridge_main(int argc, char **argv);

#endif

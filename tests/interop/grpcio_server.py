#!/usr/bin/python3
"""A grpcio server for the interop tests of the rtc gRPC client.

Run it with Debian's /usr/bin/python3 (python3-grpcio). It listens on
127.0.0.1 (ephemeral port unless --port is given) and prints the port on
stdout as its first line. Messages are raw bytes (generic handlers with
identity serializers), so no generated code is needed:

  /rtc.test.v1.Test/Echo       unary: the request bytes back. Initial
                               metadata x-server; trailers x-server, x-echo
                               (the request's x-echo), x-user-agent,
                               x-deadline-ms (when a deadline was sent).
  /rtc.test.v1.Test/Whoami     unary: the server's --name.
  /rtc.test.v1.Test/Stream     server stream: request u32 count, u32 size
                               (big-endian) -> count messages of size bytes,
                               each starting with its u32 index.
  /rtc.test.v1.Test/Sleep      unary: request u32 ms; answers "slept" after
                               that long, or stops early when the call ends.
  /rtc.test.v1.Test/Fail       unary: request u8 code + UTF-8 message; aborts
                               with that status and message.
  /rtc.test.v1.Test/Stats      unary: u32 streams cancelled, u32 sleeps
                               cancelled (seen by the server).
  /rtc.test.v1.Test/SetHealth  unary: u8 status (1 SERVING, 2 NOT_SERVING) +
                               service name; watchers are told.
  /grpc.health.v1.Health/Check and /Watch, hand-encoded (unless --no-health).

--max-age-ms N makes the server GOAWAY each connection after about N ms
(grpc.max_connection_age_ms), with 10 s of grace for calls in flight.
"""
import argparse
import signal
import struct
import sys
import threading
from concurrent import futures

import grpc

lock = threading.Lock()
changed = threading.Condition(lock)
health = {"": 1}  # service -> status
stats = {"stream_cancelled": 0, "sleep_cancelled": 0}
NAME = "server"


def code_of(value):
    for c in grpc.StatusCode:
        if c.value[0] == value:
            return c
    return grpc.StatusCode.UNKNOWN


def md(ctx, key):
    for k, v in ctx.invocation_metadata():
        if k == key:
            return v
    return None


def echo(req, ctx):
    ctx.send_initial_metadata((("x-server", NAME),))
    trailers = [("x-server", NAME)]
    v = md(ctx, "x-echo")
    if v is not None:
        trailers.append(("x-echo", v))
    ua = md(ctx, "user-agent")
    if ua is not None:
        trailers.append(("x-user-agent", ua))
    left = ctx.time_remaining()
    if left is not None:
        trailers.append(("x-deadline-ms", str(int(left * 1000))))
    ctx.set_trailing_metadata(tuple(trailers))
    return req


def whoami(req, ctx):
    return NAME.encode()


def stream(req, ctx):
    count, size = struct.unpack(">II", req[:8])
    state = {"done": False}

    def on_end():
        if not state["done"]:
            with lock:
                stats["stream_cancelled"] += 1

    ctx.add_callback(on_end)
    filler = b"x" * max(size - 4, 0)
    for i in range(count):
        if not ctx.is_active():
            return
        yield (struct.pack(">I", i) + filler)[:size]
    state["done"] = True


def sleep(req, ctx):
    (ms,) = struct.unpack(">I", req[:4])
    ended = threading.Event()
    ctx.add_callback(ended.set)
    if ended.wait(ms / 1000.0):
        with lock:
            stats["sleep_cancelled"] += 1
        return b""
    return b"slept"


def fail(req, ctx):
    ctx.abort(code_of(req[0]), req[1:].decode("utf-8"))


def get_stats(req, ctx):
    with lock:
        return struct.pack(">II", stats["stream_cancelled"], stats["sleep_cancelled"])


def set_health(req, ctx):
    with changed:
        health[req[1:].decode()] = req[0]
        changed.notify_all()
    return b""


def parse_service(req):
    # HealthCheckRequest: field 1 (string), tag 0x0a, length varint (< 128 here).
    if len(req) >= 2 and req[0] == 0x0A:
        return req[2 : 2 + req[1]].decode()
    return ""


def health_check(req, ctx):
    svc = parse_service(req)
    with lock:
        st = health.get(svc)
    if st is None:
        ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    return bytes([0x08, st])


def health_watch(req, ctx):
    svc = parse_service(req)
    last = None
    while ctx.is_active():
        with changed:
            st = health.get(svc, 3)  # SERVICE_UNKNOWN
            if st == last:
                changed.wait(0.2)
                continue
        last = st
        yield bytes([0x08, st])


def main():
    global NAME
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", default="server")
    ap.add_argument("--no-health", action="store_true")
    ap.add_argument("--max-age-ms", type=int, default=0,
                    help="GOAWAY every connection after this long (grace 10 s)")
    args = ap.parse_args()
    NAME = args.name
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})

    unary = grpc.unary_unary_rpc_method_handler
    ustream = grpc.unary_stream_rpc_method_handler
    handlers = [
        grpc.method_handlers_generic_handler(
            "rtc.test.v1.Test",
            {
                "Echo": unary(echo),
                "Whoami": unary(whoami),
                "Stream": ustream(stream),
                "Sleep": unary(sleep),
                "Fail": unary(fail),
                "Stats": unary(get_stats),
                "SetHealth": unary(set_health),
            },
        )
    ]
    if not args.no_health:
        handlers.append(
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health",
                {"Check": unary(health_check), "Watch": ustream(health_watch)},
            )
        )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        handlers=handlers,
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.max_send_message_length", 8 << 20),
        ]
        + (
            [
                ("grpc.max_connection_age_ms", args.max_age_ms),
                ("grpc.max_connection_age_grace_ms", 10000),
            ]
            if args.max_age_ms
            else []
        ),
    )
    port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    if port == 0:
        print("cannot bind 127.0.0.1:%d" % args.port, file=sys.stderr)
        sys.exit(1)
    server.start()
    print(port, flush=True)

    # SIGTERM/SIGINT were blocked before any thread started; wait for them
    # here (an Event set from a Python signal handler can deadlock).
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()

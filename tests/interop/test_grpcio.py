#!/usr/bin/python3
"""Interop: rtc's gRPC server against Debian's python3-grpcio.

Run with /usr/bin/python3 (Debian's grpcio, protobuf and h2 load there).
Environment (set by ctest, see tests/interop/CMakeLists.txt):
  RTC_TESTSERVER  path to rtc-grpc-testserver (required)
  RTC_REPO_ROOT   repository root (default: two levels above this file)
  RTC_PROTOC      protoc 3.21 (default: protoc on PATH)

Message classes are built at test time from a FileDescriptorSet that
protoc writes for tests/proto/rtc/test/v1/test.proto and
proto/grpc/health/v1/health.proto, and methods are called by path through
channel.unary_unary/unary_stream with explicit (de)serializers.

This module also holds the helpers test_http.py and test_hostile.py import:
TestServer (one rtc-grpc-testserver process) and messages().
"""

import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("RTC_REPO_ROOT") or os.path.dirname(os.path.dirname(HERE))
PROTOC = os.environ.get("RTC_PROTOC") or "protoc"

# Generous: two busy cores, sanitizer builds.
START_TIMEOUT = 30.0
WAIT_TIMEOUT = 20.0


def testserver_path():
    path = os.environ.get("RTC_TESTSERVER")
    if not path:
        raise RuntimeError("RTC_TESTSERVER is not set (run through ctest, or export the path "
                           "to build/bin/rtc-grpc-testserver)")
    if not os.access(path, os.X_OK):
        raise RuntimeError("RTC_TESTSERVER=%s is not an executable" % path)
    return path


def wait_for(predicate, timeout=WAIT_TIMEOUT, interval=0.02, what="condition"):
    """Poll predicate() until it returns a true value; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


class TestServer:
    """One rtc-grpc-testserver on 127.0.0.1 with an ephemeral port.

    stderr (JSON logs) goes to a temporary file, shown when a test fails."""

    def __init__(self, *args):
        self.args = [testserver_path(), "--listen", "127.0.0.1:0"] + list(args)
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self.log)
        self.port = None
        try:
            self.port = self._read_port()
        except BaseException:
            self.close()
            raise
        self.addr = "127.0.0.1:%d" % self.port

    def _read_port(self):
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("testserver printed no PORT line in %.0fs; log:\n%s"
                                   % (START_TIMEOUT, self.logs()))
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError("testserver exited (%s) before listening; log:\n%s"
                                   % (self.proc.wait(), self.logs()))
            line += chunk
        words = line.decode().split()
        if len(words) != 2 or words[0] != "PORT":
            raise RuntimeError("unexpected testserver output %r" % line)
        return int(words[1])

    def alive(self):
        return self.proc.poll() is None

    def terminate(self):
        """SIGTERM: start the graceful shutdown."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout=WAIT_TIMEOUT):
        """Exit status, or raise if the process is still running."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("testserver still running after %.0fs" % timeout) from None

    def logs(self, limit=20000):
        self.log.flush()
        self.log.seek(0)
        data = self.log.read()
        return data[-limit:].decode(errors="replace")

    def close(self):
        """Kill (if needed) and reap; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def start_server(testcase, *args):
    """A TestServer stopped when testcase (instance or class) ends: SIGTERM,
    and it must exit 0 (so sanitizer reports and shutdown hangs fail the
    test); SIGKILL if it does not exit in time."""
    server = TestServer(*args)

    def cleanup():
        try:
            if server.alive():
                server.terminate()
                try:
                    code = server.proc.wait(WAIT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    raise AssertionError("testserver ignored SIGTERM for %.0fs; log:\n%s"
                                         % (WAIT_TIMEOUT, server.logs())) from None
            else:
                code = server.proc.returncode
            if code != 0:
                raise AssertionError("testserver exited with %s; log:\n%s"
                                     % (code, server.logs()))
        finally:
            server.close()

    if isinstance(testcase, type):
        testcase.addClassCleanup(cleanup)
    else:
        testcase.addCleanup(cleanup)
    return server


_MESSAGES = None


def messages():
    """Message classes by full name, from protoc's FileDescriptorSet."""
    global _MESSAGES
    if _MESSAGES is not None:
        return _MESSAGES
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    with tempfile.TemporaryDirectory() as tmp:
        fds_path = os.path.join(tmp, "test.fds")
        subprocess.run([PROTOC, "-I", os.path.join(REPO, "tests", "proto"),
                        "-I", os.path.join(REPO, "proto"), "--include_imports",
                        "--descriptor_set_out=" + fds_path, "rtc/test/v1/test.proto",
                        "grpc/health/v1/health.proto"], check=True)
        with open(fds_path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.22
        factory = message_factory.MessageFactory(pool)
        get_class = factory.GetPrototype
    out = {}
    for fd in fds.file:
        for msg in fd.message_type:
            name = (fd.package + "." if fd.package else "") + msg.name
            out[name] = get_class(pool.FindMessageTypeByName(name))
    _MESSAGES = out
    return out


def M(name):
    return messages()[name]


# ---------------------------------------------------------------------------
# grpcio helpers

try:
    import grpc
except ImportError as e:  # fail loudly: CI must have python3-grpcio
    grpc = None
    GRPC_IMPORT_ERROR = e
else:
    GRPC_IMPORT_ERROR = None

TEST = "/rtc.test.v1.Test/"
HEALTH = "/grpc.health.v1.Health/"
MIB = 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_receive_message_length", 64 * MIB),
    ("grpc.max_send_message_length", 64 * MIB),
]


def channel(server, extra_options=()):
    if grpc is None:
        raise RuntimeError("import grpc failed under %s: %s (apt-get install python3-grpcio)"
                           % (sys.executable, GRPC_IMPORT_ERROR))
    ch = grpc.insecure_channel(server.addr, options=CHANNEL_OPTIONS + list(extra_options))
    grpc.channel_ready_future(ch).result(timeout=WAIT_TIMEOUT)
    return ch


def unary(ch, path, req_type, resp_type):
    return ch.unary_unary(path, request_serializer=M(req_type).SerializeToString,
                          response_deserializer=M(resp_type).FromString)


def server_stream(ch, path, req_type, resp_type):
    return ch.unary_stream(path, request_serializer=M(req_type).SerializeToString,
                           response_deserializer=M(resp_type).FromString)


class Stubs:
    def __init__(self, ch):
        t = "rtc.test.v1."
        self.echo = unary(ch, TEST + "Echo", t + "EchoRequest", t + "EchoResponse")
        self.stream = server_stream(ch, TEST + "Stream", t + "StreamRequest", t + "StreamItem")
        self.sleep = unary(ch, TEST + "Sleep", t + "SleepRequest", t + "SleepResponse")
        self.stats_call = unary(ch, TEST + "Stats", t + "StatsRequest", t + "StatsResponse")
        self.metadata = unary(ch, TEST + "Metadata", t + "MetadataRequest",
                              t + "MetadataResponse")
        self.unhandled = unary(ch, TEST + "Unhandled", t + "EchoRequest", t + "EchoResponse")
        h = "grpc.health.v1."
        self.check = unary(ch, HEALTH + "Check", h + "HealthCheckRequest",
                           h + "HealthCheckResponse")
        self.watch = server_stream(ch, HEALTH + "Watch", h + "HealthCheckRequest",
                                   h + "HealthCheckResponse")

    def stats(self):
        return self.stats_call(M("rtc.test.v1.StatsRequest")(), timeout=WAIT_TIMEOUT)

    def wait_stats(self, predicate, what):
        last = [None]

        def probe():
            last[0] = self.stats()
            return predicate(last[0])

        try:
            wait_for(probe, what=what, interval=0.05)
        except AssertionError as e:
            raise AssertionError("%s; last Stats: %s" % (e, last[0])) from None
        return last[0]


def EchoRequest(**kw):
    return M("rtc.test.v1.EchoRequest")(**kw)


def StreamRequest(**kw):
    return M("rtc.test.v1.StreamRequest")(**kw)


def SleepRequest(**kw):
    return M("rtc.test.v1.SleepRequest")(**kw)


def HealthCheckRequest(**kw):
    return M("grpc.health.v1.HealthCheckRequest")(**kw)


SERVING = 1
NOT_SERVING = 2
SERVICE_UNKNOWN = 3

# A grpc-message that needs percent-encoding: non-ASCII, '%', newlines,
# and something that looks like an escape already.
TRICKY_MESSAGE = "héllo wörld ✓ 100% done\nline 2\r\n%41%zz end %"


# ---------------------------------------------------------------------------
# tests against one shared server


class GrpcioInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = start_server(cls)
        cls.ch = channel(cls.server)
        cls.addClassCleanup(cls.ch.close)
        cls.stub = Stubs(cls.ch)

    def assertAlive(self):
        self.assertTrue(self.server.alive(), "testserver died; log:\n" + self.server.logs())

    def tearDown(self):
        self.assertAlive()

    def test_unary_echo(self):
        payload = bytes(range(256)) * 4
        resp = self.stub.echo(EchoRequest(message="héllo", payload=payload), timeout=WAIT_TIMEOUT)
        self.assertEqual(resp.message, "héllo")
        self.assertEqual(resp.payload, payload)

    def test_unary_empty_request(self):
        resp = self.stub.echo(EchoRequest(), timeout=WAIT_TIMEOUT)
        self.assertEqual(resp.message, "")
        self.assertEqual(resp.payload, b"")

    def test_unary_with_call_status_ok(self):
        resp, call = self.stub.echo.with_call(EchoRequest(message="x"), timeout=WAIT_TIMEOUT)
        self.assertEqual(resp.message, "x")
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    def test_stream_10000_messages(self):
        seqs = []
        for item in self.stub.stream(StreamRequest(count=10000, size=8), timeout=120):
            self.assertEqual(item.payload, bytes([item.seq & 0xFF]) * 8)
            seqs.append(item.seq)
        self.assertEqual(len(seqs), 10000)
        self.assertEqual(seqs, list(range(10000)))

    def test_stream_empty(self):
        self.assertEqual(list(self.stub.stream(StreamRequest(count=0), timeout=WAIT_TIMEOUT)), [])

    def test_large_unary_message_200k(self):
        payload = os.urandom(200 * 1024)
        resp = self.stub.echo(EchoRequest(payload=payload), timeout=60)
        self.assertEqual(resp.payload, payload)

    def test_large_stream_messages(self):
        items = list(self.stub.stream(StreamRequest(count=20, size=200 * 1024), timeout=120))
        self.assertEqual([i.seq for i in items], list(range(20)))
        for i in items:
            self.assertEqual(i.payload, bytes([i.seq & 0xFF]) * (200 * 1024))

    def test_response_over_max_send_message(self):
        # Server default max_send_message is 4 MiB; the client would accept 64 MiB.
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.stub.stream(StreamRequest(count=1, size=5 * MIB), timeout=60))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(self.stub.echo(EchoRequest(message="ok"), timeout=WAIT_TIMEOUT).message,
                         "ok")

    def test_deadline_exceeded_reaches_handler(self):
        before = self.stub.stats()
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.sleep(SleepRequest(ms=60000), timeout=0.5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - t0, 30)
        # The client also sends RST_STREAM when its deadline passes, so the
        # handler may see either cause; it must see a cancellation.
        self.stub.wait_stats(
            lambda s: s.sleep_cancelled > before.sleep_cancelled
            and s.cancelled_calls > before.cancelled_calls,
            "the Sleep handler to observe the deadline")

    def test_cancel_unary_reaches_handler(self):
        before = self.stub.stats()
        fut = self.stub.sleep.future(SleepRequest(ms=60000), timeout=120)
        self.stub.wait_stats(lambda s: s.active_calls > before.active_calls,
                             "the Sleep call to start")
        fut.cancel()
        self.assertTrue(fut.cancelled())
        self.stub.wait_stats(lambda s: s.sleep_cancelled > before.sleep_cancelled,
                             "the Sleep handler to observe the cancellation")

    def test_cancel_stream_reaches_handler(self):
        before = self.stub.stats()
        call = self.stub.stream(StreamRequest(count=1000000, size=64, interval_ms=5), timeout=120)
        got = []
        for item in call:
            got.append(item.seq)
            if len(got) == 10:
                break
        self.assertEqual(got, list(range(10)))
        call.cancel()
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in call:
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.CANCELLED)
        self.stub.wait_stats(lambda s: s.stream_cancelled > before.stream_cancelled,
                             "the Stream handler to observe the cancellation")

    def test_cancel_fast_stream_reaches_handler(self):
        # No pacing: the handler is producing as fast as flow control allows.
        before = self.stub.stats()
        call = self.stub.stream(StreamRequest(count=10000000, size=1024), timeout=120)
        next(call)
        call.cancel()
        self.stub.wait_stats(lambda s: s.stream_cancelled > before.stream_cancelled,
                             "the Stream handler to observe the cancellation")

    def test_unknown_method(self):
        for path in (TEST + "NoSuchMethod", "/no.such.v1.Service/Echo", "/grpc.health.v1.Health/X"):
            with self.subTest(path=path):
                fn = self.ch.unary_unary(path)
                with self.assertRaises(grpc.RpcError) as cm:
                    fn(b"", timeout=WAIT_TIMEOUT)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_declared_but_unhandled_method(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.unhandled(EchoRequest(message="x"), timeout=WAIT_TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_every_status_code_round_trips(self):
        for code in grpc.StatusCode:
            num = code.value[0]
            with self.subTest(code=code):
                if num == 0:
                    _, call = self.stub.echo.with_call(EchoRequest(message="ok"),
                                                       timeout=WAIT_TIMEOUT)
                    self.assertEqual(call.code(), grpc.StatusCode.OK)
                    continue
                msg = "%s(%d): %s" % (code.name, num, TRICKY_MESSAGE)
                with self.assertRaises(grpc.RpcError) as cm:
                    self.stub.echo(EchoRequest(fail_code=num, fail_message=msg),
                                   timeout=WAIT_TIMEOUT)
                self.assertEqual(cm.exception.code(), code)
                self.assertEqual(cm.exception.details(), msg)
        self.assertEqual(len(list(grpc.StatusCode)), 17)

    def test_status_without_message(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.echo(EchoRequest(fail_code=5), timeout=WAIT_TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertFalse(cm.exception.details())

    def test_long_status_message(self):
        # ~4 KiB once percent-encoded: under grpcio's 8 KiB metadata limit.
        msg = "é%\n" * 350
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.echo(EchoRequest(fail_code=9, fail_message=msg), timeout=WAIT_TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(cm.exception.details(), msg)

    def test_metadata_round_trip(self):
        blob = bytes([0, 1, 2, 0xFE, 0xFF])
        trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        md = (("x-test-plain", "value 1"), ("x-test-blob-bin", blob),
              ("x-request-id", "req-123"), ("traceparent", trace))
        resp, call = self.stub.metadata.with_call(M("rtc.test.v1.MetadataRequest")(), metadata=md,
                                                  timeout=WAIT_TIMEOUT)
        seen = {}
        for e in resp.entries:
            seen.setdefault(e.key, []).append(e.value)
        self.assertEqual(seen.get("x-test-plain"), ["value 1"])
        self.assertEqual(seen.get("x-request-id"), ["req-123"])
        self.assertEqual(seen.get("traceparent"), [trace])
        self.assertIn("x-test-blob-bin", seen)
        for key in seen:
            self.assertFalse(key.startswith(":"), "pseudo-header %r in metadata" % key)
            self.assertEqual(key, key.lower())
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        self.assertEqual(initial.get("x-test-plain"), "value 1")
        self.assertEqual(initial.get("x-test-blob-bin"), blob)
        self.assertEqual(trailing.get("echo-x-test-plain"), "value 1")
        self.assertEqual(trailing.get("echo-x-test-blob-bin"), blob)

    def test_health_check(self):
        self.assertEqual(self.stub.check(HealthCheckRequest(service=""),
                                         timeout=WAIT_TIMEOUT).status, SERVING)
        self.assertEqual(self.stub.check(HealthCheckRequest(service="rtc.test.v1.Test"),
                                         timeout=WAIT_TIMEOUT).status, SERVING)
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.check(HealthCheckRequest(service="no.such.Service"), timeout=WAIT_TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_watch_first_message(self):
        call = self.stub.watch(HealthCheckRequest(service=""), timeout=120)
        self.assertEqual(next(call).status, SERVING)
        call.cancel()

    def test_health_watch_unknown_service(self):
        # The health protocol: Watch of an unknown service sends SERVICE_UNKNOWN
        # (it does not fail the call).
        call = self.stub.watch(HealthCheckRequest(service="no.such.Service"), timeout=120)
        self.assertEqual(next(call).status, SERVICE_UNKNOWN)
        call.cancel()

    def test_200_concurrent_calls(self):
        before = self.stub.stats()
        futs = [self.stub.sleep.future(SleepRequest(ms=3000), timeout=120) for _ in range(200)]
        try:
            # All 200 are in the handler at the same time.
            self.stub.wait_stats(lambda s: s.active_calls - before.active_calls >= 200,
                                 "200 Sleep calls in flight")
            for f in futs:
                self.assertFalse(f.result(timeout=120).cancelled)
        finally:
            for f in futs:
                f.cancel()

    def test_many_concurrent_echoes_many_channels(self):
        chans = [channel(self.server) for _ in range(4)]
        try:
            stubs = [Stubs(c) for c in chans]
            futs = []
            for i in range(400):
                payload = os.urandom(i * 37 % 4096)
                futs.append((payload, stubs[i % 4].echo.future(
                    EchoRequest(message=str(i), payload=payload), timeout=120)))
            for i, (payload, f) in enumerate(futs):
                r = f.result(timeout=120)
                self.assertEqual(r.message, str(i))
                self.assertEqual(r.payload, payload)
        finally:
            for c in chans:
                c.close()

    def test_keepalive_pings_are_answered(self):
        # grpcio drops the transport (UNAVAILABLE) if PING ACKs do not come
        # back within keepalive_timeout.
        ch = channel(self.server, [("grpc.keepalive_time_ms", 100),
                                   ("grpc.keepalive_timeout_ms", 2000),
                                   ("grpc.keepalive_permit_without_calls", 1),
                                   ("grpc.http2.max_pings_without_data", 0)])
        try:
            stub = Stubs(ch)
            self.assertFalse(stub.sleep(SleepRequest(ms=1500), timeout=60).cancelled)
            self.assertEqual(stub.echo(EchoRequest(message="k"), timeout=WAIT_TIMEOUT).message,
                             "k")
        finally:
            ch.close()

    def test_gzip_request_is_served_or_unimplemented(self):
        # PROTOCOL-HTTP2: a message encoding the server lacks → UNIMPLEMENTED
        # (never INTERNAL, never a broken connection).
        try:
            resp = self.stub.echo(EchoRequest(message="gz", payload=b"a" * 1000),
                                  timeout=WAIT_TIMEOUT, compression=grpc.Compression.Gzip)
            self.assertEqual(resp.payload, b"a" * 1000)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), grpc.StatusCode.UNIMPLEMENTED, e.details())
        self.assertEqual(self.stub.echo(EchoRequest(message="after"),
                                        timeout=WAIT_TIMEOUT).message, "after")

    def test_concurrent_streams_from_threads(self):
        errors = []

        def worker(n):
            try:
                items = list(self.stub.stream(StreamRequest(count=500, size=100 + n), timeout=120))
                if [i.seq for i in items] != list(range(500)):
                    errors.append("thread %d: bad sequence" % n)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("thread %d: %r" % (n, e))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        self.assertEqual(errors, [])


# ---------------------------------------------------------------------------
# limits: a server with --max-message 1m and --max-streams 10


class GrpcioLimits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = start_server(cls, "--max-message", "1m", "--max-streams", "10")
        cls.ch = channel(cls.server)
        cls.addClassCleanup(cls.ch.close)
        cls.stub = Stubs(cls.ch)

    def tearDown(self):
        self.assertTrue(self.server.alive(), "testserver died; log:\n" + self.server.logs())

    def test_oversized_request_then_connection_still_works(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.stub.echo(EchoRequest(payload=b"x" * (2 * MIB)), timeout=60)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        # Same channel, same connection: still answers.
        resp = self.stub.echo(EchoRequest(message="after"), timeout=WAIT_TIMEOUT)
        self.assertEqual(resp.message, "after")
        # Just under the limit passes (field tag + length take a few bytes).
        payload = os.urandom(MIB - 64)
        self.assertEqual(self.stub.echo(EchoRequest(payload=payload), timeout=60).payload, payload)

    def test_oversized_requests_repeated(self):
        for _ in range(5):
            with self.assertRaises(grpc.RpcError) as cm:
                self.stub.echo(EchoRequest(payload=b"y" * (MIB + 1)), timeout=60)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertEqual(self.stub.echo(EchoRequest(message="z"), timeout=WAIT_TIMEOUT).message,
                         "z")

    def test_more_calls_than_max_concurrent_streams(self):
        # SETTINGS_MAX_CONCURRENT_STREAMS 10: the client queues the rest.
        futs = [self.stub.sleep.future(SleepRequest(ms=100), timeout=120) for _ in range(50)]
        for f in futs:
            self.assertFalse(f.result(timeout=120).cancelled)


# ---------------------------------------------------------------------------
# graceful shutdown: each test has its own server, SIGTERMed


class GrpcioShutdown(unittest.TestCase):
    def test_health_watch_sees_not_serving_on_sigterm(self):
        server = start_server(self, "--drain-ms", "2000")
        ch = channel(server)
        self.addCleanup(ch.close)
        stub = Stubs(ch)
        for service in ("", "rtc.test.v1.Test"):
            call = stub.watch(HealthCheckRequest(service=service), timeout=120)
            self.assertEqual(next(call).status, SERVING)
            if service == "":
                overall = call
            else:
                per_service = call
        server.terminate()
        for call in (overall, per_service):
            statuses = []
            try:
                for msg in call:
                    statuses.append(msg.status)
            except grpc.RpcError as e:
                # The stream may end with an error once the server drains.
                self.assertIn(e.code(), (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED),
                              "Watch ended with %s %r" % (e.code(), e.details()))
            self.assertIn(NOT_SERVING, statuses, "Watch never saw NOT_SERVING: %r" % statuses)
        self.assertEqual(server.wait(), 0, server.logs())

    def test_in_flight_call_completes_during_drain(self):
        server = start_server(self, "--drain-ms", "10000")
        ch = channel(server)
        self.addCleanup(ch.close)
        stub = Stubs(ch)
        fut = stub.sleep.future(SleepRequest(ms=1000), timeout=120)
        stub.wait_stats(lambda s: s.active_calls >= 1, "the Sleep call to start")
        server.terminate()
        self.assertFalse(fut.result(timeout=60).cancelled)
        self.assertEqual(server.wait(), 0, server.logs())

    def test_drain_deadline_cancels_long_calls(self):
        server = start_server(self, "--drain-ms", "500")
        ch = channel(server)
        self.addCleanup(ch.close)
        stub = Stubs(ch)
        sleep = stub.sleep.future(SleepRequest(ms=600000), timeout=600)
        stream = stub.stream(StreamRequest(count=1000000, size=10, interval_ms=50), timeout=600)
        next(stream)
        stub.wait_stats(lambda s: s.active_calls >= 2, "both calls to start")
        t0 = time.monotonic()
        server.terminate()
        self.assertEqual(server.wait(), 0, server.logs())
        self.assertLess(time.monotonic() - t0, 15, "shutdown took far longer than drain-ms")
        with self.assertRaises(grpc.RpcError) as cm:
            sleep.result(timeout=60)
        self.assertIn(cm.exception.code(), (grpc.StatusCode.CANCELLED,
                                            grpc.StatusCode.UNAVAILABLE))
        with self.assertRaises(grpc.RpcError):
            for _ in stream:
                pass

    def test_idle_server_exits_zero_on_sigterm(self):
        server = start_server(self)
        ch = channel(server)
        self.addCleanup(ch.close)
        Stubs(ch).echo(EchoRequest(), timeout=WAIT_TIMEOUT)
        server.terminate()
        self.assertEqual(server.wait(), 0, server.logs())


if __name__ == "__main__":
    unittest.main()

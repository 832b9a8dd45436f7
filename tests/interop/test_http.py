#!/usr/bin/python3
"""Interop: rtc's gRPC server at the HTTP/2 level, with Debian's python3-h2
over a plain socket (h2c, prior knowledge).

Checks the parts of PROTOCOL-HTTP2 that generated clients never show:
content-type and method checks, message reassembly across DATA frames,
length-prefix limits, the compressed flag, grpc-timeout parsing, server-side
deadlines, Trailers-Only responses and grpc-message percent-encoding.

Run with /usr/bin/python3; see test_grpcio.py for the environment.
This module also holds the h2 client helper test_hostile.py imports.
"""

import select
import socket
import struct
import time
import unittest

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from test_grpcio import M, WAIT_TIMEOUT, EchoRequest, SleepRequest, start_server, wait_for

TEST = "/rtc.test.v1.Test/"
MIB = 1024 * 1024


def grpc_frame(msg, flag=0):
    return struct.pack(">BI", flag, len(msg)) + msg


def parse_grpc_frames(data):
    """[(flag, bytes)] from a response body; raises on a partial frame."""
    out = []
    i = 0
    while i < len(data):
        if len(data) - i < 5:
            raise AssertionError("partial gRPC frame header at %d of %d" % (i, len(data)))
        flag, n = struct.unpack(">BI", data[i:i + 5])
        if len(data) - i - 5 < n:
            raise AssertionError("partial gRPC message: %d of %d bytes" % (len(data) - i - 5, n))
        out.append((flag, bytes(data[i + 5:i + 5 + n])))
        i += 5 + n
    return out


def _s(v):
    return v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else v


class StreamResult:
    """What came back on one stream."""

    def __init__(self, sid):
        self.sid = sid
        self.headers = None          # first HEADERS, [(str, str)]
        self.headers_end_stream = False  # Trailers-Only
        self.data = bytearray()
        self.trailers = None
        self.ended = False
        self.reset = None            # RST_STREAM error code

    @property
    def done(self):
        return self.ended or self.reset is not None

    def header(self, name):
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    def trailer(self, name):
        """From trailers, or from the headers of a Trailers-Only response."""
        block = self.trailers if self.trailers is not None else (
            self.headers if self.headers_end_stream else None)
        for k, v in block or ():
            if k == name:
                return v
        return None

    @property
    def http_status(self):
        s = self.header(":status")
        return int(s) if s is not None else None

    @property
    def grpc_status(self):
        s = self.trailer("grpc-status")
        return int(s) if s is not None else None

    def messages(self):
        return [m for _, m in parse_grpc_frames(self.data)]

    def __repr__(self):
        return ("StreamResult(sid=%d headers=%r trailers_only=%r data=%dB trailers=%r ended=%r "
                "reset=%r)" % (self.sid, self.headers, self.headers_end_stream, len(self.data),
                               self.trailers, self.ended, self.reset))


class H2Client:
    """A permissive HTTP/2 client: h2 with outbound validation off, so tests
    can send what a correct client would not."""

    def __init__(self, port, settings=None, timeout=WAIT_TIMEOUT, trickle=False):
        self.port = port
        self.trickle = trickle  # write one byte per send() (TCP_NODELAY)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                        validate_outbound_headers=False,
                                        normalize_outbound_headers=False,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.results = {}
        self.goaway = None  # ConnectionTerminated event
        self.eof = False
        self.auto_ack = True  # replenish flow-control windows as data arrives
        self.flush()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def flush(self):
        data = self.conn.data_to_send()
        if data and self.trickle:
            for i in range(len(data)):
                self.sock.sendall(data[i:i + 1])
        elif data:
            self.sock.sendall(data)

    @property
    def closed(self):
        return self.eof or self.goaway is not None

    def pump(self, timeout):
        """Read once (up to timeout) and handle what arrived."""
        if self.eof:
            return
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not ready:
            return
        try:
            data = self.sock.recv(1 << 20)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            raise AssertionError("server sent invalid HTTP/2: %r" % e) from None
        for ev in events:
            self._event(ev)
        self.flush()

    def _result(self, sid):
        if sid not in self.results:
            self.results[sid] = StreamResult(sid)
        return self.results[sid]

    def _event(self, ev):
        if isinstance(ev, h2.events.ResponseReceived):
            r = self._result(ev.stream_id)
            r.headers = [(_s(k), _s(v)) for k, v in ev.headers]
            r.headers_end_stream = ev.stream_ended is not None
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            pass
        elif isinstance(ev, h2.events.TrailersReceived):
            self._result(ev.stream_id).trailers = [(_s(k), _s(v)) for k, v in ev.headers]
        elif isinstance(ev, h2.events.DataReceived):
            self._result(ev.stream_id).data += ev.data
            if self.auto_ack and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            self._result(ev.stream_id).ended = True
        elif isinstance(ev, h2.events.StreamReset):
            self._result(ev.stream_id).reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def pump_until(self, predicate, timeout=WAIT_TIMEOUT, what="condition"):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
            if self.eof:
                raise AssertionError("connection closed while waiting for %s (goaway=%r)"
                                     % (what, self.goaway))
            self.pump(min(left, 0.5))

    def request_headers(self, path, content_type="application/grpc", method="POST", te=True,
                        extra=()):
        hdrs = [(":method", method), (":scheme", "http"), (":path", path),
                (":authority", "127.0.0.1:%d" % self.port)]
        if content_type is not None:
            hdrs.append(("content-type", content_type))
        if te:
            hdrs.append(("te", "trailers"))
        return hdrs + list(extra)

    def start(self, path, end_stream=False, headers=None, **kw):
        sid = self.conn.get_next_available_stream_id()
        self.results[sid] = StreamResult(sid)
        self.conn.send_headers(sid, headers if headers is not None
                               else self.request_headers(path, **kw), end_stream=end_stream)
        self.flush()
        return sid

    def send(self, sid, data, end_stream=False, chunk=None):
        """Send data on sid in frames of at most chunk bytes, waiting for
        flow-control window as needed."""
        view = memoryview(data)
        while True:
            if len(view) == 0:
                if end_stream:
                    try:
                        self.conn.end_stream(sid)
                    except h2.exceptions.StreamClosedError:
                        return
                    self.flush()
                return
            window = self.conn.local_flow_control_window(sid)
            if window == 0:
                r = self.results.get(sid)
                self.pump_until(lambda: self.conn.local_flow_control_window(sid) > 0
                                or (r is not None and r.done),
                                what="flow-control window on stream %d" % sid)
                if r is not None and r.done:
                    return
                continue
            n = min(len(view), window, self.conn.max_outbound_frame_size, chunk or len(view))
            last = n == len(view)
            try:
                self.conn.send_data(sid, view[:n].tobytes(), end_stream=end_stream and last)
            except h2.exceptions.StreamClosedError:
                return  # the server reset the stream (it may have answered already)
            self.flush()
            view = view[n:]
            if last:
                return

    def wait(self, sid, timeout=WAIT_TIMEOUT):
        r = self.results[sid]
        self.pump_until(lambda: r.done or self.goaway is not None, timeout,
                        "stream %d to end" % sid)
        return r

    def call(self, path, body, timeout=WAIT_TIMEOUT, chunk=None, **kw):
        """One request: HEADERS, body, END_STREAM; returns the StreamResult."""
        sid = self.start(path, **kw)
        self.send(sid, body, end_stream=True, chunk=chunk)
        return self.wait(sid, timeout)


def echo_body(**kw):
    return grpc_frame(EchoRequest(**kw).SerializeToString())


def decode_echo(result):
    msgs = result.messages()
    if len(msgs) != 1:
        raise AssertionError("expected 1 message, got %d: %r" % (len(msgs), result))
    return M("rtc.test.v1.EchoResponse").FromString(msgs[0])


# ---------------------------------------------------------------------------


class HttpInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = start_server(cls)

    def setUp(self):
        self.h2 = H2Client(self.server.port)
        self.addCleanup(self.h2.close)

    def tearDown(self):
        self.assertTrue(self.server.alive(), "testserver died; log:\n" + self.server.logs())

    def assertEchoWorks(self, client=None, message="still here"):
        client = client or self.h2
        r = client.call(TEST + "Echo", echo_body(message=message))
        self.assertEqual(r.grpc_status, 0, r)
        self.assertEqual(decode_echo(r).message, message)

    def stats(self):
        r = H2Client(self.server.port)
        try:
            res = r.call(TEST + "Stats", grpc_frame(b""))
            self.assertEqual(res.grpc_status, 0, res)
            return M("rtc.test.v1.StatsResponse").FromString(res.messages()[0])
        finally:
            r.close()

    # -- the normal shape ---------------------------------------------------

    def test_response_shape(self):
        r = self.h2.call(TEST + "Echo", echo_body(message="shape"))
        self.assertEqual(r.http_status, 200, r)
        self.assertTrue((r.header("content-type") or "").startswith("application/grpc"), r)
        self.assertFalse(r.headers_end_stream, r)
        self.assertIsNone(r.header("grpc-status"), "grpc-status in initial headers: %r" % r)
        self.assertIsNotNone(r.trailers, r)
        self.assertEqual(r.grpc_status, 0, r)
        self.assertTrue(r.ended)
        self.assertEqual(decode_echo(r).message, "shape")

    def test_server_settings(self):
        self.h2.pump_until(lambda: self.h2.conn.remote_settings.max_concurrent_streams < 2**31,
                           what="the server's SETTINGS")
        rs = self.h2.conn.remote_settings
        self.assertEqual(rs.max_concurrent_streams, 1000)
        self.assertEqual(rs.max_header_list_size, 16384)
        self.assertEqual(rs.enable_push, 0)

    def test_trailers_only_on_error(self):
        r = self.h2.call(TEST + "Echo", echo_body(fail_code=5, fail_message="nope"))
        self.assertTrue(r.headers_end_stream, "error was not Trailers-Only: %r" % r)
        self.assertEqual(r.http_status, 200, r)
        self.assertTrue((r.header("content-type") or "").startswith("application/grpc"), r)
        self.assertEqual(r.header("grpc-status"), "5", r)
        self.assertEqual(r.header("grpc-message"), "nope", r)
        self.assertEqual(len(r.data), 0)

    def test_trailers_only_for_unknown_method(self):
        r = self.h2.call(TEST + "Nope", echo_body())
        self.assertTrue(r.headers_end_stream, r)
        self.assertEqual(r.http_status, 200, r)
        self.assertEqual(r.grpc_status, 12, r)

    def test_grpc_message_percent_encoded_on_wire(self):
        msg = "a%b\nc é\t~"
        r = self.h2.call(TEST + "Echo", echo_body(fail_code=3, fail_message=msg))
        self.assertEqual(r.grpc_status, 3, r)
        raw = r.trailer("grpc-message")
        self.assertEqual(raw, "a%25b%0Ac %C3%A9%09~", r)
        self.assertTrue(all(0x20 <= ord(ch) <= 0x7E for ch in raw))

    def test_huge_status_message_still_ends_the_call(self):
        # A handler's 200 KB grpc-message cannot fit a header block: the
        # call must still end (truncated message, other status, or
        # RST_STREAM), not hang.
        r = self.h2.call(TEST + "Echo", echo_body(fail_code=9, fail_message="m" * 200000),
                         timeout=10)
        if r.reset is None:
            self.assertNotIn(r.grpc_status, (None, 0), r)
        self.assertEchoWorks()

    def test_content_type_grpc_proto(self):
        r = self.h2.call(TEST + "Echo", echo_body(message="p"),
                         content_type="application/grpc+proto")
        self.assertEqual(r.grpc_status, 0, r)
        self.assertEqual(decode_echo(r).message, "p")

    def test_interleaved_streams(self):
        sids = []
        bodies = []
        for i in range(20):
            sids.append(self.h2.start(TEST + "Echo"))
            bodies.append(echo_body(message="m%d" % i, payload=bytes([i]) * (1000 + i)))
        # Interleave 7-byte slices of every body across the streams.
        offsets = [0] * 20
        while any(offsets[i] < len(bodies[i]) for i in range(20)):
            for i, sid in enumerate(sids):
                if offsets[i] < len(bodies[i]):
                    piece = bodies[i][offsets[i]:offsets[i] + 7]
                    offsets[i] += len(piece)
                    self.h2.send(sid, piece, end_stream=offsets[i] == len(bodies[i]))
        for i, sid in enumerate(sids):
            r = self.h2.wait(sid)
            self.assertEqual(r.grpc_status, 0, r)
            resp = decode_echo(r)
            self.assertEqual(resp.message, "m%d" % i)
            self.assertEqual(resp.payload, bytes([i]) * (1000 + i))

    # -- content-type, method, te ---------------------------------------------

    def test_bad_content_type_415(self):
        r = self.h2.call(TEST + "Echo", echo_body(message="x"), content_type="text/plain")
        self.assertEqual(r.http_status, 415, r)
        if r.header("grpc-status") is not None:
            self.assertNotEqual(int(r.header("grpc-status")), 0, r)
        self.assertEchoWorks()

    def test_missing_content_type(self):
        r = self.h2.call(TEST + "Echo", echo_body(message="x"), content_type=None)
        self.assertEqual(r.http_status, 415, r)
        self.assertEchoWorks()

    def test_grpc_web_content_type_is_not_grpc(self):
        r = self.h2.call(TEST + "Echo", echo_body(message="x"),
                         content_type="application/grpc-web")
        self.assertNotEqual(r.grpc_status, 0, r)

    def test_get_instead_of_post(self):
        sid = self.h2.start(TEST + "Echo", method="GET", end_stream=True)
        r = self.h2.wait(sid)
        if r.http_status == 200:
            self.assertNotIn(r.grpc_status, (None, 0), r)
        else:
            self.assertEqual(r.http_status, 405, r)
        self.assertEchoWorks()

    def test_missing_te_trailers(self):
        # PROTOCOL-HTTP2 requires te: trailers; a server may answer or refuse,
        # but with a well-formed response.
        r = self.h2.call(TEST + "Echo", echo_body(message="no-te"), te=False)
        self.assertIsNone(r.reset, r)
        self.assertIsNotNone(r.grpc_status, r)
        if r.grpc_status == 0:
            self.assertEqual(decode_echo(r).message, "no-te")
        self.assertEchoWorks()

    # -- framing --------------------------------------------------------------

    def test_message_in_one_byte_data_frames(self):
        payload = bytes(range(256)) * 2
        r = self.h2.call(TEST + "Echo", echo_body(message="split", payload=payload), chunk=1)
        self.assertEqual(r.grpc_status, 0, r)
        resp = decode_echo(r)
        self.assertEqual((resp.message, resp.payload), ("split", payload))

    def test_empty_request_message(self):
        r = self.h2.call(TEST + "Echo", grpc_frame(b""))
        self.assertEqual(r.grpc_status, 0, r)
        self.assertEqual(decode_echo(r).message, "")

    def test_large_request_needs_window_updates(self):
        payload = bytes(range(256)) * (900 * 4)  # 900 KiB: far beyond the 64 KiB initial window
        r = self.h2.call(TEST + "Echo", echo_body(payload=payload), timeout=60)
        self.assertEqual(r.grpc_status, 0, r)
        self.assertEqual(decode_echo(r).payload, payload)

    def test_small_client_window(self):
        h = H2Client(self.server.port,
                     settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1024,
                               h2.settings.SettingCodes.MAX_FRAME_SIZE: 16384})
        self.addCleanup(h.close)
        r = h.call(TEST + "Stream", grpc_frame(M("rtc.test.v1.StreamRequest")(
            count=100, size=3000).SerializeToString()), timeout=60)
        self.assertEqual(r.grpc_status, 0, r)
        items = [M("rtc.test.v1.StreamItem").FromString(m) for m in r.messages()]
        self.assertEqual([i.seq for i in items], list(range(100)))
        self.assertTrue(all(i.payload == bytes([i.seq]) * 3000 for i in items))

    def test_request_trailers_accepted(self):
        sid = self.h2.start(TEST + "Echo")
        self.h2.send(sid, echo_body(message="t"))
        self.h2.conn.send_headers(sid, [("x-trailer", "1")], end_stream=True)
        self.h2.flush()
        r = self.h2.wait(sid)
        self.assertEqual(r.grpc_status, 0, r)
        self.assertEqual(decode_echo(r).message, "t")

    def test_no_request_message(self):
        sid = self.h2.start(TEST + "Echo", end_stream=True)
        r = self.h2.wait(sid)
        self.assertNotIn(r.grpc_status, (None, 0), r)
        self.assertEchoWorks()

    def test_two_messages_on_unary(self):
        r = self.h2.call(TEST + "Echo", echo_body(message="1") + echo_body(message="2"))
        self.assertNotIn(r.grpc_status, (None, 0), r)
        self.assertEchoWorks()

    def test_truncated_message(self):
        body = echo_body(message="truncated" * 10)
        r = self.h2.call(TEST + "Echo", body[:len(body) // 2])
        self.assertNotIn(r.grpc_status, (None, 0), r)
        self.assertEchoWorks()

    def test_invalid_protobuf(self):
        r = self.h2.call(TEST + "Echo", grpc_frame(b"\xff\xff\xff\xff\xff"))
        self.assertNotIn(r.grpc_status, (None, 0), r)
        self.assertEchoWorks()

    def test_length_prefix_over_max(self):
        for length in (MIB + 1, 0xFFFFFFFF):
            with self.subTest(length=length):
                # Only the 5-byte header, stream left open: the server must
                # refuse at once, without waiting for (or buffering) the body.
                sid = self.h2.start(TEST + "Echo")
                self.h2.send(sid, struct.pack(">BI", 0, length) + b"abc")
                r = self.h2.wait(sid)
                self.assertEqual(r.grpc_status, 8, r)
                self.assertEchoWorks()

    def test_compressed_flag_without_encoding(self):
        r = self.h2.call(TEST + "Echo", grpc_frame(EchoRequest(message="c").SerializeToString(), 1))
        self.assertEqual(r.grpc_status, 13, r)
        self.assertEchoWorks()

    def test_compressed_with_unsupported_encoding(self):
        # PROTOCOL-HTTP2: an unsupported message encoding → UNIMPLEMENTED.
        r = self.h2.call(TEST + "Echo", grpc_frame(b"\x01\x02\x03", 1),
                         extra=[("grpc-encoding", "x-rtc-nonexistent")])
        self.assertEqual(r.grpc_status, 12, r)
        self.assertEchoWorks()

    def test_identity_encoding_uncompressed(self):
        r = self.h2.call(TEST + "Echo", echo_body(message="id"),
                         extra=[("grpc-encoding", "identity"),
                                ("grpc-accept-encoding", "identity,gzip")])
        self.assertEqual(r.grpc_status, 0, r)
        self.assertEqual(decode_echo(r).message, "id")

    def test_invalid_flag_byte(self):
        r = self.h2.call(TEST + "Echo", grpc_frame(EchoRequest().SerializeToString(), 2))
        self.assertNotIn(r.grpc_status, (None, 0), r)
        self.assertEchoWorks()

    # -- grpc-timeout ---------------------------------------------------------

    def test_invalid_grpc_timeout(self):
        for value in ("abc", "123456789S", "", "1", "S", "-1S", "1.5S", "10X", "1 S",
                      "99999999999999999999H", "0x10S"):
            with self.subTest(value=value):
                r = self.h2.call(TEST + "Echo", echo_body(message="t"),
                                 extra=[("grpc-timeout", value)])
                self.assertIsNone(r.reset, r)
                self.assertIsNotNone(r.grpc_status, r)
                self.assertTrue(self.server.alive(), self.server.logs())
        self.assertEchoWorks()

    def test_largest_valid_grpc_timeout(self):
        r = self.h2.call(TEST + "Echo", echo_body(message="big"),
                         extra=[("grpc-timeout", "99999999H")])
        self.assertEqual(r.grpc_status, 0, r)

    def test_server_enforces_deadline(self):
        # The client never cancels: the server's own timer must end the call.
        before = self.stats()
        t0 = time.monotonic()
        r = self.h2.call(TEST + "Sleep", grpc_frame(SleepRequest(ms=60000).SerializeToString()),
                         extra=[("grpc-timeout", "300m")], timeout=30)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.grpc_status, 4, r)
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 15)
        wait_for(lambda: self.stats().sleep_cancelled > before.sleep_cancelled,
                 what="the handler to observe the deadline")

    def start_blocked_stream(self):
        """A 3 × 1 MB Stream with a 300 ms deadline to a client that opens
        100,000 bytes of stream window and never acknowledges data: the
        deadline passes while a message is partly sent."""
        before = self.stats()
        h = H2Client(self.server.port,
                     settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100000})
        self.addCleanup(h.close)
        h.auto_ack = False
        sid = h.start(TEST + "Stream", extra=[("grpc-timeout", "300m")])
        h.send(sid, grpc_frame(M("rtc.test.v1.StreamRequest")(
            count=3, size=1000000).SerializeToString()), end_stream=True)
        wait_for(lambda: self.stats().stream_cancelled > before.stream_cancelled,
                 what="the handler to observe the deadline")
        return h, sid

    def test_deadline_ends_a_flow_blocked_stream(self):
        # Trailers and RST_STREAM are not flow-controlled: the client must
        # learn that the call ended without opening its window.
        h, sid = self.start_blocked_stream()
        r = h.results[sid]
        h.pump_until(lambda: r.done, timeout=10,
                     what="DEADLINE_EXCEEDED (trailers or RST_STREAM) on a stream whose "
                     "window is closed")
        if r.reset is None:
            self.assertEqual(r.grpc_status, 4, r)

    def test_deadline_mid_message_keeps_framing(self):
        # Whatever ends the call, the client must never see a truncated
        # gRPC message followed by trailers.
        h, sid = self.start_blocked_stream()
        r = h.results[sid]
        h.conn.increment_flow_control_window(2**30)
        h.conn.increment_flow_control_window(2**30, sid)
        h.flush()
        h.auto_ack = True
        h.wait(sid, timeout=30)
        if r.reset is None:
            self.assertEqual(r.grpc_status, 4, r)
            r.messages()  # raises on a partial message

    def test_deadline_cancel_never_comes_early(self):
        # 300 calls with a 100 ms deadline in one burst. When on_cancel runs
        # for the deadline, rtc_now_ms() >= rtc_grpc_call_deadline() must
        # hold, or handlers cannot tell a deadline from a client cancel
        # (the testserver counts those in deadline_calls).
        before = self.stats()
        body = grpc_frame(SleepRequest(ms=60000).SerializeToString())
        sids = []
        for _ in range(300):
            sid = self.h2.start(TEST + "Sleep", extra=[("grpc-timeout", "100m")])
            self.h2.conn.send_data(sid, body, end_stream=True)
            sids.append(sid)
        self.h2.flush()
        for sid in sids:
            r = self.h2.wait(sid, timeout=60)
            self.assertEqual(r.grpc_status, 4, r)
        after = wait_for(lambda: (lambda s: s.sleep_cancelled - before.sleep_cancelled >= 300
                                  and s)(self.stats()), what="300 cancellations")
        self.assertEqual(after.deadline_calls - before.deadline_calls, 300,
                         "on_cancel ran before rtc_grpc_call_deadline() for %d of 300 calls; "
                         "log:\n%s" % (300 - (after.deadline_calls - before.deadline_calls),
                                        self.server.logs(3000)))

    def test_deadline_while_request_incomplete(self):
        # Headers with a timeout and a partial message: DEADLINE_EXCEEDED
        # still comes, even though the handler never ran.
        sid = self.h2.start(TEST + "Echo", extra=[("grpc-timeout", "200m")])
        self.h2.send(sid, echo_body(message="x" * 100)[:20])
        r = self.h2.wait(sid, timeout=30)
        self.assertEqual(r.grpc_status, 4, r)

    def test_client_rst_stream_cancels_handler(self):
        before = self.stats()
        sid = self.h2.start(TEST + "Sleep")
        self.h2.send(sid, grpc_frame(SleepRequest(ms=60000).SerializeToString()), end_stream=True)
        wait_for(lambda: self.stats().active_calls > before.active_calls, what="Sleep to start")
        self.h2.conn.reset_stream(sid, 8)  # CANCEL
        self.h2.flush()
        wait_for(lambda: self.stats().sleep_cancelled > before.sleep_cancelled,
                 what="the handler to observe RST_STREAM")
        self.assertEchoWorks()

    def test_connection_close_cancels_handler(self):
        before = self.stats()
        h = H2Client(self.server.port)
        sid = h.start(TEST + "Sleep")
        h.send(sid, grpc_frame(SleepRequest(ms=60000).SerializeToString()), end_stream=True)
        wait_for(lambda: self.stats().active_calls > before.active_calls, what="Sleep to start")
        h.close()
        wait_for(lambda: self.stats().sleep_cancelled > before.sleep_cancelled,
                 what="the handler to observe the lost connection")

    def test_metadata_seen_by_handler(self):
        r = self.h2.call(TEST + "Metadata", grpc_frame(b""),
                         extra=[("x-test-one", "1"), ("x-request-id", "rid"),
                                ("user-agent", "h2-test")])
        self.assertEqual(r.grpc_status, 0, r)
        entries = M("rtc.test.v1.MetadataResponse").FromString(r.messages()[0]).entries
        keys = {e.key: e.value for e in entries}
        self.assertEqual(keys.get("x-test-one"), "1")
        self.assertEqual(keys.get("x-request-id"), "rid")
        for k in keys:
            self.assertFalse(k.startswith(":"), keys)
        self.assertEqual(r.header("x-test-one"), "1", r)
        self.assertEqual(r.trailer("echo-x-test-one"), "1", r)

    def test_deadline_mid_stream(self):
        # Messages already sent: DEADLINE_EXCEEDED comes in real trailers.
        sid = self.h2.start(TEST + "Stream", extra=[("grpc-timeout", "500m")])
        self.h2.send(sid, grpc_frame(M("rtc.test.v1.StreamRequest")(
            count=100000, size=10, interval_ms=20).SerializeToString()), end_stream=True)
        r = self.h2.wait(sid, timeout=30)
        self.assertFalse(r.headers_end_stream, r)
        self.assertGreater(len(r.messages()), 0, r)
        self.assertEqual(r.grpc_status, 4, r)
        self.assertEchoWorks()

    def test_header_table_size_zero(self):
        # The client forbids the dynamic table: the server must not use it.
        h = H2Client(self.server.port,
                     settings={h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
        self.addCleanup(h.close)
        for i in range(5):
            r = h.call(TEST + "Metadata", grpc_frame(b""), extra=[("x-test-n", str(i))])
            self.assertEqual(r.grpc_status, 0, r)
            self.assertEqual(r.header("x-test-n"), str(i), r)
            self.assertEqual(r.trailer("echo-x-test-n"), str(i), r)

    def test_one_byte_tcp_writes(self):
        # Preface, SETTINGS, HEADERS and DATA, one byte per write.
        h = H2Client(self.server.port, trickle=True)
        self.addCleanup(h.close)
        r = h.call(TEST + "Echo", echo_body(message="trickle", payload=b"p" * 300))
        self.assertEqual(r.grpc_status, 0, r)
        self.assertEqual(decode_echo(r).message, "trickle")

    def test_client_goaway_lets_in_flight_call_finish(self):
        sid = self.h2.start(TEST + "Sleep")
        self.h2.send(sid, grpc_frame(SleepRequest(ms=300).SerializeToString()), end_stream=True)
        # GOAWAY(last 0, NO_ERROR) from the client, behind h2's back (h2
        # would stop reading after sending it).
        self.h2.sock.sendall(struct.pack(">I", 8)[1:] + struct.pack(">BBIII", 7, 0, 0, 0, 0))
        r = self.h2.wait(sid, timeout=30)
        self.assertEqual(r.grpc_status, 0, r)

    def test_many_metadata_entries(self):
        extra = [("x-test-m%d" % i, "v%d" % i) for i in range(50)]
        r = self.h2.call(TEST + "Metadata", grpc_frame(b""), extra=extra)
        self.assertEqual(r.grpc_status, 0, r)
        for k, v in extra:
            self.assertEqual(r.header(k), v)
            self.assertEqual(r.trailer("echo-" + k), v)

    def test_duplicate_metadata_keys(self):
        r = self.h2.call(TEST + "Metadata", grpc_frame(b""),
                         extra=[("x-test-dup", "a"), ("x-test-dup", "b")])
        self.assertEqual(r.grpc_status, 0, r)
        entries = M("rtc.test.v1.MetadataResponse").FromString(r.messages()[0]).entries
        self.assertEqual([e.value for e in entries if e.key == "x-test-dup"], ["a", "b"])


class HttpLimits(unittest.TestCase):
    """A server with --max-message 64k --max-header-list 4k."""

    @classmethod
    def setUpClass(cls):
        cls.server = start_server(cls, "--max-message", "64k", "--max-header-list", "4k")

    def setUp(self):
        self.h2 = H2Client(self.server.port)
        self.addCleanup(self.h2.close)

    def tearDown(self):
        self.assertTrue(self.server.alive(), "testserver died; log:\n" + self.server.logs())

    def test_max_header_list_option(self):
        self.h2.pump_until(lambda: self.h2.conn.remote_settings.max_header_list_size == 4096,
                           what="SETTINGS_MAX_HEADER_LIST_SIZE 4096")
        r = self.h2.call(TEST + "Echo", echo_body(message="big"), extra=[("x-big", "b" * 5000)])
        self.assertNotIn(r.grpc_status, (None, 0), r)
        r = self.h2.call(TEST + "Echo", echo_body(message="small"), extra=[("x-ok", "o" * 100)])
        self.assertEqual(r.grpc_status, 0, r)

    def test_message_exactly_at_limit(self):
        # tag (1) + length varint (3) + 65532 bytes = 65536 = the limit.
        msg = EchoRequest(payload=b"a" * 65532).SerializeToString()
        self.assertEqual(len(msg), 65536)
        r = self.h2.call(TEST + "Echo", grpc_frame(msg))
        self.assertEqual(r.grpc_status, 0, r)
        msg = EchoRequest(payload=b"a" * 65533).SerializeToString()
        r = self.h2.call(TEST + "Echo", grpc_frame(msg))
        self.assertEqual(r.grpc_status, 8, r)


if __name__ == "__main__":
    unittest.main()

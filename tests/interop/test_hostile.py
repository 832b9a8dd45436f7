#!/usr/bin/python3
"""Hostile HTTP/2 against rtc's gRPC server: malformed frames, bad headers,
rapid reset (CVE-2023-44487), CONTINUATION flood (CVE-2024-27316), SETTINGS
and PING floods, slowloris and slow readers.

For each attack: the offending connection is closed or reset (GOAWAY,
RST_STREAM or EOF within a generous deadline), the server stays up, and a
separate well-behaved connection opened beforehand — and a fresh one — still
get answers. Floods are bounded; everything is on loopback.

Run with /usr/bin/python3; see test_grpcio.py for the environment.
"""

import os
import socket
import struct
import threading
import time
import unittest

import hpack

from test_grpcio import (WAIT_TIMEOUT, EchoRequest, M, SleepRequest, Stubs, channel, grpc,
                         start_server)
from test_http import H2Client, decode_echo, echo_body, grpc_frame

TEST = "/rtc.test.v1.Test/"
CLOSE_TIMEOUT = 10.0  # the offending connection must be gone within this
# Sanitizer builds (RTC_SANITIZE=1) use several times the memory: RSS
# bounds are scaled.
RSS_SCALE = 4 if os.environ.get("RTC_SANITIZE") == "1" else 1

FRAME_DATA, FRAME_HEADERS, FRAME_PRIORITY, FRAME_RST_STREAM, FRAME_SETTINGS = 0, 1, 2, 3, 4
FRAME_PUSH_PROMISE, FRAME_PING, FRAME_GOAWAY, FRAME_WINDOW_UPDATE, FRAME_CONTINUATION = (
    5, 6, 7, 8, 9)
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS = 0x1, 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CANCEL = 8


def raw_frame(ftype, flags, sid, payload=b"", length=None):
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def request_headers(path=TEST + "Echo", port=0):
    return [(":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "127.0.0.1:%d" % port), ("content-type", "application/grpc"),
            ("te", "trailers")]


class RawConn:
    """A socket speaking hand-made frames. It parses what comes back just
    enough to see response headers, RST_STREAM, GOAWAY and EOF, and answers
    SETTINGS and PING so that it looks alive."""

    def __init__(self, port, preface=True, settings=b""):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.goaway = None  # (last_sid, error_code)
        self.resets = {}  # sid -> error code
        self.responses = {}  # sid -> [header list, ...]
        self.ended = set()
        self.eof = False
        self.send_error = None
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 65536
        self.pending_block = None  # (sid, flags, bytes) while CONTINUATIONs come
        self.settings_seen = False
        if preface:
            self.send(PREFACE + raw_frame(FRAME_SETTINGS, 0, 0, settings))

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        """sendall; a reset or closed peer is recorded, not raised."""
        if self.send_error is not None:
            return False
        try:
            self.sock.settimeout(WAIT_TIMEOUT)  # pump() leaves a short one
            self.sock.sendall(data)
            return True
        except OSError as e:
            self.send_error = e
            return False

    def headers_frames(self, sid, headers, end_stream=False, max_frame=16384):
        """HEADERS (+ CONTINUATION) frames carrying headers."""
        block = self.encoder.encode(headers)
        first, rest = block[:max_frame], block[max_frame:]
        pieces = [rest[i:i + max_frame] for i in range(0, len(rest), max_frame)]
        flags = (FLAG_END_STREAM if end_stream else 0) | (0 if pieces else FLAG_END_HEADERS)
        out = raw_frame(FRAME_HEADERS, flags, sid, first)
        for i, p in enumerate(pieces):
            out += raw_frame(FRAME_CONTINUATION, FLAG_END_HEADERS if i == len(pieces) - 1 else 0,
                             sid, p)
        return out

    def request(self, sid, body, headers=None, path=TEST + "Echo"):
        hdrs = headers if headers is not None else request_headers(path, self.port)
        return self.send(self.headers_frames(sid, hdrs) +
                         raw_frame(FRAME_DATA, FLAG_END_STREAM, sid, body))

    @property
    def closed(self):
        return self.eof or self.goaway is not None or isinstance(self.send_error,
                                                                 ConnectionResetError)

    def pump(self, timeout):
        if self.eof:
            return
        try:
            self.sock.settimeout(max(timeout, 0.001))
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        self.buf += data
        while len(self.buf) >= 9:
            n = struct.unpack(">I", b"\0" + bytes(self.buf[:3]))[0]
            if len(self.buf) < 9 + n:
                break
            ftype, flags, sid = struct.unpack(">BBI", bytes(self.buf[3:9]))
            sid &= 0x7FFFFFFF
            payload = bytes(self.buf[9:9 + n])
            del self.buf[:9 + n]
            self._frame(ftype, flags, sid, payload)

    def _frame(self, ftype, flags, sid, payload):
        if ftype == FRAME_GOAWAY and len(payload) >= 8:
            self.goaway = struct.unpack(">II", payload[:8])
        elif ftype == FRAME_RST_STREAM and len(payload) == 4:
            self.resets[sid] = struct.unpack(">I", payload)[0]
        elif ftype == FRAME_SETTINGS and not flags & FLAG_ACK:
            self.settings_seen = True
            self.send(raw_frame(FRAME_SETTINGS, FLAG_ACK, 0))
        elif ftype == FRAME_PING and not flags & FLAG_ACK:
            self.send(raw_frame(FRAME_PING, FLAG_ACK, 0, payload))
        elif ftype == FRAME_DATA and flags & FLAG_END_STREAM:
            self.ended.add(sid)
        elif ftype == FRAME_HEADERS:
            if flags & 0x8:  # PADDED
                pad = payload[0]
                payload = payload[1:len(payload) - pad]
            if flags & 0x20:  # PRIORITY
                payload = payload[5:]
            self.pending_block = (sid, flags, payload)
            if flags & FLAG_END_HEADERS:
                self._headers_done()
        elif ftype == FRAME_CONTINUATION and self.pending_block is not None:
            s, f, block = self.pending_block
            self.pending_block = (s, f, block + payload)
            if flags & FLAG_END_HEADERS:
                self._headers_done()

    def _headers_done(self):
        sid, flags, block = self.pending_block
        self.pending_block = None
        hdrs = [(k.decode("latin-1") if isinstance(k, bytes) else k,
                 v.decode("latin-1") if isinstance(v, bytes) else v)
                for k, v in self.decoder.decode(block, raw=True)]
        self.responses.setdefault(sid, []).append(hdrs)
        if flags & FLAG_END_STREAM:
            self.ended.add(sid)

    def pump_until(self, predicate, timeout=WAIT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not predicate() and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.pump(min(left, 0.5))
        return bool(predicate())

    def wait_closed(self, timeout=CLOSE_TIMEOUT):
        """True once GOAWAY arrived or the peer closed or reset the socket."""
        return self.pump_until(lambda: self.closed, timeout)

    def wait_stream_rejected(self, sid, timeout=CLOSE_TIMEOUT):
        """True when stream sid was refused: RST_STREAM, GOAWAY/EOF, or an
        answer that is not a success (HTTP status not 200, or grpc-status
        not 0). False when it succeeded or nothing came."""
        def settled():
            return self.closed or sid in self.resets or sid in self.ended
        self.pump_until(settled, timeout)
        if self.closed or sid in self.resets:
            return True
        blocks = self.responses.get(sid, [])
        if not blocks or sid not in self.ended:
            return False
        status = dict(blocks[0]).get(":status")
        grpc_status = dict(blocks[-1]).get("grpc-status")
        return status != "200" or grpc_status not in (None, "0")

    def status_text(self):
        return "goaway=%r eof=%r send_error=%r resets=%r responses=%r" % (
            self.goaway, self.eof, self.send_error, dict(list(self.resets.items())[:5]),
            dict(list(self.responses.items())[:3]))


def stalled_stream(port, variant):
    """A RawConn with a 16 GB Stream open that it never reads."""
    if variant == "window":  # INITIAL_WINDOW_SIZE 0
        c = RawConn(port, settings=struct.pack(">HI", 0x4, 0))
    else:  # largest windows: the bytes pile up in TCP buffers instead
        c = RawConn(port, settings=struct.pack(">HI", 0x4, 0x7FFFFFFF))
        c.send(raw_frame(FRAME_WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF - 65535)))
    req = M("rtc.test.v1.StreamRequest")(count=1000000, size=16384)
    c.request(1, grpc_frame(req.SerializeToString()),
              headers=request_headers(TEST + "Stream", port))
    return c


class Background:
    """A thread that keeps making Echo calls on a well-behaved grpcio
    channel while an attack runs; counts successes and failures."""

    def __init__(self, stub):
        self.stub = stub
        self.ok = 0
        self.errors = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                r = self.stub.echo(EchoRequest(message=str(i)), timeout=WAIT_TIMEOUT)
                if r.message != str(i):
                    self.errors.append("wrong echo %r" % r.message)
                else:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.errors.append(repr(e))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(WAIT_TIMEOUT * 2)


class Hostile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = start_server(cls)
        cls.ch = channel(cls.server)
        cls.addClassCleanup(cls.ch.close)
        cls.stub = Stubs(cls.ch)

    def setUp(self):
        # A well-behaved HTTP/2 connection, open before the attack.
        self.good = H2Client(self.server.port)
        self.addCleanup(self.good.close)
        r = self.good.call(TEST + "Echo", echo_body(message="before"))
        self.assertEqual(r.grpc_status, 0, r)

    def raw(self, **kw):
        c = RawConn(self.server.port, **kw)
        self.addCleanup(c.close)
        return c

    def assertOthersServed(self):
        self.assertTrue(self.server.alive(), "testserver died; log:\n" + self.server.logs())
        # the connection opened before the attack
        r = self.good.call(TEST + "Echo", echo_body(message="after"))
        self.assertEqual(r.grpc_status, 0, r)
        self.assertEqual(decode_echo(r).message, "after")
        # the grpcio channel
        self.assertEqual(self.stub.echo(EchoRequest(message="grpcio"),
                                        timeout=WAIT_TIMEOUT).message, "grpcio")
        # a fresh connection
        fresh = H2Client(self.server.port)
        try:
            r = fresh.call(TEST + "Echo", echo_body(message="fresh"))
            self.assertEqual(r.grpc_status, 0, r)
        finally:
            fresh.close()

    def assertClosed(self, conn, what):
        self.assertTrue(conn.wait_closed(), "%s: connection not closed within %.0fs: %s"
                        % (what, CLOSE_TIMEOUT, conn.status_text()))
        if conn.goaway is not None:
            self.assertNotEqual(conn.goaway[1], 0, "%s: GOAWAY with NO_ERROR" % what)

    # -- (a) malformed frames -------------------------------------------------

    def test_garbage_after_preface(self):
        c = self.raw()
        c.send(b"\xde\xad\xbe\xef" * 64)
        self.assertClosed(c, "garbage after preface")
        self.assertOthersServed()

    def test_garbage_instead_of_preface(self):
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00",
                     b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\0" * 64):
            with self.subTest(junk=junk[:16]):
                c = self.raw(preface=False)
                c.send(junk)
                self.assertTrue(c.wait_closed(), c.status_text())
        self.assertOthersServed()

    def test_frames_with_bad_length(self):
        cases = {
            "SETTINGS length 5": raw_frame(FRAME_SETTINGS, 0, 0, b"\0" * 5),
            "PING length 7": raw_frame(FRAME_PING, 0, 0, b"\0" * 7),
            "WINDOW_UPDATE length 3": raw_frame(FRAME_WINDOW_UPDATE, 0, 0, b"\0\0\1"),
            "RST_STREAM length 5": raw_frame(FRAME_RST_STREAM, 0, 1, b"\0" * 5),
            "DATA over max frame size": raw_frame(FRAME_DATA, 0, 1, b"\0" * 20000),
            "PING announcing 16 MiB": raw_frame(FRAME_PING, 0, 0, b"\0" * 8,
                                                                length=0xFFFFFF),
        }
        for name, frame in cases.items():
            with self.subTest(case=name):
                c = self.raw()
                if name.startswith("DATA"):
                    c.send(c.headers_frames(1, request_headers(port=self.server.port)))
                c.send(frame)
                self.assertClosed(c, name)
        self.assertOthersServed()

    def test_data_on_stream_zero(self):
        c = self.raw()
        c.send(raw_frame(FRAME_DATA, 0, 0, b"hello"))
        self.assertClosed(c, "DATA on stream 0")
        self.assertOthersServed()

    def test_other_connection_errors(self):
        cases = {
            "HEADERS on even stream": lambda c: c.headers_frames(2, request_headers()),
            "HEADERS on stream 0": lambda c: c.headers_frames(0, request_headers()),
            "bad HPACK": lambda c: raw_frame(FRAME_HEADERS, FLAG_END_HEADERS, 1,
                                             b"\xff\xff\xff\xff\xff\xff\x7f"),
            "connection window overflow": lambda c: raw_frame(
                FRAME_WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)),
            "PUSH_PROMISE from a client": lambda c: raw_frame(
                FRAME_PUSH_PROMISE, FLAG_END_HEADERS, 1, struct.pack(">I", 2)),
            "CONTINUATION without HEADERS": lambda c: raw_frame(
                FRAME_CONTINUATION, FLAG_END_HEADERS, 1, b"\x82"),
            "HEADERS interrupted by PING": lambda c: (
                raw_frame(FRAME_HEADERS, 0, 1, c.encoder.encode(request_headers()))
                + raw_frame(FRAME_PING, 0, 0, b"\0" * 8)),
        }
        for name, build in cases.items():
            with self.subTest(case=name):
                c = self.raw()
                c.send(build(c))
                self.assertClosed(c, name)
        self.assertOthersServed()

    def test_stream_id_going_backwards_is_not_served(self):
        # RFC 9113 §5.1.1 calls for a connection error; nghttp2 deliberately
        # ignores HEADERS on a lower, never-seen odd id (it cannot tell it
        # from a closed stream). Either way the request must not be served.
        c = self.raw()
        c.request(5, echo_body(message="five"))
        c.request(3, echo_body(message="three"))
        c.request(7, echo_body(message="seven"))
        answered = c.pump_until(lambda: {5, 7} <= c.ended)
        if not c.closed:
            self.assertTrue(answered, c.status_text())
            self.assertNotIn(3, c.responses, c.status_text())
        self.assertOthersServed()

    # -- (b) bad headers: stream errors at least --------------------------------

    def test_bad_request_headers(self):
        port = self.server.port
        base = request_headers(port=port)
        cases = {
            "uppercase name": base + [("X-Upper", "1")],
            "connection: keep-alive": base + [("connection", "keep-alive")],
            "transfer-encoding": base + [("transfer-encoding", "chunked")],
            "te: gzip": [h for h in base if h[0] != "te"] + [("te", "gzip")],
            "missing :path": [h for h in base if h[0] != ":path"],
            "missing :method": [h for h in base if h[0] != ":method"],
            "empty :path": [(k, "" if k == ":path" else v) for k, v in base],
            "pseudo-header after regular": base[1:] + [base[0]],
            "duplicate :path": base + [(":path", TEST + "Echo")],
            "unknown pseudo-header": base + [(":foo", "bar")],
            "space in name": base + [("x bad", "1")],
            "newline in value": base + [("x-bad", "a\r\nb")],
        }
        body = echo_body(message="should not be answered")
        for name, hdrs in cases.items():
            with self.subTest(case=name):
                c = self.raw()
                c.request(1, body, headers=hdrs)
                self.assertTrue(c.wait_stream_rejected(1), "%s: %s" % (name, c.status_text()))
        self.assertOthersServed()

    def test_header_list_larger_than_cap(self):
        # Default cap: 16 KiB. 64 KiB of metadata in HEADERS + 3 CONTINUATIONs
        # (below nghttp2's continuation limit, so the size check must act).
        hdrs = request_headers(port=self.server.port) + [
            ("x-big-%d" % i, "v" * 1000) for i in range(64)]
        c = self.raw()
        c.request(1, echo_body(message="too big"), headers=hdrs)
        self.assertTrue(c.wait_stream_rejected(1), c.status_text())
        self.assertOthersServed()

    def test_single_huge_header_value(self):
        hdrs = request_headers(port=self.server.port) + [("x-huge", "h" * 60000)]
        c = self.raw()
        c.request(1, echo_body(message="huge"), headers=hdrs)
        self.assertTrue(c.wait_stream_rejected(1), c.status_text())
        self.assertOthersServed()

    # -- (c) rapid reset -------------------------------------------------------

    def test_rapid_reset(self):
        before = self.stub.stats()
        c = self.raw()
        body = grpc_frame(SleepRequest(ms=60000).SerializeToString())
        hdrs = request_headers(TEST + "Sleep", self.server.port)
        sent = 0
        with Background(self.stub) as bg:
            sid = 1
            for _ in range(100):  # at most 10,000 streams
                batch = bytearray()
                for _ in range(100):
                    batch += c.headers_frames(sid, hdrs)
                    batch += raw_frame(FRAME_DATA, FLAG_END_STREAM, sid, body)
                    batch += raw_frame(FRAME_RST_STREAM, 0, sid, struct.pack(">I", CANCEL))
                    sid += 2
                if not c.send(bytes(batch)):
                    break
                sent += 100
                c.pump(0)
                if c.closed:
                    break
            closed = c.wait_closed()
        self.assertTrue(closed, "no GOAWAY/EOF after %d rapid resets: %s" % (sent, c.status_text()))
        self.assertEqual(bg.errors, [], "well-behaved calls failed during the attack")
        self.assertOthersServed()
        # Every call the attack started was cancelled and completed: none leak.
        self.stub.wait_stats(lambda s: s.active_calls == before.active_calls,
                             "calls from the attack to complete")

    # -- (d) CONTINUATION flood ------------------------------------------------

    def test_continuation_flood(self):
        for variant in ("headers", "empty"):
            with self.subTest(variant=variant):
                c = self.raw()
                first = c.encoder.encode(request_headers(port=self.server.port))
                c.send(raw_frame(FRAME_HEADERS, 0, 1, first))
                piece = b"" if variant == "empty" else hpack.Encoder().encode(
                    [("x-flood", "f" * 64)])
                frame = raw_frame(FRAME_CONTINUATION, 0, 1, piece)
                with Background(self.stub) as bg:
                    for _ in range(20):  # at most 10,000 frames
                        if not c.send(frame * 500):
                            break
                        c.pump(0)
                        if c.closed:
                            break
                    closed = c.wait_closed()
                self.assertTrue(closed, "CONTINUATION flood not stopped: " + c.status_text())
                self.assertEqual(bg.errors, [])
        self.assertOthersServed()

    # -- other floods ------------------------------------------------------------

    def test_settings_with_too_many_entries(self):
        c = self.raw()
        entries = b"".join(struct.pack(">HI", 0x4, 65535) for _ in range(200))
        c.send(raw_frame(FRAME_SETTINGS, 0, 0, entries))
        self.assertClosed(c, "SETTINGS with 200 entries")
        self.assertOthersServed()

    def test_ping_flood_without_reading(self):
        # 50,000 PINGs and never read the ACKs: the server must bound its
        # queue of ACKs (nghttp2 max_outbound_ack) rather than buffer them.
        c = self.raw()
        ping = raw_frame(FRAME_PING, 0, 0, b"12345678")
        with Background(self.stub) as bg:
            for _ in range(50):
                if not c.send(ping * 1000):
                    break
            closed = c.wait_closed()
        self.assertTrue(closed, "PING flood not stopped: " + c.status_text())
        self.assertEqual(bg.errors, [])
        self.assertOthersServed()

    # -- slowloris and slow readers ----------------------------------------------

    def test_slowloris_partial_preface(self):
        conns = []
        for i in range(50):
            c = self.raw(preface=False)
            c.send(PREFACE[:1 + i % (len(PREFACE) - 1)])
            conns.append(c)
        # Plus one that sent a frame header and only part of its payload.
        c = self.raw()
        c.send(raw_frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, b"", length=1000) + b"\x82")
        conns.append(c)
        t0 = time.monotonic()
        self.assertOthersServed()
        self.assertLess(time.monotonic() - t0, WAIT_TIMEOUT)

    def test_slow_reader_does_not_grow_memory(self):
        # A client that opens a huge stream and never reads: with a zero
        # HTTP/2 window ("window"), or with huge windows so that the TCP
        # socket fills instead ("tcp"). The server's buffers stay bounded.
        for variant in ("window", "tcp"):
            with self.subTest(variant=variant):
                rss_before = self.rss_kib()
                before = self.stub.stats()
                c = stalled_stream(self.server.port, variant)
                self.addCleanup(c.close)
                self.stub.wait_stats(lambda s: s.active_calls > before.active_calls,
                                     "Stream to start")
                peak = rss_before
                # Observe for a while, doing useful work on another connection.
                for i in range(40):
                    self.assertEqual(self.stub.echo(EchoRequest(message=str(i)),
                                                    timeout=WAIT_TIMEOUT).message, str(i))
                    peak = max(peak, self.rss_kib())
                grown = peak - rss_before
                self.assertLess(grown, 64 * 1024 * RSS_SCALE,
                                "server RSS grew by %d KiB for a stalled stream" % grown)
                if variant == "window":
                    c.send(raw_frame(FRAME_RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
                    what = "the stalled Stream to be cancelled by RST_STREAM"
                else:
                    c.close()
                    what = "the stalled Stream to be cancelled on disconnect"
                self.stub.wait_stats(lambda s: s.active_calls == before.active_calls
                                     and s.stream_cancelled > before.stream_cancelled, what)
        self.assertOthersServed()

    def test_stalled_streams_hit_the_connection_cap(self):
        # 500 streams of 160 KB each that the peer never reads (zero
        # window): past max_conn_pending (64 MiB) the server resets streams
        # with ENHANCE_YOUR_CALM instead of queueing more.
        rss_before = self.rss_kib()
        before = self.stub.stats()
        c = self.raw(settings=struct.pack(">HI", 0x4, 0))
        req = grpc_frame(M("rtc.test.v1.StreamRequest")(count=10, size=16000)
                         .SerializeToString())
        hdrs = request_headers(TEST + "Stream", self.server.port)
        for i in range(500):
            c.request(1 + 2 * i, req, headers=hdrs)
        self.assertTrue(c.pump_until(lambda: 11 in c.resets.values()),
                        "no ENHANCE_YOUR_CALM: " + c.status_text())
        self.stub.wait_stats(lambda s: s.completed_calls - before.completed_calls >= 500,
                             "all 500 Stream handlers to complete")
        grown = self.rss_kib() - rss_before
        self.assertLess(grown, 128 * 1024 * RSS_SCALE, "server RSS grew by %d KiB" % grown)
        c.close()
        self.assertOthersServed()

    def test_many_idle_connections(self):
        conns = [self.raw() for _ in range(200)]
        for c in conns[:10]:
            c.pump(0)
        self.assertOthersServed()

    def rss_kib(self):
        with open("/proc/%d/status" % self.server.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")



class HostileLimits(unittest.TestCase):
    """A server with --max-streams 4."""

    @classmethod
    def setUpClass(cls):
        cls.server = start_server(cls, "--max-streams", "4")

    def test_streams_beyond_max_concurrent_are_refused(self):
        c = RawConn(self.server.port)
        self.addCleanup(c.close)
        body = grpc_frame(SleepRequest(ms=1000).SerializeToString())
        hdrs = request_headers(TEST + "Sleep", self.server.port)
        # Wait for the server's SETTINGS, then ignore its limit of 4.
        self.assertTrue(c.pump_until(lambda: c.settings_seen), c.status_text())
        sids = [1, 3, 5, 7, 9, 11]
        for sid in sids:
            c.request(sid, body, headers=hdrs)
        self.assertTrue(c.pump_until(lambda: c.closed or all(s in c.ended or s in c.resets
                                                             for s in sids)), c.status_text())
        if c.closed:
            # RFC 9113 §5.1.2 asks for a stream error; nghttp2 makes it a
            # connection error once the limit is acknowledged. Then GOAWAY
            # must tell the client that 9 and 11 were not processed.
            self.assertIsNotNone(c.goaway, c.status_text())
            self.assertEqual(c.goaway, (7, 1), c.status_text())
        else:
            refused = sorted(s for s in sids if s in c.resets)
            self.assertEqual(refused, [9, 11], c.status_text())
            for sid in refused:
                self.assertIn(c.resets[sid], (1, 7), "want PROTOCOL_ERROR or REFUSED_STREAM")
            for sid in sids[:4]:
                self.assertEqual(dict(c.responses[sid][-1]).get("grpc-status"), "0",
                                 c.status_text())
        # a fresh connection (this one may be gone) is served
        fresh = RawConn(self.server.port)
        self.addCleanup(fresh.close)
        fresh.request(1, echo_body(message="after"))
        self.assertTrue(fresh.pump_until(lambda: 1 in fresh.ended), fresh.status_text())
        self.assertEqual(dict(fresh.responses[1][-1]).get("grpc-status"), "0")


class HostileShutdown(unittest.TestCase):
    def test_sigterm_with_hostile_peers(self):
        # Peers that never finish the preface, never read, never close:
        # the drain deadline still ends everything and the process exits 0.
        server = start_server(self, "--drain-ms", "1000")
        ch = channel(server)
        self.addCleanup(ch.close)
        stub = Stubs(ch)
        loris = RawConn(server.port, preface=False)
        self.addCleanup(loris.close)
        loris.send(PREFACE[:5])
        idle = RawConn(server.port)
        self.addCleanup(idle.close)
        half = RawConn(server.port)  # a request that never completes
        self.addCleanup(half.close)
        half.send(half.headers_frames(1, request_headers(port=server.port)) +
                  raw_frame(FRAME_DATA, 0, 1, echo_body(message="x" * 100)[:20]))
        stalled = [stalled_stream(server.port, v) for v in ("window", "tcp")]
        for c in stalled:
            self.addCleanup(c.close)
        stub.wait_stats(lambda s: s.active_calls >= 2, "the stalled streams to start")
        t0 = time.monotonic()
        server.terminate()
        self.assertEqual(server.wait(30), 0, server.logs())
        self.assertLess(time.monotonic() - t0, 15, "shutdown took far longer than drain-ms")
        for c in [idle, half] + stalled:
            self.assertTrue(c.wait_closed(), c.status_text())


if __name__ == "__main__":
    if grpc is None:
        raise SystemExit("python3-grpcio is required (run with /usr/bin/python3)")
    unittest.main()

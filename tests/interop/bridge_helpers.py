"""Fixtures for test_bridge.py: the real rtc-bridge as a process, a
browser-like JSON-RPC 2.0 client over Debian's python3-websockets (asyncio,
run on one background event loop, with a blocking facade for the tests), and
a raw WebSocket client on a plain socket for what a well-behaved library
will not send (invalid UTF-8, binary frames, a 10 MiB frame, a peer that
never reads).

Processes, free ports, Redis and wait_for come from auth_helpers.py; the
signaling pods from signaling_helpers.py. Run under /usr/bin/python3.
Nothing here sleeps for a fixed time: waits poll a condition with a
deadline.
"""

import asyncio
import base64
import concurrent.futures
import errno
import json
import os
import re
import select
import signal
import socket
import struct
import threading
import time

import websockets

import auth_helpers as H
import signaling_helpers as S
from auth_helpers import START_TIMEOUT, WAIT_TIMEOUT, RPC_TIMEOUT, Proc, wait_for

SUBPROTOCOL = "rtc.v1.jsonrpc"
SIG = "rtc.signaling.v1.Signaling/"
AUTH = "rtc.auth.v1.Auth/"


def b64(data):
    return base64.b64encode(data).decode()


def unb64(text):
    return base64.b64decode(text, validate=True)


# ---- rtc-bridge ------------------------------------------------------------------

class Bridge:
    """One rtc-bridge process: --listen and --admin on ephemeral ports, read
    back from its JSON 'listening' log line (ws_port, admin_port)."""

    def __init__(self, exe, upstreams, args, log_path, name="bridge"):
        if not os.access(exe, os.X_OK):
            raise AssertionError("rtc-bridge not found or not executable at %s (build the "
                                 "rtc-bridge target)" % exe)
        self.name = name
        self.args = [exe, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
        for u in upstreams:
            self.args += ["--upstream", u]
        self.args += list(args)
        self.proc = Proc(self.args, log_path, env=S.clean_env())
        self.port = self.admin_port = None
        try:
            rec = wait_for(self._listening, START_TIMEOUT, what="%s 'listening' log line" % name,
                           fatal=(AssertionError,))
        except BaseException:
            self.proc.stop(signal.SIGKILL)
            raise
        self.port = int(rec["ws_port"])
        self.admin_port = int(rec["admin_port"])

    def _listening(self):
        for rec in self.proc.log_records():
            if rec.get("msg") == "listening":
                return rec
        if not self.proc.alive():
            raise AssertionError("%s exited with status %s before listening; args %s; log:\n%s"
                                 % (self.name, self.proc.proc.returncode, self.args[1:],
                                    self.proc.log_tail()))
        return None

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.alive()

    def url(self, query=""):
        return "ws://127.0.0.1:%d/ws%s" % (self.port, query)

    def get(self, path, admin=True, timeout=5.0):
        """(status, body) of a GET on the admin port (or the main port)."""
        return S.http_get(self.admin_port if admin else self.port, path, timeout)

    def readyz(self, admin=True):
        return self.get("/readyz", admin)[0]

    def wait_ready(self, timeout=START_TIMEOUT):
        def ready():
            if not self.alive():
                raise AssertionError("%s exited (status %s):\n%s" % (
                    self.name, self.proc.proc.returncode, self.proc.log_tail()))
            return self.readyz() == 200
        wait_for(ready, timeout, what="%s /readyz 200" % self.name, fatal=(AssertionError,))

    def metrics(self):
        return parse_metrics(self.get("/metrics")[1])

    def metric(self, name, **labels):
        """One sample's value (0 when absent); labels must match exactly."""
        return metric_value(self.metrics(), name, **labels)

    def log_text(self):
        return self.proc.log_text()

    def log_tail(self, n=60):
        return self.proc.log_tail(n)

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        return self.proc.stop(sig, timeout)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format: [(name, {label: value}, float)] (comments
    skipped)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        try:
            out.append((m.group(1), labels, float(m.group(4))))
        except ValueError:
            pass
    return out


def metric_value(samples, name, **labels):
    total = 0.0
    for n, ls, v in samples:
        if n == name and ls == labels:
            total += v
    return total


def metric_sum(samples, name, **labels):
    """Sum of the samples of name whose labels include the given ones."""
    return sum(v for n, ls, v in samples
               if n == name and all(ls.get(k) == x for k, x in labels.items()))


# ---- the event loop of the websockets clients --------------------------------------

class _Loop:
    """One asyncio loop on a daemon thread for every client of the run."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="ws-loop")
        self.thread.start()

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro, timeout=RPC_TIMEOUT, what="a websocket operation"):
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise AssertionError("timed out after %.1fs: %s" % (timeout, what))


_LOOP = []


def loop():
    if not _LOOP:
        _LOOP.append(_Loop())
    return _LOOP[0]


class Closed(Exception):
    """The socket closed while a call waited for its answer."""


# ---- the browser-like client -----------------------------------------------------------

class Sub:
    """One subscription's notifications, as the client received them."""

    def __init__(self, client, sub_id):
        self.client = client
        self.id = sub_id
        self.events = []   # (monotonic time, result dict)
        self.ends = []     # params of rpc.end ({"subscription", maybe "error"})

    def results(self):
        with self.client.cond:
            return [r for _, r in self.events]

    def wait(self, pred, timeout=WAIT_TIMEOUT, what="events"):
        """pred(list of event results) → value; waits until it is true."""
        def check():
            return pred([r for _, r in self.events])
        return self.client.wait(check, timeout, "%s on subscription %s" % (what, self.id),
                                stop=lambda: bool(self.ends))

    def wait_event(self, match, timeout=WAIT_TIMEOUT, what="an event", start=0):
        def pred(evs):
            for e in evs[start:]:
                if match(e):
                    return e
            return None
        return self.wait(pred, timeout, what)

    def wait_end(self, timeout=WAIT_TIMEOUT):
        """The rpc.end params (waits for it)."""
        return self.client.wait(lambda: self.ends[0] if self.ends else None, timeout,
                                "rpc.end of subscription %s" % self.id)

    def cancel(self):
        return self.client.result("rpc.cancel", {"subscription": self.id})


class Ws:
    """A browser-like JSON-RPC 2.0 client on one WebSocket (python3-websockets,
    no compression). Replies are matched to requests by id; rpc.event and
    rpc.end notifications are collected per subscription; everything is
    also kept in arrival order for the tests to inspect. The blocking
    methods may be called from any thread; the a* coroutines run on the
    shared loop."""

    def __init__(self, url, name="", origin=None, subprotocols=(SUBPROTOCOL,),
                 timeout=START_TIMEOUT, compression=None):
        self.url = url
        self.name = name or url
        self.cond = threading.Condition()
        self.replies = []    # every reply (has "id"), in arrival order
        self.others = []     # other notifications, binary frames, unparseable text
        self.subs = {}       # subscription id -> Sub
        self.pending = {}    # request id -> asyncio.Future (loop thread only)
        self.closed = False
        self.close_code = None
        self.close_reason = None
        self.next_id = 0
        self.ws = None
        self.loop = loop()
        self.loop.run(self._connect(origin, subprotocols, timeout, compression), timeout + 5,
                      "connect to %s" % url)

    async def _connect(self, origin, subprotocols, timeout, compression):
        self.ws = await websockets.connect(
            self.url, subprotocols=list(subprotocols) if subprotocols else None, origin=origin,
            compression=compression, max_size=None, max_queue=None, open_timeout=timeout,
            ping_interval=None, close_timeout=10)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            async for msg in self.ws:
                self._dispatch(msg)
        except websockets.ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            with self.cond:
                self.others.append(("reader error", repr(e)))
        finally:
            with self.cond:
                self.closed = True
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason
                pending, self.pending = self.pending, {}
                self.cond.notify_all()
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(Closed("socket closed (%s %r)" % (
                        self.close_code, self.close_reason)))

    def _sub(self, sub_id):
        s = self.subs.get(sub_id)
        if s is None:
            s = self.subs[sub_id] = Sub(self, sub_id)
        return s

    def _dispatch(self, text):
        fut = None
        with self.cond:
            if isinstance(text, bytes):
                self.others.append(("binary", text))
            else:
                try:
                    msg = json.loads(text)
                except ValueError:
                    msg = None
                if not isinstance(msg, dict):
                    self.others.append(("unparseable", text))
                elif "id" in msg:
                    self.replies.append(msg)
                    rid = msg["id"]
                    if isinstance(rid, (str, int)):
                        fut = self.pending.pop(rid, None)
                elif msg.get("method") in ("rpc.event", "rpc.end"):
                    p = msg.get("params") or {}
                    s = self._sub(p.get("subscription"))
                    if msg["method"] == "rpc.event":
                        s.events.append((time.monotonic(), p.get("result")))
                    else:
                        s.ends.append(p)
                else:
                    self.others.append(msg)
            self.cond.notify_all()
        if fut is not None and not fut.done():
            fut.set_result(msg)

    # ---- coroutines (on the loop) ----

    async def asend(self, text):
        await self.ws.send(text)

    async def acall(self, method, params=None, rid=None, timeout=RPC_TIMEOUT):
        """Send one request; return the whole reply (a dict with "result" or
        "error"). Raises Closed when the socket closes first."""
        if rid is None:
            self.next_id += 1
            rid = self.next_id
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        fut = asyncio.get_running_loop().create_future()
        with self.cond:
            if self.closed:
                raise Closed("socket closed (%s %r)" % (self.close_code, self.close_reason))
            self.pending[rid] = fut
        try:
            await self.ws.send(json.dumps(req))
        except websockets.ConnectionClosed as e:
            self.pending.pop(rid, None)
            raise Closed("socket closed while sending: %r" % (e,))
        return await asyncio.wait_for(fut, timeout)

    # ---- blocking facade ----

    def call(self, method, params=None, rid=None, timeout=RPC_TIMEOUT):
        return self.loop.run(self.acall(method, params, rid, timeout), timeout + 5,
                             "%s: %s" % (self.name, method))

    def result(self, method, params=None, rid=None, timeout=RPC_TIMEOUT):
        """The result of a call that must succeed."""
        r = self.call(method, params, rid, timeout)
        if "error" in r or "result" not in r:
            raise AssertionError("%s: %s %s failed: %s" % (self.name, method,
                                                          json.dumps(params)[:300], r))
        return r["result"]

    def error(self, method, params=None, rid=None, timeout=RPC_TIMEOUT):
        """The error object of a call that must fail."""
        r = self.call(method, params, rid, timeout)
        if "error" not in r:
            raise AssertionError("%s: %s %s should have failed: %s" % (
                self.name, method, json.dumps(params)[:300], json.dumps(r)[:300]))
        return r["error"]

    def send_text(self, text):
        self.loop.run(self.asend(text), RPC_TIMEOUT, "%s: send" % self.name)

    def reply_count(self):
        with self.cond:
            return len(self.replies)

    def wait_reply(self, start, rid=None, timeout=RPC_TIMEOUT, any_id=False):
        """The first reply at index >= start with that id (null for None),
        or any reply when any_id."""
        def find():
            for r in self.replies[start:]:
                if any_id or r.get("id", "absent") == rid:
                    return r
            return None
        return self.wait(find, timeout, "a reply with id %r" % (rid,))

    def raw(self, text, rid=None, timeout=RPC_TIMEOUT):
        """Send text as is and return the next reply with id rid."""
        start = self.reply_count()
        self.send_text(text)
        return self.wait_reply(start, rid, timeout)

    def subscribe(self, method, params, rid=None):
        res = self.result(method, params, rid)
        sub_id = res.get("subscription")
        if not isinstance(sub_id, str) or not sub_id or set(res) != {"subscription"}:
            raise AssertionError("%s: %s answered %r, not {\"subscription\": id}" % (
                self.name, method, res))
        with self.cond:
            return self._sub(sub_id)

    def wait(self, pred, timeout=WAIT_TIMEOUT, what="condition", stop=None):
        """Under the client's lock, wait until pred() is true and return its
        value. Fails on timeout, when the socket closes, or when stop()."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred()
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0 or self.closed or (stop and stop()):
                    why = ("timed out after %.1fs" % timeout if left <= 0 else
                           "socket closed (%s %r)" % (self.close_code, self.close_reason)
                           if self.closed else "the subscription ended")
                    raise AssertionError("%s: %s waiting for %s; last replies %s; "
                                         "subscriptions %s; others %s" % (
                                             self.name, why, what,
                                             json.dumps(self.replies[-3:])[:600],
                                             {k: (len(s.events), s.ends)
                                              for k, s in self.subs.items()},
                                             str(self.others[-3:])[:300]))
                self.cond.wait(min(left, 0.5))

    def wait_closed(self, timeout=WAIT_TIMEOUT):
        """(close code, reason) once the server closed the socket."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: still open after %.1fs" % (self.name, timeout))
                self.cond.wait(min(left, 0.5))
            return self.close_code, self.close_reason

    def is_closed(self):
        with self.cond:
            return self.closed

    def close(self):
        if self.ws is None:
            return

        async def bye():
            try:
                await asyncio.wait_for(self.ws.close(), 10)
            except Exception:  # noqa: BLE001 - closing on cleanup, whatever state
                pass
        try:
            self.loop.run(bye(), 20, "%s: close" % self.name)
        except AssertionError:
            pass


# ---- a raw WebSocket client --------------------------------------------------------------

class RawWs:
    """A WebSocket client on a plain blocking socket: the HTTP upgrade by
    hand, frames encoded and decoded here. For what a library refuses to
    send and for a peer that stops reading (rcvbuf shrinks its receive
    window)."""

    def __init__(self, port, path="/ws", origin=None, protocol=SUBPROTOCOL, rcvbuf=None,
                 headers=(), timeout=RPC_TIMEOUT, upgrade=True, send_head=True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.texts = []
        self.status = 0
        self.headers = {}
        if not send_head:
            return
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: 127.0.0.1:%d" % port]
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade",
                      "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if protocol:
            lines.append("Sec-WebSocket-Protocol: " + protocol)
        if origin:
            lines.append("Origin: " + origin)
        lines += list(headers)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n", timeout)
        status_line, _, rest = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        self.headers = {}
        for line in rest.split(b"\r\n"):
            k, sep, v = line.partition(b":")
            if sep:
                self.headers[k.strip().lower().decode()] = v.strip().decode("latin-1")

    def _read_until(self, marker, timeout):
        deadline = time.monotonic() + timeout
        while marker not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no HTTP response head within %.1fs: %r" % (
                    timeout, self.buf[:200]))
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, self.buf = self.buf.partition(marker)
        return head

    def body(self, timeout=5.0):
        """The rest of a refused upgrade's response (Content-Length bytes)."""
        n = int(self.headers.get("content-length", "0"))
        deadline = time.monotonic() + timeout
        while len(self.buf) < n and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        return self.buf[:n].decode("utf-8", "replace")

    @staticmethod
    def frame(opcode, payload, fin=True, length=None):
        """A masked client frame; length overrides the header's length (to
        announce more than is sent here)."""
        n = len(payload) if length is None else length
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        return head + mask + mask_bytes(payload, mask)

    def send_frame(self, opcode, payload, fin=True):
        self.sock.sendall(self.frame(opcode, payload, fin))

    def send_text(self, text):
        self.send_frame(1, text.encode() if isinstance(text, str) else text)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("frame incomplete")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk

    def recv_frame(self, timeout=RPC_TIMEOUT):
        """(fin, opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, pos = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, pos = struct.unpack("!Q", self.buf[2:10])[0], 10
        if b1 & 0x80:
            raise AssertionError("the server sent a masked frame")
        self._need(pos + n, deadline)
        payload = self.buf[pos:pos + n]
        self.buf = self.buf[pos + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_json(self, timeout=RPC_TIMEOUT):
        """The next text message as JSON (pings answered, nothing else
        expected)."""
        while True:
            fin, op, payload = self.recv_frame(timeout)
            if op == 9:
                self.send_frame(10, payload)
                continue
            if op != 1 or not fin:
                raise AssertionError("expected a text frame, got opcode %d fin %s: %r" % (
                    op, fin, payload[:100]))
            return json.loads(payload.decode())

    def read_close(self, timeout=RPC_TIMEOUT):
        """Read until the server's close frame: (code, reason); (None, why)
        when the connection ends without one. Text frames are kept."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                fin, op, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            except (EOFError, ConnectionError) as e:
                return None, repr(e)
            except socket.timeout:
                raise AssertionError("no close frame within %.1fs" % timeout)
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode("utf-8", "replace")
            if op == 1:
                self.texts.append(payload)

    def send_until_answered(self, frame, chunk=65536):
        """Send frame in chunks, stopping as soon as the server has sent
        something (e.g. its close frame) or refuses more. Returns the
        number of bytes sent."""
        sent = 0
        while sent < len(frame):
            r, w, _ = select.select([self.sock], [self.sock], [], RPC_TIMEOUT)
            if r:
                break
            if not w:
                raise AssertionError("socket neither readable nor writable for %.0fs"
                                     % RPC_TIMEOUT)
            try:
                self.sock.settimeout(RPC_TIMEOUT)
                sent += self.sock.send(frame[sent:sent + chunk])
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET):
                    break
                raise
        return sent

    def drain_until_eof(self, timeout=RPC_TIMEOUT):
        """Read and drop everything until the server closes the connection:
        (bytes read, how it ended)."""
        deadline = time.monotonic() + timeout
        n = len(self.buf)
        self.buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the connection stayed open for %.1fs (read %d bytes)" % (
                    timeout, n))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                return n, "reset"
            except socket.timeout:
                continue
            if not chunk:
                return n, "eof"
            n += len(chunk)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def mask_bytes(payload, mask):
    if not payload:
        return b""
    # XOR with the repeated 4-byte mask, a machine word at a time.
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        n, "little")


def upgrade_status(port, path="/ws", origin=None, protocol=SUBPROTOCOL, upgrade=True):
    """(HTTP status, body) of an upgrade request (101 = upgraded)."""
    r = RawWs(port, path, origin, protocol, upgrade=upgrade)
    try:
        return r.status, ("" if r.status == 101 else r.body())
    finally:
        r.close()


def percentile(values, p):
    v = sorted(values)
    if not v:
        return 0.0
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


__all__ = ["Bridge", "Ws", "Sub", "RawWs", "Closed", "loop", "b64", "unb64", "parse_metrics",
           "metric_value", "metric_sum", "upgrade_status", "percentile", "SUBPROTOCOL", "SIG",
           "AUTH", "H", "S"]

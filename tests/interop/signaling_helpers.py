"""Fixtures for test_signaling.py: real rtc-signaling pods (restartable on the
same ports), rtc-auth, redis-server, Redis replicas and redis-sentinel, gRPC
clients for rtc.signaling.v1 built from protoc output at run time, and a
Subscribe reader that collects events on a thread.

Process handling, free ports, the RESP client, wait_for and the auth client
come from auth_helpers.py. Run under /usr/bin/python3 (Debian's
python3-grpcio, python3-protobuf). Nothing here sleeps for a fixed time:
waits poll a condition with a deadline.
"""

import http.client
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time

import grpc

import auth_helpers as H
from auth_helpers import (START_TIMEOUT, WAIT_TIMEOUT, RPC_TIMEOUT, PortTaken, Proc,
                          bearer, need_tool, wait_for)

SC = grpc.StatusCode


# ---- protobuf ----------------------------------------------------------------

def load_protos(repo, tmpdir, protoc=None):
    """(signaling_pb2, auth_pb2, health_pb2) generated with protoc 3.21.
    signaling_pb2 imports rtc.auth.v1.auth_pb2 as a package, so the rtc tree
    goes on sys.path; health is loaded by path (a package named grpc would
    clash with grpcio)."""
    protoc = protoc or os.environ.get("RTC_PROTOC") or need_tool("protoc", "protobuf-compiler")
    proto = os.path.join(repo, "proto")
    out = os.path.join(tmpdir, "pb")
    out_h = os.path.join(tmpdir, "pb-health")
    for d in (out, out_h):
        os.makedirs(d, exist_ok=True)
    for dest, files in ((out, ["rtc/auth/v1/auth.proto", "rtc/signaling/v1/signaling.proto"]),
                        (out_h, ["grpc/health/v1/health.proto"])):
        r = subprocess.run([protoc, "--python_out=" + dest, "-I", proto] +
                           [os.path.join(proto, f) for f in files],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError("protoc failed: %s" % r.stderr)
    sys.path.insert(0, out)
    sig = importlib.import_module("rtc.signaling.v1.signaling_pb2")
    auth = importlib.import_module("rtc.auth.v1.auth_pb2")
    spec = importlib.util.spec_from_file_location(
        "grpc_health_v1_health_pb2", os.path.join(out_h, "grpc/health/v1/health_pb2.py"))
    health = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(health)
    return sig, auth, health


# ---- processes ---------------------------------------------------------------

def clean_env():
    """The caller's environment without RTC_* (flags fall back to them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RTC_")}


def http_get(port, path, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def start_redis_and_auth(cls, auth_exe, auth_args=()):
    """For a test class with cls.tmp and cls.procs: starts a redis-server and
    rtc-auth (--dev, revocation in that Redis, plus auth_args) and sets
    cls.redis and cls.auth; both stop in the class cleanups and their logs
    are dumped on failure."""
    cls.redis = H.Redis(cls.tmp)
    cls.addClassCleanup(cls.redis.stop)
    cls.redis.start()
    cls.procs.append(("redis-server", cls.redis))
    log_path = os.path.join(cls.tmp, "rtc-auth.log")
    cls.procs.append(("rtc-auth", {"log": log_path}))
    cls.auth = H.AuthServer(auth_exe, ["--dev", "--redis", cls.redis.url] + list(auth_args),
                            log_path)
    cls.addClassCleanup(cls.auth.stop)


class DumpLogsOnFailure:
    """TestCase mixin: when a test fails, print the end of every log of the
    class's `procs` [(name, Pod | process with .proc | {"log": path})]."""
    LOG_TAIL = 50

    @classmethod
    def dump_logs(cls, why):
        H.log("\n==== logs of %s (%s) ====" % (cls.__name__, why))
        for name, p in getattr(cls, "procs", []):
            if isinstance(p, dict):
                try:
                    with open(p["log"], "rb") as f:
                        text = f.read().decode("utf-8", "replace")
                except OSError:
                    text = ""
            elif isinstance(p, Pod):
                text = p.all_logs()
            else:
                text = p.proc.log_text() if getattr(p, "proc", None) else ""
            H.log("---- %s ----\n%s" % (name, "\n".join(text.splitlines()[-cls.LOG_TAIL:])))

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > before:
            self.dump_logs(self.id())
        return out


class Pod:
    """One rtc-signaling process on fixed free ports, so that kill() and
    start() bring it back at the same address (a restarted pod)."""

    def __init__(self, exe, args, tmpdir, name):
        if not os.access(exe, os.X_OK):
            raise AssertionError("rtc-signaling not found or not executable at %s (build the "
                                 "rtc-signaling target)" % exe)
        self.exe = exe
        self.extra = list(args)
        self.tmpdir = tmpdir
        self.name = name
        self.grpc_port = self.admin_port = None
        self.proc = None
        self.starts = 0
        self.logs = []

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.grpc_port

    def args(self):
        return [self.exe, "--listen", self.addr, "--admin",
                "127.0.0.1:%d" % self.admin_port] + self.extra

    def start(self, wait_ready=True):
        for attempt in range(3):
            if self.grpc_port is None or (attempt and self.starts == 0):
                self.grpc_port, self.admin_port = H.free_port(), H.free_port()
            try:
                return self._start(wait_ready)
            except PortTaken:
                if self.starts or attempt == 2:
                    raise
        return self

    def _start(self, wait_ready):
        path = os.path.join(self.tmpdir, "%s-%d.log" % (self.name, len(self.logs)))
        self.logs.append(path)
        self.proc = Proc(self.args(), path, env=clean_env())

        def listening():
            for rec in self.log_records():
                if rec.get("msg") == "listening":
                    return rec
            if not self.proc.alive():
                text = self.proc.log_tail()
                exc = PortTaken if "in use" in text.lower() else AssertionError
                raise exc("%s exited with status %s before listening; args %s; log:\n%s" % (
                    self.name, self.proc.proc.returncode, self.args()[1:], text))
            return None
        try:
            wait_for(listening, START_TIMEOUT, what="%s 'listening' log line" % self.name,
                     fatal=(PortTaken, AssertionError))
            if wait_ready:
                self.wait_ready()
        except BaseException:
            self.proc.stop(signal.SIGKILL)
            raise
        self.starts += 1
        return self

    def wait_ready(self, timeout=START_TIMEOUT):
        def ready():
            if not self.proc.alive():
                raise AssertionError("%s exited with status %s; log:\n%s" % (
                    self.name, self.proc.proc.returncode, self.proc.log_tail()))
            return self.readyz()[0] == 200
        wait_for(ready, timeout, what="%s /readyz 200" % self.name, fatal=(AssertionError,))

    def readyz(self):
        return http_get(self.admin_port, "/readyz")

    def metrics(self):
        return http_get(self.admin_port, "/metrics")[1]

    def log_records(self):
        return self.proc.log_records()

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def kill(self):
        """SIGKILL: no drain, no goodbye to Redis."""
        return self.proc.stop(signal.SIGKILL)

    def stop(self):
        if self.proc:
            return self.proc.stop()
        return None

    def all_logs(self):
        text = ""
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except OSError:
                pass
        return text


class RedisNode(H.Redis):
    """redis-server with extra arguments (e.g. --replicaof 127.0.0.1 <port>),
    killable, with its INFO as a dict."""

    def kill(self):
        if self.proc:
            self.proc.stop(signal.SIGKILL)

    def info(self, section="replication"):
        text = self.cmd("INFO", section)
        out = {}
        for line in text.splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                out[k] = v.strip()
        return out


class Sentinel:
    """redis-sentinel on 127.0.0.1 with a config file in the temp dir; the
    settings of tests/unit/support/redis_server.c with a quorum of our own."""

    def __init__(self, tmpdir, master_name, master_port, quorum=2, down_after_ms=1000,
                 failover_timeout_ms=5000):
        self.exe = need_tool("redis-sentinel", "redis-sentinel")
        self.port = H.free_port()
        self.dir = os.path.join(tmpdir, "sentinel-%d" % self.port)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\nloglevel notice\n"
                    "logfile \"\"\n"
                    "sentinel monitor %s 127.0.0.1 %d %d\n"
                    "sentinel down-after-milliseconds %s %d\n"
                    "sentinel failover-timeout %s %d\n"
                    "sentinel parallel-syncs %s 1\n" % (
                        self.port, self.dir, master_name, master_port, quorum,
                        master_name, down_after_ms, master_name, failover_timeout_ms,
                        master_name))
        self.proc = None
        self.addr = "127.0.0.1:%d" % self.port

    def start(self):
        self.proc = Proc([self.exe, self.conf], os.path.join(self.dir, "sentinel.log"))

        def up():
            if not self.proc.alive():
                raise AssertionError("redis-sentinel exited (status %s):\n%s" % (
                    self.proc.proc.returncode, self.proc.log_tail()))
            return self.cmd("PING") == "PONG"
        wait_for(up, START_TIMEOUT, what="redis-sentinel on port %d" % self.port,
                 fatal=(AssertionError,))
        return self

    def cmd(self, *args, timeout=5.0):
        return H.Redis.cmd(self, *args, timeout=timeout)  # uses only self.port

    def stop(self):
        if self.proc:
            self.proc.stop()


# ---- gRPC clients --------------------------------------------------------------

SIGNALING = {
    "Join": "JoinResponse", "Leave": "LeaveResponse", "Signal": "SignalResponse",
    "Broadcast": "BroadcastResponse", "Heartbeat": "HeartbeatResponse",
    "GetNegotiation": "GetNegotiationResponse",
}
ADMIN = {
    "CreateRoom": "CreateRoomResponse", "GetRoom": "GetRoomResponse",
    "ListRooms": "ListRoomsResponse", "CloseRoom": "CloseRoomResponse",
    "ListParticipants": "ListParticipantsResponse",
    "RemoveParticipant": "RemoveParticipantResponse", "SendData": "SendDataResponse",
}


def method_path(method):
    if method in ADMIN:
        return "/rtc.signaling.v1.SignalingAdmin/" + method
    return "/rtc.signaling.v1.Signaling/" + method


class SigClient:
    """Calls rtc.signaling.v1 methods by path with explicit (de)serializers."""

    def __init__(self, addr, pb, health_pb, name=""):
        self.addr = addr
        self.name = name or addr
        self.pb = pb
        self.health_pb = health_pb
        self.channel = grpc.insecure_channel(addr, options=[
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 0),
            # A restarted pod is reconnected to at once, not after backoff.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ])
        self._fns = {}

    def close(self):
        self.channel.close()

    def _fn(self, method):
        fn = self._fns.get(method)
        if fn is None:
            if method == "Subscribe":
                fn = self.channel.unary_stream(
                    method_path(method), request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=self.pb.Event.FromString)
            else:
                resp = getattr(self.pb, SIGNALING.get(method) or ADMIN[method])
                fn = self.channel.unary_unary(
                    method_path(method), request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=resp.FromString)
            self._fns[method] = fn
        return fn

    def call(self, method, req, md=None, timeout=RPC_TIMEOUT, wait_for_ready=None):
        return self._fn(method)(req, metadata=md, timeout=timeout, wait_for_ready=wait_for_ready)

    def raw(self, method, data, md=None, timeout=RPC_TIMEOUT):
        """Raw request bytes (e.g. invalid UTF-8 in a string); raw response bytes."""
        return self.channel.unary_unary(method_path(method))(data, metadata=md, timeout=timeout)

    def stream(self, req, md=None, timeout=None):
        return self._fn("Subscribe")(req, metadata=md, timeout=timeout)

    def health(self, service, timeout=RPC_TIMEOUT):
        hp = self.health_pb
        fn = self.channel.unary_unary("/grpc.health.v1.Health/Check",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=hp.HealthCheckResponse.FromString)
        return fn(hp.HealthCheckRequest(service=service), timeout=timeout).status


def call_code(fn, *args, **kw):
    """(code, response or details) of a call, without raising."""
    try:
        return SC.OK, fn(*args, **kw)
    except grpc.RpcError as e:
        return e.code(), e.details()


# ---- events --------------------------------------------------------------------

def ev_str(ev):
    """A short text for an Event, for failure messages."""
    kind = ev.WhichOneof("kind")
    if kind == "participant_joined":
        body = ev.participant_joined.participant.id
    elif kind == "participant_left":
        body = "%s,%d" % (ev.participant_left.participant.id, ev.participant_left.reason)
    elif kind == "signal":
        p = ev.signal.payload
        pk = p.WhichOneof("kind")
        detail = p.data[:24] if pk == "data" else (
            p.description.type if pk == "description" else "")
        body = "from=%s %s %r" % (ev.signal.from_participant_id, pk, detail)
    elif kind == "data":
        body = "from=%r %r" % (ev.data.from_participant_id, ev.data.data[:24])
    elif kind == "room_closed":
        body = repr(ev.room_closed.reason)
    elif kind == "kicked":
        body = repr(ev.kicked.reason)
    else:
        body = ""
    return "%s:%s(%s)" % (ev.id, kind, body)


def evs_str(evs, limit=40):
    evs = list(evs)
    s = ", ".join(ev_str(e) for e in evs[-limit:])
    return ("… " if len(evs) > limit else "") + "[" + s + "]"


def wait_events(holder, pred, timeout, over, message):
    """Wait under holder.cond until pred(events) is true and return its
    value; fail with message(timed_out) when over() or after timeout.
    holder.events is a list of (time, Event)."""
    deadline = time.monotonic() + timeout
    with holder.cond:
        while True:
            v = pred([e for _, e in holder.events])
            if v:
                return v
            left = deadline - time.monotonic()
            if left <= 0 or over():
                raise AssertionError(message(left <= 0))
            holder.cond.wait(min(left, 0.5))


class Subscription:
    """A Subscribe stream read on a thread: events are collected in order,
    and the final status is kept (OK when the server ended the stream)."""

    def __init__(self, client, session_id, md, after="", pb=None, name="", timeout=None):
        pb = pb or client.pb
        self.name = name
        self.client = client
        self.after = after
        self.cond = threading.Condition()
        self.events = []
        self.done = False
        self.code = None
        self.details = None
        self.ended_at = None
        self.call = client.stream(pb.SubscribeRequest(session_id=session_id,
                                                      after_event_id=after), md, timeout)
        self.thread = threading.Thread(target=self._run, daemon=True, name="sub-" + name)
        self.thread.start()

    def _run(self):
        code, details = SC.OK, ""
        try:
            for ev in self.call:
                with self.cond:
                    self.events.append((time.monotonic(), ev))
                    self.cond.notify_all()
        except grpc.RpcError as e:
            code, details = e.code(), e.details()
        except Exception as e:  # noqa: BLE001 - reported as the stream's end
            code, details = SC.UNKNOWN, "reader: %r" % (e,)
        with self.cond:
            self.done = True
            self.code = code
            self.details = details
            self.ended_at = time.monotonic()
            self.cond.notify_all()

    def evs(self):
        with self.cond:
            return [e for _, e in self.events]

    def last_id(self, default=""):
        with self.cond:
            return self.events[-1][1].id if self.events else default

    def wait(self, pred, timeout=WAIT_TIMEOUT, what="events"):
        """Wait until pred(list of events) is true; return its value. Fails
        with the events seen and the stream's end status."""
        return wait_events(self, pred, timeout, lambda: self.done, lambda timed_out: (
            "stream %s: %s while waiting for %s; events %s" % (
                self.name,
                "timed out after %.1fs" % timeout if timed_out
                else "ended with %s %r" % (self.code.name, self.details),
                what, evs_str(e for _, e in self.events))))

    def wait_event(self, match, timeout=WAIT_TIMEOUT, what="an event", start=0):
        """The first event (index >= start) for which match(ev) is true."""
        def pred(evs):
            for e in evs[start:]:
                if match(e):
                    return e
            return None
        return self.wait(pred, timeout, what)

    def wait_count(self, n, timeout=WAIT_TIMEOUT):
        return self.wait(lambda evs: evs if len(evs) >= n else None, timeout,
                         "%d events" % n)

    def wait_end(self, timeout=WAIT_TIMEOUT):
        """The stream's final status (waits for it)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("stream %s did not end within %.1fs; events %s" % (
                        self.name, timeout, evs_str(e for _, e in self.events)))
                self.cond.wait(min(left, 0.5))
            return self.code

    def cancel(self):
        self.call.cancel()
        self.thread.join(30)


# ---- participants -----------------------------------------------------------------

class Peer:
    """One end user: a token from rtc-auth, and after join() a session."""

    def __init__(self, case, identity, room, grants=("join",), name="", ttl_ms=0):
        self.case = case
        self.pb = case.pb
        self.identity = identity
        self.room = room
        self.tok = case.issue(identity, room, grants, ttl_ms=ttl_ms, name=name)
        self.token = self.tok.access_token
        self.md = bearer(self.token)
        self.sid = self.pid = self.resume = None
        self.joined = None
        self.subs = []

    def join(self, client, metadata="", resume_token="", **kw):
        r = client.call("Join", self.pb.JoinRequest(metadata=metadata, resume_token=resume_token),
                        self.md, **kw)
        self.joined = r
        self.sid, self.pid, self.resume = r.session_id, r.participant.id, r.resume_token
        return r

    def subscribe(self, client, after="", name=None):
        s = Subscription(client, self.sid, self.md, after, pb=self.pb,
                         name=name or "%s@%s" % (self.identity, client.name))
        self.subs.append(s)
        self.case.addCleanup(s.call.cancel)
        return s

    def signal(self, client, to, payload, client_msg_id="", **kw):
        return client.call("Signal", self.pb.SignalRequest(
            session_id=self.sid, to_participant_id=to, payload=payload,
            client_msg_id=client_msg_id), self.md, **kw)

    def send_data(self, client, to, data, client_msg_id="", **kw):
        return self.signal(client, to, self.pb.SignalPayload(data=data), client_msg_id, **kw)

    def broadcast(self, client, data, client_msg_id="", **kw):
        return client.call("Broadcast", self.pb.BroadcastRequest(
            session_id=self.sid, data=data, client_msg_id=client_msg_id), self.md, **kw)

    def heartbeat(self, client, **kw):
        return client.call("Heartbeat", self.pb.HeartbeatRequest(session_id=self.sid),
                           self.md, **kw)

    def leave(self, client, **kw):
        return client.call("Leave", self.pb.LeaveRequest(session_id=self.sid), self.md, **kw)

    def negotiation(self, client, peer, **kw):
        return client.call("GetNegotiation", self.pb.GetNegotiationRequest(
            session_id=self.sid, peer_participant_id=peer), self.md, **kw)


def is_signal_from(pid, data=None):
    def m(ev):
        if ev.WhichOneof("kind") != "signal" or ev.signal.from_participant_id != pid:
            return False
        return data is None or ev.signal.payload.data == data
    return m


def is_joined(pid):
    return lambda ev: (ev.WhichOneof("kind") == "participant_joined" and
                       ev.participant_joined.participant.id == pid)


def is_left(pid):
    return lambda ev: (ev.WhichOneof("kind") == "participant_left" and
                       ev.participant_left.participant.id == pid)


def proc_cpu_ms(pid):
    """utime + stime of a process in ms (for printed figures)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) * 1000 // os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0


class Follower:
    """Keeps one session's Subscribe open across pod deaths: when a stream
    ends with an allowed code (UNAVAILABLE: its pod died or lost Redis), it
    subscribes again after the last event id, through pick() (returns the
    SigClient to use now). Every event and every stream end is recorded."""

    def __init__(self, peer, pick, allowed=(SC.UNAVAILABLE,), name="", deadline_s=120.0):
        self.peer = peer
        self.pick = pick
        self.allowed = tuple(allowed)
        self.name = name or peer.identity
        self.deadline_s = deadline_s
        self.cond = threading.Condition()
        self.events = []        # (monotonic time, Event)
        self.ends = []          # (code, details, pod name, events in that stream)
        self.errors = []
        self.subscribes = 0
        self.stopped = False
        self.finished = False
        self.call = None
        self.thread = threading.Thread(target=self._loop, daemon=True, name="follow-" + self.name)
        self.thread.start()

    def last_id(self):
        with self.cond:
            return self.events[-1][1].id if self.events else ""

    def _loop(self):
        first_failure = None
        try:
            while True:
                with self.cond:
                    if self.stopped:
                        return
                client = self.pick()
                call = client.stream(self.peer.pb.SubscribeRequest(
                    session_id=self.peer.sid, after_event_id=self.last_id()), self.peer.md)
                with self.cond:
                    self.call = call
                    self.subscribes += 1
                    if self.stopped:
                        call.cancel()
                n = 0
                try:
                    for ev in call:
                        n += 1
                        first_failure = None
                        with self.cond:
                            self.events.append((time.monotonic(), ev))
                            self.cond.notify_all()
                    code, details = SC.OK, ""
                except grpc.RpcError as e:
                    code, details = e.code(), e.details()
                with self.cond:
                    if self.stopped:
                        return
                    self.ends.append((code, details, client.name, n))
                    if code == SC.OK:
                        return
                    if code not in self.allowed:
                        self.errors.append("stream on %s ended with %s %r after %d events" % (
                            client.name, code.name, details, n))
                        return
                    now = time.monotonic()
                    if n == 0:
                        first_failure = first_failure or now
                        if now - first_failure > self.deadline_s:
                            self.errors.append("no stream for %.0fs (last %s %r)" % (
                                self.deadline_s, code.name, details))
                            return
                    # Pace the re-subscribes (not a wait for an outcome).
                    self.cond.wait(0.05)
        finally:
            with self.cond:
                self.finished = True
                self.cond.notify_all()

    def wait(self, pred, timeout=WAIT_TIMEOUT, what="events"):
        return wait_events(self, pred, timeout, lambda: self.finished, lambda timed_out: (
            "follower %s: %s waiting for %s; ends %s; errors %s; events %s" % (
                self.name, "timed out" if timed_out else "gave up", what, self.ends[-5:],
                self.errors, evs_str(e for _, e in self.events))))

    def stop(self):
        with self.cond:
            self.stopped = True
            call = self.call
            self.cond.notify_all()
        if call is not None:
            call.cancel()
        self.thread.join(30)

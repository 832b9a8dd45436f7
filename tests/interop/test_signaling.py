#!/usr/bin/python3
"""Interop: the real rtc-signaling (two pods) with a real rtc-auth and a real
redis-server (and, for HA, a replica and three redis-sentinels), driven by
Debian's python3-grpcio. The contract is proto/rtc/signaling/v1/signaling.proto
and services/signaling/README.md.

Usage:
    /usr/bin/python3 test_signaling.py <bin dir> <repo root>
        [--suite signaling|signaling_ha|all] [-v] [TestClass[.test_method] ...]

Environment: RTC_PROTOC (protoc 3.21; default protoc on PATH). Needs on PATH:
redis-server, redis-sentinel (Debian redis-server, redis-sentinel). A
missing tool fails the test with the package to install; nothing is
skipped.

Every process runs on 127.0.0.1 with a free port, is started per test class
and stopped in the class cleanup even when a test or the setup fails.
Nothing sleeps for a fixed time: waits poll a condition with a generous
deadline. The only timing assertions are the bounds the contract states
(expiry within TTL + sweep interval, revocation within --revocation-check,
failover recovery), each with slack, and the measured figures are printed.
"""

import os
import shutil
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import grpc  # noqa: E402
except ImportError as e:
    sys.exit("test_signaling.py: %s. Run it with /usr/bin/python3 and install Debian's "
             "python3-grpcio python3-protobuf." % e)

import auth_helpers as H  # noqa: E402
import signaling_helpers as S  # noqa: E402
from auth_helpers import basic, bearer, now_ms, wait_for  # noqa: E402
from signaling_helpers import (Peer, call_code, ev_str, evs_str,  # noqa: E402
                               is_joined, is_left, is_signal_from)

BIN_DIR = os.environ.get("RTC_BIN_DIR", "")
REPO = os.environ.get("RTC_REPO_ROOT") or os.path.dirname(os.path.dirname(HERE))
SC = grpc.StatusCode

# rtc-auth's API key (issues and revokes tokens).
AUTH_KEY = ("test", "auth-test-secret-0123456789", "issue,revoke,admin")
# rtc-signaling's API keys: one with admin, one without.
SIG_ADMIN = ("admin", "signaling-admin-secret-0123", "admin")
SIG_OTHER = ("svc", "signaling-svc-secret-012345", "issue,verify")
SIG_API_KEYS = "%s %s %s;%s %s %s" % (SIG_ADMIN + SIG_OTHER)
ADMIN_MD = basic(SIG_ADMIN[0], SIG_ADMIN[1])

SDP_OFFER = ("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
             "a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
             "a=mid:0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n"
             "a=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n")
SDP_ANSWER = SDP_OFFER.replace("actpass", "active").replace("abcd", "wxyz")
CAND = "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host"

_PB = {}
FIGURES = []  # (name, text) printed in the summary


def figure(name, text):
    FIGURES.append((name, text))
    H.log("FIGURE %s: %s" % (name, text))


def protos():
    """(signaling_pb2, auth_pb2, health_pb2), generated once per run."""
    if not _PB:
        d = tempfile.mkdtemp(prefix="rtc-sig-pb-")
        _PB["dir"] = d
        _PB["sig"], _PB["auth"], _PB["health"] = S.load_protos(REPO, d)
    return _PB["sig"], _PB["auth"], _PB["health"]


def exe(name):
    if not BIN_DIR:
        raise AssertionError("no bin dir: run through ctest, or as test_signaling.py <bin dir> "
                             "<repo root>")
    return os.path.join(BIN_DIR, name)


class SigCase(S.DumpLogsOnFailure, unittest.TestCase):
    """Base: a temp dir, redis-server, rtc-auth (--dev) and NUM_PODS
    rtc-signaling pods sharing that Redis. POD_ARGS are extra flags for every
    pod, POD_ARGS_EACH (list) for pod i."""

    NUM_PODS = 2
    POD_ARGS = ("--rate-limit", "0")
    POD_ARGS_EACH = None
    AUTH_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.procs = []
        cls.rooms = 0
        cls.tmp = tempfile.mkdtemp(prefix="rtc-sig-test-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        try:
            cls.pb, cls.apb, cls.hpb = protos()
            cls.setup_redis()
            log_path = os.path.join(cls.tmp, "rtc-auth.log")
            cls.procs.append(("rtc-auth", {"log": log_path}))
            cls.auth = H.AuthServer(exe("rtc-auth"), [
                "--dev", "--api-keys", "%s %s %s" % AUTH_KEY, "--leeway", "0s"] +
                cls.auth_redis_args() + list(cls.AUTH_ARGS), log_path)
            cls.addClassCleanup(cls.auth.stop)
            cls.authc = H.AuthClient(cls.auth.addr, cls.apb, cls.hpb)
            cls.addClassCleanup(cls.authc.close)
            cls.pods, cls.clients = [], []
            for i in range(cls.NUM_PODS):
                cls.add_pod(i)
            cls.extra_setup()
        except BaseException:
            cls.dump_logs("setUpClass of %s" % cls.__name__)
            raise

    @classmethod
    def setup_redis(cls):
        cls.redis = H.Redis(cls.tmp)
        cls.addClassCleanup(cls.redis.stop)
        cls.redis.start()
        cls.procs.append(("redis-server", cls.redis))

    @classmethod
    def auth_redis_args(cls):
        """Where rtc-auth keeps revocations: the pods' Redis, which they read."""
        return cls.redis_args()

    @classmethod
    def redis_args(cls):
        return ["--redis", cls.redis.url]

    @classmethod
    def extra_setup(cls):
        pass

    @classmethod
    def pod_args(cls, i):
        a = cls.redis_args() + ["--auth", cls.auth.addr, "--api-keys", SIG_API_KEYS]
        a += list(cls.POD_ARGS)
        if cls.POD_ARGS_EACH:
            a += list(cls.POD_ARGS_EACH[i])
        return a

    @classmethod
    def add_pod(cls, i):
        pod = S.Pod(exe("rtc-signaling"), cls.pod_args(i), cls.tmp, "pod%d" % (i + 1))
        cls.procs.append(("rtc-signaling pod%d" % (i + 1), pod))
        cls.addClassCleanup(pod.stop)
        pod.start()
        client = S.SigClient(pod.addr, cls.pb, cls.hpb, name="pod%d" % (i + 1))
        cls.addClassCleanup(client.close)
        cls.pods.append(pod)
        cls.clients.append(client)
        return pod, client


    # ---- helpers ----

    @property
    def p1(self):
        return self.clients[0]

    @property
    def p2(self):
        return self.clients[1]

    def room(self, tag=""):
        type(self).rooms += 1
        base = (tag or self._testMethodName[5:]).replace("_", "-")[:40]
        return "%s-%d-%d" % (base, os.getpid() % 1000, type(self).rooms)

    def issue(self, identity, room, grants=("join",), ttl_ms=0, name=""):
        req = self.apb.IssueTokenRequest(identity=identity, room_id=room, ttl_ms=ttl_ms,
                                         display_name=name)
        for g in grants:
            req.grants.append(getattr(self.apb, "GRANT_" + g.upper()))
        return self.authc.call("IssueToken", req, metadata=basic(AUTH_KEY[0], AUTH_KEY[1]))

    def revoke(self, tok):
        return self.authc.call("RevokeToken", self.apb.RevokeTokenRequest(
            token_id=tok.token_id, expires_at_ms=tok.expires_at_ms),
            metadata=basic(AUTH_KEY[0], AUTH_KEY[1]))

    def peer(self, identity, room, grants=("join",), name="", ttl_ms=0):
        return Peer(self, identity, room, grants, name, ttl_ms)

    def admin(self, method, req, client=None, md=ADMIN_MD, **kw):
        """A SignalingAdmin call, with the admin API key unless md is given
        (md=None: no credentials)."""
        return (client or self.p1).call(method, req, md, **kw)

    def create_room(self, room, client=None, **settings):
        return self.admin("CreateRoom", self.pb.CreateRoomRequest(
            room_id=room, settings=self.pb.RoomSettings(**settings)), client).room

    def assertCode(self, codes, fn, *args, what="", **kw):
        """fn(*args, **kw) must fail with one of codes; returns the RpcError."""
        if isinstance(codes, SC):
            codes = (codes,)
        want = "/".join(c.name for c in codes)
        try:
            resp = fn(*args, **kw)
        except grpc.RpcError as e:
            self.assertIn(e.code(), codes, "%s: expected %s, got %s: %r" % (
                what, want, e.code().name, e.details()))
            return e
        self.fail("%s: expected %s, but the call succeeded: %r" % (
            what, want, str(resp)[:300]))

    def data_payload(self, data):
        return self.pb.SignalPayload(data=data)

    def marker(self, sender, client, to_sub, to_pid, text):
        """Send a data signal and wait until to_sub has it: everything sent
        to that mailbox before it has been delivered by then."""
        r = sender.send_data(client, to_pid, text.encode())
        to_sub.wait_event(lambda e: e.id == r.event_id, what="marker %s" % text)
        return r.event_id

    def redis_keys(self, pattern="rtc:*"):
        out, cursor = [], "0"
        while True:
            cursor, keys = self.redis.cmd("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            out += keys
            if cursor == "0":
                return out

    def metric(self, pod, name, labels=""):
        """The value of one sample on a pod's /metrics (0 when absent)."""
        want = name + ("{%s}" % labels if labels else "")
        for line in pod.metrics().splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def inbox_len(self, room, pid):
        return self.redis.cmd("XLEN", "rtc:{%s}:inbox:%s" % (room, pid))

    def sub_status(self, client, sid, md, after=""):
        """Subscribe that must fail before any event; raises its RpcError."""
        call = client.stream(self.pb.SubscribeRequest(session_id=sid, after_event_id=after), md,
                             timeout=H.RPC_TIMEOUT)
        for ev in call:
            call.cancel()
            return "stream opened, first event %s" % ev_str(ev)
        return "stream ended OK"

    def test_zzz_pods_alive_and_exit_cleanly(self):
        """Runs last in each class: every pod is still alive (nothing above
        crashed it), then drains and exits 0 on SIGTERM with no sanitizer
        report in its log."""
        for pod in self.pods:
            self.assertTrue(pod.alive(), "%s died (status %s):\n%s" % (
                pod.name, pod.proc.proc.returncode, pod.proc.log_tail()))
        room = self.room("drain")
        opened = []
        for i, pod in enumerate(self.pods):
            p = self.peer("drainer%d" % i, room, ("join", "create"))
            p.join(self.clients[i])
            opened.append(p.subscribe(self.clients[i]))
        for pod, s in zip(self.pods, opened):
            rc = pod.stop()
            # A drain ends open streams at once with UNAVAILABLE, so their
            # clients re-subscribe on another pod.
            self.assertEqual(s.wait_end(30), SC.UNAVAILABLE, s.details)
            text = pod.all_logs()
            tail = "\n".join(text.splitlines()[-40:])
            self.assertNotIn("Sanitizer", text, tail)
            self.assertNotIn("runtime error:", text, tail)
            self.assertEqual(rc, 0, "%s exited with %s on SIGTERM:\n%s" % (pod.name, rc, tail))


# ---- 1. flows across two pods ------------------------------------------------------

class FlowTest(SigCase):

    def test_two_pod_flow(self):
        pb = self.pb
        room = self.room()
        a = self.peer("alice", room, ("join", "create"), name="Alice")
        b = self.peer("bob", room)
        c = self.peer("carol", room)

        t0 = now_ms()
        ja = a.join(self.p1, metadata='{"who":"a"}')
        t1 = now_ms()
        self.assertTrue(0 < len(ja.session_id) <= 64, ja.session_id)
        self.assertTrue(0 < len(ja.participant.id) <= 64, ja.participant.id)
        self.assertEqual(ja.participant.identity, "alice")
        self.assertEqual(ja.participant.display_name, "Alice")
        self.assertEqual(ja.participant.metadata, '{"who":"a"}')
        self.assertTrue(t0 - 1000 <= ja.participant.joined_at_ms <= t1 + 1000,
                        (t0, ja.participant.joined_at_ms, t1))
        self.assertEqual(list(ja.participants), [])
        self.assertTrue(ja.resume_token)
        self.assertFalse(ja.resumed)
        self.assertEqual(ja.room.id, room)
        self.assertEqual(ja.room.participant_count, 1, ja.room)
        self.assertEqual(ja.heartbeat_interval_ms, 10000, "default --heartbeat-interval 10s")
        urls = [u for s in ja.ice_servers for u in s.urls]
        self.assertIn("stun:127.0.0.1:3478", urls, "ICE servers from rtc-auth: %s" % ja.ice_servers)

        sa = a.subscribe(self.p1)
        jb = b.join(self.p2, metadata="b-meta")
        self.assertEqual([p.id for p in jb.participants], [a.pid])
        self.assertEqual(jb.participants[0], ja.participant)
        self.assertEqual(jb.participant.display_name, "bob", "no name in token: the identity")
        self.assertNotEqual(jb.participant.id, a.pid)
        self.assertNotEqual(jb.session_id, a.sid)
        self.assertEqual(jb.room.participant_count, 2)
        ev = sa.wait_event(is_joined(b.pid), what="participant_joined(B) on pod1")
        self.assertEqual(ev.participant_joined.participant, jb.participant)
        self.assertTrue(t0 - 1000 <= ev.timestamp_ms <= now_ms() + 1000, ev.timestamp_ms)
        sb = b.subscribe(self.p2)

        # Offer A -> B through pod 1, B's stream is on pod 2.
        offer = pb.SignalPayload(description=pb.SessionDescription(
            type=pb.SDP_TYPE_OFFER, sdp=SDP_OFFER))
        r_offer = a.signal(self.p1, b.pid, offer)
        self.assertTrue(r_offer.event_id)
        ev = sb.wait_event(lambda e: e.id == r_offer.event_id, what="the offer")
        self.assertEqual(ev.WhichOneof("kind"), "signal")
        self.assertEqual(ev.signal.from_participant_id, a.pid)
        self.assertEqual(ev.signal.payload, offer)
        offer_ev_b = ev.id

        answer = pb.SignalPayload(description=pb.SessionDescription(
            type=pb.SDP_TYPE_ANSWER, sdp=SDP_ANSWER))
        r_answer = b.signal(self.p2, a.pid, answer)
        ev = sa.wait_event(lambda e: e.id == r_answer.event_id, what="the answer")
        self.assertEqual(ev.signal.from_participant_id, b.pid)
        self.assertEqual(ev.signal.payload, answer)
        answer_ev_a = ev.id

        # Candidates with and without sdp_mline_index (0 included), end of
        # candidates, data.
        sent = [
            pb.SignalPayload(candidate=pb.IceCandidate(candidate=CAND, sdp_mid="0",
                                                       sdp_mline_index=0,
                                                       username_fragment="abcd")),
            pb.SignalPayload(candidate=pb.IceCandidate(candidate=CAND + " generation 0",
                                                       sdp_mid="audio")),
            pb.SignalPayload(candidate=pb.IceCandidate(candidate=CAND, sdp_mline_index=3)),
            pb.SignalPayload(end_of_candidates=pb.EndOfCandidates(sdp_mid="0",
                                                                  username_fragment="abcd")),
            pb.SignalPayload(end_of_candidates=pb.EndOfCandidates()),
            pb.SignalPayload(data=b"\x00mute\xff\x01"),
            pb.SignalPayload(description=pb.SessionDescription(type=pb.SDP_TYPE_ROLLBACK)),
        ]
        ids = [a.signal(self.p1, b.pid, p).event_id for p in sent]
        self.assertEqual(len(set(ids)), len(ids), "event ids must be unique: %s" % ids)
        got = sb.wait(lambda evs: [e for e in evs if e.id in ids]
                      if ids[-1] in [e.id for e in evs] else None, what="all candidates")
        self.assertEqual([e.id for e in got], ids, "delivered in the order sent")
        for e, p in zip(got, sent):
            self.assertEqual(e.signal.from_participant_id, a.pid)
            self.assertEqual(e.signal.payload, p, "payload as sent")
        self.assertEqual(got[0].signal.payload.candidate.WhichOneof("mline_index"),
                         "sdp_mline_index", "sdp_mline_index 0 must stay set")
        self.assertEqual(got[0].signal.payload.candidate.sdp_mline_index, 0)
        self.assertIsNone(got[1].signal.payload.candidate.WhichOneof("mline_index"),
                          "an unset sdp_mline_index must stay unset")
        self.assertEqual(got[2].signal.payload.candidate.sdp_mline_index, 3)
        self.assertEqual(got[5].signal.payload.WhichOneof("kind"), "data")

        # A candidate the other way, index 0, through pod 2.
        cand_b = pb.SignalPayload(candidate=pb.IceCandidate(candidate=CAND, sdp_mline_index=0))
        r = b.signal(self.p2, a.pid, cand_b)
        ev = sa.wait_event(lambda e: e.id == r.event_id, what="B's candidate")
        self.assertEqual(ev.signal.payload.candidate.WhichOneof("mline_index"), "sdp_mline_index")

        # C joins through pod 1; Broadcast reaches A and B, not C.
        jc = c.join(self.p1)
        self.assertEqual([p.id for p in jc.participants], [a.pid, b.pid], "join order")
        sa.wait_event(is_joined(c.pid), what="participant_joined(C) at A")
        sb.wait_event(is_joined(c.pid), what="participant_joined(C) at B")
        sc = c.subscribe(self.p1)
        br = c.broadcast(self.p1, b"hello all")
        self.assertEqual(br.recipient_count, 2)
        for s in (sa, sb):
            ev = s.wait_event(lambda e: e.WhichOneof("kind") == "data", what="C's broadcast")
            self.assertEqual(ev.data.from_participant_id, c.pid)
            self.assertEqual(ev.data.data, b"hello all")
        self.marker(a, self.p1, sc, c.pid, "marker-c")
        self.assertEqual([ev_str(e) for e in sc.evs() if e.WhichOneof("kind") == "data"], [],
                         "the broadcaster must not get its own broadcast")

        # GetNegotiation: the last offer and answer, from both sides, on both pods.
        for who, peer, client in ((a, b.pid, self.p2), (b, a.pid, self.p1)):
            n = who.negotiation(client, peer)
            self.assertTrue(n.HasField("offer") and n.HasField("answer"), n)
            self.assertEqual(n.offer.from_participant_id, a.pid)
            self.assertEqual(n.offer.description, offer.description)
            self.assertEqual(n.offer.event_id, offer_ev_b)
            self.assertEqual(n.offer.event_id, r_offer.event_id)
            self.assertTrue(t0 - 1000 <= n.offer.sent_at_ms <= now_ms() + 1000)
            self.assertEqual(n.answer.from_participant_id, b.pid)
            self.assertEqual(n.answer.description, answer.description)
            self.assertEqual(n.answer.event_id, answer_ev_a)
        # A new offer (B -> A this time) replaces the cached one.
        offer2 = pb.SignalPayload(description=pb.SessionDescription(
            type=pb.SDP_TYPE_OFFER, sdp=SDP_OFFER + "a=renegotiate\r\n"))
        r2 = b.signal(self.p1, a.pid, offer2)
        n = a.negotiation(self.p1, b.pid)
        self.assertEqual((n.offer.from_participant_id, n.offer.event_id), (b.pid, r2.event_id))
        self.assertEqual(n.offer.description, offer2.description)
        # A pair without an exchange has nothing cached.
        n = a.negotiation(self.p2, c.pid)
        self.assertFalse(n.HasField("offer") or n.HasField("answer"), n)

        # Heartbeat.
        hb = a.heartbeat(self.p2)
        self.assertGreater(hb.session_expires_at_ms, now_ms())

        # C leaves: the others get participant_left(LEFT); C's stream ends OK.
        c.leave(self.p2)
        for s in (sa, sb):
            ev = s.wait_event(is_left(c.pid), what="participant_left(C)")
            self.assertEqual(ev.participant_left.reason, pb.LEAVE_REASON_LEFT)
            self.assertEqual(ev.participant_left.participant, jc.participant)
        self.assertEqual(sc.wait_end(), SC.OK, "the leaver's stream ends with OK: %r" % sc.details)
        c.leave(self.p1)  # leaving an ended session is not an error
        self.assertCode(SC.NOT_FOUND, c.heartbeat, self.p1, what="Heartbeat after Leave")
        self.assertCode(SC.NOT_FOUND, c.send_data, self.p2, a.pid, b"x",
                        what="Signal after Leave")
        self.assertCode(SC.NOT_FOUND, b.send_data, self.p2, c.pid, b"x",
                        what="Signal to a participant that left")

        self.assertEqual(a.broadcast(self.p2, b"only-b").recipient_count, 1,
                         "who left gets no broadcast")
        sb.wait_event(lambda e: e.WhichOneof("kind") == "data" and e.data.data == b"only-b")

        # A provisional answer is cached as the answer.
        pr = pb.SignalPayload(description=pb.SessionDescription(
            type=pb.SDP_TYPE_PRANSWER, sdp=SDP_ANSWER + "a=pr\r\n"))
        r_pr = a.signal(self.p2, b.pid, pr)
        n = b.negotiation(self.p1, a.pid)
        self.assertEqual((n.answer.from_participant_id, n.answer.event_id), (a.pid, r_pr.event_id))
        self.assertEqual(n.answer.description, pr.description)

        # The room Join created has the default settings.
        g = self.admin("GetRoom", pb.GetRoomRequest(room_id=room)).room
        self.assertEqual((g.settings.max_participants, g.settings.empty_timeout_ms,
                          g.participant_count), (100, 300000, 2))

        for s in (sa, sb):
            evs = s.evs()
            self.assertEqual(len({e.id for e in evs}), len(evs), evs_str(evs))
            self.assertFalse(s.done, "stream %s ended: %s %r" % (s.name, s.code, s.details))
        # Metrics and health of both pods.
        for pod, client in zip(self.pods, self.clients):
            self.assertEqual(self.metric(pod, "rtc_signaling_streams"), 1,
                             "%s holds one open stream" % pod.name)
            self.assertGreater(self.metric(pod, "rtc_signaling_events_total", 'path="direct"') +
                               self.metric(pod, "rtc_signaling_events_total", 'path="fill"'), 0)
            for svc in ("", "rtc.signaling.v1.Signaling", "rtc.signaling.v1.SignalingAdmin"):
                self.assertEqual(client.health(svc), self.hpb.HealthCheckResponse.SERVING, svc)
        self.assertFalse([e for e in sa.evs() if e.WhichOneof("kind") == "participant_joined"
                          and e.participant_joined.participant.id == a.pid],
                         "no participant_joined about oneself")

    def test_replay_after_event_id(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        sa = a.subscribe(self.p1)
        sent = [b.send_data(self.p2, a.pid, b"m%d" % i).event_id for i in range(5)]
        evs = sa.wait(lambda evs: evs if sent[-1] in [e.id for e in evs] else None,
                      what="five signals")
        ids = [e.id for e in evs]
        self.assertEqual(ids[-5:], sent)
        self.assertTrue(is_joined(b.pid)(evs[0]), evs_str(evs))
        for i, k in enumerate([0, 2, len(ids) - 1, 3]):
            client = self.clients[i % 2]
            s = a.subscribe(client, after=ids[k], name="replay-after-%d" % k)
            mark = self.marker(b, self.p1, s, a.pid, "mark%d" % i)
            got = [e.id for e in s.evs()]
            self.assertEqual(got, ids[k + 1:] + [mark],
                             "Subscribe(after=%s) on %s must replay exactly the events after it"
                             % (ids[k], client.name))
            ids.append(mark)
        s = a.subscribe(self.p2, after="", name="replay-all")
        s.wait(lambda evs: len(evs) >= len(ids), what="everything")
        mark = self.marker(b, self.p2, s, a.pid, "last")
        self.assertEqual([e.id for e in s.evs()], ids + [mark], "after='' replays everything")

    def test_newer_subscribe_aborts_older(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        s1 = a.subscribe(self.p1, name="older@pod1")
        s1.wait_event(is_joined(b.pid))
        s2 = a.subscribe(self.p2, after=s1.last_id(), name="newer@pod2")
        self.assertEqual(s1.wait_end(), SC.ABORTED, "older stream (other pod): %r" % s1.details)
        mark = self.marker(b, self.p1, s2, a.pid, "after-abort")
        self.assertEqual([e.id for e in s2.evs()], [mark])
        self.assertNotIn(mark, [e.id for e in s1.evs()])
        # The same on one pod.
        s3 = a.subscribe(self.p2, after=mark, name="newest@pod2")
        self.assertEqual(s2.wait_end(), SC.ABORTED, "older stream (same pod): %r" % s2.details)
        mark2 = self.marker(b, self.p2, s3, a.pid, "after-abort-2")
        self.assertEqual([e.id for e in s3.evs()], [mark2])
        self.assertFalse(s3.done)

    def test_resume(self):
        pb = self.pb
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        ja = a.join(self.p1)
        sa = a.subscribe(self.p1)
        b.join(self.p2)
        sb = b.subscribe(self.p2)
        sa.wait_event(is_joined(b.pid))
        # Resume A's live session through the other pod with the same token.
        r = self.p2.call("Join", pb.JoinRequest(resume_token=ja.resume_token), a.md)
        self.assertTrue(r.resumed, r)
        self.assertEqual(r.participant.id, a.pid, "same participant")
        self.assertEqual(r.session_id, a.sid, "same session")
        self.assertEqual([p.id for p in r.participants], [b.pid])
        # The resume token a resumed Join returns resumes again.
        r1 = self.p1.call("Join", pb.JoinRequest(resume_token=r.resume_token), a.md)
        self.assertTrue(r1.resumed, "resume with the token of a resumed Join")
        self.assertEqual((r1.participant.id, r1.session_id), (a.pid, a.sid))
        # A fresh token of the same identity and room resumes too.
        a2 = self.peer("alice", room)
        r2 = self.p1.call("Join", pb.JoinRequest(resume_token=ja.resume_token), a2.md)
        self.assertTrue(r2.resumed)
        self.assertEqual(r2.participant.id, a.pid)
        mark = self.marker(a, self.p1, sb, b.pid, "after-resume")
        self.assertEqual([ev_str(e) for e in sb.evs() if e.WhichOneof("kind") in (
            "participant_joined", "participant_left")], [],
            "a resume makes no join/leave events for the others (up to %s)" % mark)
        # Another identity presenting A's resume token gets a new session.
        d = self.peer("dave", room)
        rd = self.p2.call("Join", pb.JoinRequest(resume_token=ja.resume_token), d.md)
        self.assertFalse(rd.resumed)
        self.assertNotIn(rd.participant.id, (a.pid, b.pid))
        self.assertNotEqual(rd.session_id, a.sid)
        sb.wait_event(is_joined(rd.participant.id), what="dave's join")
        # A resume token that is not one starts a new session.
        e = self.peer("erin", room)
        re_ = self.p1.call("Join", pb.JoinRequest(resume_token="not-a-resume-token"), e.md)
        self.assertFalse(re_.resumed)
        # A kicked session cannot be resumed either.
        self.admin("RemoveParticipant", self.pb.RemoveParticipantRequest(
            room_id=room, participant_id=rd.participant.id))
        rk = self.p1.call("Join", pb.JoinRequest(resume_token=rd.resume_token), d.md)
        self.assertFalse(rk.resumed, "resume of a removed session")
        self.assertNotEqual(rk.participant.id, rd.participant.id)
        # After Leave, the resume token starts a new session (ids never reused).
        a.leave(self.p1)
        sb.wait_event(is_left(a.pid), what="A's leave")
        r3 = self.p2.call("Join", pb.JoinRequest(resume_token=ja.resume_token), a.md)
        self.assertFalse(r3.resumed)
        self.assertNotEqual(r3.participant.id, a.pid, "participant ids are never reused")
        self.assertNotEqual(r3.session_id, a.sid)

    def test_order_per_sender_across_pods(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        sb = b.subscribe(self.p1)
        ids = [a.send_data(self.clients[i % 2], b.pid, b"%04d" % i).event_id for i in range(300)]
        self.assertEqual(len(set(ids)), 300)
        got = sb.wait(lambda evs: evs if evs and evs[-1].id == ids[-1] else None,
                      what="300 signals")
        self.assertEqual([e.signal.payload.data for e in got], [b"%04d" % i for i in range(300)])
        self.assertEqual([e.id for e in got], ids)

    def test_same_identity_twice_and_concurrent_leave(self):
        room = self.room()
        a1 = self.peer("alice", room, ("join", "create"))
        a2 = self.peer("alice", room)
        b = self.peer("bob", room)
        j1 = a1.join(self.p1)
        b.join(self.p1)
        sb = b.subscribe(self.p2)
        j2 = a2.join(self.p2)
        self.assertNotEqual(j1.participant.id, j2.participant.id, "two tabs, two participants")
        self.assertEqual(j2.participant.identity, "alice")
        self.assertEqual({p.id for p in j2.participants}, {b.pid, a1.pid})
        # Both pods get Leave for a1 at once: one participant_left.
        results = []
        threads = [threading.Thread(target=lambda cl=cl: results.append(call_code(a1.leave, cl)[0]))
                   for cl in self.clients for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(results, [SC.OK] * 6, "Leave is idempotent")
        self.marker(a2, self.p1, sb, b.pid, "after-leaves")
        left = [e for e in sb.evs() if is_left(a1.pid)(e)]
        self.assertEqual(len(left), 1, evs_str(sb.evs()))
        lp = self.admin("ListParticipants", self.pb.ListParticipantsRequest(room_id=room))
        self.assertEqual([p.id for p in lp.participants], [b.pid, a2.pid])

    def test_heartbeat(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        a.join(self.p1)
        for client in self.clients:
            t0 = now_ms()
            hb = a.heartbeat(client)
            t1 = now_ms()
            ttl = 30000  # --session-ttl default
            self.assertTrue(t0 + ttl - 100 <= hb.session_expires_at_ms <= t1 + ttl + 100,
                            "session_expires_at_ms %d not last sign of life + 30 s (%d..%d)"
                            % (hb.session_expires_at_ms, t0 + ttl, t1 + ttl))


# ---- 2. SignalingAdmin ---------------------------------------------------------------

class AdminTest(SigCase):

    def test_create_and_get_room(self):
        pb = self.pb
        room = self.room()
        t0 = now_ms()
        r = self.create_room(room)
        t1 = now_ms()
        self.assertEqual(r.id, room)
        self.assertEqual(r.settings.max_participants, 100, "server default filled in")
        self.assertEqual(r.settings.empty_timeout_ms, 300000, "server default (5m) filled in")
        self.assertEqual(r.settings.metadata, "")
        self.assertTrue(t0 - 1000 <= r.created_at_ms <= t1 + 1000)
        self.assertEqual(r.participant_count, 0)
        self.assertCode(SC.ALREADY_EXISTS, self.create_room, room, what="CreateRoom again")
        self.assertCode(SC.ALREADY_EXISTS, self.create_room, room, client=self.p2,
                        max_participants=3, what="CreateRoom again on pod 2")
        g = self.admin("GetRoom", pb.GetRoomRequest(room_id=room), self.p2).room
        self.assertEqual(g, r, "GetRoom returns the room as created")
        # Explicit settings are kept.
        room2 = self.room("explicit")
        r2 = self.create_room(room2, client=self.p2, max_participants=7,
                              empty_timeout_ms=60000, metadata='{"topic":"x"}')
        self.assertEqual((r2.settings.max_participants, r2.settings.empty_timeout_ms,
                          r2.settings.metadata), (7, 60000, '{"topic":"x"}'))
        # participant_count follows joins.
        a = self.peer("alice", room)
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        g = self.admin("GetRoom", pb.GetRoomRequest(room_id=room)).room
        self.assertEqual(g.participant_count, 2)
        self.assertEqual(g.created_at_ms, r.created_at_ms)
        b.leave(self.p1)
        g = self.admin("GetRoom", pb.GetRoomRequest(room_id=room), self.p2).room
        self.assertEqual(g.participant_count, 1)
        self.assertCode(SC.NOT_FOUND, self.admin, "GetRoom",
                        pb.GetRoomRequest(room_id="no-such-room"), what="GetRoom(unknown)")

    def test_concurrent_create_room(self):
        room = self.room()
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(call_code(
            self.create_room, room, client=self.clients[i % 2], max_participants=10 + i)[0]))
            for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(sorted(c.name for c in results), ["ALREADY_EXISTS"] * 7 + ["OK"])

    def test_list_rooms_paging(self):
        pb = self.pb
        made = set()
        for i in range(23):
            made.add(self.create_room(self.room("page%02d" % i),
                                      client=self.clients[i % 2]).id)
        for size, client in ((7, self.p1), (1, self.p2), (1000, self.p1)):
            seen, pages, token = [], 0, ""
            while True:
                resp = self.admin("ListRooms", pb.ListRoomsRequest(page_size=size,
                                                                   page_token=token), client)
                pages += 1
                self.assertLessEqual(len(resp.rooms), size)
                seen += [r.id for r in resp.rooms]
                token = resp.next_page_token
                if not token:
                    break
                # Tokens work on either pod.
                client = self.clients[pages % 2]
                self.assertLess(pages, 500, "paging does not end")
            self.assertEqual(len(seen), len(set(seen)),
                             "page_size %d: a room seen twice: %s" % (size, sorted(seen)))
            self.assertTrue(made <= set(seen), "page_size %d: missing %s" % (
                size, sorted(made - set(seen))))
            if size == 7:
                self.assertGreaterEqual(pages, 4)
        for r in self.admin("ListRooms", pb.ListRoomsRequest()).rooms:
            if r.id in made:
                self.assertEqual(r.settings.max_participants, 100)
        resp = self.admin("ListRooms", pb.ListRoomsRequest(page_size=0))
        self.assertGreaterEqual(len(resp.rooms), min(23, 100), "page_size 0 means 100")
        self.assertCode(SC.INVALID_ARGUMENT, self.admin, "ListRooms",
                        pb.ListRoomsRequest(page_token="not-a-token!"), what="bad page_token")
        self.assertCode(SC.INVALID_ARGUMENT, self.admin, "ListRooms",
                        pb.ListRoomsRequest(page_size=-1), what="page_size -1")
        self.admin("ListRooms", pb.ListRoomsRequest(page_size=100000))  # capped, not refused

    def test_participants_remove_senddata_close(self):
        pb = self.pb
        room = self.room()
        self.create_room(room)
        peers = [self.peer(n, room) for n in ("alice", "bob", "carol")]
        a, b, c = peers
        for i, p in enumerate(peers):
            p.join(self.clients[i % 2], metadata="m-" + p.identity)
        subs = {p.identity: p.subscribe(self.clients[(i + 1) % 2]) for i, p in enumerate(peers)}
        sa, sb, sc = subs["alice"], subs["bob"], subs["carol"]
        lp = self.admin("ListParticipants", pb.ListParticipantsRequest(room_id=room),
                        self.p2).participants
        self.assertEqual([p.id for p in lp], [a.pid, b.pid, c.pid], "by join time")
        self.assertEqual([p.metadata for p in lp], ["m-alice", "m-bob", "m-carol"])
        self.assertEqual(list(lp), [a.joined.participant, b.joined.participant,
                                    c.joined.participant])

        # RemoveParticipant(B): B gets kicked last and its stream ends OK.
        self.admin("RemoveParticipant", pb.RemoveParticipantRequest(
            room_id=room, participant_id=b.pid, reason="bye bob"))
        self.assertEqual(sb.wait_end(), SC.OK, "kicked stream ends OK: %r" % sb.details)
        evs = sb.evs()
        self.assertTrue(evs and evs[-1].WhichOneof("kind") == "kicked", evs_str(evs))
        self.assertEqual(evs[-1].kicked.reason, "bye bob")
        for s in (sa, sc):
            ev = s.wait_event(is_left(b.pid), what="participant_left(B)")
            self.assertEqual(ev.participant_left.reason, pb.LEAVE_REASON_REMOVED)
        lp = self.admin("ListParticipants", pb.ListParticipantsRequest(room_id=room)).participants
        self.assertEqual([p.id for p in lp], [a.pid, c.pid])
        self.assertCode(SC.NOT_FOUND, b.heartbeat, self.p1, what="Heartbeat of a kicked session")
        self.assertCode(SC.NOT_FOUND, self.admin, "RemoveParticipant",
                        pb.RemoveParticipantRequest(room_id=room, participant_id=b.pid),
                        what="RemoveParticipant twice")

        # SendData to one, then to all: an empty sender.
        r = self.admin("SendData", pb.SendDataRequest(room_id=room, to_participant_id=a.pid,
                                                      data=b"to-a"), self.p2)
        self.assertEqual(r.recipient_count, 1)
        ev = sa.wait_event(lambda e: e.WhichOneof("kind") == "data", what="SendData to A")
        self.assertEqual((ev.data.from_participant_id, ev.data.data), ("", b"to-a"))
        r = self.admin("SendData", pb.SendDataRequest(room_id=room, data=b"to-all"))
        self.assertEqual(r.recipient_count, 2)
        for s in (sa, sc):
            ev = s.wait_event(lambda e: e.WhichOneof("kind") == "data" and e.data.data == b"to-all",
                              what="SendData to all")
            self.assertEqual(ev.data.from_participant_id, "")
        self.assertEqual([e.data.data for e in sc.evs() if e.WhichOneof("kind") == "data"],
                         [b"to-all"], "C got only the data for everyone")
        self.assertCode(SC.NOT_FOUND, self.admin, "SendData", pb.SendDataRequest(
            room_id=room, to_participant_id=b.pid, data=b"x"), what="SendData to a removed one")

        # CloseRoom: room_closed last, streams end OK; the room is gone.
        self.admin("CloseRoom", pb.CloseRoomRequest(room_id=room, reason="done"), self.p2)
        for s in (sa, sc):
            self.assertEqual(s.wait_end(), SC.OK, "%s: %r" % (s.name, s.details))
            evs = s.evs()
            self.assertTrue(evs and evs[-1].WhichOneof("kind") == "room_closed", evs_str(evs))
            self.assertEqual(evs[-1].room_closed.reason, "done")
        self.assertCode(SC.NOT_FOUND, self.admin, "GetRoom", pb.GetRoomRequest(room_id=room),
                        what="GetRoom after CloseRoom")
        self.assertCode(SC.NOT_FOUND, self.admin, "CloseRoom", pb.CloseRoomRequest(room_id=room),
                        what="CloseRoom twice")
        self.assertCode(SC.NOT_FOUND, self.admin, "ListParticipants",
                        pb.ListParticipantsRequest(room_id=room), what="ListParticipants")
        self.assertCode(SC.NOT_FOUND, a.heartbeat, self.p2, what="Heartbeat in a closed room")
        self.assertCode(SC.NOT_FOUND, self.peer("dan", room).join, self.p1,
                        what="Join a closed room without the create grant")
        listed = [r.id for r in self.admin("ListRooms", pb.ListRoomsRequest(
            page_size=1000)).rooms]
        self.assertNotIn(room, listed)
        # With the create grant, the room comes back (empty, new).
        e = self.peer("erin", room, ("join", "create"))
        je = e.join(self.p2)
        self.assertEqual(list(je.participants), [])

    def test_admin_with_bearer_tokens(self):
        pb = self.pb
        room, other = self.room("x"), self.room("y")
        self.create_room(other)
        adm = bearer(self.issue("ops", "", ("admin",)).access_token)
        self.admin("CreateRoom", pb.CreateRoomRequest(room_id=room), md=adm)
        self.admin("GetRoom", pb.GetRoomRequest(room_id=other), md=adm)
        scoped = bearer(self.issue("ops", room, ("admin",)).access_token)
        self.assertEqual(self.admin("GetRoom", pb.GetRoomRequest(room_id=room), md=scoped,
                                    client=self.p2).room.id, room)
        self.admin("ListParticipants", pb.ListParticipantsRequest(room_id=room), md=scoped)


# ---- 3. idempotent retries -------------------------------------------------------------

class IdempotencyTest(SigCase):

    def test_retried_signal_is_delivered_once(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        c = self.peer("carol", room)
        a.join(self.p1)
        b.join(self.p2)
        c.join(self.p1)
        sb = b.subscribe(self.p2)
        first = a.send_data(self.p1, b.pid, b"once", client_msg_id="msg-1").event_id
        again = [a.send_data(cl, b.pid, b"once", client_msg_id="msg-1").event_id
                 for cl in (self.p1, self.p2, self.p2)]
        self.assertEqual(again, [first] * 3, "a retry returns the first call's event id "
                         "(also through the other pod)")
        # Concurrent retries of a new message through both pods.
        results = []

        def send(i):
            results.append(a.send_data(self.clients[i % 2], b.pid, b"race",
                                       client_msg_id="msg-race").event_id)
        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(len(results), 8)
        self.assertEqual(len(set(results)), 1, "concurrent retries: %s" % results)
        # A retry is not delivered again even if its payload differs.
        self.assertEqual(a.send_data(self.p2, b.pid, b"changed", client_msg_id="msg-1").event_id,
                         first)
        # Another session may use the same key: that is a different message.
        other = c.send_data(self.p2, b.pid, b"from-c", client_msg_id="msg-1").event_id
        self.assertNotEqual(other, first)
        mark = self.marker(a, self.p1, sb, b.pid, "end")
        evs = sb.evs()
        count = lambda evs, d: sum(1 for e in evs if e.WhichOneof("kind") == "signal"  # noqa
                                   and e.signal.payload.data == d)
        self.assertEqual(count(evs, b"once"), 1, evs_str(evs))
        self.assertEqual(count(evs, b"race"), 1, evs_str(evs))
        self.assertEqual(count(evs, b"from-c"), 1, evs_str(evs))
        self.assertEqual(count(evs, b"changed"), 0, evs_str(evs))
        self.assertEqual([e.id for e in evs if e.WhichOneof("kind") == "signal" and
                          e.signal.payload.data == b"race"], [results[0]])
        # Replay from the start (other pod) shows the same single copies.
        s2 = b.subscribe(self.p1, after="", name="replay")
        s2.wait_event(lambda e: e.id == mark, what="the marker in the replay")
        evs2 = s2.evs()
        self.assertEqual([e.id for e in evs2], [e.id for e in evs])
        self.assertEqual(count(evs2, b"once"), 1)
        # Redis holds the mailbox with exactly those entries.
        self.assertEqual(self.inbox_len(room, b.pid), len(evs2))

    def test_retried_broadcast_is_delivered_once(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        c = self.peer("carol", room)
        for p, cl in ((a, self.p1), (b, self.p2), (c, self.p1)):
            p.join(cl)
        sb, sc = b.subscribe(self.p1), c.subscribe(self.p2)
        counts = [a.broadcast(cl, b"bc", client_msg_id="bc-1").recipient_count
                  for cl in (self.p1, self.p2, self.p1)]
        self.assertEqual(counts, [2, 2, 2])
        # Signal and Broadcast keep their own keys: the same id in both is
        # two different messages, each answered as itself.
        sig = a.send_data(self.p1, b.pid, b"sig", client_msg_id="bc-1").event_id
        self.assertRegex(sig, r"^\d+-\d+$")
        self.assertEqual(a.broadcast(self.p2, b"bc", client_msg_id="bc-1").recipient_count, 2)
        for s, to in ((sb, b.pid), (sc, c.pid)):
            self.marker(a, self.p2, s, to, "end")
            self.assertEqual(sum(1 for e in s.evs() if e.WhichOneof("kind") == "data"), 1,
                             evs_str(s.evs()))
        self.assertEqual(sum(1 for e in sb.evs() if e.WhichOneof("kind") == "signal" and
                             e.signal.payload.data == b"sig"), 1)


# ---- 4. session expiry -----------------------------------------------------------------

class ExpiryTest(SigCase):
    TTL_S = 2.0
    SWEEP_S = 0.2
    POD_ARGS = ("--rate-limit", "0", "--session-ttl", "2s", "--sweep-interval", "200ms")

    def test_session_without_heartbeat_times_out(self):
        pb = self.pb
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        sa = a.subscribe(self.p1)
        t_sent = time.monotonic()
        b.join(self.p2)
        t_joined = time.monotonic()
        ev = sa.wait_event(is_left(b.pid), timeout=self.TTL_S + self.SWEEP_S + 30,
                           what="participant_left(B, TIMED_OUT)")
        t_left = sa.wait(lambda evs: [t for t, e in sa.events if e.id == ev.id])[0]
        delay = t_left - t_joined
        figure("heartbeat expiry", "B's participant_left arrived %.2f s after its Join "
               "(TTL %.1f s + sweep %.1f s)" % (delay, self.TTL_S, self.SWEEP_S))
        self.assertEqual(ev.participant_left.reason, pb.LEAVE_REASON_TIMED_OUT)
        self.assertLessEqual(delay, self.TTL_S + self.SWEEP_S + 3.0,
                             "expiry must come within TTL + sweep interval (+3 s slack)")
        self.assertGreaterEqual(t_left - t_sent, self.TTL_S - 0.05,
                                "a session must live at least the TTL")
        self.assertCode(SC.NOT_FOUND, b.heartbeat, self.p1, what="Heartbeat after expiry")
        self.assertCode(SC.NOT_FOUND, b.send_data, self.p2, a.pid, b"x",
                        what="Signal after expiry")
        lp = self.admin("ListParticipants", pb.ListParticipantsRequest(room_id=room))
        self.assertEqual([p.id for p in lp.participants], [a.pid])
        self.assertEqual(len([e for e in sa.evs() if is_left(b.pid)(e)]), 1,
                         "exactly one expiry, though both pods sweep")
        swept = sum(self.metric(p, "rtc_signaling_swept_total", 'what="session"')
                    for p in self.pods)
        self.assertGreaterEqual(swept, 1, "rtc_signaling_swept_total{what=\"session\"}")

    def test_heartbeats_and_open_streams_keep_sessions(self):
        pb = self.pb
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        d = self.peer("dave", room)
        e = self.peer("erin", room)
        a.join(self.p1)
        sa = a.subscribe(self.p1)
        d.join(self.p2)
        e.join(self.p1)
        se = e.subscribe(self.p2)  # open stream, no heartbeats
        t0 = time.monotonic()
        beats = 0
        while time.monotonic() - t0 < 2 * self.TTL_S + 1.0:
            hb = d.heartbeat(self.clients[beats % 2])
            beats += 1
            self.assertGreater(hb.session_expires_at_ms, now_ms())
            time.sleep(0.5)  # the client's heartbeat period, not a wait for an outcome
        left = [ev_str(x) for x in sa.evs() if x.WhichOneof("kind") == "participant_left"]
        self.assertEqual(left, [], "after %.1f s (2 x TTL + 1 s): a heartbeating session and a "
                         "session with an open stream must live" % (time.monotonic() - t0))
        lp = self.admin("ListParticipants", pb.ListParticipantsRequest(room_id=room))
        self.assertEqual([p.id for p in lp.participants], [a.pid, d.pid, e.pid])
        e.heartbeat(self.p1)  # alive
        self.assertFalse(se.done, "%s %r" % (se.code, se.details))
        # Closing E's stream lets it expire.
        se.cancel()
        t_cancel = time.monotonic()
        ev = sa.wait_event(is_left(e.pid), timeout=self.TTL_S + self.SWEEP_S + 30,
                           what="E's expiry once its stream is closed")
        delay = time.monotonic() - t_cancel
        figure("expiry after stream close", "%.2f s" % delay)
        self.assertEqual(ev.participant_left.reason, pb.LEAVE_REASON_TIMED_OUT)
        # The bound: the last refresh may be up to TTL/3 before the cancel.
        self.assertLessEqual(delay, self.TTL_S + self.SWEEP_S + 3.0)

    def test_stream_of_a_killed_pod_stops_keeping_the_session(self):
        pb = self.pb
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        sa = a.subscribe(self.p1)
        b.join(self.p1)
        sb = b.subscribe(self.p2)
        sb.wait(lambda evs: True if self.metric(self.pods[1], "rtc_signaling_streams") >= 1
                else None, what="B's stream open on pod2")
        self.pods[1].kill()
        t_kill = time.monotonic()
        try:
            ev = sa.wait_event(is_left(b.pid), timeout=self.TTL_S + self.SWEEP_S + 30,
                               what="B's expiry after its stream's pod died")
            delay = time.monotonic() - t_kill
            figure("expiry after pod kill", "%.2f s after SIGKILL of the pod holding the "
                   "stream" % delay)
            self.assertEqual(ev.participant_left.reason, pb.LEAVE_REASON_TIMED_OUT)
            self.assertLessEqual(delay, self.TTL_S + self.SWEEP_S + 3.0)
        finally:
            self.pods[1].start()

    def test_empty_room_is_closed(self):
        pb = self.pb
        room = self.room()
        self.create_room(room, empty_timeout_ms=500)
        a = self.peer("alice", room)
        a.join(self.p1)
        a.leave(self.p2)
        t0 = time.monotonic()

        def gone():
            code, _ = call_code(self.admin, "GetRoom", pb.GetRoomRequest(room_id=room))
            if code not in (SC.OK, SC.NOT_FOUND):
                raise AssertionError("GetRoom: %s" % code)
            return code == SC.NOT_FOUND
        wait_for(gone, 30, what="the empty room to close")
        figure("empty room closed", "%.2f s after the last Leave (empty_timeout 0.5 s)"
               % (time.monotonic() - t0))
        self.assertLessEqual(time.monotonic() - t0, 0.5 + self.SWEEP_S + 3.0)


# ---- 5. authorization ------------------------------------------------------------------

class AuthzTest(SigCase):
    REVOCATION_CHECK_S = 0.2
    POD_ARGS = ("--rate-limit", "0", "--leeway", "0s", "--revocation-check", "200ms")

    def sub_code(self, client, sid, md, after=""):
        """Status of a Subscribe that must fail before any event."""
        call = client.stream(self.pb.SubscribeRequest(session_id=sid, after_event_id=after),
                             md, timeout=H.RPC_TIMEOUT)
        try:
            for ev in call:
                call.cancel()
                return "event %s" % ev_str(ev)
            return SC.OK
        except grpc.RpcError as e:
            return e.code()

    def session_calls(self, p, md, to=None):
        """(name, fn) for every session call of p's session, with md."""
        pb = self.pb
        to = to or "x"
        return [
            ("Heartbeat", lambda cl: cl.call("Heartbeat", pb.HeartbeatRequest(session_id=p.sid), md)),
            ("Signal", lambda cl: cl.call("Signal", pb.SignalRequest(
                session_id=p.sid, to_participant_id=to, payload=pb.SignalPayload(data=b"x")), md)),
            ("Broadcast", lambda cl: cl.call("Broadcast", pb.BroadcastRequest(
                session_id=p.sid, data=b"x"), md)),
            ("GetNegotiation", lambda cl: cl.call("GetNegotiation", pb.GetNegotiationRequest(
                session_id=p.sid, peer_participant_id=to), md)),
            ("Leave", lambda cl: cl.call("Leave", pb.LeaveRequest(session_id=p.sid), md)),
            ("Subscribe", lambda cl: self._raise_code(self.sub_code(cl, p.sid, md))),
        ]

    def _raise_code(self, code):
        if code == SC.OK or not isinstance(code, SC):
            return code
        raise _Status(code)

    def assertAll(self, code, calls, what):
        for name, fn in calls:
            for cl in self.clients:
                try:
                    got = fn(cl)
                    self.fail("%s: %s on %s succeeded (%r), expected %s" % (
                        what, name, cl.name, str(got)[:200], code.name))
                except (grpc.RpcError, _Status) as e:
                    self.assertEqual(e.code(), code, "%s: %s on %s: %r" % (
                        what, name, cl.name, e.details()))

    def test_missing_and_bad_tokens(self):
        pb = self.pb
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        key = H.Key(self.tmp, "stranger")
        now = int(time.time())
        forged = H.make_jwt({"alg": "ES256", "typ": "JWT", "kid": key.kid},
                            {"iss": "rtc", "aud": "rtc", "sub": "alice", "iat": now, "nbf": now,
                             "exp": now + 600, "jti": "forged-1", "room": room,
                             "grants": ["join", "create"]}, key)
        parts = a.token.split(".")
        tampered = parts[0] + "." + H.b64url(H.b64url_decode(parts[1]).replace(
            b'"alice"', b'"bobby"')) + "." + parts[2]
        for what, md in (("no token", None), ("bearer without token", [("authorization", "Bearer")]),
                         ("garbage", bearer("garbage")), ("three parts", bearer("a.b.c")),
                         ("unknown key", bearer(forged)), ("tampered", bearer(tampered)),
                         ("wrong scheme", [("authorization", "Token " + a.token)])):
            self.assertAll(SC.UNAUTHENTICATED, self.session_calls(a, md, b.pid), what)
            for cl in self.clients:
                self.assertCode(SC.UNAUTHENTICATED, cl.call, "Join", pb.JoinRequest(), md,
                                what="Join, " + what)
        # A's session is untouched.
        a.heartbeat(self.p1)

    def test_expired_token(self):
        room = self.room()
        self.create_room(room)
        a = self.peer("alice", room, ttl_ms=3000)
        a.join(self.p1)
        a.heartbeat(self.p2)  # cached as valid on both pods
        a.heartbeat(self.p1)
        wait_for(lambda: now_ms() > a.tok.expires_at_ms + 100, 30, what="the token to expire")
        self.assertAll(SC.UNAUTHENTICATED, self.session_calls(a, a.md)[:1],
                       "expired token (leeway 0 s)")
        self.assertCode(SC.UNAUTHENTICATED, a.join, self.p2, what="Join with an expired token")

    def test_revoked_token(self):
        room = self.room()
        self.create_room(room)
        a = self.peer("alice", room)
        a.join(self.p1)
        a.heartbeat(self.p1)
        a.heartbeat(self.p2)
        self.revoke(a.tok)
        t0 = time.monotonic()
        refused = {}

        def all_refused():
            for cl in self.clients:
                if cl.name in refused:
                    continue
                code, _ = call_code(a.heartbeat, cl)
                if code == SC.UNAUTHENTICATED:
                    refused[cl.name] = time.monotonic() - t0
                elif code != SC.OK:
                    raise AssertionError("Heartbeat with a revoked token: %s" % code)
            return len(refused) == len(self.clients)
        wait_for(all_refused, 30, interval=0.02, what="the revoked token to be refused")
        figure("revocation seen", ", ".join("%s %.2f s" % kv for kv in sorted(refused.items())) +
               " (--revocation-check %.1f s)" % self.REVOCATION_CHECK_S)
        for name, t in refused.items():
            self.assertLessEqual(t, self.REVOCATION_CHECK_S + 3.0,
                                 "%s accepted a revoked token for %.2f s" % (name, t))
        self.assertCode(SC.UNAUTHENTICATED, a.join, self.p2, what="Join with a revoked token")

    def test_grants_rooms_and_identities(self):
        room_x, room_y = self.room("x"), self.room("y")
        self.create_room(room_x)
        self.create_room(room_y)
        for grants, room in ((("create",), room_x), (("list",), ""), (("admin",), ""),
                             (("admin",), room_x), (("create", "list"), room_x)):
            p = self.peer("nojoin", room, grants)
            self.assertCode(SC.PERMISSION_DENIED, p.join, self.p1,
                            what="Join with grants %s, room %r" % (grants, room))
        self.assertCode(SC.NOT_FOUND, self.peer("alice", self.room("missing")).join, self.p2,
                        what="Join a missing room without create")
        # Same identity, session of room Y, token of room X.
        ax = self.peer("alice", room_x)
        ay = self.peer("alice", room_y)
        bx = self.peer("bob", room_x)
        ax.join(self.p1)
        ay.join(self.p2)
        bx.join(self.p1)
        sx = ax.subscribe(self.p1)
        sx.wait_event(is_joined(bx.pid))
        self.assertAll(SC.PERMISSION_DENIED, self.session_calls(ay, ax.md, bx.pid),
                       "room X token on a room Y session")
        ay.heartbeat(self.p1)  # still alive
        # Another identity in the same room with A's session.
        self.assertAll(SC.PERMISSION_DENIED, self.session_calls(ax, bx.md, bx.pid),
                       "bob's token on alice's session")
        ax.heartbeat(self.p2)
        # A token without join on a session.
        nj = bearer(self.issue("alice", room_x, ("create",)).access_token)
        self.assertAll(SC.PERMISSION_DENIED, self.session_calls(ax, nj, bx.pid)[:1],
                       "token without join on the own session")
        mark = self.marker(bx, self.p2, sx, ax.pid, "still-here")
        self.assertFalse([ev_str(e) for e in sx.evs() if e.WhichOneof("kind") ==
                          "participant_left"], "refused calls must not end anything (%s)" % mark)
        self.assertFalse(sx.done)

    def test_admin_credentials(self):
        pb = self.pb
        room_x, room_y = self.room("x"), self.room("y")
        self.create_room(room_x)
        self.create_room(room_y)
        calls = [
            ("CreateRoom", pb.CreateRoomRequest(room_id=self.room("never"))),
            ("GetRoom", pb.GetRoomRequest(room_id=room_y)),
            ("ListRooms", pb.ListRoomsRequest()),
            ("ListParticipants", pb.ListParticipantsRequest(room_id=room_y)),
            ("RemoveParticipant", pb.RemoveParticipantRequest(room_id=room_y,
                                                              participant_id="nobody")),
            ("SendData", pb.SendDataRequest(room_id=room_y, data=b"x")),
            ("CloseRoom", pb.CloseRoomRequest(room_id=room_y)),
        ]
        join_only = bearer(self.issue("alice", room_y, ("join",)).access_token)
        scoped_x = bearer(self.issue("ops", room_x, ("admin",)).access_token)
        cases = [
            (SC.UNAUTHENTICATED, None, "no credentials"),
            (SC.UNAUTHENTICATED, basic(SIG_ADMIN[0], "wrong-secret-0123456789"), "wrong secret"),
            (SC.UNAUTHENTICATED, basic("nobody", SIG_ADMIN[1]), "unknown key id"),
            (SC.UNAUTHENTICATED, bearer("garbage"), "garbage bearer"),
            (SC.PERMISSION_DENIED, basic(SIG_OTHER[0], SIG_OTHER[1]), "API key without admin"),
            (SC.PERMISSION_DENIED, join_only, "join-only bearer"),
        ]
        for code, md, what in cases:
            for method, req in calls:
                self.assertCode(code, self.admin, method, req, md=md, client=self.p2,
                                what="%s with %s" % (method, what))
        for method, req in calls:
            if method in ("CreateRoom", "ListRooms"):
                continue
            self.assertCode(SC.PERMISSION_DENIED, self.admin, method, req, md=scoped_x,
                            what="%s on room Y with an admin token of room X" % method)
        self.assertEqual(self.admin("GetRoom", pb.GetRoomRequest(room_id=room_x),
                                    md=scoped_x).room.id, room_x)
        self.assertEqual(self.admin("GetRoom", pb.GetRoomRequest(room_id=room_y)).room.id,
                         room_y, "room Y survived the refused CloseRoom")
        # CreateRoom with a create-grant token: its own room only.
        own = self.room("own")
        other = self.room("other")
        creator = bearer(self.issue("maker", own, ("join", "create")).access_token)
        self.assertEqual(self.admin("CreateRoom", pb.CreateRoomRequest(room_id=own),
                                    md=creator).room.id, own)
        self.assertCode(SC.PERMISSION_DENIED, self.admin, "CreateRoom",
                        pb.CreateRoomRequest(room_id=other), md=creator,
                        what="CreateRoom of another room with a create token")
        self.assertCode(SC.NOT_FOUND, self.admin, "GetRoom", pb.GetRoomRequest(room_id=other),
                        what="the refused room must not exist")
        self.assertEqual(self.redis_keys("rtc:{%s}*" % other), [])
        self.assertCode(SC.PERMISSION_DENIED, self.admin, "GetRoom",
                        pb.GetRoomRequest(room_id=own), md=creator,
                        what="GetRoom with a create (not admin) token")
        # ListRooms with a list-grant token.
        lister = bearer(self.issue("lister", "", ("list",)).access_token)
        ids = [r.id for r in self.admin("ListRooms", pb.ListRoomsRequest(page_size=1000),
                                        md=lister).rooms]
        self.assertTrue({room_x, room_y, own} <= set(ids), ids)
        self.assertCode(SC.PERMISSION_DENIED, self.admin, "GetRoom",
                        pb.GetRoomRequest(room_id=room_x), md=lister, what="GetRoom, list token")
        self.assertCode(SC.PERMISSION_DENIED, self.admin, "CreateRoom",
                        pb.CreateRoomRequest(room_id=self.room("l")), md=lister,
                        what="CreateRoom, list token")
        # Listing shows every room: not for tokens scoped to one room.
        for grants in (("list",), ("admin",)):
            scoped = bearer(self.issue("scoped", room_x, grants).access_token)
            self.assertCode(SC.PERMISSION_DENIED, self.admin, "ListRooms",
                            pb.ListRoomsRequest(), md=scoped,
                            what="ListRooms with a %s token for room X" % grants[0])


class _Status(Exception):
    """A Subscribe outcome carried like an RpcError."""

    def __init__(self, code):
        super().__init__(code)
        self._code = code

    def code(self):
        return self._code

    def details(self):
        return "(stream)"


# ---- 6. bad input ----------------------------------------------------------------------

def pb_field(num, value):
    """One length-delimited protobuf field (raw bytes, so invalid UTF-8 too)."""
    key = bytes([(num << 3) | 2])
    n, size = len(value), b""
    while True:
        b = n & 0x7F
        n >>= 7
        size += bytes([b | (0x80 if n else 0)])
        if not n:
            break
    return key + size + value


class BadInputTest(SigCase):

    @classmethod
    def extra_setup(cls):
        cls.ctx = None

    def setUp(self):
        if type(self).ctx is None:
            room = self.room("bad")
            a = self.peer("alice", room, ("join", "create"))
            b = self.peer("bob", room)
            a.join(self.p1)
            b.join(self.p2)
            type(self).ctx = (room, a, b)

    def sig(self, payload, to=None, sid=None, cmid="", client=None):
        _, a, b = self.ctx
        return (client or self.p1).call("Signal", self.pb.SignalRequest(
            session_id=a.sid if sid is None else sid,
            to_participant_id=b.pid if to is None else to, payload=payload,
            client_msg_id=cmid), a.md)

    def test_signal_limits(self):
        pb = self.pb
        room, a, b = self.ctx
        sb = b.subscribe(self.p2)
        before = self.inbox_len(room, b.pid) or 0
        accepted = []
        bad = self.assertCode

        def desc(t, sdp):
            return pb.SignalPayload(description=pb.SessionDescription(type=t, sdp=sdp))

        def cand(**kw):
            return pb.SignalPayload(candidate=pb.IceCandidate(**kw))
        O = pb.SDP_TYPE_OFFER
        refused = [
            ("SDP of 65537 bytes", desc(O, "v" * 65537)),
            ("empty payload", pb.SignalPayload()),
            ("SDP type unspecified", desc(pb.SDP_TYPE_UNSPECIFIED, SDP_OFFER)),
            ("offer without SDP", desc(O, "")),
            ("answer without SDP", desc(pb.SDP_TYPE_ANSWER, "")),
            ("data of 16385 bytes", pb.SignalPayload(data=b"d" * 16385)),
            ("candidate of 1025 bytes", cand(candidate="c" * 1025, sdp_mid="0")),
            ("empty candidate", cand(candidate="", sdp_mid="0")),
            ("sdp_mid of 33 bytes", cand(candidate=CAND, sdp_mid="m" * 33)),
            ("ufrag of 257 bytes", cand(candidate=CAND, sdp_mid="0", username_fragment="u" * 257)),
            ("candidate with neither sdp_mid nor sdp_mline_index", cand(candidate=CAND)),
            ("end_of_candidates sdp_mid of 33 bytes",
             pb.SignalPayload(end_of_candidates=pb.EndOfCandidates(sdp_mid="m" * 33))),
            ("end_of_candidates ufrag of 257 bytes",
             pb.SignalPayload(end_of_candidates=pb.EndOfCandidates(username_fragment="u" * 257))),
        ]
        for what, payload in refused:
            bad(SC.INVALID_ARGUMENT, self.sig, payload, what="Signal with " + what)
        bad(SC.INVALID_ARGUMENT, lambda: self.p2.call("Signal", pb.SignalRequest(
            session_id=a.sid, to_participant_id=b.pid), a.md), what="Signal without payload")
        bad(SC.INVALID_ARGUMENT, self.sig, pb.SignalPayload(data=b"x"), cmid="k" * 65,
            what="client_msg_id of 65 bytes")
        # A refused call with a client_msg_id does not burn the key.
        bad(SC.INVALID_ARGUMENT, self.sig, pb.SignalPayload(data=b"d" * 16385), cmid="refused-1",
            what="data of 16385 bytes, with a client_msg_id")
        ok = [
            ("SDP of exactly 65536 bytes", desc(O, "v" * 65536)),
            ("data of 16384 bytes", pb.SignalPayload(data=b"d" * 16384)),
            ("candidate of 1024 bytes", cand(candidate="c" * 1024, sdp_mline_index=0)),
            ("sdp_mid of 32 bytes, ufrag of 256", cand(candidate=CAND, sdp_mid="m" * 32,
                                                      username_fragment="u" * 256)),
            ("rollback without SDP", desc(pb.SDP_TYPE_ROLLBACK, "")),
            ("client_msg_id of 64 bytes", pb.SignalPayload(data=b"k64")),
        ]
        for what, payload in ok:
            try:
                r = self.sig(payload, cmid="k" * 64 if "64 bytes" in what else "")
            except grpc.RpcError as e:
                self.fail("Signal with %s: refused with %s %r" % (what, e.code().name, e.details()))
            accepted.append((r.event_id, payload))
        r = self.sig(pb.SignalPayload(data=b"after-refusal"), cmid="refused-1")
        accepted.append((r.event_id, pb.SignalPayload(data=b"after-refusal")))
        got = sb.wait(lambda evs: [e for e in evs if e.id in dict(accepted)]
                      if accepted[-1][0] in [e.id for e in evs] else None, what="accepted")
        self.assertEqual([(e.id, e.signal.payload) for e in got], accepted)
        self.assertEqual(len(got[0].signal.payload.description.sdp), 65536)
        self.assertEqual(self.inbox_len(room, b.pid), before + len(accepted),
                         "refused signals must not reach the mailbox")
        self.assertEqual(a.negotiation(self.p2, b.pid).offer.description.sdp, "v" * 65536,
                         "the 65536-byte offer is the cached one")

    def test_recipients_and_ids(self):
        pb = self.pb
        room, a, b = self.ctx
        d = b.pid[:-1] + ("A" if b.pid[-1] != "A" else "B")
        self.assertCode(SC.NOT_FOUND, self.sig, pb.SignalPayload(data=b"x"), to=d,
                        what="Signal to an unknown participant %r" % d)
        self.assertCode(SC.INVALID_ARGUMENT, self.sig, pb.SignalPayload(data=b"x"), to=a.pid,
                        what="Signal to self")
        other_room = self.room("other")
        o = self.peer("oscar", other_room, ("join", "create"))
        o.join(self.p2)
        self.assertCode(SC.NOT_FOUND, self.sig, pb.SignalPayload(data=b"x"), to=o.pid,
                        what="Signal to a participant of another room")
        self.assertCode(SC.NOT_FOUND, a.negotiation, self.p2, d, what="GetNegotiation(unknown)")
        bad_pids = ["", "has space", "semi;colon", "nl\n", "\u00e9t\u00e9", "p" * 65]
        for pid in bad_pids:
            self.assertCode(SC.INVALID_ARGUMENT, self.sig, pb.SignalPayload(data=b"x"), to=pid,
                            what="Signal to participant id %r" % pid)
            self.assertCode(SC.INVALID_ARGUMENT, a.negotiation, self.p1, pid,
                            what="GetNegotiation with peer %r" % pid)
            self.assertCode(SC.INVALID_ARGUMENT, self.admin, "RemoveParticipant",
                            pb.RemoveParticipantRequest(room_id=room, participant_id=pid),
                            what="RemoveParticipant %r" % pid)
            if pid:
                self.assertCode(SC.INVALID_ARGUMENT, self.admin, "SendData", pb.SendDataRequest(
                    room_id=room, to_participant_id=pid, data=b"x"), what="SendData to %r" % pid)
        for sid in ("", "bad session!", "s" * 65, "\u00e9" * 10, "a" * 64 + "\x00"):
            for name, fn in (
                    ("Heartbeat", lambda cl: cl.call("Heartbeat", pb.HeartbeatRequest(
                        session_id=sid), a.md)),
                    ("Leave", lambda cl: cl.call("Leave", pb.LeaveRequest(session_id=sid), a.md)),
                    ("Signal", lambda cl: self.sig(pb.SignalPayload(data=b"x"), sid=sid,
                                                   client=cl)),
                    ("Broadcast", lambda cl: cl.call("Broadcast", pb.BroadcastRequest(
                        session_id=sid, data=b"x"), a.md)),
                    ("GetNegotiation", lambda cl: cl.call("GetNegotiation",
                                                          pb.GetNegotiationRequest(
                                                              session_id=sid,
                                                              peer_participant_id=b.pid), a.md)),
                    ("Subscribe", lambda cl: self.sub_status(cl, sid, a.md))):
                self.assertCode(SC.INVALID_ARGUMENT, fn, self.clients[len(sid) % 2],
                                what="%s with session id %r" % (name, sid))
        for after in ("abc", "1-", "-1", "-", "1-2-3", "1.5-0", " 1-0", "1-0 ",
                      "99999999999999999999999-0", "1-99999999999999999999999", "x" * 65):
            self.assertCode(SC.INVALID_ARGUMENT, self.sub_status, self.clients[len(after) % 2],
                            a.sid, a.md, after, what="Subscribe after_event_id %r" % after)
        # The largest id is well formed: nothing can follow it, so the stream
        # just stays open (until the client's deadline), no error.
        call = self.p1.stream(pb.SubscribeRequest(
            session_id=a.sid, after_event_id="18446744073709551615-18446744073709551615"),
            a.md, timeout=2)
        self.assertCode(SC.DEADLINE_EXCEEDED, list, call, what="Subscribe after the largest id")
        a.heartbeat(self.p1)  # still fine

    def test_broadcast_limits(self):
        pb = self.pb
        room, a, b = self.ctx
        for what, data, cmid in (("empty data", b"", ""), ("data of 16385", b"x" * 16385, ""),
                                 ("client_msg_id of 65", b"x", "k" * 65)):
            self.assertCode(SC.INVALID_ARGUMENT, a.broadcast, self.p2, data, cmid,
                            what="Broadcast with " + what)
        self.assertEqual(a.broadcast(self.p1, b"x" * 16384).recipient_count, 1)
        self.assertCode(SC.INVALID_ARGUMENT, self.admin, "SendData", pb.SendDataRequest(
            room_id=room, data=b"x" * 16385), what="SendData of 16385 bytes")

    def test_room_ids_and_settings(self):
        pb = self.pb
        bad_rooms = ["", "bad room", "r" * 65, "a/b", "\u00fcml", "semi;colon", "{tag}"]
        for rid in bad_rooms:
            for method, req in (
                    ("CreateRoom", pb.CreateRoomRequest(room_id=rid)),
                    ("GetRoom", pb.GetRoomRequest(room_id=rid)),
                    ("CloseRoom", pb.CloseRoomRequest(room_id=rid)),
                    ("ListParticipants", pb.ListParticipantsRequest(room_id=rid)),
                    ("RemoveParticipant", pb.RemoveParticipantRequest(room_id=rid,
                                                                      participant_id="p1")),
                    ("SendData", pb.SendDataRequest(room_id=rid, data=b"x"))):
                self.assertCode(SC.INVALID_ARGUMENT, self.admin, method, req,
                                client=self.clients[len(rid) % 2],
                                what="%s with room id %r" % (method, rid))
        r64 = "R" * 60 + "%04d" % (os.getpid() % 10000)
        self.assertEqual(self.create_room(r64).id, r64, "a 64-byte room id is fine")
        for what, settings in (("max_participants 10001", dict(max_participants=10001)),
                               ("metadata of 4097 bytes", dict(metadata="m" * 4097))):
            rid = self.room("settings")
            self.assertCode(SC.INVALID_ARGUMENT, self.create_room, rid, **settings,
                            what="CreateRoom with " + what)
            self.assertCode(SC.NOT_FOUND, self.admin, "GetRoom", pb.GetRoomRequest(room_id=rid),
                            what="a refused room must not exist")
        r = self.create_room(self.room("max"), max_participants=10000, metadata="m" * 4096)
        self.assertEqual(r.settings.max_participants, 10000)
        keys = self.redis_keys()
        for rid in bad_rooms:
            if rid:
                self.assertFalse([k for k in keys if "{%s}" % rid in k],
                                 "keys for the refused room %r" % rid)

    def test_metadata_and_reasons(self):
        pb = self.pb
        room = self.room()
        self.create_room(room)
        a = self.peer("alice", room)
        a.join(self.p1)
        sa = a.subscribe(self.p1)
        b = self.peer("bob", room)
        self.assertCode(SC.INVALID_ARGUMENT, b.join, self.p2, metadata="m" * 4097,
                        what="Join with 4097 bytes of metadata")
        self.assertCode(SC.INVALID_ARGUMENT, self.p1.raw, "Join",
                        pb_field(1, b"bad \xff\xfe utf-8"), b.md,
                        what="Join with invalid UTF-8 metadata")
        jb = b.join(self.p2, metadata="\u00e9" * 2048)  # 4096 bytes
        self.assertEqual(len(jb.participant.metadata.encode()), 4096)
        mark = self.marker(b, self.p2, sa, a.pid, "m")
        joins = [e for e in sa.evs() if e.WhichOneof("kind") == "participant_joined"]
        self.assertEqual([e.participant_joined.participant.id for e in joins], [b.pid],
                         "refused Joins make no participant (up to %s)" % mark)
        lp = self.admin("ListParticipants", pb.ListParticipantsRequest(room_id=room))
        self.assertEqual([p.id for p in lp.participants], [a.pid, b.pid])
        self.assertEqual(self.redis.cmd("ZCARD", "rtc:{%s}:members" % room), 2)
        pinfo = self.redis.cmd("HKEYS", "rtc:{%s}:pinfo" % room)
        # "<P>", "<P>:…" per participant and "s:<session>" per live session
        owners = {f[2:] if f.startswith("s:") else f.split(":", 1)[0] for f in pinfo}
        self.assertEqual(owners, {a.pid, b.pid, a.sid, b.sid},
                         "rtc:{R}:pinfo fields %s: nothing for refused Joins" % pinfo)
        sessions = self.redis_keys("rtc:{%s}:sess:*" % room)
        self.assertEqual(len(sessions), 2, "sessions: %s" % sessions)
        # Reasons: at most 256 bytes of UTF-8.
        for what, data in (
                ("CloseRoom reason of 257 bytes",
                 ("CloseRoom", pb_field(1, room.encode()) + pb_field(2, b"r" * 257))),
                ("CloseRoom reason with invalid UTF-8",
                 ("CloseRoom", pb_field(1, room.encode()) + pb_field(2, b"bad \xc3\x28"))),
                ("RemoveParticipant reason of 257 bytes",
                 ("RemoveParticipant", pb_field(1, room.encode()) + pb_field(2, b.pid.encode()) +
                  pb_field(3, b"r" * 257))),
                ("RemoveParticipant reason with invalid UTF-8",
                 ("RemoveParticipant", pb_field(1, room.encode()) + pb_field(2, b.pid.encode()) +
                  pb_field(3, b"\xed\xa0\x80 surrogate")))):
            self.assertCode(SC.INVALID_ARGUMENT, self.p2.raw, data[0], data[1], ADMIN_MD,
                            what=what)
        b.heartbeat(self.p1)  # not removed
        self.admin("GetRoom", pb.GetRoomRequest(room_id=room))  # not closed
        self.admin("RemoveParticipant", pb.RemoveParticipantRequest(
            room_id=room, participant_id=b.pid, reason="\u00e9" * 128))  # 256 bytes: fine
        ev = sa.wait_event(is_left(b.pid))
        self.assertEqual(ev.participant_left.reason, pb.LEAVE_REASON_REMOVED)

    def test_closed_room_and_full_room(self):
        pb = self.pb
        room = self.room("closed")
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        self.admin("CloseRoom", pb.CloseRoomRequest(room_id=room))
        self.assertCode(SC.NOT_FOUND, a.heartbeat, self.p2, what="Heartbeat, closed room")
        # Leave of an ended session is OK for its owner, refused to others.
        self.assertCode(SC.PERMISSION_DENIED, lambda cl: cl.call(
            "Leave", pb.LeaveRequest(session_id=a.sid), b.md), self.p1,
            what="bob's Leave of alice's ended session")
        a.leave(self.p2)
        self.assertCode(SC.NOT_FOUND, a.send_data, self.p1, b.pid, b"x",
                        what="Signal, closed room")
        self.assertCode(SC.NOT_FOUND, a.broadcast, self.p1, b"x", what="Broadcast, closed room")
        self.assertCode(SC.NOT_FOUND, a.negotiation, self.p2, b.pid,
                        what="GetNegotiation, closed room")
        full = self.room("full")
        self.create_room(full, max_participants=2)
        p = [self.peer(n, full) for n in ("alice", "bob", "carol")]
        p[0].join(self.p1)
        s0 = p[0].subscribe(self.p2)
        p[1].join(self.p2)
        self.assertCode(SC.RESOURCE_EXHAUSTED, p[2].join, self.p1, what="third Join, max 2")
        self.assertCode(SC.RESOURCE_EXHAUSTED, p[2].join, self.p2, what="third Join again")
        self.assertEqual(self.admin("GetRoom", pb.GetRoomRequest(room_id=full)
                                    ).room.participant_count, 2)
        p[1].leave(self.p1)
        s0.wait_event(is_left(p[1].pid))
        jc = p[2].join(self.p1)
        self.assertEqual(len(jc.participants), 1)
        s0.wait_event(is_joined(p[2].pid))
        joins = [e.participant_joined.participant.id for e in s0.evs()
                 if e.WhichOneof("kind") == "participant_joined"]
        self.assertEqual(joins, [p[1].pid, p[2].pid], "the refused Joins made no event")

    def test_subscribe_on_a_closed_rooms_session(self):
        """signaling.proto (Subscribe): a session that ended recently still
        replays what is left of its mailbox and the stream ends OK, so a
        client that lost its stream learns why the session ended; every
        other call on it is NOT_FOUND."""
        pb = self.pb
        room = self.room("closed-sub")
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        self.admin("CloseRoom", pb.CloseRoomRequest(room_id=room, reason="over"))
        self.assertCode(SC.NOT_FOUND, a.heartbeat, self.p2, what="Heartbeat, closed room")
        call = self.p2.stream(pb.SubscribeRequest(session_id=a.sid), a.md, timeout=H.RPC_TIMEOUT)
        kinds = [ev.WhichOneof("kind") for ev in call]  # ends OK or raises
        self.assertEqual(kinds, ["participant_joined", "room_closed"])
        last = None
        call = self.p1.stream(pb.SubscribeRequest(session_id=a.sid), a.md, timeout=H.RPC_TIMEOUT)
        for ev in call:
            last = ev.id
        call = self.p1.stream(pb.SubscribeRequest(session_id=a.sid, after_event_id=last), a.md,
                              timeout=H.RPC_TIMEOUT)
        self.assertEqual(list(call), [], "nothing after the last event; the stream ends OK")

    def test_concurrent_joins_into_a_small_room(self):
        pb = self.pb
        room = self.room("race")
        self.create_room(room, max_participants=3)
        peers = [self.peer("p%d" % i, room) for i in range(10)]
        results = {}
        threads = [threading.Thread(target=lambda p=p, i=i: results.__setitem__(
            p.identity, call_code(p.join, self.clients[i % 2])[0])) for i, p in enumerate(peers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        codes = sorted(c.name for c in results.values())
        self.assertEqual(codes, ["OK"] * 3 + ["RESOURCE_EXHAUSTED"] * 7, results)
        lp = self.admin("ListParticipants", pb.ListParticipantsRequest(room_id=room))
        self.assertEqual(len(lp.participants), 3)
        self.assertEqual(self.redis.cmd("ZCARD", "rtc:{%s}:members" % room), 3)

    def test_zz_still_serving_and_no_garbage(self):
        room, a, b = self.ctx
        sb = b.subscribe(self.p1)
        self.marker(a, self.p2, sb, b.pid, "still-serving")
        self.marker(a, self.p1, sb, b.pid, "still-serving-2")
        keys = self.redis_keys()
        for k in keys:
            self.assertTrue(k.startswith("rtc:"), k)
        idem = [k for k in keys if ":idem:" in k]
        self.assertFalse([k for k in idem if k.endswith(":" + "k" * 65)],
                         "idempotency key of a refused call: %s" % idem)
        for pod in self.pods:
            self.assertEqual(pod.readyz()[0], 200)


class RateLimitTest(SigCase):
    POD_ARGS = ("--rate-limit", "5")

    def test_rate_limit_across_pods(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        t0 = time.monotonic()
        codes = []
        for i in range(20):
            codes.append(call_code(a.send_data, self.clients[i % 2], b.pid, b"r%d" % i)[0])
        elapsed = time.monotonic() - t0
        ok, limited = codes.count(SC.OK), codes.count(SC.RESOURCE_EXHAUSTED)
        figure("rate limit", "20 Signals in %.2f s through both pods: %d OK, %d "
               "RESOURCE_EXHAUSTED (--rate-limit 5)" % (elapsed, ok, limited))
        self.assertEqual(ok + limited, 20, [c.name for c in codes])
        self.assertGreaterEqual(ok, 1)
        self.assertGreaterEqual(limited, 1, "20 Signals in %.2f s were all accepted" % elapsed)
        # Counted in Redis, so across pods: at most 5 per started second.
        self.assertLessEqual(ok, 5 * (int(elapsed) + 2), "the limit is per session, all pods")
        # Another session has its own budget; Broadcast is limited the same way.
        c = self.peer("carol", room)
        c.join(self.p1)
        bcodes = [call_code(c.broadcast, self.clients[i % 2], b"b%d" % i)[0] for i in range(20)]
        self.assertEqual(bcodes[0], SC.OK, "carol's first call: her own budget")
        self.assertIn(SC.RESOURCE_EXHAUSTED, bcodes, "20 quick Broadcasts: %s" % bcodes)
        self.assertEqual(set(bcodes) - {SC.OK, SC.RESOURCE_EXHAUSTED}, set())
        # The limit lifts again.
        wait_for(lambda: call_code(a.send_data, self.p1, b.pid, b"later")[0] == SC.OK, 30,
                 interval=0.2, what="the rate limit to lift")
        sb = b.subscribe(self.p1)
        sb.wait_event(lambda e: e.WhichOneof("kind") == "signal" and
                      e.signal.payload.data == b"later")
        got = [e.signal.payload.data for e in sb.evs() if e.WhichOneof("kind") == "signal" and
               e.signal.from_participant_id == a.pid]
        self.assertEqual(len(got), ok + 1, "only the accepted Signals were delivered: %s" % got)


class MailboxTrimTest(SigCase):
    POD_ARGS = ("--rate-limit", "0", "--mailbox-size", "10")

    def fill(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        ids = [a.send_data(self.clients[i % 2], b.pid, b"n%03d" % i).event_id
               for i in range(200)]
        xlen = self.inbox_len(room, b.pid)
        figure("mailbox trim", "XLEN %d after 200 events with --mailbox-size 10 (MAXLEN ~)" % xlen)
        self.assertLess(xlen, 200, "the mailbox must be capped")
        return a, b, ids, xlen

    def test_subscribe_after_trimmed_id(self):
        a, b, ids, xlen = self.fill()
        for cl in self.clients:
            for k in (0, 100):
                e = self.assertCode(SC.OUT_OF_RANGE, self.sub_status, cl, b.sid, b.md, ids[k],
                                    what="Subscribe(after_event_id=<id of event %d of 200, "
                                    "trimmed: XLEN %d>) on %s" % (k, xlen, cl.name))
                self.assertTrue(e.details())

    def test_slow_reader_sees_no_gap(self):
        """A reader that falls behind while its mailbox (10 events here) is
        trimmed gets every event in order up to some point and then
        OUT_OF_RANGE, or everything: never a silent gap."""
        pb = self.pb
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        call = self.p2.stream(pb.SubscribeRequest(session_id=b.sid), b.md,
                              timeout=H.RPC_TIMEOUT * 3)
        a.send_data(self.p1, b.pid, b"start")
        self.assertEqual(next(call).signal.payload.data, b"start")
        n = 300
        pad = b"x" * 16000  # 300 x 16 kB: more than the stream's flow-control window
        for i in range(n):
            a.send_data(self.clients[i % 2], b.pid, b"%04d" % i + pad)
        got, status = [], SC.OK
        try:
            for ev in call:
                got.append(int(ev.signal.payload.data[:4]))
                if len(got) == n:
                    call.cancel()
                    break
        except grpc.RpcError as e:
            status = e.code()
        self.assertEqual(got, list(range(len(got))), "events in order, none missing")
        figure("slow reader", "%d of %d events, then %s" % (len(got), n, status.name))
        if len(got) < n:
            self.assertEqual(status, SC.OUT_OF_RANGE, "a gap must be reported, not skipped")

    def test_retained_events(self):
        a, b, ids, xlen = self.fill()
        # From the start: what is retained, ending with the last one, in order.
        s = b.subscribe(self.p1, after="")
        evs = s.wait(lambda evs: evs if evs and evs[-1].id == ids[-1] else None,
                     what="the retained events")
        datas = [e.signal.payload.data for e in evs]
        self.assertEqual(datas, [b"n%03d" % i for i in range(200 - len(datas), 200)],
                         "a suffix of what was sent, in order")
        self.assertEqual(len(evs), xlen)
        # After a retained id: exactly the rest. After the last id: only new events.
        s1 = b.subscribe(self.p2, after=evs[0].id)
        s1.wait(lambda got: len(got) >= len(evs) - 1, what="the retained rest")
        s2 = b.subscribe(self.p2, after=ids[-1])
        # s2 takes the session's stream over: s1 ends ABORTED (the marker
        # below is sent only then, so it can only reach s2).
        self.assertEqual(s1.wait_end(), SC.ABORTED, s1.details)
        mark = self.marker(a, self.p1, s2, b.pid, "new")
        self.assertEqual([e.id for e in s1.evs()], [e.id for e in evs[1:]])
        self.assertEqual([e.id for e in s2.evs()], [mark])


# ---- 7. HA: pods killed while signals flow -----------------------------------------------

class HaOrderingTest(SigCase):
    N = 1000
    KILL_AT = (300, 650)
    POD_ARGS = ("--rate-limit", "0", "--mailbox-size", "100000")

    def test_kill_the_pod_holding_the_streams(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        a.join(self.p1)
        b.join(self.p2)
        state = {"stream": 0}   # index of the pod holding both subscribers' streams
        fa = S.Follower(a, lambda: self.clients[state["stream"]], name="A")
        fb = S.Follower(b, lambda: self.clients[state["stream"]], name="B")
        self.addCleanup(fa.stop)
        self.addCleanup(fb.stop)
        fa.wait(lambda evs: [e for e in evs if is_joined(b.pid)(e)], what="B's join")
        sent = {"A": 0, "B": 0}
        acks = {"A": {}, "B": {}}
        errors, retries, via = [], {"A": 0, "B": 0}, {"A": [0, 0], "B": [0, 0]}
        gate = threading.Event()

        def sender(src, dst, tag):
            for i in range(self.N):
                if i == self.KILL_AT[1]:
                    gate.wait(120)  # the first restart is done: the second kill hits senders
                data = b"%s:%06d" % (tag.encode(), i)
                cmid = "%s-%06d" % (tag, i)
                # Through the pod that does NOT hold the recipient's stream.
                k = 1 - state["stream"]
                t0 = time.monotonic()
                while True:
                    code, resp = call_code(src.send_data, self.clients[k], dst.pid, data, cmid,
                                           timeout=10)
                    if code == SC.OK:
                        acks[tag][i] = resp.event_id
                        via[tag][k] += 1
                        break
                    if code != SC.UNAVAILABLE:
                        errors.append("%s seq %d via pod%d: %s %r" % (tag, i, k + 1, code.name,
                                                                        resp))
                        return
                    retries[tag] += 1
                    if time.monotonic() - t0 > 60:
                        errors.append("%s seq %d: UNAVAILABLE for 60 s on both pods" % (tag, i))
                        return
                    k = 1 - k  # resend through the other pod, same client_msg_id
                    if retries[tag] % 2 == 0:
                        time.sleep(0.05)  # both pods refused: pace the retries
                sent[tag] = i + 1

        t_start = time.monotonic()
        threads = [threading.Thread(target=sender, args=(a, b, "A"), daemon=True),
                   threading.Thread(target=sender, args=(b, a, "B"), daemon=True)]
        for t in threads:
            t.start()
        kills = []
        for n, at in enumerate(self.KILL_AT):
            wait_for(lambda: min(sent.values()) >= at or errors, 120, interval=0.01,
                     what="%d signals each" % at)
            if errors:
                break
            old = state["stream"]
            state["stream"] = 1 - old  # re-subscribe on the other pod; senders use the killed
            kills.append("pod%d after %s" % (old + 1, dict(sent)))
            self.pods[old].kill()
            self.pods[old].start()     # restarted on the same ports
            if n == 0:
                gate.set()
        gate.set()
        for t in threads:
            t.join(300)
        self.assertEqual(errors, [])
        self.assertEqual(sent, {"A": self.N, "B": self.N})

        def seqs(f, src):
            with f.cond:
                evs = [e for _, e in f.events]
            return [(int(e.signal.payload.data.split(b":")[1]), e.id) for e in evs
                    if is_signal_from(src.pid)(e)]
        for f, src, tag in ((fb, a, "A"), (fa, b, "B")):
            f.wait(lambda evs: len([e for e in evs if is_signal_from(src.pid)(e)]) >= self.N,
                   timeout=60, what="%d signals from %s" % (self.N, tag))
        elapsed = time.monotonic() - t_start
        fa.stop()
        fb.stop()
        figure("ha ordering", "2 x %d signals in %.1f s; kills: %s; Signal retries A %d B %d; "
               "sent via pod1/pod2 A %s B %s; subscribes A %d B %d; stream ends A %s B %s" % (
                   self.N, elapsed, "; ".join(kills), retries["A"], retries["B"], via["A"],
                   via["B"], fa.subscribes, fb.subscribes,
                   [(c.name, n) for c, _, _, n in fa.ends], [(c.name, n) for c, _, _, n in fb.ends]))
        for f, src, tag in ((fb, a, "A"), (fa, b, "B")):
            self.assertEqual(f.errors, [], "follower %s" % f.name)
            got = seqs(f, src)
            nums = [s for s, _ in got]
            dups = sorted({s for s in nums if nums.count(s) > 1})
            self.assertEqual(dups, [], "%s's signals delivered twice" % tag)
            self.assertEqual(nums, list(range(self.N)), "%s's signals: every one exactly once, "
                             "in order" % tag)
            self.assertEqual([i for _, i in got], [acks[tag][s] for s in nums],
                             "the delivered event ids are those Signal returned")
            with f.cond:
                ids = [e.id for _, e in f.events]
            self.assertEqual(len(ids), len(set(ids)), "duplicate event ids at %s" % f.name)
            self.assertGreaterEqual(f.subscribes, 3, "%s re-subscribed after each kill" % f.name)
        for pod in self.pods:
            self.assertTrue(pod.alive())


# ---- 8. HA: Redis failover under Sentinel -------------------------------------------------

class Prober:
    """Sends numbered data signals from one peer to another through one pod,
    retrying each (same client_msg_id) until it is accepted; records every
    call: (start, end, code, seq, event id or details)."""

    def __init__(self, case, src, dst, client, tag, deadline_s):
        self.case, self.src, self.dst, self.client = case, src, dst, client
        self.tag, self.deadline_s = tag, deadline_s
        self.calls = []
        self.acked = {}      # seq -> (event id, end time)
        self.seq = 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True, name="probe-" + tag)
        self.thread.start()

    def run(self):
        while not self.stop_ev.is_set():
            data = b"%s:%06d" % (self.tag.encode(), self.seq)
            t0 = time.monotonic()
            code, resp = call_code(self.src.send_data, self.client, self.dst.pid, data,
                                   "%s-%06d" % (self.tag, self.seq), timeout=self.deadline_s)
            t1 = time.monotonic()
            self.calls.append((t0, t1, code, self.seq, resp.event_id if code == SC.OK else resp))
            if code == SC.OK:
                self.acked[self.seq] = (resp.event_id, t1)
                self.seq += 1
            self.stop_ev.wait(0.02)  # ~50 signals/s: pacing, not a wait for an outcome

    def stop(self):
        self.stop_ev.set()
        self.thread.join(60)


class SentinelFailoverTest(SigCase):
    MASTER = "rtcmaster"
    DEADLINE_S = 5.0
    RECOVERY_BOUND_S = 60.0
    POD_ARGS = ("--rate-limit", "0", "--mailbox-size", "100000")
    POD_ARGS_EACH = [(), ("--wait-replicas", "1")]

    @classmethod
    def setup_redis(cls):
        cls.primary = S.RedisNode(cls.tmp, "primary")
        cls.addClassCleanup(cls.primary.stop)
        cls.primary.start()
        cls.procs.append(("redis primary", cls.primary))
        cls.replica = S.RedisNode(cls.tmp, "replica",
                                  ["--replicaof", "127.0.0.1", str(cls.primary.port)])
        cls.addClassCleanup(cls.replica.stop)
        cls.replica.start()
        cls.procs.append(("redis replica", cls.replica))
        wait_for(lambda: cls.replica.info().get("master_link_status") == "up", 30,
                 what="the replica to sync")
        cls.sentinels = []
        for _ in range(3):
            s = S.Sentinel(cls.tmp, cls.MASTER, cls.primary.port, quorum=2, down_after_ms=1000,
                           failover_timeout_ms=5000)
            cls.addClassCleanup(s.stop)
            s.start()
            cls.procs.append(("sentinel %d" % s.port, s))
            cls.sentinels.append(s)

        def sentinels_ready():
            for s in cls.sentinels:
                flat = s.cmd("SENTINEL", "MASTER", cls.MASTER)
                m = dict(zip(flat[::2], flat[1::2]))
                if int(m.get("num-slaves", 0)) < 1 or int(m.get("num-other-sentinels", 0)) < 2:
                    return False
            return True
        wait_for(sentinels_ready, 60, interval=0.2,
                 what="3 sentinels that know the replica and each other")

    @classmethod
    def redis_args(cls):
        return ["--sentinels", ",".join(s.addr for s in cls.sentinels),
                "--master-name", cls.MASTER]

    def master_port(self):
        return int(self.sentinels[0].cmd("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.MASTER)[1])

    def test_failover(self):
        room = self.room()
        a = self.peer("alice", room, ("join", "create"))
        b = self.peer("bob", room)
        c = self.peer("carol", room)
        a.join(self.p1)
        b.join(self.p2)
        c.join(self.p2)
        fb = S.Follower(b, lambda: self.p1, name="B", deadline_s=self.RECOVERY_BOUND_S + 30)
        self.addCleanup(fb.stop)
        r = a.send_data(self.p1, b.pid, b"base")
        fb.wait(lambda evs: [e for e in evs if e.id == r.event_id], what="the baseline signal")
        pa = Prober(self, a, b, self.p1, "A", self.DEADLINE_S)     # pod1: no WAIT
        pc = Prober(self, c, b, self.p2, "C", self.DEADLINE_S)     # pod2: --wait-replicas 1
        self.addCleanup(pa.stop)
        self.addCleanup(pc.stop)
        wait_for(lambda: len(pa.acked) >= 10 and len(pc.acked) >= 10, 30,
                 what="10 signals through each pod before the failover")
        old_port = self.primary.port
        t_kill = time.monotonic()
        self.primary.kill()

        def delivered_at(prober, seq):
            want = b"%s:%06d" % (prober.tag.encode(), seq)
            with fb.cond:
                for t, e in fb.events:
                    if e.WhichOneof("kind") == "signal" and e.signal.payload.data == want:
                        return t
            return None

        def recovered():
            for pod in self.pods:
                if not pod.alive():
                    raise AssertionError("%s died: %s" % (pod.name, pod.proc.log_tail()))
            for t0, _, code, seq, _ in list(pa.calls):
                if t0 > t_kill and code == SC.OK:
                    return delivered_at(pa, seq)
            return None
        t_rec = wait_for(recovered, self.RECOVERY_BOUND_S + 30, interval=0.05,
                         what="a Signal accepted and delivered after the primary died",
                         fatal=(AssertionError,))
        recovery = t_rec - t_kill
        figure("failover", "failover recovery: %.2f s (kill -9 of the primary to the first "
               "Signal accepted and delivered; new primary port %d, old %d)" % (
                   recovery, self.master_port(), old_port))
        print("failover recovery: %.2f s" % recovery, flush=True)
        self.assertLessEqual(recovery, self.RECOVERY_BOUND_S)
        self.assertNotEqual(self.master_port(), old_port, "Sentinel promoted the replica")

        # The --wait-replicas pod needs a replica again: bring the old primary
        # back; Sentinel turns it into a replica of the new one.
        t_back = time.monotonic()
        self.primary.start(keep_port=True)
        wait_for(lambda: any(t0 > t_back and code == SC.OK for t0, _, code, _, _ in pc.calls),
                 90, interval=0.1, what="--wait-replicas 1 signals to be accepted again")
        figure("wait-replicas", "signals with --wait-replicas 1 accepted again %.2f s after the "
               "old primary came back as a replica" % (time.monotonic() - t_back))
        n_a, n_c = len(pa.acked), len(pc.acked)
        wait_for(lambda: len(pa.acked) >= n_a + 20 and len(pc.acked) >= n_c + 20, 30,
                 what="more signals after recovery")
        pa.stop()
        pc.stop()
        last = {p.tag: max(p.acked) for p in (pa, pc)}
        fb.wait(lambda evs: all(delivered_at(p, last[p.tag]) for p in (pa, pc)), 30,
                what="the last accepted signals")
        fb.stop()

        # Calls during the outage: UNAVAILABLE within the deadline, never hanging.
        summary = {}
        for p in (pa, pc):
            codes = {}
            for t0, t1, code, _, _ in p.calls:
                codes[code.name] = codes.get(code.name, 0) + 1
            slow = [(round(t1 - t0, 2), code.name, d) for t0, t1, code, _, d in p.calls
                    if t1 - t0 > 2 * self.DEADLINE_S]
            summary[p.tag] = codes
            self.assertEqual(slow, [], "%s: calls that hung past 2x their deadline" % p.tag)
            self.assertEqual(set(codes) - {"OK", "UNAVAILABLE"}, set(),
                             "%s: only OK and UNAVAILABLE expected: %s; first others %s" % (
                                 p.tag, codes, [(c.name, d) for _, _, c, _, d in p.calls
                                                if c not in (SC.OK, SC.UNAVAILABLE)][:5]))
        with fb.cond:
            evs = [e for _, e in fb.events]
        ids = [e.id for e in evs]
        self.assertEqual(len(ids), len(set(ids)), "duplicate event ids")
        lost = {}
        for p in (pa, pc):
            got = [int(e.signal.payload.data.split(b":")[1]) for e in evs
                   if e.WhichOneof("kind") == "signal" and
                   e.signal.payload.data.startswith(p.tag.encode() + b":")]
            self.assertEqual(got, sorted(set(got)), "%s: delivered twice or out of order" % p.tag)
            delivered = set(got)
            lost[p.tag] = sorted(s for s in p.acked if s not in delivered)
            for s in delivered & set(p.acked):
                eid = [e.id for e in evs if e.WhichOneof("kind") == "signal" and
                       e.signal.payload.data == b"%s:%06d" % (p.tag.encode(), s)][0]
                self.assertEqual(eid, p.acked[s][0], "%s seq %d: delivered id vs returned id"
                                 % (p.tag, s))
        figure("failover calls", "codes A (pod1) %s, C (pod2, --wait-replicas 1) %s; acked-but-"
               "lost A %s, C %s; B's stream ends %s" % (
                   summary["A"], summary["C"], lost["A"], lost["C"],
                   [(code.name, pod, n) for code, _, pod, n in fb.ends]))
        self.assertEqual(lost["C"], [], "--wait-replicas 1: an accepted signal must survive")
        for s in lost["A"]:
            t_ack = pa.acked[s][1]
            self.assertTrue(t_kill - 5.0 <= t_ack <= t_kill + 1.0,
                            "A seq %d acked %.2f s from the kill and lost: only the last "
                            "moment before the failover may be lost" % (s, t_ack - t_kill))
        self.assertEqual(fb.errors, [])
        for code, details, _, _ in fb.ends:
            self.assertIn(code, (SC.UNAVAILABLE,), details)
        for i, pod in enumerate(self.pods):
            self.assertTrue(pod.alive(), "%s died" % pod.name)
            self.assertEqual(pod.readyz()[0], 200)
            for svc in ("rtc.signaling.v1.Signaling", "rtc.signaling.v1.SignalingAdmin"):
                self.assertEqual(self.clients[i].health(svc), self.hpb.HealthCheckResponse.SERVING)

        # rtc-auth followed the failover too: a revocation lands on the new
        # primary and the pods refuse the token.
        t_rev = time.monotonic()

        def revoked():
            code, _ = call_code(self.revoke, a.tok)
            if code not in (SC.OK, SC.UNAVAILABLE):
                raise AssertionError("RevokeToken after the failover: %s" % code)
            return code == SC.OK
        wait_for(revoked, self.RECOVERY_BOUND_S, interval=0.1,
                 what="RevokeToken through rtc-auth after the failover", fatal=(AssertionError,))
        t_ok = time.monotonic()
        wait_for(lambda: call_code(a.heartbeat, self.p2)[0] == SC.UNAUTHENTICATED, 30,
                 interval=0.1, what="the token revoked after the failover to be refused")
        figure("auth-failover", "after the failover, RevokeToken through rtc-auth (on Sentinel) "
               "took %.2f s; the pods refused the token %.2f s later" % (
                   t_ok - t_rev, time.monotonic() - t_ok))


SUITES = {
    "signaling": [FlowTest, AdminTest, IdempotencyTest, ExpiryTest, AuthzTest, BadInputTest,
                  RateLimitTest, MailboxTrimTest],
    "signaling_ha": [HaOrderingTest, SentinelFailoverTest],
}
SUITES["all"] = SUITES["signaling"] + SUITES["signaling_ha"]


def main(argv):
    return H.run_main(argv, sys.modules[__name__], SUITES, FIGURES)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

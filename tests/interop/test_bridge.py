#!/usr/bin/python3
"""Interop: the real rtc-bridge between browser-like WebSocket clients
(Debian's python3-websockets, and raw sockets for what a library will not
send) and the real services: rtc-auth (--dev, for DevLogin), two
rtc-signaling pods and a redis-server. The contract is bridge/README.md and
DESIGN.md section 6.

Usage:
    /usr/bin/python3 test_bridge.py <bin dir> <repo root>
        [--suite=bridge|bridge_ha|all] [-v] [TestClass[.test_method] ...]

Needs on PATH: redis-server (Debian redis-server). A missing tool fails the
test with the package to install; nothing is skipped.

Suites (ctest interop.bridge and interop.bridge_ha, tests/interop/bridge.cmake):
  bridge     FlowTest (two peers on two bridges: the whole signaling flow,
             JSON shapes, both spellings in; ?access_token=; ABORTED streams;
             replay and rpc.cancel), HostileTest (JSON-RPC errors, params,
             sizes, nesting, UTF-8, binary frames, upgrade checks, probes),
             LimitsTest (rate limit, slow consumer and its neighbour, max
             streams, ping/idle, request-head timeout, max sockets),
             ReadinessTest (/readyz follows the pods; --resume-for).
  bridge_ha  PodDeathTest (50 streams, signals both ways, kill -9 of each pod
             in turn: exactly once, in order, no rpc.end), DrainTest
             (SIGTERM: 1001, /readyz 503, answers first, --drain-timeout).

Every process runs on 127.0.0.1 with a free port, is started per test class
(or per test) and stopped in the cleanups even when a test or the setup
fails. Nothing sleeps for a fixed time: waits poll a condition with a
generous deadline; the only sleeps pace load (senders, retries). The
measured figures (pod-death totals, the slow consumer's neighbour latency,
timeouts) are printed in the summary.
"""

import asyncio
import importlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    for _mod in ("websockets", "grpc"):  # fail early, with the package names
        importlib.import_module(_mod)
except ImportError as e:
    sys.exit("test_bridge.py: %s. Run it with /usr/bin/python3 and install Debian's "
             "python3-websockets python3-grpcio python3-protobuf." % e)

import auth_helpers as H  # noqa: E402
import signaling_helpers as S  # noqa: E402
import bridge_helpers as B  # noqa: E402
from auth_helpers import now_ms, wait_for  # noqa: E402
from bridge_helpers import AUTH, SIG, b64, unb64  # noqa: E402
from test_signaling import CAND, SDP_ANSWER, SDP_OFFER  # noqa: E402

BIN_DIR = os.environ.get("RTC_BIN_DIR", "")
REPO = os.environ.get("RTC_REPO_ROOT") or os.path.dirname(os.path.dirname(HERE))

_PB = {}       # run_main removes _PB["dir"]; no generated protobuf is needed here
FIGURES = []   # (name, text) printed in the summary

CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
INT64 = re.compile(r"^-?[0-9]+$")


def figure(name, text):
    FIGURES.append((name, text))
    H.log("FIGURE %s: %s" % (name, text))


def exe(name):
    if not BIN_DIR:
        raise AssertionError("no bin dir: run through ctest, or as test_bridge.py <bin dir> "
                             "<repo root>")
    return os.path.join(BIN_DIR, name)


def camel_violations(obj, path="$"):
    """Keys that are not lowerCamelCase, anywhere in obj."""
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not CAMEL.match(k):
                out.append("%s.%s" % (path, k))
            out += camel_violations(v, "%s.%s" % (path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += camel_violations(v, "%s[%d]" % (path, i))
    return out


class Peer:
    """One browser tab: a socket, a DevLogin token, a session after Join."""

    def __init__(self, ws, login, joined, bridge):
        self.ws = ws
        self.bridge = bridge
        self.login = login
        self.token = login["accessToken"]
        self.identity = login["identity"]
        self.joined = joined
        self.sid = joined["sessionId"]
        self.participant = joined["participant"]
        self.pid = self.participant["id"]
        self.sub = None

    def signal(self, to, payload, cmid=None, snake=False):
        if snake:
            p = {"session_id": self.sid, "to_participant_id": to.pid, "payload": payload}
            if cmid:
                p["client_msg_id"] = cmid
        else:
            p = {"sessionId": self.sid, "toParticipantId": to.pid, "payload": payload}
            if cmid:
                p["clientMsgId"] = cmid
        return self.ws.result(SIG + "Signal", p)["eventId"]

    def subscribe(self, after=None):
        p = {"sessionId": self.sid}
        if after:
            p["afterEventId"] = after
        self.sub = self.ws.subscribe(SIG + "Subscribe", p)
        return self.sub


def signal_from(pid):
    return lambda e: "signal" in e and e["signal"].get("fromParticipantId") == pid


def joined_ev(pid):
    return lambda e: ("participantJoined" in e and
                      e["participantJoined"]["participant"]["id"] == pid)


def left_ev(pid):
    return lambda e: "participantLeft" in e and e["participantLeft"]["participant"]["id"] == pid


class BridgeCase(S.DumpLogsOnFailure, unittest.TestCase):
    """Base: a temp dir, redis-server, rtc-auth (--dev), NUM_PODS
    rtc-signaling pods sharing that Redis, and one rtc-bridge per entry of
    BRIDGES (its extra flags), every bridge routed to all the pods."""
    LOG_TAIL = 40

    NUM_PODS = 2
    POD_ARGS = ("--rate-limit", "0")
    BRIDGES = ((),)

    @classmethod
    def setUpClass(cls):
        cls.procs = []
        cls.rooms = 0
        cls.tmp = tempfile.mkdtemp(prefix="rtc-bridge-test-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        try:
            S.start_redis_and_auth(cls, exe("rtc-auth"))
            cls.pods = [cls.make_pod(i) for i in range(cls.NUM_PODS)]
            for pod in cls.pods:
                pod.start()
            cls.bridges = [cls.start_bridge(args, "bridge%d" % (i + 1))
                           for i, args in enumerate(cls.BRIDGES)]
            for b in cls.bridges:
                b.wait_ready()
        except BaseException:
            cls.dump_logs("setUpClass of %s" % cls.__name__)
            raise

    @classmethod
    def make_pod(cls, i):
        pod = S.Pod(exe("rtc-signaling"), ["--redis", cls.redis.url, "--auth", cls.auth.addr] +
                    list(cls.POD_ARGS), cls.tmp, "pod%d" % (i + 1))
        cls.procs.append(("rtc-signaling pod%d" % (i + 1), pod))
        cls.addClassCleanup(pod.stop)
        return pod

    @classmethod
    def start_bridge(cls, args, name, pods=None):
        pods = cls.pods if pods is None else pods
        ups = ["rtc.auth.v1.Auth=" + cls.auth.addr,
               "rtc.signaling.v1.Signaling=" + ",".join(p.addr for p in pods)]
        log_path = os.path.join(cls.tmp, "%s-%d.log" % (name, len(cls.procs)))
        cls.procs.append(("rtc-bridge " + name, {"log": log_path}))
        b = B.Bridge(exe("rtc-bridge"), ups, args, log_path, name)
        cls.addClassCleanup(b.stop)
        return b


    # ---- helpers ----

    def room(self, tag=""):
        type(self).rooms += 1
        base = re.sub(r"[^A-Za-z0-9-]", "-", tag or self._testMethodName[5:])[:40]
        return "%s-%d-%d" % (base, os.getpid() % 1000, type(self).rooms)

    def ws(self, bridge, query="", name="", **kw):
        w = B.Ws(bridge.url(query), name=name or "ws@%s" % bridge.name, **kw)
        self.addCleanup(w.close)
        return w

    def devlogin(self, ws, name, room):
        t0 = now_ms()
        r = ws.result(AUTH + "DevLogin", {"displayName": name, "roomId": room})
        self.assertEqual(set(r), {"accessToken", "tokenId", "expiresAtMs", "identity"}, r)
        self.assertRegex(r["expiresAtMs"], INT64, "int64 as a string")
        self.assertGreater(int(r["expiresAtMs"]), t0)
        self.assertEqual(r["accessToken"].count("."), 2, "a JWT")
        return r

    def peer(self, bridge, room, name, via="method"):
        """A tab on bridge: DevLogin, the token given by session.authenticate
        (via="method") or on the upgrade URL (via="url"), then Join."""
        if via == "url":
            w0 = self.ws(bridge, name="login-" + name)
            login = self.devlogin(w0, name, room)
            w0.close()
            ws = self.ws(bridge, "?access_token=" + login["accessToken"], name=name)
        else:
            ws = self.ws(bridge, name=name)
            login = self.devlogin(ws, name, room)
            self.assertIs(ws.result("session.authenticate",
                                    {"accessToken": login["accessToken"]}), True)
        joined = ws.result(SIG + "Join", {})
        return Peer(ws, login, joined, bridge)

    def assertRpcError(self, reply, code, status=None, message_re=None, rid="absent"):
        """reply is {"jsonrpc":"2.0","id":…,"error":{code, message[, data]}}."""
        self.assertEqual(reply.get("jsonrpc"), "2.0", reply)
        self.assertNotIn("result", reply)
        err = reply.get("error")
        self.assertIsInstance(err, dict, reply)
        self.assertEqual(err.get("code"), code, reply)
        self.assertIsInstance(err.get("message"), str, reply)
        self.assertTrue(err["message"], reply)
        if status is None:
            self.assertNotIn("data", err, reply)
        else:
            self.assertEqual(err.get("data"), {"status": status}, reply)
        if message_re:
            self.assertRegex(err["message"], message_re, reply)
        if rid != "absent":
            self.assertIn("id", reply)
            self.assertEqual(reply["id"], rid, reply)
        return err

    def assertShape(self, obj, what):
        self.assertEqual(camel_violations(obj), [], "%s: keys must be lowerCamelCase: %s" % (
            what, json.dumps(obj)[:400]))

    def assertInt64(self, v, what):
        self.assertIsInstance(v, str, "%s: int64 as a JSON string, got %r" % (what, v))
        self.assertRegex(v, INT64, what)
        return int(v)

    def test_zzz_processes_alive_and_bridges_exit_cleanly(self):
        """Runs last in each class: every process is still alive (nothing
        above crashed it); the bridges drain and exit 0 on SIGTERM with no
        sanitizer report in their logs."""
        for pod in self.pods:
            if pod.proc is not None:
                self.assertTrue(pod.alive(), "%s died (status %s):\n%s" % (
                    pod.name, pod.proc.proc.returncode, pod.proc.log_tail()))
        self.assertTrue(self.auth.alive(), "rtc-auth died")
        for b in self.bridges:
            self.assertTrue(b.alive(), "%s died (status %s):\n%s" % (
                b.name, b.proc.proc.returncode, b.log_tail()))
            rc = b.stop()
            text = b.log_text()
            tail = "\n".join(text.splitlines()[-30:])
            self.assertNotIn("Sanitizer", text, tail)
            self.assertNotIn("runtime error:", text, tail)
            self.assertEqual(rc, 0, "%s exited with %s on SIGTERM:\n%s" % (b.name, rc, tail))


# ---- 1. the full flow ------------------------------------------------------------------

class FlowTest(BridgeCase):
    BRIDGES = ((), ())

    def test_two_peers_on_two_bridges(self):
        b1, b2 = self.bridges
        room = self.room()
        t0 = now_ms()
        a = self.peer(b1, room, "Alice")
        b = self.peer(b2, room, "Bob")
        ja = a.joined
        # Join's answer: proto3 JSON.
        self.assertShape(ja, "JoinResponse")
        self.assertEqual(ja["participant"]["identity"], a.identity)
        self.assertEqual(ja["participant"]["displayName"], "Alice")
        self.assertTrue(t0 - 1000 <= self.assertInt64(ja["participant"]["joinedAtMs"],
                                                      "joinedAtMs") <= now_ms() + 1000)
        self.assertEqual(self.assertInt64(ja["heartbeatIntervalMs"], "heartbeatIntervalMs"),
                         10000)
        self.assertEqual(ja["room"]["id"], room)
        self.assertEqual(ja["room"]["participantCount"], 1, "uint32 as a JSON number")
        self.assertEqual(ja["room"]["settings"]["maxParticipants"], 100)
        self.assertEqual(self.assertInt64(ja["room"]["settings"]["emptyTimeoutMs"], "ms"),
                         300000)
        self.assertIsInstance(ja["resumeToken"], str)
        self.assertNotIn("resumed", ja, "false is the default: omitted")
        self.assertNotIn("participants", ja, "an empty list is omitted")
        self.assertIn("stun:127.0.0.1:3478", [u for s in ja["iceServers"] for u in s["urls"]])
        jb = b.joined
        self.assertEqual(jb["participants"], [ja["participant"]])
        self.assertEqual(jb["room"]["participantCount"], 2)

        # Subscribe with both spellings of session_id.
        sa = a.ws.subscribe(SIG + "Subscribe", {"sessionId": a.sid}, rid="sub-a")
        sb = b.ws.subscribe(SIG + "Subscribe", {"session_id": b.sid})
        ev = sa.wait_event(joined_ev(b.pid), what="participantJoined(Bob) at Alice")
        self.assertShape(ev, "Event")
        self.assertEqual(ev["participantJoined"], {"participant": jb["participant"]})
        self.assertTrue(t0 - 1000 <= self.assertInt64(ev["timestampMs"], "timestampMs")
                        <= now_ms() + 1000)
        self.assertEqual(set(ev), {"id", "timestampMs", "participantJoined"})

        # Offer A -> B (camelCase params), answer B -> A (snake_case params).
        offer = {"description": {"type": "SDP_TYPE_OFFER", "sdp": SDP_OFFER}}
        answer = {"description": {"type": "SDP_TYPE_ANSWER", "sdp": SDP_ANSWER}}
        offer_id = a.signal(b, offer, cmid="offer-1")
        ev = sb.wait_event(lambda e: e["id"] == offer_id, what="the offer at Bob")
        self.assertEqual(ev["signal"], {"fromParticipantId": a.pid, "payload": offer})
        self.assertShape(ev, "Event(offer)")
        answer_id = b.signal(a, answer, cmid="answer-1", snake=True)
        ev = sa.wait_event(lambda e: e["id"] == answer_id, what="the answer at Alice")
        self.assertEqual(ev["signal"], {"fromParticipantId": b.pid, "payload": answer})

        # Candidates both ways, input in both spellings, then endOfCandidates.
        cands_a = [
            ({"candidate": {"candidate": CAND, "sdpMid": "0", "sdpMlineIndex": 0,
                            "usernameFragment": "abcd"}},
             {"candidate": {"candidate": CAND, "sdpMid": "0", "sdpMlineIndex": 0,
                            "usernameFragment": "abcd"}}),
            ({"candidate": {"candidate": CAND + " generation 0", "sdp_mid": "audio"}},
             {"candidate": {"candidate": CAND + " generation 0", "sdpMid": "audio"}}),
            ({"candidate": {"candidate": CAND, "sdp_mline_index": 3}},
             {"candidate": {"candidate": CAND, "sdpMlineIndex": 3}}),
            ({"end_of_candidates": {"sdp_mid": "0", "username_fragment": "abcd"}},
             {"endOfCandidates": {"sdpMid": "0", "usernameFragment": "abcd"}}),
            ({"endOfCandidates": {}}, {"endOfCandidates": {}}),
        ]
        cands_b = [
            ({"candidate": {"candidate": CAND, "sdpMlineIndex": 0}},
             {"candidate": {"candidate": CAND, "sdpMlineIndex": 0}}),
            ({"candidate": {"candidate": CAND + " tcptype", "sdpMid": "1"}},
             {"candidate": {"candidate": CAND + " tcptype", "sdpMid": "1"}}),
            ({"endOfCandidates": {"sdpMid": "1"}}, {"endOfCandidates": {"sdpMid": "1"}}),
        ]
        for src, dst, sub, cands in ((a, b, sb, cands_a), (b, a, sa, cands_b)):
            ids = [src.signal(dst, p_in, snake=i % 2 == 1) for i, (p_in, _) in enumerate(cands)]
            self.assertEqual(len(set(ids)), len(ids), ids)
            got = sub.wait(lambda evs: [e for e in evs if e["id"] in ids]
                           if ids[-1] in [e["id"] for e in evs] else None,
                           what="%d candidates" % len(ids))
            self.assertEqual([e["id"] for e in got], ids, "in the order sent")
            self.assertEqual([e["signal"] for e in got],
                             [{"fromParticipantId": src.pid, "payload": out} for _, out in cands],
                             "canonical JSON out: sdpMlineIndex 0 kept (oneof), unset omitted")

        # App data: Signal data (bytes as base64, standard or URL-safe in),
        # and Broadcast.
        blob = b"\x00mute\xff\x01\xfb\xef"
        d1 = a.signal(b, {"data": b64(blob)})
        d2 = a.signal(b, {"data": "-_8="}, snake=True)  # URL-safe base64 of fb ff
        d3 = b.signal(a, {"data": b64(b"x" * 1000)})
        ev1 = sb.wait_event(lambda e: e["id"] == d1, what="data 1")
        ev2 = sb.wait_event(lambda e: e["id"] == d2, what="data 2")
        self.assertEqual(unb64(ev1["signal"]["payload"]["data"]), blob)
        self.assertEqual(ev1["signal"]["payload"]["data"], b64(blob), "standard base64 out")
        self.assertEqual(unb64(ev2["signal"]["payload"]["data"]), b"\xfb\xff")
        ev3 = sa.wait_event(lambda e: e["id"] == d3, what="data 3")
        self.assertEqual(unb64(ev3["signal"]["payload"]["data"]), b"x" * 1000)

        c = self.peer(b1, room, "Carol", via="method")
        sc = c.subscribe()
        for s in (sa, sb):
            s.wait_event(joined_ev(c.pid), what="participantJoined(Carol)")
        br = c.ws.result(SIG + "Broadcast", {"sessionId": c.sid, "data": b64(b"hello all"),
                                             "clientMsgId": "bc-1"})
        self.assertEqual(br, {"recipientCount": 2})
        br2 = c.ws.result(SIG + "Broadcast", {"session_id": c.sid, "data": b64(b"hello all"),
                                              "client_msg_id": "bc-1"})
        self.assertEqual(br2, br, "a retried Broadcast gets the first answer")
        for s in (sa, sb):
            ev = s.wait_event(lambda e: "data" in e, what="Carol's broadcast")
            self.assertEqual(ev["data"], {"fromParticipantId": c.pid, "data": b64(b"hello all")})

        # GetNegotiation: the last offer and answer, asked from both sides.
        for who, peer_pid, key in ((a, b.pid, "peerParticipantId"),
                                   (b, a.pid, "peer_participant_id")):
            n = who.ws.result(SIG + "GetNegotiation", {"sessionId": who.sid, key: peer_pid})
            self.assertShape(n, "GetNegotiationResponse")
            self.assertEqual(set(n), {"offer", "answer"})
            self.assertEqual(n["offer"]["fromParticipantId"], a.pid)
            self.assertEqual(n["offer"]["description"], offer["description"])
            self.assertEqual(n["offer"]["eventId"], offer_id)
            self.assertTrue(t0 - 1000 <= self.assertInt64(n["offer"]["sentAtMs"], "sentAtMs")
                            <= now_ms() + 1000)
            self.assertEqual(n["answer"]["fromParticipantId"], b.pid)
            self.assertEqual(n["answer"]["description"], answer["description"])
            self.assertEqual(n["answer"]["eventId"], answer_id)
        self.assertEqual(a.ws.result(SIG + "GetNegotiation", {
            "sessionId": a.sid, "peerParticipantId": c.pid}), {}, "nothing cached: {}")

        # Heartbeat.
        hb = a.ws.result(SIG + "Heartbeat", {"session_id": a.sid})
        self.assertEqual(set(hb), {"sessionExpiresAtMs"})
        self.assertGreater(self.assertInt64(hb["sessionExpiresAtMs"], "sessionExpiresAtMs"),
                           now_ms())

        # Carol leaves: the others see participantLeft; her stream ends with
        # rpc.end without an error.
        self.assertEqual(c.ws.result(SIG + "Leave", {"sessionId": c.sid}), {})
        for s in (sa, sb):
            ev = s.wait_event(left_ev(c.pid), what="participantLeft(Carol)")
            self.assertEqual(ev["participantLeft"], {"participant": c.participant,
                                                     "reason": "LEAVE_REASON_LEFT"})
        for s in (sa, sb):
            self.assertEqual([e["data"] for e in s.results() if "data" in e],
                             [{"fromParticipantId": c.pid, "data": b64(b"hello all")}],
                             "the broadcast once (the retry is not delivered again)")
        end = sc.wait_end()
        self.assertEqual(end, {"subscription": sc.id}, "rpc.end without error")
        self.assertEqual([e for e in sc.results() if "data" in e], [],
                         "the broadcaster does not get its own broadcast")
        self.assertFalse(c.ws.is_closed(), "the socket stays open after Leave")
        e = c.ws.error(SIG + "Heartbeat", {"sessionId": c.sid})
        self.assertEqual((e["code"], e["data"]["status"]), (5, "NOT_FOUND"), e)

        # Everything each stream got: unique ids, increasing, lowerCamelCase,
        # and no stream ended; nothing unexpected on any socket.
        for s in (sa, sb):
            evs = s.results()
            ids = [e["id"] for e in evs]
            self.assertEqual(len(ids), len(set(ids)), ids)
            self.assertEqual(ids, sorted(ids, key=lambda i: tuple(int(x) for x in i.split("-"))))
            for e in evs:
                self.assertShape(e, "Event")
                self.assertInt64(e["timestampMs"], "timestampMs")
            self.assertEqual(s.ends, [])
        for p in (a, b, c):
            self.assertFalse(p.ws.is_closed(), p.ws.name)
            self.assertEqual(p.ws.others, [], "unexpected messages on %s" % p.ws.name)
            for r in p.ws.replies:
                self.assertEqual(r.get("jsonrpc"), "2.0", r)
                self.assertShape(r.get("result", {}), "result")
        self.assertEqual(a.ws.replies[[r["id"] for r in a.ws.replies].index("sub-a")]["result"],
                         {"subscription": sa.id}, "a string id is echoed")
        m = b1.metrics()
        self.assertGreater(B.metric_value(m, "rtc_bridge_calls_total",
                                          method=SIG + "Signal", code="OK"), 0)
        self.assertGreater(B.metric_value(m, "rtc_bridge_events_total"), 0)

    def test_access_token_on_the_url(self):
        """The token on the upgrade URL (?access_token=) is forwarded as the
        bearer: Join works with no session.authenticate. Also next to
        another query argument, and both tabs of one room meet."""
        b1, b2 = self.bridges
        room = self.room()
        a = self.peer(b1, room, "Url-Alice", via="url")
        w0 = self.ws(b2, name="login-bob")
        login = self.devlogin(w0, "Url-Bob", room)
        wb = self.ws(b2, "?v=1&access_token=" + login["accessToken"], name="Url-Bob")
        jb = wb.result(SIG + "Join", {})
        self.assertEqual(jb["participant"]["identity"], login["identity"])
        self.assertEqual([p["id"] for p in jb["participants"]], [a.pid])
        # session.authenticate replaces the URL's token.
        login_c = self.devlogin(w0, "Url-Carol", room)
        self.assertIs(wb.result("session.authenticate", {"accessToken": login_c["accessToken"]}),
                      True)
        jc = wb.result(SIG + "Join", {})
        self.assertEqual(jc["participant"]["identity"], login_c["identity"])
        # A token that cannot be one (empty, not printable ASCII) closes the
        # socket with 1008 right after the upgrade.
        for q in ("?access_token=", "?access_token=a%20b"):
            w = self.ws(b1, q, name="bad token %s" % q)
            code, reason = w.wait_closed()
            self.assertEqual((code, reason), (1008, "invalid access_token"), q)

    def test_newer_subscribe_ends_the_older_with_its_error(self):
        """A Subscribe that fails with something other than UNAVAILABLE is
        not resumed: a newer Subscribe of the same session (another tab, on
        the other bridge) ends the older with rpc.end carrying ABORTED."""
        b1, b2 = self.bridges
        room = self.room()
        a = self.peer(b1, room, "Tab1")
        b = self.peer(b2, room, "Other")
        old = a.subscribe()
        first = b.signal(a, {"data": b64(b"one")})
        old.wait_event(lambda e: e["id"] == first)
        tab2 = self.ws(b2, name="Tab2")
        tab2.result("session.authenticate", {"accessToken": a.token})
        new = tab2.subscribe(SIG + "Subscribe", {"sessionId": a.sid, "afterEventId": first})
        end = old.wait_end()
        self.assertEqual(set(end), {"subscription", "error"}, end)
        self.assertEqual(end["subscription"], old.id)
        self.assertEqual((end["error"]["code"], end["error"]["data"]),
                         (10, {"status": "ABORTED"}), end)
        self.assertTrue(end["error"]["message"])
        second = b.signal(a, {"data": b64(b"two")})
        new.wait_event(lambda e: e["id"] == second)
        self.assertEqual([e["id"] for e in new.results()], [second])
        self.assertNotIn(second, [e["id"] for e in old.results()])
        self.assertFalse(a.ws.is_closed(), "the socket outlives its subscription")
        self.assertEqual(b1.metric("rtc_bridge_stream_resume_failures_total"), 0)

    def test_resume_subscription_after_event_id(self):
        """Subscribe {afterEventId} (both spellings) replays exactly what
        came after; rpc.cancel ends a subscription without rpc.end."""
        b1, b2 = self.bridges
        room = self.room()
        a = self.peer(b1, room, "Ann")
        b = self.peer(b2, room, "Ben")
        ids = [b.signal(a, {"data": b64(b"m%d" % i)}) for i in range(6)]
        s1 = a.ws.subscribe(SIG + "Subscribe", {"sessionId": a.sid, "afterEventId": ids[1]})
        got = s1.wait(lambda evs: evs if len(evs) >= 4 else None, what="4 replayed events")
        self.assertEqual([e["id"] for e in got], ids[2:])
        self.assertEqual(s1.cancel(), True)
        s2 = a.ws.subscribe(SIG + "Subscribe", {"session_id": a.sid, "after_event_id": ids[3]})
        got = s2.wait(lambda evs: evs if len(evs) >= 2 else None, what="2 replayed events")
        self.assertEqual([e["id"] for e in got], ids[4:])
        last = b.signal(a, {"data": b64(b"last")})
        s2.wait_event(lambda e: e["id"] == last, what="the live event")
        self.assertEqual(len(s1.results()), 4, "a cancelled subscription gets nothing more")
        self.assertEqual(s1.ends, [], "rpc.cancel: no rpc.end")
        err = self.assertRpcError(a.ws.call("rpc.cancel", {"subscription": s1.id}), -32602)
        self.assertIn("no open subscription", err["message"])


# ---- 4. hostile input ---------------------------------------------------------------------

class HostileTest(BridgeCase):
    BRIDGES = ((),)

    @property
    def br(self):
        return self.bridges[0]

    def authed(self, name="hostile"):
        room = self.room(name)
        return self.peer(self.br, room, name)

    def test_json_layer_errors(self):
        p = self.authed()
        w = p.ws
        before = self.br.metric("rtc_bridge_bad_requests_total")
        cases = [
            ("invalid JSON", '{"jsonrpc":"2.0","id":1,', None, -32700, "^parse error"),
            ("trailing garbage", '{"jsonrpc":"2.0","id":1,"method":"x"} x', None, -32700, None),
            ("a number", "42", None, -32600, None),
            ("a string", '"x"', None, -32600, None),
            ("null", "null", None, -32600, None),
            ("a batch", json.dumps([{"jsonrpc": "2.0", "id": 1, "method": SIG + "Heartbeat",
                                     "params": {"sessionId": p.sid}}]), None, -32600, "batch"),
            ("an empty batch", "[]", None, -32600, "batch"),
            ("no jsonrpc", json.dumps({"id": 7, "method": SIG + "Heartbeat"}), 7, -32600,
             "jsonrpc"),
            ("jsonrpc 1.0", json.dumps({"jsonrpc": "1.0", "id": "s7", "method": "x"}), "s7",
             -32600, "jsonrpc"),
            ("jsonrpc as a number", json.dumps({"jsonrpc": 2.0, "id": 8, "method": "x"}), 8,
             -32600, "jsonrpc"),
            ("no method", json.dumps({"jsonrpc": "2.0", "id": 9}), 9, -32600, "method"),
            ("method not a string", json.dumps({"jsonrpc": "2.0", "id": 10, "method": 5}), 10,
             -32600, "method"),
            ("a float id", '{"jsonrpc":"2.0","id":1.5,"method":"x"}', None, -32600, "id"),
            ("an object id", '{"jsonrpc":"2.0","id":{},"method":"x"}', None, -32600, "id"),
            ("an unknown member", json.dumps({"jsonrpc": "2.0", "id": 11, "method": "x",
                                              "extra": 1}), 11, -32600, "extra"),
            ("params an array", json.dumps({"jsonrpc": "2.0", "id": 12,
                                            "method": SIG + "Heartbeat", "params": [p.sid]}),
             12, -32602, "params"),
            ("unknown method", json.dumps({"jsonrpc": "2.0", "id": 13,
                                           "method": "rtc.signaling.v1.Signaling/Nope"}),
             13, -32601, "Nope"),
            ("admin method", json.dumps({"jsonrpc": "2.0", "id": 14,
                                         "method": "rtc.signaling.v1.SignalingAdmin/CreateRoom",
                                         "params": {"roomId": "x"}}), 14, -32601, "CreateRoom"),
            ("internal method", json.dumps({"jsonrpc": "2.0", "id": 15,
                                            "method": "rtc.auth.v1.Auth/IssueToken",
                                            "params": {}}), 15, -32601, "IssueToken"),
            ("health method", json.dumps({"jsonrpc": "2.0", "id": 16,
                                          "method": "grpc.health.v1.Health/Check"}), 16,
             -32601, None),
            ("a leading slash", json.dumps({"jsonrpc": "2.0", "id": 17,
                                            "method": "/" + SIG + "Heartbeat"}), 17, -32601,
             None),
        ]
        for what, text, rid, code, msg_re in cases:
            start = w.reply_count()
            w.send_text(text)
            reply = w.wait_reply(start, rid)
            with self.subTest(what):
                self.assertRpcError(reply, code, message_re=msg_re, rid=rid)
                self.assertEqual(set(reply), {"jsonrpc", "id", "error"}, reply)
            # The socket stays usable: a real call answers after each.
            hb = w.result(SIG + "Heartbeat", {"sessionId": p.sid})
            self.assertIn("sessionExpiresAtMs", hb, what)
        self.assertEqual(len(w.replies), 3 + 2 * len(cases), "exactly one answer per request")
        self.assertEqual(self.br.metric("rtc_bridge_bad_requests_total") - before, len(cases))
        # A notification (no id) is executed and never answered, even when wrong.
        start = w.reply_count()
        w.send_text(json.dumps({"jsonrpc": "2.0", "method": "no.such.method"}))
        w.send_text(json.dumps({"jsonrpc": "2.0", "method": SIG + "Heartbeat",
                                "params": {"sessionId": p.sid}}))
        r = w.call(SIG + "Heartbeat", {"sessionId": p.sid}, rid="after-notifications")
        self.assertIn("result", r)
        self.assertEqual([x.get("id") for x in w.replies[start:]], ["after-notifications"],
                         "notifications get no answer")
        self.assertFalse(w.is_closed())

    def test_auth_and_param_errors(self):
        w = self.ws(self.br, name="anon")
        room = self.room()
        # No token: only DevLogin works.
        for method, params in ((SIG + "Join", {}), (SIG + "Heartbeat", {"sessionId": "x"}),
                               (AUTH + "GetIceServers", {})):
            r = w.call(method, params)
            self.assertRpcError(r, 16, "UNAUTHENTICATED", "access token", rid=w.next_id)
        # Bad session.authenticate params.
        for params in ({}, {"accessToken": ""}, {"accessToken": 5}, {"access_token": "x",
                                                                    "accessToken": "y"},
                       {"accessToken": "a b"}, {"accessToken": "x" * 8193}, None):
            self.assertRpcError(w.call("session.authenticate", params), -32602)
        # A token that is no JWT: the service says UNAUTHENTICATED.
        self.assertIs(w.result("session.authenticate", {"accessToken": "not.a.jwt"}), True)
        self.assertRpcError(w.call(SIG + "Join", {}), 16, "UNAUTHENTICATED")
        other = self.devlogin(w, "First", room)
        self.assertIs(w.result("session.authenticate", {"accessToken": other["accessToken"]}),
                      True)
        self.assertEqual(w.result(SIG + "Join", {})["participant"]["identity"],
                         other["identity"])
        login = self.devlogin(w, "Typed", room)
        self.assertIs(w.result("session.authenticate", {"accessToken": login["accessToken"]}),
                      True, "session.authenticate again replaces the token")
        j = w.result(SIG + "Join", {})
        self.assertEqual(j["participant"]["identity"], login["identity"])
        sid = j["sessionId"]
        bad = [
            ({"sessionId": 5}, r"^invalid params: sessionId: "),
            ({"session_id": ["x"]}, r"^invalid params: sessionId: "),
            ({"sessionId": sid, "toParticipantId": "p", "payload": {"description": {
                "type": "OFERR", "sdp": "x"}}},
             r"^invalid params: payload\.description\.type: .*OFERR"),
            ({"sessionId": sid, "toParticipantId": "p", "payload": {"data": "%%%"}},
             r"^invalid params: payload\.data: "),
            ({"sessionId": sid, "toParticipantId": "p", "payload": {"candidate": {
                "candidate": "c", "sdpMlineIndex": -1}}},
             r"^invalid params: payload\.candidate\.sdpMlineIndex: "),
            ({"sessionId": sid, "toParticipantId": "p", "payload": {"candidate": {
                "candidate": "c", "sdpMlineIndex": "zero"}}},
             r"^invalid params: payload\.candidate\.sdpMlineIndex: "),
            ({"sessionId": sid, "bogus": 1}, r'^invalid params: .*"bogus"'),
            ({"sessionId": sid, "payload": {"data": "", "candidate": {"candidate": "c"}}},
             r"^invalid params: payload"),
        ]
        for params, msg_re in bad:
            with self.subTest(params=params):
                r = w.call(SIG + "Signal", params)
                self.assertRpcError(r, -32602, message_re=msg_re)
        self.assertFalse(w.is_closed())
        self.assertEqual(w.result(SIG + "Heartbeat", {"sessionId": sid}).keys(),
                         {"sessionExpiresAtMs"})

    def test_signal_size_limits(self):
        """A 64 KiB SDP goes through the bridge (under --max-message, 256
        KiB by default); one byte more is the service's INVALID_ARGUMENT."""
        room = self.room()
        a = self.peer(self.br, room, "big-a")
        b = self.peer(self.br, room, "big-b")
        sb = b.subscribe()
        ok = a.signal(b, {"description": {"type": "SDP_TYPE_OFFER", "sdp": "v" * 65536}})
        ev = sb.wait_event(lambda e: e["id"] == ok, what="the 64 KiB offer")
        self.assertEqual(len(ev["signal"]["payload"]["description"]["sdp"]), 65536)
        r = a.ws.call(SIG + "Signal", {"sessionId": a.sid, "toParticipantId": b.pid, "payload": {
            "description": {"type": "SDP_TYPE_OFFER", "sdp": "v" * 65537}}})
        self.assertRpcError(r, 3, "INVALID_ARGUMENT")
        r = a.ws.call(SIG + "Signal", {"sessionId": a.sid, "toParticipantId": b.pid,
                                       "payload": {"data": b64(b"d" * 16385)}})
        self.assertRpcError(r, 3, "INVALID_ARGUMENT")
        last = a.signal(b, {"data": b64(b"after")})
        sb.wait_event(lambda e: e["id"] == last)
        self.assertEqual([e["id"] for e in sb.results() if "signal" in e], [ok, last],
                         "refused signals are not delivered")

    def test_message_size_limit(self):
        w = self.ws(self.br, name="size")
        limit = 256 * 1024   # --max-message default
        head = '{"jsonrpc":"2.0","id":1,"method":"no.such","params":{"pad":"'
        tail = '"}}'
        exact = head + "x" * (limit - len(head) - len(tail)) + tail
        self.assertEqual(len(exact), limit)
        self.assertRpcError(w.raw(exact, 1), -32601)
        w.send_text(exact[:-3] + 'xx"}}')
        code, reason = w.wait_closed()
        self.assertEqual(code, 1009, "a message over --max-message: close 1009 (%r)" % reason)
        # 10 MiB on a raw socket: closed with 1009 long before the end.
        r = B.RawWs(self.br.port)
        self.addCleanup(r.close)
        self.assertEqual(r.status, 101)
        size = 10 << 20
        frame = B.RawWs.frame(1, b'{"jsonrpc":"2.0","id":2,"method":"x","params":{"p":"' +
                              b"y" * (size - 60) + b'"}}')
        sent = r.send_until_answered(frame)
        code, reason = r.read_close()
        self.assertEqual(code, 1009, "10 MiB message: %r (sent %d bytes)" % (reason, sent))
        self.assertLess(sent, len(frame), "closed before the whole message was sent")
        # A message in many fragments counts as one.
        r2 = B.RawWs(self.br.port)
        self.addCleanup(r2.close)
        chunk = b"z" * 65536
        r2.sock.sendall(B.RawWs.frame(1, b'{"jsonrpc":"2.0","id":3,"method":"x","p":"',
                                      fin=False))
        for _ in range(5):
            r2.sock.sendall(B.RawWs.frame(0, chunk, fin=False))
        code, _ = r2.read_close()
        self.assertEqual(code, 1009, "fragments adding up past the limit")
        self.assertTrue(self.br.alive())

    def test_deep_nesting(self):
        p = self.authed("deep")
        w = p.ws
        for depth, code in ((10000, -32700), (33, -32700), (1000, -32700)):
            text = ('{"jsonrpc":"2.0","id":%d,"method":"%sSignal","params":{"x":' % (
                depth, SIG)) + "[" * depth + "]" * depth + "}}"
            r = w.raw(text, None)
            self.assertRpcError(r, code, message_re="nested deeper than 32", rid=None)
            self.assertFalse(w.is_closed())
        # Depth 32 in all (the envelope, params and 30 arrays) passes the
        # depth check and reaches the params decoder.
        text = ('{"jsonrpc":"2.0","id":"d32","method":"%sSignal","params":{"sessionId":' % SIG
                + "[" * 30 + "]" * 30 + "}}")
        self.assertRpcError(w.raw(text, "d32"), -32602, message_re="sessionId")
        # Brackets inside strings do not count.
        text = json.dumps({"jsonrpc": "2.0", "id": "str", "method": SIG + "Heartbeat",
                           "params": {"sessionId": p.sid + "[" * 100}})
        r = w.raw(text, "str")
        self.assertNotEqual(r.get("error", {}).get("code"), -32700, r)
        self.assertIn("sessionExpiresAtMs",
                      w.result(SIG + "Heartbeat", {"sessionId": p.sid}))

    def test_invalid_utf8_and_binary_frames(self):
        r = B.RawWs(self.br.port)
        self.addCleanup(r.close)
        self.assertEqual(r.status, 101)
        self.assertEqual(r.headers.get("sec-websocket-protocol"), B.SUBPROTOCOL)
        self.assertNotIn("sec-websocket-extensions", r.headers, "no permessage-deflate")
        r.send_text('{"jsonrpc":"2.0","id":1,"method":"no.such"}')
        self.assertEqual(r.recv_json()["error"]["code"], -32601)
        r.send_frame(1, b'{"jsonrpc":"2.0","id":2,"method":"\xff\xfe"}')
        code, reason = r.read_close()
        self.assertEqual(code, 1007, "invalid UTF-8 in a text frame: %r" % reason)
        # Overlong encoding, and a lone surrogate (CESU), are invalid too.
        for bad in (b'{"m":"\xc0\xaf"}', b'{"m":"\xed\xa0\x80"}'):
            r = B.RawWs(self.br.port)
            self.addCleanup(r.close)
            r.send_frame(1, bad)
            self.assertEqual(r.read_close()[0], 1007, bad)
        r = B.RawWs(self.br.port)
        self.addCleanup(r.close)
        r.send_frame(2, b'{"jsonrpc":"2.0","id":1,"method":"no.such"}')
        code, reason = r.read_close()
        self.assertEqual(code, 1003, "binary frame: %r" % reason)
        # Valid multi-byte UTF-8 is fine.
        r = B.RawWs(self.br.port)
        self.addCleanup(r.close)
        r.send_text('{"jsonrpc":"2.0","id":"\u00e9\u4e2d\U0001f600","method":"no.such"}')
        reply = r.recv_json()
        self.assertEqual(reply["id"], "\u00e9\u4e2d\U0001f600")
        self.assertEqual(reply["error"]["code"], -32601)
        self.assertTrue(self.br.alive())

    def test_upgrade_checks(self):
        port = self.br.port
        before = self.br.metric("rtc_bridge_upgrades_refused_total")
        refused = [
            ("bad Origin", dict(origin="http://evil.example"), 403),
            ("Origin of another port", dict(origin="http://localhost:3001"), 403),
            ("no subprotocol", dict(protocol=None), 400),
            ("another subprotocol", dict(protocol="graphql-ws"), 400),
            ("wrong path", dict(path="/socket"), 404),
            ("path with a suffix", dict(path="/ws/x"), 404),
        ]
        for what, kw, status in refused:
            got, body = B.upgrade_status(port, **kw)
            self.assertEqual(got, status, "%s: HTTP %s %r" % (what, got, body))
        self.assertEqual(self.br.metric("rtc_bridge_upgrades_refused_total") - before,
                         len(refused))
        self.assertEqual(B.upgrade_status(port, upgrade=False, protocol=None)[0], 426,
                         "GET /ws without an upgrade")
        # Allowed origins, none (not a browser), a list with the subprotocol.
        for origin in ("http://localhost:3000", "https://127.0.0.1:8443", None):
            w = self.ws(self.br, origin=origin, name="origin %s" % origin)
            self.assertRpcError(w.call("no.such"), -32601)
        r = B.RawWs(port, protocol="chat, rtc.v1.jsonrpc")
        self.addCleanup(r.close)
        self.assertEqual(r.status, 101)
        self.assertEqual(r.headers.get("sec-websocket-protocol"), B.SUBPROTOCOL)
        # A client with permessage-deflate on offer gets none.
        w = B.Ws(self.br.url(), name="deflate", compression="deflate")
        self.addCleanup(w.close)
        self.assertIsNone(w.ws.response_headers.get("Sec-WebSocket-Extensions"))

    def test_probes_on_both_ports(self):
        for admin in (True, False):
            where = "admin port" if admin else "main port"
            st, body = self.br.get("/healthz", admin)
            self.assertEqual((st, body.strip()), (200, "ok"), where)
            st, body = self.br.get("/readyz", admin)
            self.assertEqual(st, 200, "%s: %s" % (where, body))
            st, body = self.br.get("/metrics", admin)
            self.assertEqual(st, 200, where)
            names = {n for n, _, _ in B.parse_metrics(body)}
            for n in ("rtc_bridge_sockets", "rtc_bridge_requests_total",
                      "rtc_bridge_stream_resumes_total", "rtc_bridge_rate_limited_total",
                      "rtc_bridge_upgrades_refused_total", "rtc_bridge_events_total",
                      "rtc_build_info"):
                self.assertIn(n, names, where)
        self.assertEqual(self.br.get("/nope", False)[0], 404)


# ---- 4b. rate limit, slow consumer, per-socket limits ----------------------------------------

class LimitsTest(BridgeCase):
    RATE, BURST = 5, 10
    BRIDGES = (("--rate-limit", "5", "--rate-burst", "10"),
               ("--rate-limit", "0", "--send-queue", "2MiB", "--max-streams", "2"),
               ("--ping-interval", "1s", "--idle-timeout", "2s", "--header-timeout", "1s"),
               ("--max-sockets", "2"))

    def test_ping_idle_and_header_timeouts(self):
        """--ping-interval 1s --idle-timeout 2s: a socket that answers the
        pings outlives the idle timeout; one that does not is hung up."""
        br = self.bridges[2]
        t0 = time.monotonic()
        ponger = B.RawWs(br.port)
        self.addCleanup(ponger.close)
        silent = B.RawWs(br.port)
        self.addCleanup(silent.close)
        # The ponger answers every ping, on a thread; four pings take it
        # well past the 2 s idle timeout.
        pong_log = []

        def pong():
            try:
                while len(pong_log) < 4:
                    _, op, payload = ponger.recv_frame(30)
                    if op != 9:
                        pong_log.append(("unexpected opcode", op))
                        return
                    ponger.send_frame(10, payload)
                    pong_log.append(time.monotonic() - t0)
            except Exception as e:  # noqa: BLE001 - asserted below
                pong_log.append(("error", repr(e)))
        th = threading.Thread(target=pong, daemon=True)
        th.start()
        # The silent one: pinged, never answers, hung up.
        pings = 0
        while True:
            try:
                _, op, _ = silent.recv_frame(30)
            except (EOFError, ConnectionError):
                break
            if op == 9:
                pings += 1
        t_silent = time.monotonic() - t0
        self.assertGreaterEqual(pings, 1, "the bridge pings a silent socket")
        self.assertTrue(1.0 <= t_silent <= 15.0, "hung up after %.1f s" % t_silent)
        th.join(60)
        self.assertEqual(len(pong_log), 4, pong_log)
        self.assertTrue(all(isinstance(x, float) for x in pong_log), pong_log)
        t_ponger = time.monotonic() - t0
        self.assertGreater(t_ponger, 2.0)
        self.assertGreater(t_ponger, t_silent, "the ponger outlived the silent socket")
        ponger.send_text('{"jsonrpc":"2.0","id":1,"method":"no.such"}')
        self.assertEqual(ponger.recv_json()["error"]["code"], -32601,
                         "alive after %.1f s idle thanks to its pongs" % t_ponger)
        figure("ping/idle", "silent socket hung up after %.1f s (%d pings); the ponger alive "
               "after %.1f s (--ping-interval 1s --idle-timeout 2s)" % (t_silent, pings,
                                                                         t_ponger))

    def test_request_head_timeout(self):
        """--header-timeout 1s: a connection whose request head does not
        arrive in time is dropped (slowloris), whatever part of it came."""
        br = self.bridges[2]
        cases = (("nothing", b""), ("one byte", b"G"),
                 ("the request line", b"GET /ws HTTP/1.1\r\n"),
                 ("half the head", b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"))
        conns = []
        for what, data in cases:   # all at once: one wait for the four
            r = B.RawWs(br.port, timeout=30, send_head=False)
            self.addCleanup(r.close)
            t0 = time.monotonic()
            if data:
                r.sock.sendall(data)
            conns.append((what, r, t0))
        took = {}
        for what, r, t0 in conns:
            r.drain_until_eof(30)
            took[what] = round(time.monotonic() - t0, 2)
        figure("header timeout", "incomplete request heads dropped after %s s "
               "(--header-timeout 1s)" % took)
        for what, t in took.items():
            self.assertLessEqual(t, 5.0, "%s: dropped after %.2f s with --header-timeout 1s"
                                 % (what, t))

    def test_max_sockets(self):
        br = self.bridges[3]
        w1 = self.ws(br, name="first")
        w2 = self.ws(br, name="second")
        refused0 = br.metric("rtc_bridge_upgrades_refused_total")
        st, body = B.upgrade_status(br.port)
        self.assertEqual(st, 503, "a third socket with --max-sockets 2: %s %r" % (st, body))
        self.assertEqual(br.metric("rtc_bridge_upgrades_refused_total"), refused0 + 1)
        self.assertEqual(br.metric("rtc_bridge_sockets"), 2)
        self.assertRpcError(w1.call("no.such"), -32601)
        w2.close()
        wait_for(lambda: br.metric("rtc_bridge_sockets") == 1, 30, what="the socket count to drop")
        w3 = self.ws(br, name="third")
        self.assertRpcError(w3.call("no.such"), -32601)

    def test_rate_limit(self):
        br = self.bridges[0]
        room = self.room()
        t_open = time.monotonic()
        p = self.peer(br, room, "flooder")         # 3 requests of the burst
        other = self.peer(br, room, "neighbour")  # a bucket of its own
        lim0 = br.metric("rtc_bridge_rate_limited_total")
        n = 40

        async def flood():
            return await asyncio.gather(*[
                p.ws.acall(SIG + "Heartbeat", {"sessionId": p.sid}, rid="f%d" % i)
                for i in range(n)])
        replies = B.loop().run(flood(), 60, "40 pipelined requests")
        elapsed = time.monotonic() - t_open
        self.assertEqual([r["id"] for r in replies], ["f%d" % i for i in range(n)])
        ok = [r for r in replies if "result" in r]
        limited = [r for r in replies if "error" in r]
        for r in limited:
            self.assertRpcError(r, 8, "RESOURCE_EXHAUSTED", "rate limit")
        figure("rate limit", "40 pipelined requests (--rate-limit %d --rate-burst %d): %d OK, "
               "%d RESOURCE_EXHAUSTED, socket open %.2f s" % (self.RATE, self.BURST, len(ok),
                                                               len(limited), elapsed))
        self.assertGreaterEqual(len(limited), 1)
        self.assertLessEqual(len(ok), self.BURST - 3 + self.RATE * elapsed + 1,
                             "more accepted than the bucket allows")
        self.assertEqual(p.ws.reply_count(), 3 + n, "one answer per request, none dropped")
        self.assertEqual(br.metric("rtc_bridge_rate_limited_total") - lim0, len(limited))
        # Another socket on the same bridge is not limited.
        self.assertIn("sessionExpiresAtMs",
                      other.ws.result(SIG + "Heartbeat", {"sessionId": other.sid}))
        # After a pause the socket works again.
        t0 = time.monotonic()
        wait_for(lambda: "result" in p.ws.call(SIG + "Heartbeat", {"sessionId": p.sid}), 30,
                 interval=0.25, what="the bucket to refill")
        figure("rate limit", "requests accepted again %.2f s later" % (time.monotonic() - t0))
        self.assertFalse(p.ws.is_closed())

    def test_max_streams_per_socket(self):
        br = self.bridges[1]
        room = self.room()
        p = self.peer(br, room, "streamer")
        sids = [p.sid] + [p.ws.result(SIG + "Join", {})["sessionId"] for _ in range(2)]
        s1 = p.ws.subscribe(SIG + "Subscribe", {"sessionId": sids[0]})
        s2 = p.ws.subscribe(SIG + "Subscribe", {"sessionId": sids[1]})
        r = p.ws.call(SIG + "Subscribe", {"sessionId": sids[2]})
        self.assertRpcError(r, 8, "RESOURCE_EXHAUSTED", "subscriptions")
        self.assertEqual(s1.cancel(), True)
        s3 = p.ws.subscribe(SIG + "Subscribe", {"sessionId": sids[2]})
        self.assertNotIn(s3.id, (s1.id, s2.id))
        self.assertEqual((s2.ends, s3.ends), ([], []))

    def test_slow_consumer_is_dropped_neighbour_unaffected(self):
        """A raw socket subscribes, then asks for a 64 KiB answer again and
        again and never reads: once --send-queue (2 MiB) is full on top of
        the kernel buffers, the bridge drops it; a neighbour on the same
        bridge keeps getting prompt answers all along."""
        br = self.bridges[1]
        room = self.room()
        a = self.peer(br, room, "victim")
        b = self.peer(br, room, "offerer")
        b.signal(a, {"description": {"type": "SDP_TYPE_OFFER", "sdp": "v" * 65536}})
        neighbour = self.peer(br, room, "neighbour")
        drops0 = br.metric("rtc_bridge_socket_closes_total", reason="send queue full")

        r = B.RawWs(br.port, rcvbuf=4096)
        self.addCleanup(r.close)
        self.assertEqual(r.status, 101)
        r.send_text(json.dumps({"jsonrpc": "2.0", "id": "auth", "method": "session.authenticate",
                                "params": {"accessToken": a.token}}))
        self.assertEqual(r.recv_json()["result"], True)
        r.send_text(json.dumps({"jsonrpc": "2.0", "id": "sub", "method": SIG + "Subscribe",
                                "params": {"sessionId": a.sid}}))
        self.assertIn("subscription", r.recv_json()["result"])

        rtts, errors = [], []
        stop = threading.Event()

        def neighbour_loop():
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    res = neighbour.ws.call(SIG + "Heartbeat", {"sessionId": neighbour.sid},
                                            timeout=30)
                except Exception as e:  # noqa: BLE001 - recorded, asserted below
                    errors.append(repr(e))
                    return
                rtts.append((t0, time.monotonic() - t0))
                if "result" not in res:
                    errors.append(res)
                    return
        t = threading.Thread(target=neighbour_loop, daemon=True)
        t.start()
        self.addCleanup(stop.set)

        req = json.dumps({"jsonrpc": "2.0", "id": 0, "method": SIG + "GetNegotiation",
                          "params": {"sessionId": a.sid, "peerParticipantId": b.pid}})
        m = "rtc_bridge_calls_total"
        sent, batch = 0, 16
        ok0 = br.metric(m, method=SIG + "GetNegotiation", code="OK")
        wait_for(lambda: len(rtts) >= 5 or errors, 30, what="the neighbour's first calls")
        t_abuse = time.monotonic()

        def dropped():
            return br.metric("rtc_bridge_socket_closes_total",
                             reason="send queue full") > drops0
        while not dropped():
            self.assertLess(sent, 3000, "sent %d requests for 64 KiB answers (%d MB) without "
                            "being dropped" % (sent, sent * 66 // 1000))
            try:
                for _ in range(batch):
                    r.send_text(req)
                    sent += 1
            except OSError:
                break   # the bridge hung up while we were still sending
            target = ok0 + sent
            wait_for(lambda: dropped() or
                     br.metric(m, method=SIG + "GetNegotiation", code="OK") >= target,
                     60, what="%d GetNegotiation answers queued" % sent)
        t_drop = time.monotonic()
        n_drop = len(rtts)
        wait_for(lambda: len(rtts) >= n_drop + 20 or errors, 60,
                 what="20 more neighbour calls after the drop")
        stop.set()
        t.join(60)
        nread, how = r.drain_until_eof(60)
        during = [d for t0, d in rtts if t_abuse <= t0 <= t_drop]
        everything = [d for _, d in rtts]
        figure("slow consumer", "dropped after %d GetNegotiation requests (~%d KB of answers) "
               "in %.1f s; the raw socket then read %d bytes and saw %s" % (
                   sent, sent * 66, t_drop - t_abuse, nread, how))
        self.assertEqual(errors, [], "the neighbour's calls must keep working")
        self.assertGreaterEqual(len(during), 3, "the neighbour called during the abuse")
        figure("slow consumer neighbour", "%d Heartbeats during the abuse: p50 %.1f ms, max "
               "%.1f ms; %d in all, max %.1f ms" % (
                   len(during), 1000 * B.percentile(during, 50), 1000 * max(during),
                   len(everything), 1000 * max(everything)))
        self.assertLess(max(everything), 10.0, "a neighbour round trip took %.1f s" %
                        max(everything))
        self.assertEqual(br.metric("rtc_bridge_socket_closes_total", reason="send queue full"),
                         drops0 + 1, "only the slow consumer was dropped")
        for p in (a, b, neighbour):
            self.assertFalse(p.ws.is_closed(), p.ws.name)
        self.assertIn("offer", a.ws.result(SIG + "GetNegotiation", {
            "sessionId": a.sid, "peerParticipantId": b.pid}))


# ---- 5. readiness -----------------------------------------------------------------------------

class ReadinessTest(BridgeCase):
    NUM_PODS = 0
    BRIDGES = ()

    def test_readyz_follows_the_signaling_pods(self):
        pods = []
        for i in range(2):
            pod = self.make_pod(i)
            pod.grpc_port, pod.admin_port = H.free_port(), H.free_port()
            pods.append(pod)
        br = self.start_bridge([], "bridge-ready", pods=pods)
        # Auth serves at once: then only signaling keeps the bridge unready.
        wait_for(lambda: "rtc.signaling.v1.Signaling" in br.get("/readyz")[1], 30,
                 what="/readyz to name only the signaling upstream as missing")
        w = self.ws(br, name="early")
        login = self.devlogin(w, "Early", self.room())   # auth works without signaling
        w.result("session.authenticate", {"accessToken": login["accessToken"]})

        def not_ready(why):
            for admin in (True, False):
                st, body = br.get("/readyz", admin)
                self.assertEqual(st, 503, "%s (%s): %s" % (
                    why, "admin" if admin else "main", body))
                self.assertIn("rtc.signaling.v1.Signaling", body)
            r = w.call(SIG + "Join", {})
            self.assertRpcError(r, 14, "UNAVAILABLE")

        not_ready("no signaling pod started yet")
        pods[0].start()
        wait_for(lambda: br.readyz() == 200 and br.readyz(admin=False) == 200, 30,
                 what="/readyz 200 once a pod serves")
        self.assertIn("sessionId", w.result(SIG + "Join", {}))
        pods[1].start()
        for p in pods:
            p.kill()
        wait_for(lambda: br.readyz() == 503, 30, what="/readyz 503 with both pods dead")
        not_ready("both pods killed")
        pods[1].start()
        wait_for(lambda: br.readyz() == 200, 30, what="/readyz 200 after a restart")
        self.assertIn("sessionId", w.result(SIG + "Join", {}))


    def test_port_in_use_exits_1(self):
        """A listener that cannot bind ends start-up with status 1 and says
        which (lws alone would keep running, serving nothing)."""
        with socket.socket() as held, socket.socket() as held2:
            held.bind(("127.0.0.1", 0))
            held.listen()
            held2.bind(("127.0.0.1", 0))
            held2.listen()
            ports = held.getsockname()[1], held2.getsockname()[1]
            cases = ((ports[0], 0, "cannot listen"), (ports[0], ports[1], "cannot listen"),
                     (0, ports[1], "cannot start admin listener"))
            for main_port, admin_port, msg in cases:
                r = subprocess.run([exe("rtc-bridge"), "--listen", "127.0.0.1:%d" % main_port,
                                    "--admin", "127.0.0.1:%d" % admin_port],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 1, "%s: %s" % (msg, r.stderr[-500:]))
                self.assertIn(msg, r.stderr)

    def test_readyz_follows_redis(self):
        """A pod whose Redis is gone stays alive ("" SERVING) but its
        service is NOT_SERVING: the bridge health-checks the service name,
        so it is not ready (and routes nothing there) until Redis is back."""
        pod = self.make_pod(4)
        pod.start()
        br = self.start_bridge([], "bridge-redis", pods=[pod])
        br.wait_ready()
        self.redis.stop()
        try:
            wait_for(lambda: br.readyz() == 503 and br.readyz(admin=False) == 503, 30,
                     what="/readyz 503 while Redis is down")
            self.assertTrue(pod.alive(), "the pod must survive a Redis outage")
        finally:
            self.redis.start(keep_port=True)
        wait_for(lambda: br.readyz() == 200, 30, what="/readyz 200 once Redis is back")
        w = self.ws(br, name="after-redis")
        login = self.devlogin(w, "Back", self.room())
        w.result("session.authenticate", {"accessToken": login["accessToken"]})
        self.assertIn("sessionId", w.result(SIG + "Join", {}))

    def test_stream_ends_after_resume_for(self):
        """With no pod left, a stream keeps trying for --resume-for (2 s
        here), then ends with rpc.end carrying UNAVAILABLE."""
        pods = [self.make_pod(i) for i in (2, 3)]
        for p in pods:
            p.start()
        br = self.start_bridge(["--resume-for", "2s"], "bridge-resume-for", pods=pods)
        br.wait_ready()
        room = self.room()
        a = self.peer(br, room, "Stays")
        b = self.peer(br, room, "Sender")
        sa = a.subscribe()
        eid = b.signal(a, {"data": b64(b"before")})
        sa.wait_event(lambda e: e["id"] == eid)
        t0 = time.monotonic()
        for p in pods:
            p.kill()
        end = sa.wait_end(30)
        waited = time.monotonic() - t0
        self.assertEqual(set(end), {"subscription", "error"}, end)
        self.assertEqual((end["error"]["code"], end["error"]["data"]),
                         (14, {"status": "UNAVAILABLE"}), end)
        figure("resume-for", "stream ended UNAVAILABLE %.2f s after both pods died "
               "(--resume-for 2s); %d resume attempts" % (
                   waited, br.metric("rtc_bridge_stream_resumes_total")))
        self.assertTrue(1.0 <= waited <= 20, "ended after %.2f s" % waited)
        self.assertEqual(br.metric("rtc_bridge_stream_resume_failures_total"), 1)
        self.assertGreaterEqual(br.metric("rtc_bridge_stream_resumes_total"), 2)
        self.assertFalse(a.ws.is_closed())
        self.assertRpcError(a.ws.call(SIG + "Heartbeat", {"sessionId": a.sid}), 14,
                            "UNAVAILABLE")


# ---- 2. pod death under load (HA) ------------------------------------------------------------

class Flow:
    """Signals sent by 2 x PAIRS senders: each sends numbered data signals to
    its partner, one at a time, retrying one that failed UNAVAILABLE with
    the same clientMsgId, until stopped."""

    def __init__(self, pace):
        self.pace = pace
        self.stop = False
        self.sent = {}      # tag -> signals acknowledged
        self.acks = {}      # tag -> [event id per seq]
        self.retries = 0
        self.errors = []

    async def sender(self, src, dst, tag):
        self.sent[tag] = 0
        self.acks[tag] = []
        seq = 0
        while not self.stop:
            params = {"sessionId": src.sid, "toParticipantId": dst.pid,
                      "payload": {"data": b64(b"%s:%06d" % (tag.encode(), seq))},
                      "clientMsgId": "%s-%06d" % (tag, seq)}
            t0 = time.monotonic()
            while True:
                try:
                    r = await src.ws.acall(SIG + "Signal", params, timeout=40)
                except (B.Closed, asyncio.TimeoutError) as e:
                    self.errors.append("%s seq %d: %r" % (tag, seq, e))
                    return
                if "result" in r:
                    self.acks[tag].append(r["result"]["eventId"])
                    break
                code = r.get("error", {}).get("code")
                if code != 14:
                    self.errors.append("%s seq %d: %s" % (tag, seq, r))
                    return
                self.retries += 1
                if time.monotonic() - t0 > 60:
                    self.errors.append("%s seq %d: UNAVAILABLE for 60 s" % (tag, seq))
                    return
                await asyncio.sleep(0.05)   # pace the retries
            seq += 1
            self.sent[tag] = seq
            await asyncio.sleep(self.pace)  # pacing, not a wait for an outcome


class PodDeathTest(BridgeCase):
    POD_ARGS = ("--rate-limit", "0", "--mailbox-size", "100000")
    BRIDGES = ((), ())
    PAIRS = 25
    PACE = 0.1
    STEP = 20

    def resumes(self):
        return sum(b.metric("rtc_bridge_stream_resumes_total") for b in self.bridges)

    def streams(self, pod):
        return int(B.metric_value(B.parse_metrics(pod.metrics()), "rtc_signaling_streams"))

    def test_pod_kills_under_load(self):
        b1, b2 = self.bridges
        pairs = []
        for i in range(self.PAIRS):
            room = self.room("pair%02d" % i)
            pairs.append((self.peer(b1, room, "A%02d" % i), self.peer(b2, room, "B%02d" % i)))
        for a, b in pairs:
            a.subscribe()
            b.subscribe()
        for a, b in pairs:
            a.sub.wait_event(joined_ev(b.pid), what="B's join at A")
        wait_for(lambda: sum(self.streams(p) for p in self.pods) == 2 * self.PAIRS, 30,
                 what="%d streams on the pods" % (2 * self.PAIRS))
        spread = [self.streams(p) for p in self.pods]
        self.assertTrue(all(n >= 5 for n in spread),
                        "streams should be spread over both pods: %s" % spread)

        flow = Flow(self.PACE)
        senders = []
        for i, (a, b) in enumerate(pairs):
            senders.append(flow.sender(a, b, "A%02d" % i))
            senders.append(flow.sender(b, a, "B%02d" % i))

        async def run_all():
            await asyncio.gather(*senders)
        fut = B.loop().submit(run_all())
        self.addCleanup(setattr, flow, "stop", True)
        t_start = time.monotonic()

        def each_sent(n, what):
            wait_for(lambda: flow.errors or (len(flow.sent) == 2 * self.PAIRS and
                                             min(flow.sent.values()) >= n), 180,
                     what="every sender to reach %d signals (%s)" % (n, what))
            self.assertEqual(flow.errors, [])

        kills, on_pods, in_flight = [], [], []
        resumes0 = self.resumes()
        each_sent(self.STEP, "before the first kill")
        for victim in (0, 1):
            pod = self.pods[victim]
            on_pod = self.streams(pod)
            on_pods.append(on_pod)
            before = self.resumes()
            conn0 = [b.metric("rtc_grpc_client_connects_total", endpoint=pod.addr, result="ok")
                     for b in self.bridges]
            at = min(flow.sent.values())
            # Hold Redis for a moment so that Signals pile up in flight on
            # the victim, then kill it: those fail UNAVAILABLE to the
            # browsers, which retry them (same clientMsgId) on the other pod,
            # while Redis may still run what the dead pod had sent it.
            base = self.active_calls(pod)
            sleeper = threading.Thread(target=self.redis.cmd, args=("DEBUG", "SLEEP", "1"),
                                       kwargs={"timeout": 30}, daemon=True)
            sleeper.start()
            try:
                wait_for(lambda: self.active_calls(pod) >= base + 3 or not sleeper.is_alive(),
                         30, interval=0.01, what="Signals in flight on %s" % pod.name)
                in_flight.append(self.active_calls(pod) - base)
                pod.kill()
            finally:
                sleeper.join(60)
            # Its streams resume on the other pod, and the signals go on.
            wait_for(lambda: self.resumes() - before >= on_pod, 60,
                     what="%d stream resumes after killing %s" % (on_pod, pod.name))
            each_sent(at + self.STEP, "after killing %s" % pod.name)
            pod.start()
            for b, c0 in zip(self.bridges, conn0):
                wait_for(lambda: b.metric("rtc_grpc_client_connects_total", endpoint=pod.addr,
                                          result="ok") > c0, 60,
                         what="%s to reconnect to the restarted %s" % (b.name, pod.name))
            served0 = self.server_signals(pod)
            wait_for(lambda: self.server_signals(pod) >= served0 + 20, 60,
                     what="the restarted %s to serve Signals again" % pod.name)
            kills.append("%s (holding %d streams, %d calls in flight) after %d signals each; "
                         "resumes +%d" % (pod.name, on_pod, in_flight[-1], at,
                                          self.resumes() - before))
            each_sent(min(flow.sent.values()) + self.STEP, "after restarting %s" % pod.name)
        flow.stop = True
        fut.result(120)
        elapsed = time.monotonic() - t_start
        self.assertEqual(flow.errors, [])

        # Every stream saw every signal sent to it exactly once, in order.
        peers = {}
        for i, (a, b) in enumerate(pairs):
            peers["A%02d" % i] = (a, b)
            peers["B%02d" % i] = (b, a)
        delivered = {}
        for tag, (src, dst) in sorted(peers.items()):
            n = flow.sent[tag]
            got = dst.sub.wait(lambda evs: [e for e in evs if signal_from(src.pid)(e)]
                               if len([e for e in evs if signal_from(src.pid)(e)]) >= n
                               else None, 60, what="%d signals from %s" % (n, tag))
            seqs = [int(unb64(e["signal"]["payload"]["data"]).split(b":")[1]) for e in got]
            delivered[tag] = len(seqs)
            dups = sorted({s for s in seqs if seqs.count(s) > 1})
            self.assertEqual(dups, [], "%s's signals delivered twice" % tag)
            self.assertEqual(seqs, list(range(n)), "%s -> its partner: every signal exactly "
                             "once, in order" % tag)
            self.assertEqual([e["id"] for e in got], flow.acks[tag],
                             "%s: delivered ids are those Signal returned" % tag)
        for tag, (src, dst) in peers.items():
            ids = [e["id"] for e in dst.sub.results()]
            self.assertEqual(len(ids), len(set(ids)), "duplicate event ids at %s's partner" % tag)
            self.assertEqual(dst.sub.ends, [], "no rpc.end at %s's partner" % tag)
            self.assertFalse(dst.ws.is_closed(), dst.ws.name)
            extra = [e for e in dst.sub.results() if not signal_from(src.pid)(e)
                     and not joined_ev(src.pid)(e)]
            self.assertEqual(extra, [], "unexpected events")
        total = sum(flow.sent.values())
        failures = sum(b.metric("rtc_bridge_stream_resume_failures_total") for b in self.bridges)
        figure("pod death", "%d streams (%s per pod at the start), %d senders: %d signals in "
               "%.1f s, each delivered exactly once and in order (per recipient %d..%d); "
               "Signal retries after UNAVAILABLE %d; stream resumes %d, resume failures %d; "
               "kills: %s" % (2 * self.PAIRS, spread, len(peers), total, elapsed,
                              min(delivered.values()), max(delivered.values()), flow.retries,
                              self.resumes() - resumes0, failures, "; ".join(kills)))
        self.assertEqual(sum(delivered.values()), total)
        self.assertGreaterEqual(self.resumes() - resumes0, sum(on_pods),
                                "rtc_bridge_stream_resumes_total: every stream of a killed pod")
        self.assertEqual(on_pods[1], 2 * self.PAIRS, "the second kill hit every stream")
        self.assertEqual(failures, 0)
        self.assertGreaterEqual(flow.retries, 1, "Signals in flight on a killed pod fail "
                                "UNAVAILABLE and are retried (%s in flight)" % in_flight)

    def active_calls(self, pod):
        return B.metric_value(B.parse_metrics(pod.metrics()), "rtc_grpc_server_active_calls")

    def server_signals(self, pod):
        try:
            m = B.parse_metrics(pod.metrics())
        except OSError:
            return 0
        return B.metric_value(m, "rtc_grpc_server_calls_total",
                              method="/" + SIG + "Signal", code="OK")


# ---- 3. drain -------------------------------------------------------------------------------

class DrainTest(BridgeCase):
    BRIDGES = ()

    def hold_pods(self):
        """SIGSTOP both pods: a unary call sent now stays in flight until
        release_pods()."""
        for p in self.pods:
            os.kill(p.proc.pid, signal.SIGSTOP)
        self.addCleanup(self.release_pods)

    def release_pods(self):
        for p in self.pods:
            if p.alive():
                os.kill(p.proc.pid, signal.SIGCONT)

    def call_in_flight(self, br, peer):
        """Send a Heartbeat that the stopped pods hold; returns its future
        once the bridge has started the upstream call."""
        before = br.metric("rtc_bridge_requests_total")
        fut = B.loop().submit(peer.ws.acall(SIG + "Heartbeat", {"sessionId": peer.sid},
                                            rid="held", timeout=120))
        wait_for(lambda: br.metric("rtc_bridge_requests_total") >= before + 1,
                 what="the bridge to take the request")
        return fut

    def test_drain_on_sigterm(self):
        br = self.start_bridge(["--drain-timeout", "60s"], "drained")
        br.wait_ready()
        room = self.room()
        idle = self.peer(br, room, "idle")
        streaming = self.peer(br, room, "streaming")
        streaming.subscribe()
        busy = self.peer(br, room, "busy")
        other = self.ws(br, name="unauthenticated")
        self.hold_pods()
        fut = self.call_in_flight(br, busy)
        self.assertFalse(fut.done())
        t0 = time.monotonic()
        br.proc.proc.send_signal(signal.SIGTERM)
        # /readyz 503 at once, on both ports, while the call is held.
        wait_for(lambda: br.readyz() == 503, 10, what="/readyz 503 after SIGTERM")
        st, body = br.get("/readyz", admin=False)
        self.assertEqual(st, 503, body)
        self.assertIn("draining", body)
        # The sockets with nothing in flight close with 1001 at once.
        for w in (idle.ws, streaming.ws, other):
            code, reason = w.wait_closed(30)
            self.assertEqual(code, 1001, "%s: %s %r" % (w.name, code, reason))
        t_idle = time.monotonic() - t0
        # The busy socket waits for its call; new requests on it are refused.
        self.assertFalse(busy.ws.is_closed(), "closed before its call answered")
        r = busy.ws.call(SIG + "Heartbeat", {"sessionId": busy.sid})
        self.assertRpcError(r, 14, "UNAVAILABLE", "shutting down")
        self.assertEqual(B.upgrade_status(br.port)[0], 503, "no new upgrades while draining")
        self.assertTrue(br.alive())
        self.assertFalse(fut.done())
        # Release the pods: the answer arrives, then the close.
        self.release_pods()
        reply = fut.result(60)
        self.assertIn("sessionExpiresAtMs", reply.get("result", {}), reply)
        code, reason = busy.ws.wait_closed(30)
        self.assertEqual(code, 1001, reason)
        rc = br.proc.proc.wait(60)
        figure("drain", "idle sockets closed 1001 within %.2f s of SIGTERM; the busy one after "
               "its answer; exit %s after %.2f s" % (t_idle, rc, time.monotonic() - t0))
        self.assertEqual(rc, 0, br.log_tail())
        self.assertNotIn("Sanitizer", br.log_text())

    def test_drain_delivers_queued_answers_first(self):
        """A socket that reads slowly has answers queued in the bridge when
        SIGTERM comes: its calls have answered, so it is closed with 1001,
        but only after those answers (nothing answered is lost)."""
        br = self.start_bridge(["--send-queue", "16MiB", "--drain-timeout", "30s"],
                               "drain-queued")
        br.wait_ready()
        room = self.room()
        a = self.peer(br, room, "slow-reader")
        b = self.peer(br, room, "offerer")
        b.signal(a, {"description": {"type": "SDP_TYPE_OFFER", "sdp": "v" * 65536}})
        r = B.RawWs(br.port, rcvbuf=4096)
        self.addCleanup(r.close)
        r.send_text(json.dumps({"jsonrpc": "2.0", "id": "auth", "method": "session.authenticate",
                                "params": {"accessToken": a.token}}))
        self.assertEqual(r.recv_json()["result"], True)
        n = 60   # 60 x 66 KB: more than the kernel buffers hold; under --max-calls
        ok0 = br.metric("rtc_bridge_calls_total", method=SIG + "GetNegotiation", code="OK")
        for i in range(n):
            r.send_text(json.dumps({"jsonrpc": "2.0", "id": i, "method": SIG + "GetNegotiation",
                                    "params": {"sessionId": a.sid, "peerParticipantId": b.pid}}))
        wait_for(lambda: br.metric("rtc_bridge_calls_total", method=SIG + "GetNegotiation",
                                   code="OK") >= ok0 + n, 60, what="%d answers" % n)
        br.proc.proc.send_signal(signal.SIGTERM)
        ids = []
        while True:
            try:
                fin, op, payload = r.recv_frame(30)
            except (EOFError, ConnectionError) as e:
                code = "no close frame (%r)" % e
                break
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0]
                break
            if op == 1:
                ids.append(json.loads(payload)["id"])
        rc = br.proc.proc.wait(60)
        figure("drain with queued answers", "%d of %d answered replies delivered before the "
               "close (%s); exit %s" % (len(ids), n, code, rc))
        self.assertEqual(sorted(ids), list(range(n)), "every answered reply before the close")
        self.assertEqual(code, 1001)
        self.assertEqual(rc, 0)

    def test_drain_timeout_closes_busy_sockets(self):
        br = self.start_bridge(["--drain-timeout", "1s"], "drain-timeout")
        br.wait_ready()
        busy = self.peer(br, self.room(), "stuck")
        self.hold_pods()
        fut = self.call_in_flight(br, busy)
        t0 = time.monotonic()
        br.proc.proc.send_signal(signal.SIGTERM)
        code, reason = busy.ws.wait_closed(30)
        waited = time.monotonic() - t0
        self.assertEqual(code, 1001, reason)
        self.assertGreaterEqual(waited, 0.9, "closed before --drain-timeout")
        rc = br.proc.proc.wait(30)
        self.assertEqual(rc, 0, br.log_tail())
        with self.assertRaises(B.Closed):
            fut.result(30)
        figure("drain timeout", "busy socket closed 1001 %.2f s after SIGTERM with "
               "--drain-timeout 1s; exit %s" % (waited, rc))


SUITES = {
    "bridge": [FlowTest, HostileTest, LimitsTest, ReadinessTest],
    "bridge_ha": [PodDeathTest, DrainTest],
}
SUITES["all"] = SUITES["bridge"] + SUITES["bridge_ha"]


def main(argv):
    return H.run_main(argv, sys.modules[__name__], SUITES, FIGURES)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

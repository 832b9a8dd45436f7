"""deploy.topology: the whole local topology (deploy/local/up.sh) end to end.

Usage: /usr/bin/python3 test_topology.py BIN_DIR SOURCE_DIR [unittest args]

The test re-executes itself inside a fresh network namespace (unshare -n)
with only loopback up plus a veth pair, one end holding 10.77.0.1/24, so the
stack's fixed ports (6379, 8443, …) never collide with one on the host, and
starts the stack there with RTC_BIN_DIR=BIN_DIR and a temporary
RTC_LOCAL_STATE. It checks, through the nginx edge with a TLS context that
trusts only the generated certificate:

  - TLS 1.0 and 1.1 refused, 1.2 and 1.3 accepted (openssl s_client);
  - the edge's routes: HTTP -> HTTPS redirect, security headers, the demo,
    404 for anything else (no route to admin endpoints);
  - a call: DevLogin, Join, offer and answer between two peers that land on
    different bridges (each bridge's rtc_bridge_sockets gauge), and no ACL
    denial in Redis (ACL LOG empty);
  - Redis, Sentinel, gRPC and admin ports refuse 10.77.0.1 and accept
    127.0.0.1;
  - the WebSocket upgrade rate limit answers 429 beyond its burst;
  - kill -9 of a bridge: its client reconnects through nginx to the other
    bridge and gets its events again; up.sh start brings the bridge back;
  - kill -9 of the Redis primary: Sentinel promotes the replica and a
    Join + Signal works again (the recovery time is printed).

Everything is stopped at the end (up.sh stop), even on failure. No fixed
sleeps: every wait polls a condition with a deadline.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import websockets

NS_MARK = "RTC_TOPOLOGY_IN_NETNS"
EXT_IP = "10.77.0.1"
EDGE = "127.0.0.1:8443"
WS_URL = "wss://localhost:8443/ws"
ORIGIN = "https://localhost:8443"
SUBPROTOCOL = "rtc.v1.jsonrpc"
SIG = "rtc.signaling.v1.Signaling/"
AUTH = "rtc.auth.v1.Auth/"
START_TIMEOUT = 600.0   # up.sh start (busy 2-core machine)
WAIT = 60.0             # any one condition
FAILOVER_DEADLINE = 90.0

BIN_DIR = SOURCE_DIR = None


def wait_for(cond, timeout=WAIT, what="a condition", step=0.1):
    """Polls cond() until it returns a truthy value; AssertionError after
    timeout seconds. Exceptions from cond count as 'not yet'."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s (last error: %r)"
                                 % (timeout, what, last))
        time.sleep(step)


async def await_for(cond, timeout=WAIT, what="a condition", step=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = await cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s (last error: %r)"
                                 % (timeout, what, last))
        await asyncio.sleep(step)


# ---- a JSON-RPC 2.0 client over WSS through the edge -------------------------------

class Client:
    """One browser tab: a WebSocket through nginx, calls and subscription
    events."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.ws = None
        self.next_id = 0
        self.pending = {}
        self.events = []          # (subscription, result)
        self.ends = []
        self.changed = asyncio.Event()
        self.reader = None

    async def open(self):
        self.ws = await websockets.connect(WS_URL, ssl=self.ctx, subprotocols=[SUBPROTOCOL],
                                           origin=ORIGIN, open_timeout=15)
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        try:
            async for text in self.ws:
                msg = json.loads(text)
                if "id" in msg and msg["id"] in self.pending:
                    self.pending.pop(msg["id"]).set_result(msg)
                elif msg.get("method") == "rpc.event":
                    p = msg["params"]
                    self.events.append((p.get("subscription"), p.get("result")))
                elif msg.get("method") == "rpc.end":
                    self.ends.append(msg["params"])
                self.changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("socket closed"))
            self.changed.set()

    @property
    def closed(self):
        return self.ws is None or self.reader.done()

    async def call(self, method, params=None, timeout=20.0):
        self.next_id += 1
        rid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        await self.ws.send(json.dumps(req))
        return await asyncio.wait_for(fut, timeout)

    async def result(self, method, params=None, timeout=20.0):
        r = await self.call(method, params, timeout)
        if "error" in r:
            raise RpcError("%s: %s" % (method, r["error"]))
        return r["result"]

    async def wait_event(self, pred, timeout=WAIT, what="an event"):
        deadline = time.monotonic() + timeout
        while True:
            for _, ev in self.events:
                if ev is not None and pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out after %.0fs waiting for %s; events %r"
                                     % (timeout, what, self.events[-5:]))
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
            except asyncio.TimeoutError:
                pass

    async def close(self):
        if self.ws is not None:
            await self.ws.close()
            if self.reader:
                await asyncio.gather(self.reader, return_exceptions=True)


class RpcError(Exception):
    pass


OFFER = {"description": {"type": "SDP_TYPE_OFFER",
                         "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}}
ANSWER = {"description": {"type": "SDP_TYPE_ANSWER",
                          "sdp": "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}}


def signal_from(pid, kind):
    return lambda e: ("signal" in e and e["signal"].get("fromParticipantId") == pid and
                      e["signal"]["payload"]["description"]["type"] == kind)


# ---- the stack ---------------------------------------------------------------------

class Stack:
    def __init__(self, state):
        self.state = state
        self.up = os.path.join(SOURCE_DIR, "deploy", "local", "up.sh")
        self.env = dict(os.environ, RTC_BIN_DIR=BIN_DIR, RTC_LOCAL_STATE=state,
                        RTC_START_WAIT="180")

    def run(self, *args, timeout=START_TIMEOUT):
        p = subprocess.run([self.up] + list(args), env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout)
        return p.returncode, p.stdout

    def pid(self, name):
        with open(os.path.join(self.state, name + ".pid")) as f:
            return int(f.read().strip())

    def secret(self, name):
        with open(os.path.join(self.state, "secrets", name)) as f:
            return f.read().strip()

    def redis(self, port, *cmd):
        env = dict(os.environ, REDISCLI_AUTH=self.secret("redis-ops.password"))
        p = subprocess.run(["redis-cli", "--no-auth-warning", "--user", "ops", "-h", "127.0.0.1",
                            "-p", str(port)] + list(cmd), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=10)
        return p.stdout

    def sentinel_master(self):
        env = dict(os.environ, REDISCLI_AUTH=self.secret("sentinel-auth.password"))
        p = subprocess.run(["redis-cli", "--no-auth-warning", "-p", "26379",
                            "SENTINEL", "get-master-addr-by-name", "rtc"], env=env,
                           stdout=subprocess.PIPE, text=True, timeout=10)
        return p.stdout.split()

    def bridge_sockets(self, admin_port):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin_port, timeout=5) as r:
            text = r.read().decode()
        m = re.search(r"^rtc_bridge_sockets(?:\{[^}]*\})?\s+(\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def logs_tail(self, n=25):
        out = []
        d = os.path.join(self.state, "logs")
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            with open(os.path.join(d, name), errors="replace") as f:
                lines = f.readlines()[-n:]
            out.append("---- %s (last %d lines)\n%s" % (name, len(lines), "".join(lines)))
        return "\n".join(out)


def tls_context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    return ctx


class Topology(unittest.TestCase):
    stack = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="rtc-topology-")
        cls.stack = Stack(os.path.join(cls.tmp, "state"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.addClassCleanup(cls._stop)
        t0 = time.monotonic()
        rc, out = cls.stack.run("start")
        print("\nup.sh start: exit %d in %.1fs\n%s" % (rc, time.monotonic() - t0, out),
              file=sys.stderr)
        if rc != 0:
            raise AssertionError("up.sh start failed (exit %d):\n%s\n%s"
                                 % (rc, out, cls.stack.logs_tail()))
        cls.cafile = os.path.join(cls.stack.state, "secrets", "edge.crt")
        cls.ctx = tls_context(cls.cafile)
        cls.rooms = 0

    @classmethod
    def _stop(cls):
        rc, out = cls.stack.run("stop", timeout=300)
        print("up.sh stop: exit %d\n%s" % (rc, out), file=sys.stderr)

    def setUp(self):
        self._failed_before = len(getattr(self._outcome.result, "failures", [])) + \
            len(getattr(self._outcome.result, "errors", []))

    def tearDown(self):
        res = self._outcome.result
        if len(res.failures) + len(res.errors) > self._failed_before:
            print("\n" + self.stack.logs_tail(), file=sys.stderr)

    def room(self):
        type(self).rooms += 1
        return "topo-%d-%d" % (os.getpid(), type(self).rooms)

    async def connect(self, timeout=WAIT):
        """A socket through the edge; retried while the edge answers 429 or
        a bridge is on its way down (what a browser SDK does)."""
        async def attempt():
            return await Client(self.ctx).open()
        return await await_for(attempt, timeout, "a WSS upgrade through the edge", step=0.3)

    async def peer(self, room, name, client=None):
        c = client or await self.connect()
        login = await c.result(AUTH + "DevLogin", {"displayName": name, "roomId": room})
        self.assertIs(await c.result("session.authenticate",
                                     {"accessToken": login["accessToken"]}), True)
        joined = await c.result(SIG + "Join", {})
        c.login, c.joined = login, joined
        c.sid = joined["sessionId"]
        c.pid = joined["participant"]["id"]
        return c

    def which_bridge(self, before):
        """The bridge (admin port) whose socket gauge grew since before."""
        after = {p: self.stack.bridge_sockets(p) for p in (9080, 9090)}
        grown = [p for p in after if after[p] > before[p]]
        return grown[0] if len(grown) == 1 else None

    async def peer_on_new_bridge(self, room, name):
        before = {p: self.stack.bridge_sockets(p) for p in (9080, 9090)}
        c = await self.peer(room, name)
        port = await asyncio.get_running_loop().run_in_executor(
            None, lambda: wait_for(lambda: self.which_bridge(before), 20,
                                   "the socket gauge of one bridge to grow"))
        return c, port

    # ---- tests (run in name order) ----

    def test_1_tls_versions(self):
        def s_client(flag):
            p = subprocess.run(["openssl", "s_client", "-connect", EDGE, "-servername", "localhost",
                                flag, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", self.cafile],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=30)
            m = (re.search(r"^New, (TLSv[0-9.]+), Cipher is ", p.stdout, re.M) or
                 re.search(r"^\s*Protocol\s*:\s*(\S+)", p.stdout, re.M))
            ok = p.returncode == 0 and "Cipher is (NONE)" not in p.stdout and \
                "New, (NONE)" not in p.stdout
            return ok, (m.group(1) if m else None), p.stdout
        for flag in ("-tls1", "-tls1_1"):
            ok, proto, out = s_client(flag)
            self.assertFalse(ok, "%s was accepted:\n%s" % (flag, out))
            print("openssl s_client %s: refused" % flag, file=sys.stderr)
        for flag, want in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            ok, proto, out = s_client(flag)
            self.assertTrue(ok, "%s refused:\n%s" % (flag, out))
            self.assertEqual(proto, want, out)
            self.assertIn("Verify return code: 0 (ok)", out)
            print("openssl s_client %s: accepted (%s)" % (flag, proto), file=sys.stderr)

    def test_2_edge_routes(self):
        def get(url):
            req = urllib.request.Request(url)
            opener = urllib.request.build_opener(
                urllib.request.HTTPSHandler(context=self.ctx), NoRedirect)
            try:
                with opener.open(req, timeout=10) as r:
                    return r.status, dict(r.headers), r.read()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read()
        st, h, _ = get("http://127.0.0.1:8000/demo/?room=x")
        self.assertEqual(st, 301)
        self.assertEqual(h["Location"], "https://127.0.0.1:8443/demo/?room=x")
        st, h, body = get("https://localhost:8443/demo/")
        self.assertEqual(st, 200)
        self.assertIn(b"app.js", body)
        self.assertIn("max-age=", h["Strict-Transport-Security"])
        self.assertIn("connect-src 'self' wss:", h["Content-Security-Policy"])
        self.assertIn("frame-ancestors 'none'", h["Content-Security-Policy"])
        self.assertEqual(h["X-Content-Type-Options"], "nosniff")
        self.assertIn("Referrer-Policy", h)
        self.assertNotIn("nginx/", h.get("Server", ""))
        self.assertEqual(get("https://localhost:8443/sdk/rtc.js")[0], 200)
        for path in ("/metrics", "/readyz", "/admin", "/demo/README.md", "/x/../../etc/passwd",
                     "/rtc.signaling.v1.SignalingAdmin/ListRooms"):
            st, h, _ = get("https://localhost:8443" + path)
            self.assertIn(st, (400, 404), path)
            self.assertIn("Strict-Transport-Security", h, "headers on errors too")
        st, h, _ = get("http://127.0.0.1:3000/demo/")
        self.assertEqual(st, 200)

    def test_3_call_across_bridges(self):
        asyncio.run(self._call())

    async def _call(self):
        room = self.room()
        a, port_a = await self.peer_on_new_bridge(room, "Alice")
        b, port_b = await self.peer_on_new_bridge(room, "Bob")
        try:
            self.assertNotEqual(port_a, port_b, "least_conn put both peers on one bridge")
            print("Alice on the bridge with admin port %d, Bob on %d" % (port_a, port_b),
                  file=sys.stderr)
            await a.result(SIG + "Subscribe", {"sessionId": a.sid})
            await b.result(SIG + "Subscribe", {"sessionId": b.sid})
            self.assertEqual([p["id"] for p in b.joined.get("participants", [])], [a.pid])
            await a.result(SIG + "Signal", {"sessionId": a.sid, "toParticipantId": b.pid,
                                            "payload": OFFER})
            ev = await b.wait_event(signal_from(a.pid, "SDP_TYPE_OFFER"), what="the offer at Bob")
            self.assertEqual(ev["signal"]["payload"], OFFER)
            await b.result(SIG + "Signal", {"sessionId": b.sid, "toParticipantId": a.pid,
                                            "payload": ANSWER})
            ev = await a.wait_event(signal_from(b.pid, "SDP_TYPE_ANSWER"),
                                    what="the answer at Alice")
            self.assertEqual(ev["signal"]["payload"], ANSWER)
            ice = [u for s in a.joined.get("iceServers", []) for u in s["urls"]]
            self.assertIn("stun:127.0.0.1:3478", ice)
        finally:
            await a.close()
            await b.close()
        # The services did all that as their own ACL users: nothing denied.
        acl = self.stack.redis(6379, "ACL", "LOG")
        self.assertEqual(acl.strip(), "", "ACL denials on the primary:\n" + acl)

    def test_4_internal_ports_loopback_only(self):
        ports = (6379, 6380, 26379, 26380, 26381, 8081, 9081, 50051, 9051, 50052, 9052,
                 8080, 9080, 8090, 9090, 8443, 8000, 3000, 3478)
        for port in ports:
            with self.assertRaises(ConnectionRefusedError, msg="%s:%d accepted" % (EXT_IP, port)):
                socket.create_connection((EXT_IP, port), timeout=5).close()
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        print("%d ports refuse %s and accept 127.0.0.1" % (len(ports), EXT_IP), file=sys.stderr)
        # And the default Redis user is off: no command without AUTH.
        p = subprocess.run(["redis-cli", "-p", "6379", "PING"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=10)
        self.assertRegex(p.stdout, "NOAUTH|WRONGPASS|denied|disabled", p.stdout)

    def test_5_upgrade_rate_limit(self):
        asyncio.run(self._rate_limit())

    async def _rate_limit(self):
        async def one():
            try:
                c = await Client(self.ctx).open()
            except websockets.InvalidStatusCode as e:
                return e.status_code
            await c.close()
            return 101
        statuses = await asyncio.gather(*(one() for _ in range(60)))
        counts = {s: statuses.count(s) for s in set(statuses)}
        print("60 upgrades at once through the edge: %s" % counts, file=sys.stderr)
        self.assertIn(429, counts, counts)
        self.assertIn(101, counts, counts)
        self.assertLessEqual(counts[101], 40, "burst is 20 (+ the rate)")
        self.assertEqual(set(counts), {101, 429}, counts)
        # The bucket refills: upgrades work again.
        c = await self.connect()
        await c.close()

    def test_6_bridge_killed(self):
        asyncio.run(self._bridge_killed())

    async def _bridge_killed(self):
        room = self.room()
        a, port_a = await self.peer_on_new_bridge(room, "Alice")
        b, port_b = await self.peer_on_new_bridge(room, "Bob")
        self.assertNotEqual(port_a, port_b)
        name = "rtc-bridge" if port_a == 9080 else "rtc-bridge-2"
        other = 9090 if port_a == 9080 else 9080
        await a.result(SIG + "Subscribe", {"sessionId": a.sid})
        await b.result(SIG + "Subscribe", {"sessionId": b.sid})
        pid = self.stack.pid(name)
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        print("killed %s (pid %d, Alice's bridge)" % (name, pid), file=sys.stderr)
        await await_for(lambda: asyncio.sleep(0, a.closed), 30, "Alice's socket to close")
        # Alice reconnects through the edge: it can only reach the other
        # bridge now; she resumes her session and gets Bob's next signal.
        before_other = self.stack.bridge_sockets(other)
        a2 = await self.connect()
        self.assertIs(await a2.result("session.authenticate",
                                      {"accessToken": a.login["accessToken"]}), True)
        rejoined = await a2.result(SIG + "Join", {"resumeToken": a.joined["resumeToken"]})
        self.assertEqual(rejoined["participant"]["id"], a.pid)
        await a2.result(SIG + "Subscribe", {"sessionId": rejoined["sessionId"]})
        self.assertGreater(self.stack.bridge_sockets(other), before_other)
        await b.result(SIG + "Signal", {"sessionId": b.sid, "toParticipantId": a.pid,
                                        "payload": OFFER})
        await a2.wait_event(signal_from(b.pid, "SDP_TYPE_OFFER"),
                            what="Bob's offer at Alice after her reconnect")
        print("Alice back through the other bridge %.1fs after the kill"
              % (time.monotonic() - t0), file=sys.stderr)
        await a2.close()
        await b.close()
        # up.sh start brings back what is missing.
        rc, out = await asyncio.get_running_loop().run_in_executor(None, self.stack.run, "start")
        self.assertEqual(rc, 0, out)
        self.assertIn("starting %s " % name, out)
        rc, out = await asyncio.get_running_loop().run_in_executor(None, self.stack.run, "status")
        self.assertEqual(rc, 0, out)

    def test_7_redis_primary_killed(self):
        asyncio.run(self._redis_failover())

    async def _redis_failover(self):
        self.assertEqual(self.stack.sentinel_master(), ["127.0.0.1", "6379"])
        # Warm: a working call before.
        room = self.room()
        a = await self.peer(room, "Alice")
        await a.close()
        pid = self.stack.pid("redis-6379")
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        print("killed the Redis primary (pid %d)" % pid, file=sys.stderr)

        async def works():
            r = self.room()
            c = d = None
            try:
                c = await self.peer(r, "Carol")
                d = await self.peer(r, "Dave")
                await d.result(SIG + "Subscribe", {"sessionId": d.sid}, timeout=10)
                await c.result(SIG + "Signal", {"sessionId": c.sid, "toParticipantId": d.pid,
                                                "payload": OFFER}, timeout=10)
                await d.wait_event(signal_from(c.pid, "SDP_TYPE_OFFER"), 10, "the offer")
                return True
            finally:
                for x in (c, d):
                    if x is not None:
                        await x.close()
        await await_for(works, FAILOVER_DEADLINE, "Join + Signal after the primary's death",
                        step=0.2)
        took = time.monotonic() - t0
        print("Join + Signal work again %.1fs after kill -9 of the Redis primary" % took,
              file=sys.stderr)
        self.assertEqual(self.stack.sentinel_master(), ["127.0.0.1", "6380"])
        self.assertIn("role:master", self.stack.redis(6380, "INFO", "replication"))


class Lock(unittest.TestCase):
    """One start/stop/run per state dir at a time, but status never takes
    the lock: a status poll racing `up.sh run`'s start once made the start
    fail ("another up.sh is running"). The lock is held here the way a
    running start holds it; nothing is started."""

    def test_status_does_not_lock_start_does(self):
        import fcntl
        tmp = tempfile.mkdtemp(prefix="rtc-topology-lock-")
        self.addCleanup(shutil.rmtree, tmp, True)
        stack = Stack(os.path.join(tmp, "state"))
        os.makedirs(stack.state)
        # No binaries: should the lock ever stop working, start / run fail
        # fast here instead of bringing a whole stack up.
        stack.env["RTC_BIN_DIR"] = os.path.join(tmp, "no-binaries")
        os.makedirs(stack.env["RTC_BIN_DIR"])
        with open(os.path.join(stack.state, "up.lock"), "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            rc, out = stack.run("status", timeout=60)
            self.assertEqual(rc, 3, out)  # every component stopped
            self.assertNotIn("another up.sh", out)
            self.assertIn("stopped", out)
            for cmd in ("start", "stop", "restart", "run"):
                rc, out = stack.run(cmd, timeout=60)
                self.assertNotEqual(rc, 0, "%s while the lock is held:\n%s" % (cmd, out))
                self.assertIn("another up.sh start/stop/run is running", out, cmd)


class ForegroundRun(unittest.TestCase):
    """`up.sh run` in the foreground, stopped the way a terminal's Ctrl-C does
    it: SIGINT to its whole process group. (Runs before Topology: unittest
    takes classes by name; each stops its stack before the next starts.)"""

    def test_ctrl_c_stops_everything(self):
        tmp = tempfile.mkdtemp(prefix="rtc-topology-run-")
        self.addCleanup(shutil.rmtree, tmp, True)
        stack = Stack(os.path.join(tmp, "state"))
        self.addCleanup(lambda: stack.run("stop", timeout=300))
        log = open(os.path.join(tmp, "run.log"), "w+")
        self.addCleanup(log.close)
        p = subprocess.Popen([stack.up, "run"], env=stack.env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)

        t0 = time.monotonic()
        while stack.run("status", timeout=120)[0] != 0:
            if p.poll() is not None:
                log.seek(0)
                self.fail("up.sh run exited %s before it was healthy:\n%s" % (p.returncode, log.read()))
            self.assertLess(time.monotonic() - t0, START_TIMEOUT, "up.sh run: not healthy in time")
            time.sleep(1.0)  # polling interval of the status check
        pids = {}
        for f in os.listdir(stack.state):
            if f.endswith(".pid"):
                pids[f[:-4]] = stack.pid(f[:-4])
        self.assertGreaterEqual(len(pids), 12, "pid files: %s" % sorted(pids))
        os.killpg(p.pid, signal.SIGINT)     # what Ctrl-C in a terminal sends
        rc = p.wait(timeout=300)
        log.seek(0)
        out = log.read()
        self.assertEqual(rc, 0, "up.sh run after Ctrl-C:\n" + out)

        def gone(pid):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            with open("/proc/%d/stat" % pid) as f:      # a zombie not reaped yet
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        wait_for(lambda: all(gone(pid) for pid in pids.values()), 60,
                 what="every component to exit after Ctrl-C")
        for port in (8443, 6379, 50051, 8080):
            with socket.socket() as sock:
                self.assertNotEqual(sock.connect_ex(("127.0.0.1", port)), 0,
                                    "port %d still open after Ctrl-C" % port)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


RESERVED_PORTS = "3000,3478,6379-6380,8000,8080-8081,8090,8443,9051-9052,9080-9081,9090," \
    "26379-26381,49160-49200,50051-50052"


def enter_netns():
    """Re-executes this file in a fresh network namespace (once)."""
    if os.environ.get(NS_MARK) == "1":
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "rtc-ext0", "type", "veth", "peer", "name", "rtc-ext1"],
                    ["ip", "addr", "add", EXT_IP + "/24", "dev", "rtc-ext0"],
                    ["ip", "link", "set", "rtc-ext0", "up"],
                    ["ip", "link", "set", "rtc-ext1", "up"]):
            subprocess.run(cmd, check=True)
        # The topology's fixed ports lie in the ephemeral range: keep
        # outgoing connections (pods to Redis, …) from taking one as their
        # source port before its server binds it (this namespace only).
        try:
            with open("/proc/sys/net/ipv4/ip_local_reserved_ports", "w") as f:
                f.write(RESERVED_PORTS)
        except OSError as e:
            print("deploy.topology: cannot reserve the fixed ports (%s); a start may "
                  "collide with an ephemeral port" % e, file=sys.stderr)
        return
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        sys.exit("deploy.topology needs unshare (util-linux) and ip (iproute2)")
    env = dict(os.environ, **{NS_MARK: "1"})
    args = ["unshare", "-n", "--", sys.executable, os.path.abspath(__file__)] + sys.argv[1:]
    if os.geteuid() != 0:
        args[1:2] = ["-r", "-n"]
    os.execvpe(args[0], args, env)


def main():
    global BIN_DIR, SOURCE_DIR
    if len(sys.argv) < 3:
        sys.exit(__doc__.split("\n\n")[1])
    BIN_DIR = os.path.abspath(sys.argv[1])
    SOURCE_DIR = os.path.abspath(sys.argv[2])
    enter_netns()
    unittest.main(argv=[sys.argv[0]] + sys.argv[3:])


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Interop: rtcctl (clients/cli) against the real rtc-auth, two rtc-signaling
pods and a real redis-server. What rtcctl does is checked with Debian's
python3-grpcio on the same services (a room rtcctl creates is seen by
GetRoom, a participant joined with grpcio is listed and removed by rtcctl
and its stream gets `kicked`, ...), and its --json output against
python3-protobuf's json_format.

Usage:
    /usr/bin/python3 test_rtcctl.py <bin dir> <repo root> [-v] [TestClass[.test_method] ...]

Environment: RTC_PROTOC (protoc; default protoc on PATH). Needs on PATH:
redis-server (Debian redis-server). A missing tool fails the test with the
package to install; nothing is skipped.

Every process runs on 127.0.0.1 with a free port, is started per test class
and stopped in the class cleanup even when a test or the setup fails.
Nothing sleeps for a fixed time: waits poll a condition with a generous
deadline. Every rtcctl run is checked for the API key's secret (and any
token given to it) in its output.
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import grpc  # noqa: E402
    from google.protobuf import json_format  # noqa: E402
except ImportError as e:
    sys.exit("test_rtcctl.py: %s. Run it with /usr/bin/python3 and install Debian's "
             "python3-grpcio python3-protobuf." % e)

import auth_helpers as H  # noqa: E402
import signaling_helpers as S  # noqa: E402
from auth_helpers import WAIT_TIMEOUT, basic, wait_for  # noqa: E402
from signaling_helpers import Peer, call_code  # noqa: E402

BIN_DIR = os.environ.get("RTC_BIN_DIR", "")
REPO = os.environ.get("RTC_REPO_ROOT") or os.path.dirname(os.path.dirname(HERE))
SC = grpc.StatusCode

# One API key with admin rights, known to rtc-auth and to both pods.
KEY_ID, SECRET = "ops", "rtcctl-test-secret-0123456789abcdef"
API_KEYS = "%s %s admin" % (KEY_ID, SECRET)
ADMIN_MD = basic(KEY_ID, SECRET)
# The same secret as it travels (authorization: Basic base64(id:secret)).
SECRET_B64 = base64.b64encode(("%s:%s" % (KEY_ID, SECRET)).encode()).decode()

# rtcctl's exit statuses (clients/cli/README.md).
OK, FAILURE, USAGE, UNREACHABLE, NOT_FOUND, CONFLICT, DENIED, NOT_SERVING, INVALID = range(9)

COMMANDS = [["token", "issue"], ["token", "verify"], ["token", "revoke"], ["room", "create"],
            ["room", "get"], ["room", "list"], ["room", "close"], ["participant", "list"],
            ["participant", "remove"], ["send"], ["watch"], ["health"]]

_PB = {}


def protos():
    """(signaling_pb2, auth_pb2, health_pb2), generated once per run into
    _PB["dir"] (run_main removes it)."""
    if "dir" not in _PB:
        _PB["dir"] = tempfile.mkdtemp(prefix="rtc-ctl-pb-")
        _PB["modules"] = S.load_protos(REPO, _PB["dir"])
    return _PB["modules"]


def exe(name):
    if not BIN_DIR:
        raise AssertionError("no bin dir: run through ctest, or as test_rtcctl.py <bin dir> "
                             "<repo root>")
    return os.path.join(BIN_DIR, name)


def closed_addr():
    """127.0.0.1:<port> where nothing listens (a port just found free)."""
    return "127.0.0.1:%d" % H.free_port()


class Result:
    def __init__(self, args, code, out, err):
        self.args, self.code, self.out, self.err = args, code, out, err

    def __str__(self):
        return "rtcctl %s → exit %d\n--- stdout:\n%s--- stderr:\n%s" % (
            " ".join(self.args), self.code, self.out, self.err)

    def kv(self):
        """The `key:  value` lines of a human key/value block."""
        return dict(re.match(r"(\S+):\s*(.*)$", line).groups()
                    for line in self.out.splitlines() if line.strip())


class Watch:
    """`rtcctl watch` in the background: stdout lines collected on a thread,
    stderr in a file; killed at the test's cleanup if still running."""

    def __init__(self, case, args, secrets=()):
        self.case = case
        self.args = args
        self.secrets = secrets
        self.err_path = os.path.join(case.tmp, "watch-%d.err" % len(os.listdir(case.tmp)))
        argv = case.argv(args)
        if H.SETPRIV:
            argv = [H.SETPRIV, "--pdeathsig", "KILL", "--"] + argv
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, env=S.clean_env())
        self.cond = threading.Condition()
        self.lines = []
        self.eof = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        case.addCleanup(self.kill)

    def _read(self):
        for raw in self.proc.stdout:
            with self.cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe(self):
        with self.cond:
            lines = list(self.lines)
        return "rtcctl %s: exit %s; stdout %r; stderr %r" % (
            " ".join(self.args), self.proc.poll(), lines[-20:], self.stderr()[-2000:])

    def wait_line(self, match, what, timeout=WAIT_TIMEOUT):
        """The first stdout line for which match(line) is true."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if match(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    break
                self.cond.wait(min(left, 0.5))
        raise AssertionError("waiting for %s: %s" % (what, self.describe()))

    def wait_exit(self, timeout=WAIT_TIMEOUT):
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("rtcctl watch did not exit within %.0fs: %s" % (
                timeout, self.describe()))
        self.thread.join(timeout)
        self.case.check_secrets("\n".join(self.lines) + self.stderr(), self.secrets, self.args)
        return code

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        return self.wait_exit()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.thread.join(30)


class CtlCase(S.DumpLogsOnFailure, unittest.TestCase):
    """Base: a temp dir, redis-server, rtc-auth (--dev) and two rtc-signaling
    pods sharing that Redis, all taking the API key KEY_ID:SECRET."""

    NUM_PODS = 2

    @classmethod
    def setUpClass(cls):
        cls.procs = []
        cls.rooms = 0
        cls.tmp = tempfile.mkdtemp(prefix="rtc-ctl-test-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        try:
            cls.pb, cls.apb, cls.hpb = protos()
            S.start_redis_and_auth(cls, exe("rtc-auth"), ["--api-keys", API_KEYS])
            cls.authc = H.AuthClient(cls.auth.addr, cls.apb, cls.hpb)
            cls.addClassCleanup(cls.authc.close)
            cls.pods, cls.clients = [], []
            for i in range(cls.NUM_PODS):
                name = "pod%d" % (i + 1)
                pod = S.Pod(exe("rtc-signaling"), [
                    "--redis", cls.redis.url, "--auth", cls.auth.addr, "--api-keys", API_KEYS,
                    "--rate-limit", "0"], cls.tmp, name)
                cls.procs.append(("rtc-signaling " + name, pod))
                cls.addClassCleanup(pod.stop)
                pod.start()
                client = S.SigClient(pod.addr, cls.pb, cls.hpb, name=name)
                cls.addClassCleanup(client.close)
                cls.pods.append(pod)
                cls.clients.append(client)
        except BaseException:
            cls.dump_logs("setUpClass of %s" % cls.__name__)
            raise

    # ---- running rtcctl ----

    def argv(self, args, creds=True, endpoints=True):
        """rtcctl with the stack's endpoints and API key before args."""
        argv = [exe("rtcctl")]
        if endpoints:
            argv += ["--auth", self.auth.addr,
                     "--signaling", ",".join(p.addr for p in self.pods)]
        if creds:
            argv += ["--api-key", "%s:%s" % (KEY_ID, SECRET)]
        return argv + list(args)

    def check_secrets(self, text, secrets, args):
        for s in (SECRET, SECRET_B64) + tuple(secrets):
            self.assertNotIn(s, text, "rtcctl %s printed a secret" % " ".join(args))

    def ctl(self, *args, creds=True, endpoints=True, env=None, stdin=None, secrets=()):
        """Run rtcctl to the end; a Result. No secret may appear in its output."""
        e = S.clean_env()
        e.update(env or {})
        r = subprocess.run(self.argv(args, creds, endpoints), input=stdin, capture_output=True,
                           timeout=120, env=e)
        res = Result(list(args), r.returncode, r.stdout.decode("utf-8", "replace"),
                     r.stderr.decode("utf-8", "replace"))
        self.check_secrets(res.out + res.err, secrets, args)
        return res

    def expect(self, code, *args, status=None, **kw):
        """Run rtcctl; it must exit with code. A failure other than health's
        verdict must say so in exactly one line on stderr:
        `rtcctl: <what>: <STATUS_NAME>: <message>` when status is given."""
        r = self.ctl(*args, **kw)
        self.assertEqual(r.code, code, str(r))
        if code not in (OK, NOT_SERVING) and "health" not in args:
            # watch's status line about the session it joined is no error.
            lines = [ln for ln in r.err.splitlines()
                     if not ln.startswith("rtcctl: watch: joined room ")]
            self.assertEqual(len(lines), 1, "want one line on stderr: %s" % r)
            self.assertTrue(lines[0].startswith("rtcctl: "), str(r))
            if status:
                names = (status,) if isinstance(status, str) else status
                self.assertRegex(lines[0], r"^rtcctl: .+: (%s)(: .+)?$" % "|".join(names),
                                 str(r))
        return r

    # ---- the services, through grpcio ----

    def room(self, tag=""):
        """A fresh room id named after the test."""
        type(self).rooms += 1
        return "%s-%d" % ((tag or self._testMethodName[5:30]).replace("_", "-"), self.rooms)

    def issue(self, identity, room, grants=("join",), ttl_ms=0, name=""):
        """An IssueTokenResponse from rtc-auth through grpcio (Peer uses it)."""
        return self.authc.call("IssueToken", self.apb.IssueTokenRequest(
            identity=identity, room_id=room, ttl_ms=ttl_ms, display_name=name,
            grants=[self.apb.Grant.Value("GRANT_" + g.upper()) for g in grants]),
            metadata=ADMIN_MD)

    def admin(self, method, req, client=None):
        # wait_for_ready: SigClient's short reconnect backoff is also its
        # connect timeout, which a loaded machine can miss.
        return (client or self.clients[0]).call(method, req, ADMIN_MD, wait_for_ready=True)

    def create_room(self, room):
        return self.admin("CreateRoom", self.pb.CreateRoomRequest(room_id=room)).room

    def participants(self, room, client=None):
        return self.admin("ListParticipants", self.pb.ListParticipantsRequest(room_id=room),
                          client)

    def wait_participant(self, room, identity, present=True, client=None):
        """The participant id of identity once it is in room (or True once
        it is gone, with present=False)."""
        def check():
            ids = [p.id for p in self.participants(room, client).participants
                   if p.identity == identity]
            if present:
                return ids[0] if ids else None
            return not ids
        return wait_for(check, what="%s %s room %s" % (
            identity, "in" if present else "out of", room))


class CtlTest(CtlCase):

    # ---- help and usage ----

    def test_help_for_every_command(self):
        for words in [[], ["token"], ["room"], ["participant"]] + COMMANDS:
            for flag in ("--help", "-h"):
                r = self.ctl(*(words + [flag]), creds=False, endpoints=False)
                self.assertEqual(r.code, OK, str(r))
                self.assertIn("Usage: rtcctl", r.out, str(r))
                self.assertIn("Exit codes:", r.out, str(r))
                self.assertEqual(r.err, "", str(r))
        r = self.ctl("help", "room", "create", creds=False, endpoints=False)
        self.assertIn("Usage: rtcctl room create ROOM", r.out)
        self.assertIn("RTC_MAX_PARTICIPANTS", r.out)
        top = self.ctl("--help", creds=False, endpoints=False).out
        for code in range(9):
            self.assertRegex(top, r"\n  %d  " % code)
        for words in COMMANDS:
            self.assertIn("rtcctl " + " ".join(words), top)

    def test_usage_errors_exit_2_with_one_line(self):
        room = self.room()
        cases = [
            ["room", "list", "--bogus"],
            ["room", "list", "--page-size", "-3"],
            ["room", "list", "--timeout", "soon"],
            ["room", "create"],
            ["room", "create", room, "extra"],
            ["room"],
            ["room", "explode", room],
            ["frobnicate"],
            [],
            ["send", room],
            ["send", room, "--data", "x", "--data-file", "-"],
            ["send", room, "--data-file", os.path.join(self.tmp, "missing")],
            ["token", "issue", "--room", room],
            ["token", "issue", "--identity", "a", "--grant", "join,fly"],
            ["watch", room],
            ["room", "get", room, "--signaling", "127.0.0.1:1,nonsense"],
            ["room", "get", room, "--auth", "no-port"],
        ]
        for args in cases:
            r = self.expect(USAGE, *args)
            self.assertEqual(r.out, "", str(r))
        r = self.expect(USAGE, "room", "list", "--bogus")
        self.assertIn("unknown flag '--bogus'", r.err)
        self.assertIn("see rtcctl room list --help", r.err)
        # No API key for watch's join token: a usage error, not a call.
        self.expect(USAGE, "watch", room, "--identity", "w", creds=False)

    # ---- tokens ----

    def test_token_issue_verify_revoke(self):
        room = self.room()
        r = self.expect(OK, "token", "issue", "--identity", "alice", "--room", room,
                        "--grant", "join,create", "--ttl", "15m", "--name", "Alice A")
        kv = r.kv()
        claims = self.authc.call("VerifyToken", self.apb.VerifyTokenRequest(
            access_token=kv["access_token"]), metadata=ADMIN_MD).claims
        self.assertEqual((claims.identity, claims.room_id, claims.display_name),
                         ("alice", room, "Alice A"))
        self.assertEqual(list(claims.grants), [self.apb.GRANT_JOIN, self.apb.GRANT_CREATE])
        self.assertEqual(claims.token_id, kv["token_id"])
        ttl = claims.expires_at_ms - claims.issued_at_ms
        self.assertAlmostEqual(ttl, 15 * 60 * 1000, delta=1000)

        # --json: the IssueTokenResponse as canonical proto3 JSON.
        r = self.expect(OK, "--json", "token", "issue", "--identity", "bob", "--room", room)
        issued = json.loads(r.out)
        self.assertEqual(sorted(issued), ["accessToken", "expiresAtMs", "tokenId"])
        tok = issued["accessToken"]
        resp = self.authc.call("VerifyToken", self.apb.VerifyTokenRequest(access_token=tok),
                               metadata=ADMIN_MD)
        self.assertEqual(resp.claims.token_id, issued["tokenId"])
        self.assertEqual(str(resp.claims.expires_at_ms), issued["expiresAtMs"])

        # verify: the claims; --json equals json_format of grpcio's answer.
        r = self.expect(OK, "token", "verify", tok, secrets=[tok])
        kv = r.kv()
        self.assertEqual((kv["valid"], kv["identity"], kv["room"], kv["grants"]),
                         ("yes", "bob", room, "join"))
        r = self.expect(OK, "--json", "token", "verify", tok, secrets=[tok])
        self.assertEqual(json.loads(r.out), json_format.MessageToDict(resp))

        # revoke by id → VerifyToken says REVOKED, and `token verify` exits 6.
        self.expect(OK, "token", "revoke", issued["tokenId"], "--expires-at-ms",
                    issued["expiresAtMs"])
        resp = self.authc.call("VerifyToken", self.apb.VerifyTokenRequest(access_token=tok),
                               metadata=ADMIN_MD)
        self.assertEqual(resp.error, self.apb.TOKEN_ERROR_REVOKED)
        r = self.expect(DENIED, "token", "verify", tok, secrets=[tok])
        self.assertIn("TOKEN_ERROR_REVOKED", r.err)
        self.assertEqual(r.kv()["error"], "TOKEN_ERROR_REVOKED")
        r = self.expect(DENIED, "--json", "token", "verify", "not-a-token")
        self.assertEqual(json.loads(r.out)["error"], "TOKEN_ERROR_MALFORMED")
        # Identity with a control character: the service says INVALID_ARGUMENT.
        self.expect(INVALID, "token", "issue", "--identity", "a\x01b", "--room", room,
                    status="INVALID_ARGUMENT")

    def test_admin_token_instead_of_api_key(self):
        tok = self.issue("operator", "", ("admin",)).access_token
        room = self.room()
        self.expect(OK, "--token", tok, "room", "create", room, creds=False, secrets=[tok])
        self.admin("GetRoom", self.pb.GetRoomRequest(room_id=room))
        r = self.expect(OK, "--token", tok, "--json", "room", "list", "--all", creds=False,
                        secrets=[tok])
        self.assertIn(room, [x["id"] for x in json.loads(r.out)["rooms"]])
        # A join-only token is no admin: PERMISSION_DENIED → 6.
        weak = self.issue("user", room).access_token
        self.expect(DENIED, "--token", weak, "room", "list", creds=False, secrets=[weak],
                    status="PERMISSION_DENIED")
        self.expect(DENIED, "--token", "garbage.token.here", "room", "list", creds=False,
                    status="UNAUTHENTICATED")

    # ---- rooms ----

    def test_room_create_get_close(self):
        room = self.room()
        r = self.expect(OK, "room", "create", room, "--max-participants", "5",
                        "--empty-timeout", "2m", "--metadata", '{"topic":"ops"}')
        got = self.admin("GetRoom", self.pb.GetRoomRequest(room_id=room)).room
        self.assertEqual((got.settings.max_participants, got.settings.empty_timeout_ms,
                          got.settings.metadata), (5, 120000, '{"topic":"ops"}'))
        kv = r.kv()
        self.assertEqual((kv["room"], kv["participants"], kv["max_participants"],
                          kv["empty_timeout"], kv["metadata"]),
                         (room, "0", "5", "2m", '{"topic":"ops"}'))

        r = self.expect(OK, "room", "get", room)
        self.assertEqual(r.kv()["room"], room)
        r = self.expect(OK, "room", "get", room, "--json")
        want = json_format.MessageToDict(self.admin("GetRoom", self.pb.GetRoomRequest(
            room_id=room)))
        self.assertEqual(json.loads(r.out), want)

        self.expect(CONFLICT, "room", "create", room, status="ALREADY_EXISTS")
        self.expect(NOT_FOUND, "room", "get", room + "-nope", status="NOT_FOUND")
        self.expect(INVALID, "room", "create", "bad room!", status="INVALID_ARGUMENT")
        self.expect(INVALID, "room", "create", self.room(), "--max-participants", "100000",
                    status="INVALID_ARGUMENT")

        r = self.expect(OK, "room", "close", room, "--reason", "done")
        self.assertIn("closed room " + room, r.out)
        code, _ = call_code(self.admin, "GetRoom", self.pb.GetRoomRequest(room_id=room))
        self.assertEqual(code, SC.NOT_FOUND)
        self.expect(NOT_FOUND, "room", "close", room, status="NOT_FOUND")

    def test_room_list_pages(self):
        mine = [self.room("list") for _ in range(5)]
        for room in mine:
            self.expect(OK, "room", "create", room)
        every = []
        token = ""
        while True:
            page = self.admin("ListRooms", self.pb.ListRoomsRequest(page_size=2,
                                                                    page_token=token))
            every += [x.id for x in page.rooms]
            token = page.next_page_token
            if not token:
                break
        # Text: a table with a header; --all follows next_page_token.
        r = self.expect(OK, "room", "list", "--page-size", "2", "--all")
        lines = r.out.splitlines()
        self.assertEqual(lines[0].split(), ["ID", "PARTICIPANTS", "MAX", "CREATED"])
        self.assertEqual([line.split()[0] for line in lines[1:]], every)
        for line in lines[1:]:
            if line.split()[0] in mine:
                self.assertEqual(line.split()[1:3], ["0", "100"], line)
        # One page: the rest is announced on stderr.
        r = self.expect(OK, "room", "list", "--page-size", "2")
        self.assertEqual(len(r.out.splitlines()), 3, str(r))
        self.assertIn("--page-token", r.err)
        # --json, one page: the ListRoomsResponse itself.
        r = self.expect(OK, "--json", "room", "list", "--page-size", "2")
        first = self.admin("ListRooms", self.pb.ListRoomsRequest(page_size=2))
        self.assertEqual(json.loads(r.out), json_format.MessageToDict(first))
        r = self.expect(OK, "--json", "room", "list", "--page-size", "2", "--page-token",
                        first.next_page_token)
        self.assertEqual(json.loads(r.out)["rooms"][0]["id"], every[2])
        # --json --all: every page's rooms in one object.
        r = self.expect(OK, "--json", "room", "list", "--page-size", "2", "--all")
        rooms = json.loads(r.out)["rooms"]
        self.assertEqual([x["id"] for x in rooms], every)
        self.assertTrue(set(mine) <= set(every))

    # ---- participants and data ----

    def test_participant_list_and_remove(self):
        room = self.room()
        self.create_room(room)
        alice = Peer(self, "alice", room, name="Alice")
        alice.join(self.clients[1], wait_for_ready=True)
        sub = alice.subscribe(self.clients[1])
        r = self.expect(OK, "participant", "list", room)
        rows = [line.split() for line in r.out.splitlines()]
        self.assertEqual(rows[0], ["ID", "IDENTITY", "NAME", "JOINED"])
        self.assertEqual(rows[1][:3], [alice.pid, "alice", "Alice"])
        r = self.expect(OK, "--json", "participant", "list", room)
        self.assertEqual(json.loads(r.out), json_format.MessageToDict(self.participants(room)))

        # Ids are base64url: one may start with '-' (a positional all the
        # same) or even "--" (then only after "--" is it no flag).
        ids = ["--", room, alice.pid] if alice.pid.startswith("--") else [room, alice.pid]
        r = self.expect(OK, "participant", "remove", "--reason", "bye now", *ids)
        self.assertIn("removed participant %s" % alice.pid, r.out)
        ev = sub.wait_event(lambda e: e.WhichOneof("kind") == "kicked", what="kicked")
        self.assertEqual(ev.kicked.reason, "bye now")
        self.assertEqual(sub.wait_end(), SC.OK)
        self.expect(NOT_FOUND, "participant", "remove", *ids, status="NOT_FOUND")
        self.expect(OK, "participant", "list", "--", room)
        self.expect(NOT_FOUND, "participant", "remove", room, "-not-there", status="NOT_FOUND")
        self.expect(NOT_FOUND, "participant", "list", room + "-nope", status="NOT_FOUND")

    def test_send_data(self):
        room = self.room()
        self.create_room(room)
        alice, bob = Peer(self, "alice", room), Peer(self, "bob", room)
        alice.join(self.clients[0], wait_for_ready=True)
        bob.join(self.clients[1], wait_for_ready=True)
        sa, sb = alice.subscribe(self.clients[0]), bob.subscribe(self.clients[1])

        def data(sub, payload):
            ev = sub.wait_event(lambda e: e.WhichOneof("kind") == "data" and
                                e.data.data == payload, what="data %r" % payload)
            self.assertEqual(ev.data.from_participant_id, "")

        r = self.expect(OK, "send", room, "--data", "hello all")
        self.assertEqual(r.out.strip(), "sent to 2 participants")
        data(sa, b"hello all")
        data(sb, b"hello all")
        r = self.expect(OK, "send", room, "--to=" + bob.pid, "--data", "just bob")
        self.assertEqual(r.out.strip(), "sent to 1 participant")
        data(sb, b"just bob")
        path = os.path.join(self.tmp, "payload.json")
        with open(path, "wb") as f:
            f.write(b'{"mute":true}')
        self.expect(OK, "send", room, "--data-file", path, "--to=" + alice.pid)
        data(sa, b'{"mute":true}')
        blob = bytes(range(256))
        r = self.expect(OK, "--json", "send", room, "--data-file", "-", stdin=blob)
        self.assertEqual(json.loads(r.out), {"recipientCount": 2})
        data(sa, blob)
        data(sb, blob)
        self.assertNotIn(b"just bob", [e.data.data for e in sa.evs()
                                       if e.WhichOneof("kind") == "data"])
        self.expect(NOT_FOUND, "send", room, "--to", "nobody", "--data", "x",
                    status="NOT_FOUND")
        self.expect(INVALID, "send", room, "--data", "x" * 20000, status="INVALID_ARGUMENT")

    # ---- watch ----

    def test_watch_prints_events_and_leaves_on_sigterm(self):
        room = self.room()
        self.create_room(room)
        w = Watch(self, ["watch", room, "--identity", "watcher", "--name", "Watch Er"])
        wpid = self.wait_participant(room, "watcher")
        joined = "rtcctl: watch: joined room %s as participant %s; 0 others" % (room, wpid)
        wait_for(lambda: joined in w.stderr(), what="%r on watch's stderr" % joined)
        alice = Peer(self, "alice", room, name="Alice")
        alice.join(self.clients[1], wait_for_ready=True)
        sub = alice.subscribe(self.clients[1])
        w.wait_line(lambda ln: re.search(r" participant_joined %s identity=\"alice\" "
                                         r"name=\"Alice\"$" % re.escape(alice.pid), ln),
                    "alice's participant_joined")
        alice.broadcast(self.clients[0], b"hi there", wait_for_ready=True)
        w.wait_line(lambda ln: ln.endswith('data from=%s "hi there"' % alice.pid),
                    "alice's data")
        self.assertEqual(w.stop(signal.SIGTERM), OK, w.describe())
        # Leave: the others see participant_left LEFT, the room lists it no more.
        ev = sub.wait_event(S.is_left(wpid), what="the watcher's participant_left")
        self.assertEqual(ev.participant_left.reason, self.pb.LEAVE_REASON_LEFT)
        self.wait_participant(room, "watcher", present=False)
        # Every line: <time> <event id> <kind> ...
        for line in w.lines:
            self.assertRegex(line, r"^\d{4}-\d\d-\d\dT[\d:.]+Z \d+-\d+ [a-z_]+ ")

    def test_watch_json_ends_when_kicked(self):
        room = self.room()
        self.create_room(room)
        w = Watch(self, ["--json", "watch", room, "--identity", "jw"])
        wpid = self.wait_participant(room, "jw")
        bob = Peer(self, "bob", room)
        bob.join(self.clients[0], wait_for_ready=True)
        bob.broadcast(self.clients[0], b"\x00\xffbin", wait_for_ready=True)
        line = w.wait_line(lambda ln: '"data"' in ln, "bob's data")
        ev = json.loads(line)
        self.assertEqual(ev["data"]["fromParticipantId"], bob.pid)
        self.assertEqual(base64.b64decode(ev["data"]["data"]), b"\x00\xffbin")
        self.admin("RemoveParticipant", self.pb.RemoveParticipantRequest(
            room_id=room, participant_id=wpid, reason="enough"))
        self.assertEqual(w.wait_exit(), OK, w.describe())
        events = [json.loads(ln) for ln in w.lines]  # every line is one JSON object
        self.assertEqual(events[0]["participantJoined"]["participant"]["id"], bob.pid)
        self.assertEqual(events[-1]["kicked"], {"reason": "enough"})
        # Parsed back with python3-protobuf: canonical proto3 JSON of Event.
        for e in events:
            msg = json_format.ParseDict(e, self.pb.Event())
            self.assertEqual(json_format.MessageToDict(msg), e)

    def test_watch_with_token_until_room_closed(self):
        room = self.room()
        self.create_room(room)
        tok = self.issue("tw", room, ("join",)).access_token
        w = Watch(self, ["watch", "--token", tok], secrets=[tok])
        self.wait_participant(room, "tw")
        self.admin("CloseRoom", self.pb.CloseRoomRequest(room_id=room, reason="maintenance"))
        self.assertEqual(w.wait_exit(), OK, w.describe())
        self.assertTrue(w.lines[-1].endswith('room_closed reason="maintenance"'), w.describe())

    def test_watch_sigint_with_token(self):
        room = self.room()
        self.create_room(room)
        tok = self.issue("ti", room, ("join",)).access_token
        w = Watch(self, ["watch", "--token", tok, "--metadata", '{"role":"ops"}'],
                  secrets=[tok])
        self.wait_participant(room, "ti")
        self.assertEqual([p.metadata for p in self.participants(room).participants],
                         ['{"role":"ops"}'])
        self.assertEqual(w.stop(signal.SIGINT), OK, w.describe())
        self.wait_participant(room, "ti", present=False)

    def test_watch_errors(self):
        room = self.room()
        # The room does not exist: Join says NOT_FOUND.
        self.expect(NOT_FOUND, "watch", room, "--identity", "w", status="NOT_FOUND")
        self.create_room(room)
        # A malformed --after: Subscribe says INVALID_ARGUMENT; rtcctl leaves.
        self.expect(INVALID, "watch", room, "--identity", "wa", "--after", "bogus",
                    status="INVALID_ARGUMENT")
        self.wait_participant(room, "wa", present=False)
        # A full room: Join says RESOURCE_EXHAUSTED, an "other failure" → 1.
        full = self.room("full")
        self.expect(OK, "room", "create", full, "--max-participants", "1")
        Peer(self, "first", full).join(self.clients[0], wait_for_ready=True)
        self.expect(FAILURE, "watch", full, "--identity", "second",
                    status="RESOURCE_EXHAUSTED")
        # A wrong API key: IssueToken says UNAUTHENTICATED.
        self.expect(DENIED, "--api-key", "%s:%s" % (KEY_ID, "x" * 30), "watch", room,
                    "--identity", "w", creds=False, status="UNAUTHENTICATED")

    # ---- health ----

    def test_health(self):
        r = self.expect(OK, "health")
        rows = [line.split() for line in r.out.splitlines()]
        self.assertEqual(rows[0], ["ENDPOINT", "SERVICE", "STATUS", "DETAIL"])
        want = [(self.auth.addr, '""'), (self.auth.addr, "rtc.auth.v1.Auth")]
        for p in self.pods:
            want += [(p.addr, '""'), (p.addr, "rtc.signaling.v1.Signaling"),
                     (p.addr, "rtc.signaling.v1.SignalingAdmin")]
        self.assertEqual([tuple(x[:2]) for x in rows[1:]], want)
        self.assertEqual({x[2] for x in rows[1:]}, {"SERVING"})
        r = self.expect(OK, "--json", "health")
        checks = [json.loads(line) for line in r.out.splitlines()]
        self.assertEqual([(c["endpoint"], c["service"], c["status"]) for c in checks],
                         [(a, "" if s == '""' else s, "SERVING") for a, s in want])
        # A closed port: unreachable wins over everything else → 3.
        closed = closed_addr()
        r = self.expect(UNREACHABLE, "--signaling", "%s,%s" % (self.pods[0].addr, closed),
                        "health", endpoints=False, env={"RTC_AUTH": self.auth.addr})
        bad = [line.split()[:3] for line in r.out.splitlines() if line.startswith(closed)]
        self.assertEqual(len(bad), 3, str(r))
        self.assertEqual({b[2] for b in bad}, {"UNAVAILABLE"})

    # ---- failures by cause ----

    def test_unreachable_exit_3(self):
        room = self.room()
        closed = closed_addr()
        r = self.expect(UNREACHABLE, "--signaling", closed, "room", "get", room,
                        endpoints=False, status="UNAVAILABLE")
        self.assertIn(closed, r.err)
        self.expect(UNREACHABLE, "--auth", closed, "token", "issue", "--identity", "a",
                    "--room", room, endpoints=False, status="UNAVAILABLE")
        # Failover: the closed endpoint first, a pod second.
        self.expect(OK, "--signaling", "%s,%s" % (closed, self.pods[1].addr), "room", "create",
                    room, endpoints=False)
        self.admin("GetRoom", self.pb.GetRoomRequest(room_id=room))
        # An endpoint that accepts TCP but never speaks HTTP/2: the deadline.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            t0 = time.monotonic()
            self.expect(UNREACHABLE, "--signaling", "127.0.0.1:%d" % s.getsockname()[1],
                        "--timeout", "500ms", "room", "get", room, endpoints=False,
                        status=("DEADLINE_EXCEEDED", "UNAVAILABLE"))
            self.assertLess(time.monotonic() - t0, 15)

    def test_wrong_api_key_exit_6(self):
        wrong = "wrong-secret-0123456789abcdef"
        for args in (["room", "list"], ["token", "issue", "--identity", "a", "--room", "r"],
                     ["health", "--log-level", "debug"]):
            r = self.ctl("--api-key", "%s:%s" % (KEY_ID, wrong), *args, creds=False,
                         secrets=[wrong])
            if args[0] == "health":  # health needs no credentials
                self.assertEqual(r.code, OK, str(r))
                continue
            self.assertEqual(r.code, DENIED, str(r))
            self.assertRegex(r.err, r"^rtcctl: .+: UNAUTHENTICATED: .+\n$")

    def test_secrets_stay_out_of_output(self):
        """No secret in debug logs, flag errors or failures (every run of
        rtcctl is checked; these are the paths most likely to leak)."""
        room = self.room()
        tok = self.issue("sec", room, ("join", "create")).access_token
        for args in (["--log-level", "debug", "room", "create", room],
                     ["--log-level", "debug", "room", "create", room],
                     ["--log-level", "debug", "--token", tok, "room", "list"],
                     ["--log-level", "debug", "--json", "token", "verify", tok]):
            self.ctl(*args, secrets=[tok])
        r = self.ctl("--api-key", SECRET, "room", "list", creds=False)  # no KEYID: part
        self.assertEqual(r.code, USAGE, str(r))
        r = self.ctl("--api-key", "bad id:%s" % SECRET, "room", "list", creds=False)
        self.assertEqual(r.code, USAGE, str(r))
        r = self.ctl("--log-level", "debug", "--token", tok, "room", "list", "--bogus=" + tok,
                     creds=False, secrets=[tok])
        self.assertEqual(r.code, USAGE, str(r))

    def test_api_key_file_and_environment(self):
        room = self.room()
        # The services' own file format: "<key_id> <secret> <rights>".
        path = os.path.join(self.tmp, "api-keys")
        with open(path, "w") as f:
            f.write("# rtcctl test\n%s\n" % API_KEYS)
        self.expect(OK, "--api-key-file", path, "room", "create", room, creds=False)
        with open(path, "w") as f:
            f.write("%s:%s\n" % (KEY_ID, SECRET))
        self.expect(OK, "--api-key-file", path, "room", "get", room, creds=False)
        with open(path, "w") as f:
            f.write("%s sha256:%s admin\n" % (KEY_ID, "ab" * 32))
        r = self.expect(USAGE, "--api-key-file", path, "room", "get", room, creds=False)
        self.assertIn("sha256", r.err)
        self.expect(USAGE, "--api-key-file", path + ".missing", "room", "get", room,
                    creds=False)
        # Everything from RTC_* variables; a flag wins over its variable.
        env = {"RTC_AUTH": self.auth.addr, "RTC_SIGNALING": self.pods[1].addr,
               "RTC_API_KEY": "%s:%s" % (KEY_ID, SECRET), "RTC_JSON": "true"}
        r = self.expect(OK, "room", "get", room, creds=False, endpoints=False, env=env)
        self.assertEqual(json.loads(r.out)["room"]["id"], room)
        env["RTC_SIGNALING"] = closed_addr()
        self.expect(UNREACHABLE, "room", "get", room, creds=False, endpoints=False, env=env,
                    status="UNAVAILABLE")
        self.expect(OK, "--signaling", self.pods[0].addr, "room", "get", room, creds=False,
                    endpoints=False, env=env)
        env["RTC_TIMEOUT"] = "forever"
        self.expect(USAGE, "room", "get", room, creds=False, endpoints=False, env=env)


class CtlOutageTest(CtlCase):
    """Pods and Redis taken away under rtcctl (its own stack)."""

    def test_failover_when_a_pod_dies(self):
        room = self.room()
        self.create_room(room)
        w = Watch(self, ["watch", room, "--identity", "fw"])
        self.wait_participant(room, "fw")
        bob = Peer(self, "bob", room)
        bob.join(self.clients[1], wait_for_ready=True)
        w.wait_line(lambda ln: "participant_joined " + bob.pid in ln, "bob's join")
        # rtcctl asks the first --signaling endpoint first: pod1 holds the
        # stream. Kill it; the stream resumes on pod2 after the last event.
        self.pods[0].kill()
        self.addCleanup(self.pods[0].start)
        bob.broadcast(self.clients[1], b"after the crash", wait_for_ready=True)
        w.wait_line(lambda ln: ln.endswith('"after the crash"'), "data after the failover",
                    timeout=60)
        self.assertIn("resuming on " + self.pods[1].addr, w.stderr())
        self.assertEqual(len([ln for ln in w.lines if " participant_joined " in ln]), 1,
                         w.describe())
        # Unary calls fail over too: pod1 refuses, pod2 answers.
        r = self.expect(OK, "--json", "room", "get", room)
        self.assertEqual(json.loads(r.out)["room"]["participantCount"], 2)
        self.assertEqual(w.stop(signal.SIGTERM), OK, w.describe())
        self.wait_participant(room, "fw", present=False, client=self.clients[1])

    def test_health_not_serving_without_redis(self):
        self.expect(OK, "health")
        self.redis.stop()  # started again below; the class cleanup stops it

        def not_serving():
            return all(c.health("rtc.signaling.v1.Signaling") ==
                       self.hpb.HealthCheckResponse.NOT_SERVING for c in self.clients)
        wait_for(not_serving, what="pods NOT_SERVING without Redis")
        r = self.expect(NOT_SERVING, "health")
        rows = [line.split() for line in r.out.splitlines()[1:]]
        self.assertIn([self.pods[0].addr, "rtc.signaling.v1.Signaling", "NOT_SERVING"],
                      [x[:3] for x in rows])
        r = self.expect(NOT_SERVING, "--json", "health")
        states = {(c["endpoint"], c["service"]): c.get("status")
                  for c in map(json.loads, r.out.splitlines())}
        self.assertEqual(states[(self.pods[1].addr, "rtc.signaling.v1.SignalingAdmin")],
                         "NOT_SERVING")
        # Back: everything SERVING again, exit 0.
        self.redis.start()
        wait_for(lambda: self.ctl("health").code == OK, timeout=60,
                 what="health back to exit 0 after Redis returned")


SUITES = {"rtcctl": [CtlTest, CtlOutageTest]}
SUITES["all"] = SUITES["rtcctl"]

if __name__ == "__main__":
    sys.exit(H.run_main(sys.argv, sys.modules[__name__], SUITES))

"""Fixtures for test_auth.py: real rtc-auth, redis-server and coturn processes on
127.0.0.1 with free ports, P-256 keys made with openssl, hand-made JWTs, a raw
RESP client for Redis and a raw STUN/TURN client for coturn.

Run under /usr/bin/python3 (Debian's python3-grpcio, python3-protobuf,
python3-jwt, python3-cryptography). Nothing here sleeps for a fixed time:
everything that waits polls a condition with a deadline.
"""

import base64
import hashlib
import hmac
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# Generous: two busy cores, maybe a sanitizer build.
START_TIMEOUT = 30.0
WAIT_TIMEOUT = 20.0
RPC_TIMEOUT = 20.0


def need_tool(name, package):
    """Path of a required program; a clear failure (not a skip) when missing:
    CI installs every one of them."""
    path = shutil.which(name)
    if not path:
        raise AssertionError("%s not found on PATH: install the Debian package %s "
                             "(apt-get install %s)" % (name, package, package))
    return path


class PortTaken(Exception):
    """A server could not bind its port (another process took it)."""


def wait_for(predicate, timeout=WAIT_TIMEOUT, interval=0.05, what="condition", fatal=()):
    """Poll predicate() until it returns a true value; return that value.
    Exceptions of the types in fatal end the wait at once; others are retried
    and the last one is reported on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = None
        except fatal:
            raise
        except Exception as e:  # noqa: BLE001 - reported below
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (
                timeout, what, "" if last is None else " (last error: %r)" % (last,)))
        time.sleep(interval)


def now_ms():
    return int(time.time() * 1000)


# ---- ports -------------------------------------------------------------------

def free_port(udp=False):
    """A port free on 127.0.0.1 for TCP (and UDP too when udp=True)."""
    for _ in range(200):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            if not udp:
                return port
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
            finally:
                u.close()
        finally:
            t.close()
    raise AssertionError("no free port found on 127.0.0.1")


def tcp_connectable(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# ---- processes ---------------------------------------------------------------

# Children get SIGKILL when the test process dies (ctest timeout, ^C), so no
# redis-server, turnserver or rtc-auth outlives a killed run. setpriv
# (util-linux, Essential in Debian) sets PR_SET_PDEATHSIG and execs the
# program, which keeps the pid; no preexec_fn, which is unsafe with threads.
SETPRIV = shutil.which("setpriv")


class Proc:
    """A child process whose output goes to a log file in the test's temp dir."""

    def __init__(self, args, log_path, env=None):
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "ab")
        if SETPRIV:
            args = [SETPRIV, "--pdeathsig", "KILL", "--"] + list(args)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log_records(self):
        """The JSON lines of the log, parsed (other lines skipped)."""
        out = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=60):
        return "\n".join(self.log_text().splitlines()[-n:])

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Signal the process (only this pid) and wait; SIGKILL if it hangs.
        Returns the exit status."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode


class Redis:
    """redis-server on 127.0.0.1:<port>, no persistence. stop()/start() keep the
    port, so a test can take Redis away and bring it back."""

    def __init__(self, tmpdir, name="redis", extra=()):
        self.exe = need_tool("redis-server", "redis-server")
        self.dir = os.path.join(tmpdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.started = False
        self.url = "redis://127.0.0.1:%d" % self.port
        self.extra = list(extra)  # more redis-server arguments (--replicaof …)

    def start(self, keep_port=False):
        """Start on self.port. The first start may move to another port if a
        racing process took the free one; a restart (or keep_port) keeps it."""
        keep = keep_port or self.started
        for attempt in range(1 if keep else 3):
            try:
                return self._start()
            except PortTaken:
                if keep or attempt == 2:
                    raise
                self.port = free_port()
                self.url = "redis://127.0.0.1:%d" % self.port

    def _start(self):
        self.proc = Proc([self.exe, "--bind", "127.0.0.1", "--port", str(self.port),
                          "--save", "", "--appendonly", "no", "--dir", self.dir,
                          "--dbfilename", "dump-%d.rdb" % self.port,
                          "--daemonize", "no", "--logfile", "",
                          "--enable-debug-command", "local"] + self.extra,  # DEBUG SLEEP
                         os.path.join(self.dir, "redis-%d.log" % len(os.listdir(self.dir))))

        def up():
            if not self.proc.alive():
                text = self.proc.log_tail()
                exc = PortTaken if "Address already in use" in text else AssertionError
                raise exc("redis-server exited (status %s):\n%s" % (
                    self.proc.proc.returncode, text))
            return self.cmd("PING") == "PONG"
        wait_for(up, START_TIMEOUT, what="redis-server on port %d" % self.port,
                 fatal=(PortTaken, AssertionError))
        self.started = True
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    def cmd(self, *args, timeout=5.0):
        """One command over a fresh connection (RESP2); returns the decoded reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            out = b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
            s.sendall(out)
            f = s.makefile("rb")
            return _resp_read(f)


def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("short RESP reply %r" % line)
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RuntimeError("redis error: %s" % body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise ConnectionError("bad RESP reply %r" % line)


class Coturn:
    """coturn (Debian turnserver) on 127.0.0.1 with REST credentials
    (use-auth-secret). --no-rfc5780 keeps it from opening the alt port
    (listening port + 1); its SQLite db and pid file live in the temp dir."""

    def __init__(self, tmpdir, secret, realm="rtc.test"):
        self.exe = need_tool("turnserver", "coturn")
        self.dir = os.path.join(tmpdir, "coturn")
        os.makedirs(self.dir, exist_ok=True)
        self.secret = secret
        self.realm = realm
        self.port = free_port(udp=True)
        self.proc = None

    def start(self):
        for attempt in range(3):
            try:
                return self._start()
            except PortTaken:
                if attempt == 2:
                    raise
                self.port = free_port(udp=True)

    def _start(self):
        self.proc = Proc([self.exe, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
                          "--listening-port=%d" % self.port, "--use-auth-secret",
                          "--static-auth-secret=%s" % self.secret, "--realm=%s" % self.realm,
                          "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls",
                          "--no-rfc5780", "--simple-log", "--log-file=stdout",
                          "--pidfile=%s" % os.path.join(self.dir, "turnserver.pid"),
                          "--db=%s" % os.path.join(self.dir, "turndb")],
                         os.path.join(self.dir, "turnserver.log"))

        def up():
            text = self.proc.log_text()
            if not self.proc.alive() or "Address already in use" in text:
                if self.proc.alive():
                    self.proc.stop()
                exc = PortTaken if "Address already in use" in text else AssertionError
                raise exc("turnserver exited (status %s):\n%s" % (
                    self.proc.proc.returncode, self.proc.log_tail()))
            return stun_binding(self.port, timeout=0.5) and tcp_connectable(self.port)
        wait_for(up, START_TIMEOUT, what="turnserver on port %d" % self.port,
                 fatal=(PortTaken, AssertionError))
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()


class AuthServer:
    """One rtc-auth process: --listen/--admin on ephemeral ports, read back from
    the JSON log line {"msg":"listening","grpc_port":…,"admin_port":…}."""

    def __init__(self, exe, args, log_path):
        if not os.access(exe, os.X_OK):
            raise AssertionError("rtc-auth not found or not executable at %s (build the "
                                 "rtc-auth target)" % exe)
        # Flags fall back to RTC_* variables: keep the caller's out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTC_")}
        self.args = [exe, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"] + list(args)
        self.proc = Proc(self.args, log_path, env=env)
        self.grpc_port = self.admin_port = None
        try:
            rec = wait_for(self._listening, START_TIMEOUT, what="rtc-auth 'listening' log line")
        except BaseException:
            self.proc.stop(signal.SIGKILL)
            raise
        self.grpc_port = int(rec["grpc_port"])
        self.admin_port = int(rec["admin_port"])
        self.addr = "127.0.0.1:%d" % self.grpc_port

    def _listening(self):
        for rec in self.log_records():
            if rec.get("msg") == "listening":
                return rec
        if not self.proc.alive():
            raise AssertionError("rtc-auth exited with status %s before listening; args %s; "
                                 "log:\n%s" % (self.proc.proc.returncode, self.args[1:],
                                               self.proc.log_tail()))
        return None

    def log_records(self):
        return self.proc.log_records()

    def alive(self):
        return self.proc.alive()

    def stop(self):
        return self.proc.stop()

    def http_get(self, path, timeout=5.0):
        """(status, body) from the admin listener."""
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            c.close()


def run_expect_exit(exe, args, log_path, timeout=START_TIMEOUT):
    """Start rtc-auth expecting it to refuse to start: (exit status, log)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTC_")}
    p = Proc([exe, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"] + list(args),
             log_path, env=env)
    try:
        p.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.stop()
        raise AssertionError("rtc-auth %s kept running; it should have refused to start. "
                             "Log:\n%s" % (args, p.log_tail()))
    p.stop()
    return p.proc.returncode, p.log_text()


# ---- protobuf ----------------------------------------------------------------

def load_protos(repo, tmpdir, protoc=None):
    """Generate auth_pb2 and health_pb2 with protoc 3.21 into tmpdir and load
    them by path (a package named grpc would clash with grpcio)."""
    protoc = protoc or os.environ.get("RTC_PROTOC") or need_tool("protoc", "protobuf-compiler")
    out = os.path.join(tmpdir, "pb")
    os.makedirs(out, exist_ok=True)
    proto = os.path.join(repo, "proto")
    r = subprocess.run([protoc, "--python_out=" + out, "-I", proto,
                        os.path.join(proto, "rtc/auth/v1/auth.proto"),
                        os.path.join(proto, "grpc/health/v1/health.proto")],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("protoc failed: %s" % r.stderr)

    def load(name, rel):
        spec = importlib.util.spec_from_file_location(name, os.path.join(out, rel))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return (load("rtc_auth_v1_auth_pb2", "rtc/auth/v1/auth_pb2.py"),
            load("grpc_health_v1_health_pb2", "grpc/health/v1/health_pb2.py"))


class AuthClient:
    """Calls rtc.auth.v1.Auth methods by path with explicit (de)serializers."""

    RESPONSES = {
        "IssueToken": "IssueTokenResponse", "RefreshToken": "RefreshTokenResponse",
        "RevokeToken": "RevokeTokenResponse", "VerifyToken": "VerifyTokenResponse",
        "GetSigningKeys": "GetSigningKeysResponse", "GetIceServers": "GetIceServersResponse",
        "DevLogin": "DevLoginResponse",
    }

    def __init__(self, addr, pb, health_pb, on_token=None):
        self.pb = pb
        self.health_pb = health_pb
        self.on_token = on_token
        self.channel = grpc.insecure_channel(addr, options=[
            ("grpc.enable_http_proxy", 0),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 0),
        ])

    def close(self):
        self.channel.close()

    def call(self, method, req, metadata=None, timeout=RPC_TIMEOUT):
        resp_cls = getattr(self.pb, self.RESPONSES[method])
        fn = self.channel.unary_unary("/rtc.auth.v1.Auth/" + method,
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=resp_cls.FromString)
        resp = fn(req, metadata=metadata, timeout=timeout)
        tok = getattr(resp, "access_token", "")
        if tok and self.on_token:
            self.on_token(tok)
        return resp

    def raw(self, method, data, metadata=None, timeout=RPC_TIMEOUT):
        """Send raw request bytes; returns raw response bytes."""
        fn = self.channel.unary_unary("/rtc.auth.v1.Auth/" + method)
        return fn(data, metadata=metadata, timeout=timeout)

    def health(self, service, timeout=RPC_TIMEOUT):
        hp = self.health_pb
        fn = self.channel.unary_unary("/grpc.health.v1.Health/Check",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=hp.HealthCheckResponse.FromString)
        return fn(hp.HealthCheckRequest(service=service), timeout=timeout).status


def basic(key_id, secret):
    return [("authorization", "Basic " + base64.b64encode(
        ("%s:%s" % (key_id, secret)).encode()).decode())]


def bearer(token):
    return [("authorization", "Bearer " + token)]


# ---- keys and JWTs -----------------------------------------------------------

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Key:
    """A P-256 key made by openssl; private PEM, public PEM, JWK thumbprint."""

    def __init__(self, tmpdir, name):
        openssl = need_tool("openssl", "openssl")
        self.path = os.path.join(tmpdir, name + ".pem")
        self.pub_path = os.path.join(tmpdir, name + ".pub.pem")
        subprocess.run([openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                        "-out", self.path], check=True, capture_output=True, timeout=60)
        subprocess.run([openssl, "pkey", "-in", self.path, "-pubout", "-out", self.pub_path],
                       check=True, capture_output=True, timeout=60)
        with open(self.path, "rb") as f:
            self.private_pem = f.read()
        with open(self.pub_path, "rb") as f:
            self.public_pem = f.read()
        self.private = serialization.load_pem_private_key(self.private_pem, None)
        nums = self.private.public_key().public_numbers()
        self.x = nums.x.to_bytes(32, "big")
        self.y = nums.y.to_bytes(32, "big")
        self.kid = jwk_thumbprint(b64url(self.x), b64url(self.y))

    def sign_raw(self, signing_input):
        """ES256 signature (raw r||s) over bytes."""
        der = self.private.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def sign_der(self, signing_input):
        return self.private.sign(signing_input, ec.ECDSA(hashes.SHA256()))


def jwk_thumbprint(x_b64, y_b64, crv="P-256"):
    """RFC 7638: SHA-256 over the required members in lexical order, no spaces."""
    canon = '{"crv":"%s","kty":"EC","x":"%s","y":"%s"}' % (crv, x_b64, y_b64)
    return b64url(hashlib.sha256(canon.encode()).digest())


def make_jwt(header, payload, key=None, sig=None, der=False):
    """A compact JWS built by hand. header/payload: dict (JSON) or bytes (as is).
    Signed ES256 with key unless sig (bytes) is given."""
    def enc(part):
        if isinstance(part, (bytes, bytearray)):
            return b64url(bytes(part))
        return b64url(json.dumps(part, separators=(",", ":")).encode())
    signing_input = enc(header) + "." + enc(payload)
    if sig is None:
        if key is None:
            sig = b""
        elif der:
            sig = key.sign_der(signing_input.encode())
        else:
            sig = key.sign_raw(signing_input.encode())
    return signing_input + "." + b64url(sig)


def jwt_parts(token):
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), s


# ---- TURN --------------------------------------------------------------------

def turn_credential(secret, username):
    return base64.b64encode(hmac.new(secret.encode(), username.encode(),
                                     hashlib.sha1).digest()).decode()


STUN_MAGIC = 0x2112A442
ATTR_USERNAME, ATTR_MI, ATTR_ERROR_CODE = 0x0006, 0x0008, 0x0009
ATTR_REALM, ATTR_NONCE, ATTR_REQ_TRANSPORT = 0x0014, 0x0015, 0x0019
ATTR_XOR_RELAYED = 0x0016


def _stun_attr(t, value):
    pad = b"\0" * (-len(value) % 4)
    return struct.pack("!HH", t, len(value)) + value + pad


def _stun_msg(mtype, attrs, key=None):
    txid = os.urandom(12)
    body = b"".join(attrs)
    if key is not None:
        # MESSAGE-INTEGRITY covers the header with a length that includes it.
        hdr = struct.pack("!HHI", mtype, len(body) + 24, STUN_MAGIC) + txid
        mi = hmac.new(key, hdr + body, hashlib.sha1).digest()
        body += _stun_attr(ATTR_MI, mi)
    return struct.pack("!HHI", mtype, len(body), STUN_MAGIC) + txid + body, txid


def _stun_parse(data):
    mtype, length, magic = struct.unpack("!HHI", data[:8])
    attrs = {}
    pos = 20
    while pos + 4 <= 20 + length:
        t, n = struct.unpack("!HH", data[pos:pos + 4])
        attrs.setdefault(t, data[pos + 4:pos + 4 + n])
        pos += 4 + n + (-n % 4)
    return mtype, data[8:20], attrs


def _stun_roundtrip(sock, msg, txid, timeout):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no STUN answer")
        sock.settimeout(left)
        data = sock.recv(4096)
        if len(data) >= 20:
            mtype, rtx, attrs = _stun_parse(data)
            if rtx == txid:
                return mtype, attrs


def stun_binding(port, timeout=1.0):
    """True when a STUN Binding request to 127.0.0.1:port gets a success answer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("127.0.0.1", port))
        msg, txid = _stun_msg(0x0001, [])
        s.send(msg)
        mtype, _ = _stun_roundtrip(s, msg, txid, timeout)
        return mtype == 0x0101
    except (OSError, TimeoutError):
        return False
    finally:
        s.close()


def turn_allocate(port, username, password, timeout=10.0):
    """A TURN Allocate over UDP with long-term credentials (RFC 5766/5389):
    first unauthenticated (to get realm and nonce), then signed. Returns
    ("ok", relayed address) or ("error", code, reason). Retransmits lost UDP."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.1", port))
    transport = _stun_attr(ATTR_REQ_TRANSPORT, b"\x11\0\0\0")  # UDP

    def ask(attrs, key=None):
        msg, txid = _stun_msg(0x0003, attrs, key)
        for _ in range(max(1, int(timeout / 0.5))):
            s.send(msg)
            try:
                return _stun_roundtrip(s, msg, txid, 0.5)
            except (TimeoutError, socket.timeout):
                continue
        raise AssertionError("coturn did not answer an Allocate on port %d" % port)

    try:
        mtype, attrs = ask([transport])
        if mtype != 0x0113 or ATTR_NONCE not in attrs:
            raise AssertionError("unauthenticated Allocate: unexpected answer 0x%04x" % mtype)
        realm, nonce = attrs[ATTR_REALM], attrs[ATTR_NONCE]
        key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
        mtype, attrs = ask([transport, _stun_attr(ATTR_USERNAME, username.encode()),
                            _stun_attr(ATTR_REALM, realm), _stun_attr(ATTR_NONCE, nonce)], key)
        if mtype == 0x0103:
            return ("ok", attrs.get(ATTR_XOR_RELAYED))
        err = attrs.get(ATTR_ERROR_CODE, b"\0\0\0\0")
        code = (err[2] & 7) * 100 + err[3]
        return ("error", code, err[4:].decode("utf-8", "replace"))
    finally:
        s.close()


def uclient(port, username, password, tcp=False, timeout=120):
    """turnutils_uclient: two clients relaying to each other through coturn
    (-y), no RTCP allocation (-c), 3 messages each. Returns (status, output)."""
    exe = need_tool("turnutils_uclient", "coturn")
    args = [exe, "-y", "-c", "-n", "3", "-m", "1", "-u", username, "-w", password,
            "-p", str(port)]
    if tcp:
        args.append("-t")
    args.append("127.0.0.1")
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run_main(argv, module, suites, figures=()):
    """The command line of an interop suite file:
        <file> [<bin dir> <repo root>] [--suite=NAME] [-v] [Test.names...]
    The two paths, when given, become module.BIN_DIR and module.REPO; the
    protoc output dir module._PB["dir"] is removed after the tests. Prints a
    summary (failures, then the figures the tests recorded) and returns the
    exit status."""
    args = argv[1:]
    if len(args) >= 2 and not args[0].startswith("-"):
        module.BIN_DIR, module.REPO = args[0], args[1]
        args = args[2:]
    suite_name = "all"
    rest = []
    for a in args:
        if a.startswith("--suite="):
            suite_name = a.split("=", 1)[1]
        else:
            rest.append(a)
    verbosity = 2 if "-v" in rest else 1
    names = [a for a in rest if not a.startswith("-")]
    loader = unittest.TestLoader()
    if names:
        suite = loader.loadTestsFromNames(names, module)
    else:
        suite = unittest.TestSuite(loader.loadTestsFromTestCase(c) for c in suites[suite_name])
    t0 = time.monotonic()
    result = unittest.TextTestRunner(verbosity=verbosity).run(suite)
    if module._PB.get("dir"):
        shutil.rmtree(module._PB["dir"], True)
    print("\n==== summary: interop.%s: %d tests in %.0f s, %d failed, %d errors ====" % (
        suite_name, result.testsRun, time.monotonic() - t0, len(result.failures),
        len(result.errors)))
    for t, _ in result.failures + result.errors:
        print("  FAILED %s" % t.id().split(".", 1)[1])
    for name, text in figures:
        print("  %s: %s" % (name, text))
    sys.stdout.flush()
    return 0 if result.wasSuccessful() else 1

#!/usr/bin/python3
"""Interop: the real rtc-auth against independent implementations.

Tokens are checked with PyJWT (python3-jwt) and python3-cryptography, the
revocation store is a real redis-server, TURN credentials are checked by a real
coturn (turnserver + turnutils_uclient) and by a hand-written STUN client.
The contract is proto/rtc/auth/v1/auth.proto and services/auth/README.md.

Usage:
    /usr/bin/python3 test_auth.py <bin dir> <repo root> [--suite auth|turn|all] [-v]
        [TestClass[.test_method] ...]

Environment: RTC_PROTOC (protoc 3.21; default protoc on PATH). Needs on PATH:
openssl, redis-server, turnserver and turnutils_uclient (Debian coturn). A
missing tool fails the test with the package to install; nothing is skipped.

Every process runs on 127.0.0.1 with a free port, is started per test class
and stopped in the class cleanup even when a test or the setup fails. Nothing
sleeps for a fixed time: waits poll a condition with a generous deadline.
"""

import base64
import collections
import concurrent.futures
import hashlib
import hmac
import json
import os
import re
import shutil
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import google.protobuf  # noqa: E402
    import grpc  # noqa: E402
    import jwt  # noqa: E402  (PyJWT)
    from cryptography.hazmat.primitives import serialization  # noqa: E402
except ImportError as e:
    sys.exit("test_auth.py: %s. Run it with /usr/bin/python3 and install Debian's "
             "python3-grpcio python3-protobuf python3-jwt python3-cryptography." % e)
PROTOBUF_VERSION = google.protobuf.__version__  # generated code needs protobuf >= 3.20

import auth_helpers as H  # noqa: E402
from auth_helpers import basic, bearer, now_ms, wait_for  # noqa: E402

BIN_DIR = os.environ.get("RTC_BIN_DIR", "")
REPO = os.environ.get("RTC_REPO_ROOT") or os.path.dirname(os.path.dirname(HERE))
SC = grpc.StatusCode

_PB = {}


def protos():
    """(auth_pb2, health_pb2), generated once per run."""
    if not _PB:
        d = tempfile.mkdtemp(prefix="rtc-auth-pb-")
        _PB["dir"] = d
        _PB["auth"], _PB["health"] = H.load_protos(REPO, d)
    return _PB["auth"], _PB["health"]


def auth_exe():
    if not BIN_DIR:
        raise AssertionError("no bin dir: run through ctest, or as test_auth.py <bin dir> "
                             "<repo root>")
    return os.path.join(BIN_DIR, "rtc-auth")


# API keys written to the keys file: (key id, secret, rights).
ISSUER = ("svc-issuer", "issuer-secret-0123456789", "issue,revoke,verify")
VERIFIER = ("svc-verifier", "verifier-secret-0123456789", "verify")
ADMIN = ("ops-admin", "admin-secret-0123456789abc", "admin")
MINTER = ("svc-minter", "minter-secret-0123456789", "issue")
HASHED_PLAIN = "hashed-secret-0123456789"
HASHED = ("svc-hashed", "sha256:" + hashlib.sha256(HASHED_PLAIN.encode()).hexdigest(),
          "issue,verify")
TURN_SECRET = "coturn-shared-secret-4f1d2c"


def key_md(k):
    return basic(k[0], k[1])


class AuthCase(unittest.TestCase):
    """Base: a temp dir, three P-256 keys (k1 signs, k2 only verifies, k3 is
    unknown to rtc-auth), an API keys file, a redis-server and one rtc-auth.
    Subclasses set AUTH_ARGS (extra flags) and the other class attributes."""

    AUTH_ARGS = ()
    WITH_REDIS = True
    START_REDIS = True
    SIGNING_KEY = True
    LEEWAY_S = 30
    MAX_TOKEN_TTL_MS = 2 * 3600 * 1000
    TOKEN_TTL_MS = 15 * 60 * 1000
    MAX_SESSION_MS = 24 * 3600 * 1000
    KEYS_MAX_AGE_MS = 120000

    @classmethod
    def setUpClass(cls):
        cls.procs = []
        cls.secrets = [ISSUER[1], VERIFIER[1], ADMIN[1], MINTER[1], HASHED_PLAIN, TURN_SECRET]
        cls.tmp = tempfile.mkdtemp(prefix="rtc-auth-test-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        try:
            cls.pb, cls.hpb = protos()
            cls.k1 = H.Key(cls.tmp, "k1")
            cls.k2 = H.Key(cls.tmp, "k2")
            cls.k3 = H.Key(cls.tmp, "k3")
            cls.keys_file = os.path.join(cls.tmp, "api-keys")
            with open(cls.keys_file, "w") as f:
                f.write("# test keys\n")
                for k in (ISSUER, VERIFIER, ADMIN, MINTER, HASHED):
                    f.write("%s %s %s\n" % k)
            cls.redis = None
            if cls.WITH_REDIS:
                cls.redis = H.Redis(cls.tmp)
                cls.addClassCleanup(cls.redis.stop)
                if cls.START_REDIS:
                    cls.redis.start()
                cls.procs.append(("redis-server", cls.redis))
            cls.extra_setup()
            cls.auth = cls.start_auth(cls.auth_args())
            cls.client = cls.make_client(cls.auth)
        except BaseException:
            cls.dump_logs("setUpClass of %s" % cls.__name__)
            raise

    @classmethod
    def extra_setup(cls):
        pass

    @classmethod
    def auth_args(cls):
        a = []
        if cls.SIGNING_KEY:
            a += ["--signing-key", cls.k1.path, "--verify-keys", cls.k2.pub_path]
        if cls.redis:
            a += ["--redis", cls.redis.url]
        a += ["--api-keys-file", cls.keys_file, "--revocation-check", "1s",
              "--leeway", "%ds" % cls.LEEWAY_S,
              "--max-token-ttl", "%dms" % cls.MAX_TOKEN_TTL_MS,
              "--token-ttl", "%dms" % cls.TOKEN_TTL_MS,
              "--max-session", "%dms" % cls.MAX_SESSION_MS,
              "--keys-max-age", "%dms" % cls.KEYS_MAX_AGE_MS]
        return a + list(cls.AUTH_ARGS)

    @classmethod
    def start_auth(cls, args, name="rtc-auth"):
        log_path = os.path.join(cls.tmp, "%s-%d.log" % (name, len(cls.procs)))
        holder = {"log": log_path}
        cls.procs.append((name, holder))
        srv = H.AuthServer(auth_exe(), args, log_path)
        cls.addClassCleanup(srv.stop)
        holder["srv"] = srv
        return srv

    @classmethod
    def make_client(cls, srv):
        c = H.AuthClient(srv.addr, cls.pb, cls.hpb, on_token=cls.secrets.append)
        cls.addClassCleanup(c.close)
        return c

    @classmethod
    def dump_logs(cls, why):
        H.log("\n==== logs of %s (%s) ====" % (cls.__name__, why))
        for name, p in getattr(cls, "procs", []):
            if isinstance(p, dict):
                text = ""
                try:
                    with open(p["log"], "rb") as f:
                        text = f.read().decode("utf-8", "replace")
                except OSError:
                    pass
                tail = "\n".join(text.splitlines()[-60:])
            else:
                tail = p.proc.log_tail() if getattr(p, "proc", None) else ""
            H.log("---- %s ----\n%s" % (name, tail))

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        out = super().run(result)
        if result and len(result.failures) + len(result.errors) > before:
            self.dump_logs(self.id())
        return out

    # ---- helpers ----

    def grant(self, name):
        return getattr(self.pb, "GRANT_" + name.upper())

    def terr(self, name):
        return getattr(self.pb, "TOKEN_ERROR_" + name.upper())

    def terr_name(self, v):
        return self.pb.TokenError.Name(v)

    def issue(self, identity="alice", room="room-1", grants=("join", "create"), ttl_ms=0,
              name="", key=ISSUER, client=None):
        req = self.pb.IssueTokenRequest(identity=identity, room_id=room, ttl_ms=ttl_ms,
                                        display_name=name)
        for g in grants:
            req.grants.append(self.grant(g) if isinstance(g, str) else g)
        return (client or self.client).call("IssueToken", req, metadata=key_md(key))

    def verify(self, token, key=VERIFIER, client=None):
        return (client or self.client).call(
            "VerifyToken", self.pb.VerifyTokenRequest(access_token=token), metadata=key_md(key))

    def refresh(self, token, ttl_ms=0, client=None):
        return (client or self.client).call(
            "RefreshToken", self.pb.RefreshTokenRequest(ttl_ms=ttl_ms), metadata=bearer(token))

    def revoke(self, token_id, expires_at_ms, md=None, client=None):
        return (client or self.client).call(
            "RevokeToken", self.pb.RevokeTokenRequest(token_id=token_id,
                                                      expires_at_ms=expires_at_ms),
            metadata=key_md(ISSUER) if md is None else md)

    def signing_keys(self, client=None):
        return (client or self.client).call("GetSigningKeys", self.pb.GetSigningKeysRequest())

    def assertRpcError(self, codes, fn, *args, **kw):
        """fn(*args, **kw) must fail with one of codes; returns the RpcError."""
        if isinstance(codes, SC):
            codes = (codes,)
        try:
            resp = fn(*args, **kw)
        except grpc.RpcError as e:
            self.assertIn(e.code(), codes, "expected %s, got %s: %r" % (
                "/".join(c.name for c in codes), e.code().name, e.details()))
            return e
        self.fail("expected %s, but the call succeeded: %r" % (
            "/".join(c.name for c in codes), str(resp)[:300]))

    def assertTokenError(self, token, names, what=""):
        """VerifyToken answers OK with error set to one of names."""
        if isinstance(names, str):
            names = (names,)
        resp = self.verify(token)
        self.assertEqual(resp.WhichOneof("result"), "error",
                         "%s: expected %s, token was accepted: %s" % (what, names, resp.claims))
        self.assertIn(self.terr_name(resp.error),
                      ["TOKEN_ERROR_" + n.upper() for n in names],
                      "%s: detail %r" % (what, resp.detail))
        self.assertTrue(resp.detail, "%s: an error must carry a detail text" % what)
        if len(token) > 20:
            self.assertNotIn(token, resp.detail)
        return resp

    def assertValid(self, token, what=""):
        resp = self.verify(token)
        self.assertEqual(resp.WhichOneof("result"), "claims", "%s: refused with %s (%s)" % (
            what, self.terr_name(resp.error) if resp.WhichOneof("result") else "nothing",
            resp.detail))
        self.assertEqual(resp.detail, "")
        return resp.claims

    def claims(self, **over):
        """A full, valid claim set (JWT names) for hand-signed tokens."""
        now = int(time.time())
        c = {"iss": "rtc", "aud": "rtc", "sub": "bob", "iat": now, "nbf": now,
             "exp": now + 600, "jti": "py-" + H.b64url(os.urandom(12)), "room": "room-9",
             "grants": ["join"], "name": "Bob", "auth_time": now}
        for k, v in over.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def pyjwt(self, key=None, kid=None, **over):
        """A token PyJWT signs ES256 with key (default k1), header kid/typ."""
        key = key or self.k1
        return jwt.encode(self.claims(**over), key.private_pem, algorithm="ES256",
                          headers={"kid": kid or key.kid, "typ": "JWT"})

    def grant_names(self, values):
        return sorted(self.pb.Grant.Name(v)[len("GRANT_"):].lower() for v in values)

    def test_zzz_clean_exit_on_sigterm(self):
        """Runs last: rtc-auth drains and exits 0 on SIGTERM, with no sanitizer
        report (leaks included, in sanitizer builds) in its log."""
        rc = self.auth.stop()
        text = self.auth.proc.log_text()
        tail = "\n".join(text.splitlines()[-40:])
        self.assertNotIn("Sanitizer", text, tail)
        self.assertNotIn("runtime error:", text, tail)
        self.assertEqual(rc, 0, "rtc-auth exited with %s on SIGTERM:\n%s" % (rc, tail))

    def test_zz_logs_hold_no_secrets(self):
        """Tokens, API secrets and the TURN secret never reach the logs (runs
        last in each class: every token this class received is checked)."""
        self.assertTrue(self.auth.alive(), "rtc-auth died:\n%s" % self.auth.proc.log_tail())
        text = self.auth.proc.log_text()
        for s in self.secrets:
            if not s:
                continue
            if s.count(".") == 2:  # a JWT: its signature alone is a leak too
                self.assertNotIn(s.rsplit(".", 1)[1], text, "a token signature is in the log")
            else:
                self.assertNotIn(s, text, "a secret is in the log")


# ---- 1. issue + keys, checked with PyJWT -------------------------------------

class IssueAndKeysTest(AuthCase):

    def keys_by_kid(self):
        return {k.key_id: k for k in self.signing_keys().keys}

    def test_issue_token_verifies_in_pyjwt(self):
        t0 = now_ms()
        resp = self.issue("alice", "room-1", ["join", "create"], ttl_ms=600000,
                          name="Alice \u2603")
        t1 = now_ms()
        tok = resp.access_token
        self.assertTrue(tok and resp.token_id)
        self.assertLessEqual(len(tok), 8192)
        header = jwt.get_unverified_header(tok)
        self.assertEqual(header.get("alg"), "ES256")
        self.assertEqual(header.get("typ"), "JWT")
        self.assertEqual(header.get("kid"), self.k1.kid, "tokens must be signed by --signing-key")
        keys = self.keys_by_kid()
        self.assertIn(header["kid"], keys)
        for pem in (keys[header["kid"]].public_key_pem, self.k1.public_pem):
            c = jwt.decode(tok, key=pem, algorithms=["ES256"], audience="rtc", issuer="rtc",
                           options={"require": ["exp", "iat", "nbf", "sub", "jti", "iss", "aud"]})
        self.assertEqual(c["sub"], "alice")
        self.assertEqual(c["room"], "room-1")
        self.assertEqual(sorted(c["grants"]), ["create", "join"])
        self.assertEqual(c["name"], "Alice \u2603")
        self.assertEqual(c["jti"], resp.token_id)
        self.assertEqual(c["exp"] * 1000, resp.expires_at_ms, "expires_at_ms must be exp in ms")
        self.assertGreaterEqual(resp.expires_at_ms, t0 + 600000 - 1000)
        self.assertLessEqual(resp.expires_at_ms, t1 + 600000)
        self.assertTrue(t0 // 1000 - 1 <= c["iat"] <= t1 // 1000 + 1, c)
        self.assertLessEqual(c["nbf"], t1 // 1000 + 1)
        self.assertIn("auth_time", c, "auth.proto: claims carry auth_time (session start, s)")
        self.assertTrue(t0 - 1000 <= c["auth_time"] * 1000 <= t1 + 1000, c)
        aud = c["aud"] if isinstance(c["aud"], list) else [c["aud"]]
        self.assertEqual(aud, ["rtc"])

    def test_default_ttl(self):
        t0 = now_ms()
        resp = self.issue(ttl_ms=0)
        t1 = now_ms()
        self.assertGreaterEqual(resp.expires_at_ms, t0 + self.TOKEN_TTL_MS - 1000)
        self.assertLessEqual(resp.expires_at_ms, t1 + self.TOKEN_TTL_MS)

    def test_token_ids_unique(self):
        ids = {self.issue().token_id for _ in range(20)}
        self.assertEqual(len(ids), 20)

    def test_verify_token_returns_claims(self):
        resp = self.issue("carol", "room-7", ["join", "list"], ttl_ms=300000, name="Carol")
        _, c, _ = H.jwt_parts(resp.access_token)
        cl = self.assertValid(resp.access_token)
        self.assertEqual(cl.issuer, "rtc")
        self.assertEqual(list(cl.audience), ["rtc"])
        self.assertEqual(cl.identity, "carol")
        self.assertEqual(cl.room_id, "room-7")
        self.assertEqual(self.grant_names(cl.grants), ["join", "list"])
        self.assertEqual(cl.display_name, "Carol")
        self.assertEqual(cl.token_id, resp.token_id)
        self.assertEqual(cl.expires_at_ms, resp.expires_at_ms)
        self.assertEqual(cl.issued_at_ms, c["iat"] * 1000)
        self.assertEqual(cl.not_before_ms, c["nbf"] * 1000)
        self.assertEqual(cl.session_started_at_ms, c["auth_time"] * 1000)
        self.assertEqual(cl.key_id, self.k1.kid)
        # A second verification (the cached path) answers the same.
        self.assertEqual(self.assertValid(resp.access_token), cl)

    def test_signing_keys(self):
        resp = self.signing_keys()  # no credentials at all
        self.assertEqual(resp.max_age_ms, self.KEYS_MAX_AGE_MS, "max_age_ms is --keys-max-age")
        self.assertGreater(resp.max_age_ms, 0)
        by_kid = {k.key_id: k for k in resp.keys}
        self.assertEqual(len(resp.keys), 2, [k.key_id for k in resp.keys])
        self.assertEqual(set(by_kid), {self.k1.kid, self.k2.kid},
                         "key ids must be the RFC 7638 thumbprints")
        self.assertEqual([k.key_id for k in resp.keys if k.signing], [self.k1.kid])
        for ours in (self.k1, self.k2):
            k = by_kid[ours.kid]
            self.assertEqual(k.algorithm, "ES256")
            pub = serialization.load_pem_public_key(k.public_key_pem.encode())
            nums = pub.public_numbers()
            self.assertEqual(nums.x.to_bytes(32, "big"), ours.x)
            self.assertEqual(nums.y.to_bytes(32, "big"), ours.y)
            self.assertNotIn("PRIVATE", k.public_key_pem)
            j = json.loads(k.jwk_json)
            self.assertEqual(j.get("kty"), "EC")
            self.assertEqual(j.get("crv"), "P-256")
            self.assertEqual(H.b64url_decode(j["x"]), ours.x)
            self.assertEqual(H.b64url_decode(j["y"]), ours.y)
            self.assertEqual(j.get("kid"), ours.kid)
            self.assertEqual(j.get("alg"), "ES256")
            self.assertEqual(j.get("use"), "sig")
            self.assertNotIn("d", j, "a JWK with d holds the private key")
            self.assertEqual(H.jwk_thumbprint(j["x"], j["y"]), k.key_id)
            # PyJWT takes the JWK as a key too.
            jwk_key = jwt.algorithms.ECAlgorithm.from_jwk(k.jwk_json)
            self.assertEqual(jwk_key.public_numbers(), nums)

    def test_devlogin_without_dev_is_unimplemented(self):
        self.assertRpcError(SC.UNIMPLEMENTED, self.client.call, "DevLogin",
                            self.pb.DevLoginRequest(display_name="Guest", room_id="lobby"))

    def test_health_and_readiness(self):
        self.assertEqual(self.client.health(""), self.hpb.HealthCheckResponse.SERVING)
        wait_for(lambda: self.client.health("rtc.auth.v1.Auth")
                 == self.hpb.HealthCheckResponse.SERVING, what="rtc.auth.v1.Auth SERVING")
        wait_for(lambda: self.auth.http_get("/readyz")[0] == 200, what="/readyz 200")
        self.assertEqual(self.auth.http_get("/healthz")[0], 200)
        status, body = self.auth.http_get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn("rtc_build_info", body)


# ---- 2. tokens made elsewhere, and forgeries ---------------------------------

class ForeignTokensTest(AuthCase):

    def test_pyjwt_signed_tokens_verify(self):
        for key in (self.k1, self.k2):
            now = int(time.time())
            tok = self.pyjwt(key, sub="py-" + key.kid[:6], room="room-py",
                             grants=["join", "admin"], name="Py", auth_time=now - 60)
            _, c, _ = H.jwt_parts(tok)
            cl = self.assertValid(tok, "PyJWT token signed by %s" % key.kid)
            self.assertEqual(cl.identity, c["sub"])
            self.assertEqual(cl.room_id, "room-py")
            self.assertEqual(self.grant_names(cl.grants), ["admin", "join"])
            self.assertEqual(cl.display_name, "Py")
            self.assertEqual(cl.token_id, c["jti"])
            self.assertEqual(cl.expires_at_ms, c["exp"] * 1000)
            self.assertEqual(cl.issued_at_ms, c["iat"] * 1000)
            self.assertEqual(cl.not_before_ms, c["nbf"] * 1000)
            self.assertEqual(cl.session_started_at_ms, c["auth_time"] * 1000)
            self.assertEqual(cl.key_id, key.kid)
            self.assertEqual(cl.issuer, "rtc")

    def test_audience_list_and_leeway(self):
        cl = self.assertValid(self.pyjwt(aud=["other", "rtc"]), "aud list containing rtc")
        self.assertEqual(sorted(cl.audience), ["other", "rtc"])
        now = int(time.time())
        # Expired 5 s ago and not valid for 5 s more: inside the 30 s leeway.
        self.assertValid(self.pyjwt(exp=now - 5, iat=now - 600, nbf=now - 600), "exp in leeway")
        self.assertValid(self.pyjwt(nbf=now + 5), "nbf in leeway")

    def test_forgeries_are_refused(self):
        k1, k3 = self.k1, self.k3
        good = self.pyjwt()
        h64, p64, s64 = good.split(".")
        hdr = {"alg": "ES256", "typ": "JWT", "kid": k1.kid}
        claims = self.claims()
        now = int(time.time())
        pub_pem = k1.public_pem
        hs_input = (H.b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": k1.kid}).encode())
                    + "." + p64)
        hs256 = hs_input + "." + H.b64url(hmac.new(pub_pem, hs_input.encode(),
                                                   hashlib.sha256).digest())
        tampered = h64 + "." + H.b64url(json.dumps(dict(claims, sub="mallory")).encode()) \
            + "." + s64
        cases = [
            ("alg none, no signature",
             H.make_jwt({"alg": "none", "typ": "JWT", "kid": k1.kid}, claims), "unsupported_algorithm"),
            ("alg none, a real signature",
             H.make_jwt({"alg": "none", "typ": "JWT", "kid": k1.kid}, claims, k1),
             "unsupported_algorithm"),
            ("alg NONE", H.make_jwt({"alg": "NONE", "kid": k1.kid}, claims), "unsupported_algorithm"),
            ("HS256 keyed with the public PEM", hs256, "unsupported_algorithm"),
            ("alg ES384 header on an ES256 signature",
             H.make_jwt({"alg": "ES384", "typ": "JWT", "kid": k1.kid}, claims, k1),
             "unsupported_algorithm"),
            ("alg RS256", H.make_jwt({"alg": "RS256", "kid": k1.kid}, claims, k1),
             "unsupported_algorithm"),
            ("no alg", H.make_jwt({"typ": "JWT", "kid": k1.kid}, claims, k1),
             ("unsupported_algorithm", "malformed")),
            ("tampered payload", tampered, "bad_signature"),
            ("kid swapped to the other known key",
             H.make_jwt(dict(hdr, kid=self.k2.kid), claims, k1), "bad_signature"),
            ("signature of another token",
             H.make_jwt(hdr, dict(claims, jti="other"), sig=H.b64url_decode(s64)), "bad_signature"),
            ("truncated signature", good[:-10], ("bad_signature", "malformed")),
            ("DER signature", H.make_jwt(hdr, claims, k1, der=True), ("bad_signature", "malformed")),
            ("zero signature", H.make_jwt(hdr, claims, sig=b"\0" * 64), "bad_signature"),
            ("expired beyond leeway",
             self.pyjwt(exp=now - 120, iat=now - 900, nbf=now - 900), "expired"),
            ("not yet valid", self.pyjwt(nbf=now + 600, iat=now), "not_yet_valid"),
            ("wrong issuer", self.pyjwt(iss="https://evil.example"), "wrong_issuer"),
            ("wrong audience", self.pyjwt(aud="other"), "wrong_audience"),
            ("audience list without rtc", self.pyjwt(aud=["a", "b"]), "wrong_audience"),
            ("unknown kid", self.pyjwt(kid="no-such-key"), "unknown_key"),
            ("no kid", H.make_jwt({"alg": "ES256", "typ": "JWT"}, claims, k1), "unknown_key"),
            ("key rtc-auth does not know", self.pyjwt(k3), "unknown_key"),
            ("unknown key claiming a known kid", self.pyjwt(k3, kid=k1.kid), "bad_signature"),
            ("garbage", "garbage", "malformed"),
            ("two parts", "abc.def", "malformed"),
            ("four parts", good + ".xyz", "malformed"),
            ("empty parts", "..", "malformed"),
            ("bad base64url", "!!!." + p64 + "." + s64, "malformed"),
            ("header not JSON", H.make_jwt(b"not json", claims, k1), "malformed"),
            ("payload not JSON (signed)", H.make_jwt(hdr, b"{\"sub\":", k1), "malformed"),
            ("payload a JSON array (signed)", H.make_jwt(hdr, b"[1,2]", k1), "malformed"),
            ("no jti (signed)", H.make_jwt(hdr, self.claims(jti=None), k1), "malformed"),
            ("no sub (signed)", H.make_jwt(hdr, self.claims(sub=None), k1), "malformed"),
            ("no exp (signed)", H.make_jwt(hdr, self.claims(exp=None), k1), "malformed"),
            ("exp a string (signed)", H.make_jwt(hdr, self.claims(exp=str(now + 600)), k1),
             "malformed"),
            ("grants not a list (signed)", H.make_jwt(hdr, self.claims(grants="join"), k1),
             "malformed"),
        ]
        # The good token is verified (and cached) first: a forgery derived from a
        # cached token must not be answered from the cache.
        self.assertValid(good, "the untouched token")
        failures = []
        for what, tok, want in cases:
            try:
                self.assertTokenError(tok, want, what)
            except (AssertionError, grpc.RpcError) as e:
                failures.append("%s: %s" % (what, e))
        self.assertFalse(failures, "\n".join(failures))
        self.assertValid(good, "the untouched token")

    def test_cached_token_expires(self):
        """A token verified (and cached) inside the leeway is refused once
        exp + leeway passes: the cache must not outlive the token."""
        now = time.time()
        exp = int(now) - self.LEEWAY_S + 3  # valid for ~3 s more
        tok = self.pyjwt(exp=exp, iat=exp - 600, nbf=exp - 600)
        self.assertValid(tok, "a token inside the leeway")

        def expired():
            r = self.verify(tok)
            return r.WhichOneof("result") == "error" and r.error == self.terr("expired")
        wait_for(expired, timeout=20, interval=0.2, what="the cached token to expire")
        self.assertGreaterEqual(time.time(), exp + self.LEEWAY_S - 1.5,
                                "refused before exp + leeway")

    def test_token_over_8kib(self):
        # Padded with a private claim nobody reads (name is capped at 128 bytes).
        big = self.pyjwt(pad="p" * 9000)
        self.assertGreater(len(big), 8192)
        try:
            resp = self.verify(big)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), SC.INVALID_ARGUMENT, e.details())
        else:
            self.assertEqual(resp.WhichOneof("result"), "error", "an over-8KiB token was accepted")
            self.assertEqual(resp.error, self.terr("malformed"), resp.detail)
        self.assertValid(self.pyjwt(), "a follow-up call")
        # Just under the limit with a valid signature still verifies.
        pad = 10
        while True:
            tok = self.pyjwt(pad="p" * pad, jti="fixed-jti")
            if len(tok) > 8192 - 80:
                break
            pad += 1000 if len(tok) < 7000 else 40
        if len(tok) <= 8192:
            self.assertValid(tok, "a %d-byte token" % len(tok))

    def test_empty_token_is_invalid_argument(self):
        self.assertRpcError(SC.INVALID_ARGUMENT, self.verify, "")


# ---- 3. API keys ---------------------------------------------------------------

class ApiKeysTest(AuthCase):

    def issue_with(self, md):
        req = self.pb.IssueTokenRequest(identity="alice", room_id="room-1",
                                        grants=[self.pb.GRANT_JOIN])
        return self.client.call("IssueToken", req, metadata=md)

    def test_missing_or_bad_credentials(self):
        b64 = lambda s: base64.b64encode(s.encode()).decode()  # noqa: E731
        cases = [
            ("no authorization", None),
            ("wrong secret", basic(ISSUER[0], "wrong-secret-0123456789")),
            ("unknown key id", basic("nobody", ISSUER[1])),
            ("empty secret", basic(ISSUER[0], "")),
            ("not base64", [("authorization", "Basic !!!not*base64!!!")]),
            ("no colon", [("authorization", "Basic " + b64(ISSUER[0] + ISSUER[1]))]),
            ("Basic and nothing", [("authorization", "Basic")]),
            ("Basic of a lone colon", [("authorization", "Basic " + b64(":"))]),
            ("other scheme", [("authorization", "Digest " + b64("%s:%s" % ISSUER[:2]))]),
            ("raw secret", [("authorization", ISSUER[1])]),
            ("hashed key: the digest as secret", basic(HASHED[0], HASHED[1])),
            ("secret with a trailing byte", basic(ISSUER[0], ISSUER[1] + "x")),
        ]
        for what, md in cases:
            with self.subTest(what):
                e = self.assertRpcError(SC.UNAUTHENTICATED, self.issue_with, md)
                self.assertNotIn(ISSUER[1], e.details() or "")

    def test_rights(self):
        self.assertRpcError(SC.PERMISSION_DENIED, self.issue_with, key_md(VERIFIER))
        tok = self.issue_with(key_md(MINTER))
        for k in (ISSUER, ADMIN):
            self.issue_with(key_md(k))
        self.issue_with(basic(HASHED[0], HASHED_PLAIN))
        self.assertValid(tok.access_token)
        self.assertTrue(self.verify(tok.access_token, key=ADMIN).HasField("claims"))
        self.assertTrue(self.verify(tok.access_token,
                                    key=(HASHED[0], HASHED_PLAIN)).HasField("claims"))
        self.assertRpcError(SC.PERMISSION_DENIED, self.verify, tok.access_token, MINTER)
        self.assertRpcError(SC.UNAUTHENTICATED, self.client.call, "VerifyToken",
                            self.pb.VerifyTokenRequest(access_token=tok.access_token))
        self.assertRpcError(SC.PERMISSION_DENIED, self.revoke, tok.token_id,
                            tok.expires_at_ms, key_md(VERIFIER))
        self.assertRpcError(SC.PERMISSION_DENIED, self.revoke, tok.token_id,
                            tok.expires_at_ms, key_md(MINTER))
        self.assertRpcError(SC.UNAUTHENTICATED, self.revoke, tok.token_id, tok.expires_at_ms, [])
        self.revoke(tok.token_id, tok.expires_at_ms, key_md(ADMIN))
        self.assertTokenError(tok.access_token, "revoked")

    def test_bearer_where_an_api_key_is_needed(self):
        # README: "a token without the grant is PERMISSION_DENIED"; proto:
        # PERMISSION_DENIED is "valid credentials, wrong kind or missing grant".
        tok = self.issue("alice", "room-1", ["join", "create", "list", "admin"]).access_token
        self.assertRpcError(SC.PERMISSION_DENIED, self.issue_with, bearer(tok))
        self.assertRpcError(SC.PERMISSION_DENIED, self.client.call, "VerifyToken",
                            self.pb.VerifyTokenRequest(access_token=tok), metadata=bearer(tok))
        # A bearer that is not even a valid token: either answer is acceptable.
        self.assertRpcError((SC.UNAUTHENTICATED, SC.PERMISSION_DENIED), self.issue_with,
                            bearer("not-a-token"))

    def test_revoke_with_bearer(self):
        victim = self.issue("victim", "room-1", ["join"])
        user = self.issue("user", "room-1", ["join", "create", "list"]).access_token
        self.assertRpcError(SC.PERMISSION_DENIED, self.revoke, victim.token_id,
                            victim.expires_at_ms, bearer(user))
        self.assertValid(victim.access_token)
        self.assertRpcError(SC.UNAUTHENTICATED, self.revoke, victim.token_id,
                            victim.expires_at_ms, bearer("garbage.garbage.garbage"))
        admin = self.issue("boss", "", ["admin"]).access_token
        self.revoke(victim.token_id, victim.expires_at_ms, bearer(admin))
        self.assertTokenError(victim.access_token, "revoked")


# ---- 4. IssueToken input ---------------------------------------------------------

class IssueInputTest(AuthCase):

    def test_invalid_arguments(self):
        cases = [
            ("empty identity", dict(identity="")),
            ("10 KiB identity", dict(identity="a" * 10240)),
            ("129-byte identity", dict(identity="a" * 129)),
            ("identity with a newline", dict(identity="ali\nce")),
            ("identity with NUL-free control char", dict(identity="ali\x01ce")),
            ("negative ttl", dict(ttl_ms=-1)),
            ("very negative ttl", dict(ttl_ms=-(2 ** 62))),
            ("unknown grant number", dict(grants=[99])),
            ("GRANT_UNSPECIFIED", dict(grants=[0])),
            ("GRANT_UNSPECIFIED beside join", dict(grants=["join", 0])),
            ("no grants", dict(grants=[])),
            ("join without a room", dict(room="", grants=["join"])),
            ("create without a room", dict(room="", grants=["create"])),
            ("room with a slash", dict(room="a/b")),
            ("room with a space", dict(room="a b")),
            ("room with non-ASCII", dict(room="r\u00e9union")),
            ("65-byte room", dict(room="r" * 65)),
            ("129-byte display name", dict(name="n" * 129)),
            ("display name with a control char", dict(name="Bad\x07Name")),
        ]
        failures = []
        for what, kw in cases:
            try:
                self.assertRpcError(SC.INVALID_ARGUMENT, self.issue, **kw)
            except AssertionError as e:
                failures.append("%s: %s" % (what, e))
        self.assertFalse(failures, "\n".join(failures))

    def test_limits_that_are_allowed(self):
        cases = [
            ("128-byte identity", dict(identity="i" * 128)),
            ("UTF-8 identity", dict(identity="Zo\u00eb \u00dcn\u00efcode@example.com")),
            ("64-byte room of every allowed char class",
             dict(room=("Az09._-" * 10)[:64])),
            ("128-byte display name", dict(name="n" * 128)),
            ("128-byte UTF-8 display name", dict(name="\u00e9" * 64)),
            ("no room with list only", dict(room="", grants=["list"])),
            ("no room with admin only", dict(room="", grants=["admin"])),
        ]
        failures = []
        for what, kw in cases:
            try:
                resp = self.issue(**kw)
                _, c, _ = H.jwt_parts(resp.access_token)
                if "identity" in kw and c["sub"] != kw["identity"]:
                    failures.append("%s: sub %r" % (what, c["sub"]))
                if "room" in kw and c.get("room", "") != kw["room"]:
                    failures.append("%s: room %r" % (what, c.get("room")))
                if "name" in kw and c.get("name", "") != kw["name"]:
                    failures.append("%s: name %r" % (what, c.get("name")))
                cl = self.assertValid(resp.access_token, what)
                if "identity" in kw and cl.identity != kw["identity"]:
                    failures.append("%s: VerifyToken identity %r" % (what, cl.identity))
            except (AssertionError, grpc.RpcError) as e:
                failures.append("%s: %s" % (what, e))
        self.assertFalse(failures, "\n".join(failures))

    def test_duplicate_grants_collapse(self):
        resp = self.issue(grants=["join", "join", "create", "join"])
        _, c, _ = H.jwt_parts(resp.access_token)
        self.assertEqual(sorted(c["grants"]), ["create", "join"])
        self.assertEqual(self.grant_names(self.assertValid(resp.access_token).grants),
                         ["create", "join"])

    def test_ttl_above_max_is_capped(self):
        # proto: "values above the server's maximum token lifetime are capped
        # (the response says the real expiry)".
        t0 = now_ms()
        resp = self.issue(ttl_ms=48 * 3600 * 1000)
        t1 = now_ms()
        self.assertGreaterEqual(resp.expires_at_ms, t0 + self.MAX_TOKEN_TTL_MS - 1000)
        self.assertLessEqual(resp.expires_at_ms, t1 + self.MAX_TOKEN_TTL_MS)
        _, c, _ = H.jwt_parts(resp.access_token)
        self.assertEqual(c["exp"] * 1000, resp.expires_at_ms)
        resp = self.issue(ttl_ms=2 ** 62)
        self.assertLessEqual(resp.expires_at_ms, now_ms() + self.MAX_TOKEN_TTL_MS)


# ---- 5. RefreshToken ----------------------------------------------------------------

class RefreshTest(AuthCase):

    def test_refresh_keeps_identity(self):
        old = self.issue("dave", "room-3", ["join", "create"], ttl_ms=120000, name="Dave")
        _, oc, _ = H.jwt_parts(old.access_token)
        t0 = now_ms()
        new = self.refresh(old.access_token)
        t1 = now_ms()
        self.assertNotEqual(new.token_id, old.token_id)
        self.assertNotEqual(new.access_token, old.access_token)
        _, nc, _ = H.jwt_parts(new.access_token)
        self.assertEqual(nc["jti"], new.token_id)
        for k in ("sub", "room", "name", "auth_time", "iss", "aud"):
            self.assertEqual(nc.get(k), oc.get(k), k)
        self.assertEqual(sorted(nc["grants"]), sorted(oc["grants"]))
        self.assertEqual(nc["exp"] * 1000, new.expires_at_ms)
        self.assertGreaterEqual(new.expires_at_ms, t0 + self.TOKEN_TTL_MS - 1000)
        self.assertLessEqual(new.expires_at_ms, t1 + self.TOKEN_TTL_MS)
        self.assertEqual(new.session_expires_at_ms, oc["auth_time"] * 1000 + self.MAX_SESSION_MS)
        self.assertEqual(jwt.get_unverified_header(new.access_token)["kid"], self.k1.kid)
        jwt.decode(new.access_token, key=self.k1.public_pem, algorithms=["ES256"],
                   audience="rtc", issuer="rtc")
        cl = self.assertValid(new.access_token)
        self.assertEqual(cl.session_started_at_ms, oc["auth_time"] * 1000)
        # The presented token is not revoked.
        self.assertValid(old.access_token, "the refreshed token")
        # A refresh of the refresh keeps the session start too.
        newer = self.refresh(new.access_token, ttl_ms=60000)
        _, c3, _ = H.jwt_parts(newer.access_token)
        self.assertEqual(c3["auth_time"], oc["auth_time"])
        self.assertLessEqual(newer.expires_at_ms, now_ms() + 60000)
        self.assertGreaterEqual(newer.expires_at_ms, t0 + 60000 - 1000)

    def test_refresh_of_foreign_token(self):
        now = int(time.time())
        tok = self.pyjwt(self.k2, sub="erin", room="room-e", grants=["join"], name="Erin",
                         auth_time=now - 3600)
        new = self.refresh(tok)
        _, c, _ = H.jwt_parts(new.access_token)
        self.assertEqual((c["sub"], c["room"], c["grants"], c["name"], c["auth_time"]),
                         ("erin", "room-e", ["join"], "Erin", now - 3600))
        self.assertEqual(jwt.get_unverified_header(new.access_token)["kid"], self.k1.kid,
                         "new tokens are signed with the signing key")

    def test_negative_ttl(self):
        tok = self.issue().access_token
        self.assertRpcError(SC.INVALID_ARGUMENT, self.refresh, tok, ttl_ms=-5)

    def test_ttl_above_max_is_capped(self):
        # proto: "The expiry is capped by the server's maximum token lifetime".
        tok = self.issue().access_token
        t0 = now_ms()
        new = self.refresh(tok, ttl_ms=72 * 3600 * 1000)
        self.assertLessEqual(new.expires_at_ms, now_ms() + self.MAX_TOKEN_TTL_MS)
        self.assertGreaterEqual(new.expires_at_ms, t0 + self.MAX_TOKEN_TTL_MS - 1000)

    def test_refresh_refused(self):
        req = self.pb.RefreshTokenRequest()
        self.assertRpcError(SC.UNAUTHENTICATED, self.client.call, "RefreshToken", req)
        self.assertRpcError(SC.UNAUTHENTICATED, self.refresh, "garbage")
        self.assertRpcError((SC.UNAUTHENTICATED, SC.PERMISSION_DENIED), self.client.call,
                            "RefreshToken", req, metadata=key_md(ISSUER))
        now = int(time.time())
        e = self.assertRpcError(SC.UNAUTHENTICATED, self.refresh,
                                self.pyjwt(exp=now - 300, iat=now - 900, nbf=now - 900))
        self.assertIn("expired", (e.details() or "").lower())
        e = self.assertRpcError(SC.UNAUTHENTICATED, self.refresh, self.pyjwt(self.k3))
        tok = self.issue()
        self.revoke(tok.token_id, tok.expires_at_ms)
        e = self.assertRpcError(SC.UNAUTHENTICATED, self.refresh, tok.access_token)
        self.assertIn("revoked", (e.details() or "").lower())

    def test_session_older_than_max_session(self):
        now = int(time.time())
        tok = self.pyjwt(auth_time=now - 2 * 86400)
        self.assertValid(tok, "a token whose session is old is still a valid token")
        e = self.assertRpcError(SC.UNAUTHENTICATED, self.refresh, tok)
        self.assertIn("session", (e.details() or "").lower())


class SessionCapTest(AuthCase):
    MAX_SESSION_MS = 5000

    def test_refresh_stops_at_max_session(self):
        t0 = now_ms()
        old = self.issue("frank", "room-f", ["join"])
        _, oc, _ = H.jwt_parts(old.access_token)
        sst = oc["auth_time"] * 1000
        new = self.refresh(old.access_token)
        if now_ms() < sst + 4000:  # not too slow a machine for the cap to be visible
            self.assertLessEqual(new.expires_at_ms, sst + self.MAX_SESSION_MS,
                                 "a refreshed token must not outlive the session")
        self.assertEqual(new.session_expires_at_ms, sst + self.MAX_SESSION_MS)
        _, nc, _ = H.jwt_parts(new.access_token)
        self.assertEqual(nc["auth_time"] * 1000, sst)
        last = {}

        def refused():
            try:
                self.refresh(old.access_token)
                last["ok_at"] = now_ms()
                return False
            except grpc.RpcError as e:
                last["err"] = e
                last["at"] = now_ms()
                return True
        wait_for(refused, timeout=20 + self.MAX_SESSION_MS / 1000.0, interval=0.1,
                 what="RefreshToken to stop after --max-session")
        e = last["err"]
        self.assertEqual(e.code(), SC.UNAUTHENTICATED, e.details())
        self.assertIn("session", (e.details() or "").lower())
        self.assertGreaterEqual(last["at"], sst + self.MAX_SESSION_MS - 1000,
                                "refused before the session cap (issued at %d)" % t0)
        # The token itself stays valid for VerifyToken (only refresh is capped).
        self.assertValid(old.access_token)


# ---- 6. revocation with a real Redis ---------------------------------------------------

class RevocationTest(AuthCase):

    def revoked_key(self, jti):
        return "rtc:auth:revoked:" + jti

    def test_revoke(self):
        tok = self.issue("gina", "room-g", ["join"], ttl_ms=600000)
        self.assertValid(tok.access_token)
        self.revoke(tok.token_id, tok.expires_at_ms)
        t = now_ms()
        self.assertTokenError(tok.access_token, "revoked")  # at once in rtc-auth itself
        key = self.revoked_key(tok.token_id)
        self.assertEqual(self.redis.cmd("EXISTS", key), 1, "no %s in Redis" % key)
        pttl = self.redis.cmd("PTTL", key)
        remaining = tok.expires_at_ms - t
        # The mark must last the token's remaining life; it may add the leeway.
        self.assertGreaterEqual(pttl, remaining - 5000, "PTTL %d, remaining %d" % (pttl, remaining))
        self.assertLessEqual(pttl, remaining + self.LEEWAY_S * 1000 + 2000,
                             "PTTL %d, remaining %d" % (pttl, remaining))
        e = self.assertRpcError(SC.UNAUTHENTICATED, self.refresh, tok.access_token)
        self.assertIn("revoked", (e.details() or "").lower())
        # Revoking twice is not an error.
        self.revoke(tok.token_id, tok.expires_at_ms)
        self.assertTokenError(tok.access_token, "revoked")

    def test_revoke_unknown_expiry(self):
        tok = self.issue()
        self.revoke(tok.token_id, 0)
        self.assertTokenError(tok.access_token, "revoked")
        pttl = self.redis.cmd("PTTL", self.revoked_key(tok.token_id))
        self.assertGreaterEqual(pttl, self.MAX_TOKEN_TTL_MS - 10000, pttl)
        self.assertLessEqual(pttl, self.MAX_TOKEN_TTL_MS + self.LEEWAY_S * 1000 + 2000, pttl)

    def test_revoke_in_the_past_is_a_noop(self):
        jti = "long-gone-" + H.b64url(os.urandom(6))
        self.revoke(jti, now_ms() - 3600 * 1000)
        self.assertEqual(self.redis.cmd("EXISTS", self.revoked_key(jti)), 0)

    def test_revoke_arguments(self):
        self.assertRpcError(SC.INVALID_ARGUMENT, self.revoke, "", now_ms() + 60000)
        self.assertRpcError(SC.INVALID_ARGUMENT, self.revoke, "j" * 65, now_ms() + 60000)
        self.revoke("j" * 64, now_ms() + 60000)  # "at most 64 bytes"
        self.assertEqual(self.redis.cmd("EXISTS", self.revoked_key("j" * 64)), 1)

    def test_revocation_by_another_replica_is_seen_within_the_bound(self):
        tok = self.issue("hank", "room-h", ["join"])
        self.assertValid(tok.access_token)  # now cached
        self.assertValid(tok.access_token)
        self.redis.cmd("SET", self.revoked_key(tok.token_id), "1", "PX", 600000)
        t = time.monotonic()

        def refused():
            r = self.verify(tok.access_token)
            return r.WhichOneof("result") == "error" and r.error == self.terr("revoked")
        wait_for(refused, timeout=20, interval=0.1,
                 what="a Redis revocation to reach the cached token")
        took = time.monotonic() - t
        H.log("revocation seen after %.2fs (--revocation-check 1s)" % took)
        self.assertLess(took, 10.0)

    def test_concurrent_revocations(self):
        toks = [self.issue("many%d" % i, "room-m", ["join"]) for i in range(40)]
        for t in toks:
            self.assertValid(t.access_token)
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda t: self.revoke(t.token_id, t.expires_at_ms), toks))
        for t in toks:
            self.assertTokenError(t.access_token, "revoked")
            self.assertEqual(self.redis.cmd("EXISTS", self.revoked_key(t.token_id)), 1)

    def test_revoked_pyjwt_token(self):
        tok = self.pyjwt()
        _, c, _ = H.jwt_parts(tok)
        self.revoke(c["jti"], c["exp"] * 1000)
        self.assertTokenError(tok, "revoked")


# ---- 7. Redis failure ------------------------------------------------------------------

class RedisOutageTest(AuthCase):

    def new_token(self):
        return self.pyjwt(sub="out-" + H.b64url(os.urandom(4)))

    def verify_code(self, tok):
        try:
            r = self.verify(tok)
        except grpc.RpcError as e:
            return e.code()
        return "claims" if r.WhichOneof("result") == "claims" else self.terr_name(r.error)

    def health(self, svc):
        return self.client.health(svc)

    def test_outage_and_recovery(self):
        hp = self.hpb.HealthCheckResponse
        wait_for(lambda: self.auth.http_get("/readyz")[0] == 200, what="/readyz 200 at start")
        self.assertEqual(self.health("rtc.auth.v1.Auth"), hp.SERVING)
        cached = self.issue("ivy", "room-i", ["join"]).access_token
        self.assertValid(cached)
        self.assertValid(self.new_token())

        self.assertEqual(self.redis.proc.stop(), 0, "redis-server did not exit cleanly")

        # A token never seen: its revocation check is due at once.
        wait_for(lambda: self.verify_code(self.new_token()) == SC.UNAVAILABLE,
                 what="VerifyToken of a new token to answer UNAVAILABLE")
        for _ in range(3):
            self.assertEqual(self.verify_code(self.new_token()), SC.UNAVAILABLE,
                             "a new token must never be valid while Redis is down")
        # A cached token fails closed once its recheck (1 s) is due.
        wait_for(lambda: self.verify_code(cached) == SC.UNAVAILABLE,
                 what="VerifyToken of a cached token to answer UNAVAILABLE")
        tok = self.issue()
        wait_for(lambda: self.assertRpcError(SC.UNAVAILABLE, self.revoke, tok.token_id,
                                             tok.expires_at_ms) is not None,
                 what="RevokeToken to answer UNAVAILABLE")
        self.assertRpcError(SC.UNAVAILABLE, self.refresh, self.new_token())
        wait_for(lambda: self.auth.http_get("/readyz")[0] == 503, what="/readyz 503")
        wait_for(lambda: self.health("rtc.auth.v1.Auth") == hp.NOT_SERVING,
                 what="health of rtc.auth.v1.Auth NOT_SERVING")
        self.assertEqual(self.health(""), hp.SERVING, "overall health must stay SERVING")
        self.assertEqual(self.auth.http_get("/healthz")[0], 200)
        self.assertEqual(len(self.signing_keys().keys), 2, "GetSigningKeys needs no Redis")
        # Garbage needs no revocation check: still answered.
        self.assertEqual(self.verify_code("garbage"), "TOKEN_ERROR_MALFORMED")

        self.redis.start()  # a restart keeps the port
        wait_for(lambda: self.auth.http_get("/readyz")[0] == 200, timeout=30,
                 what="/readyz 200 after Redis is back")
        wait_for(lambda: self.health("rtc.auth.v1.Auth") == hp.SERVING, timeout=30,
                 what="health SERVING after Redis is back")
        wait_for(lambda: self.verify_code(self.new_token()) == "claims", timeout=30,
                 what="VerifyToken to work again")
        self.assertEqual(self.verify_code(cached), "claims")
        self.revoke(tok.token_id, tok.expires_at_ms)
        self.assertTokenError(tok.access_token, "revoked")
        self.assertEqual(self.redis.cmd("EXISTS", "rtc:auth:revoked:" + tok.token_id), 1)
        self.assertTrue(self.auth.alive())


class RedisStallTest(AuthCase):
    """Calls that wait on a stalled Redis and are cancelled by their deadline
    (the caller goes away) must not take the server down, and those that wait
    must end UNAVAILABLE or succeed, never hang or crash."""

    def stall(self, seconds):
        t = concurrent.futures.ThreadPoolExecutor(1)
        self.addCleanup(t.shutdown)
        return t.submit(self.redis.cmd, "DEBUG", "SLEEP", str(seconds), timeout=seconds + 30)

    def test_cancelled_while_waiting_for_redis(self):
        self.assertValid(self.pyjwt())
        fut = self.stall(3)
        # DEBUG SLEEP has started once a PING from another connection stalls.
        wait_for(lambda: self._ping_stalls(), what="Redis to stall")
        short, waited = [], []

        def call(i):
            tok = self.pyjwt(sub="stall%d" % i)
            try:
                if i % 2:
                    self.client.call("VerifyToken", self.pb.VerifyTokenRequest(access_token=tok),
                                     metadata=key_md(VERIFIER), timeout=0.3)
                else:
                    self.client.call("RevokeToken", self.pb.RevokeTokenRequest(
                        token_id="stall%d" % i, expires_at_ms=now_ms() + 60000),
                        metadata=key_md(ISSUER), timeout=0.3)
                short.append("ok")
            except grpc.RpcError as e:
                short.append(e.code())

        def patient(i):
            tok = self.pyjwt(sub="patient%d" % i)
            try:
                r = self.verify(tok)
                waited.append("claims" if r.HasField("claims") else self.terr_name(r.error))
            except grpc.RpcError as e:
                waited.append(e.code())
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            list(ex.map(call, range(40)))
            list(ex.map(patient, range(8)))
        fut.result()
        H.log("during the stall: deadline-bound calls %s; patient calls %s" % (
            dict(collections.Counter(getattr(c, "name", c) for c in short)),
            dict(collections.Counter(getattr(c, "name", c) for c in waited))))
        for c in short:
            self.assertIn(c, (SC.DEADLINE_EXCEEDED, SC.UNAVAILABLE, SC.CANCELLED, "ok"), short)
        for c in waited:
            self.assertIn(c, ("claims", SC.UNAVAILABLE), waited)
        self.assertTrue(self.auth.alive(), self.auth.proc.log_tail())
        wait_for(lambda: self.verify(self.pyjwt()).HasField("claims"),
                 what="VerifyToken to work after the stall")
        tok = self.issue()
        self.revoke(tok.token_id, tok.expires_at_ms)
        self.assertTokenError(tok.access_token, "revoked")

    def _ping_stalls(self):
        try:
            self.redis.cmd("PING", timeout=0.2)
            return False
        except (OSError, ConnectionError):
            return True


class KeyRotationTest(AuthCase):
    """Rotation step 2 of the README: the new key signs, the old one (given as
    a private PEM) only verifies."""

    @classmethod
    def auth_args(cls):
        a = super().auth_args()
        a[a.index("--signing-key") + 1] = cls.k2.path
        a[a.index("--verify-keys") + 1] = cls.k1.path
        return a

    def test_rotation(self):
        keys = {k.key_id: k for k in self.signing_keys().keys}
        self.assertEqual(set(keys), {self.k1.kid, self.k2.kid})
        self.assertTrue(keys[self.k2.kid].signing)
        self.assertFalse(keys[self.k1.kid].signing)
        self.assertNotIn("PRIVATE", keys[self.k1.kid].public_key_pem)
        tok = self.issue().access_token
        self.assertEqual(jwt.get_unverified_header(tok)["kid"], self.k2.kid)
        old = self.pyjwt(self.k1)
        self.assertEqual(self.assertValid(old, "a token of the old key").key_id, self.k1.kid)
        new = self.refresh(old).access_token
        self.assertEqual(jwt.get_unverified_header(new)["kid"], self.k2.kid)


class RedisLateTest(AuthCase):
    """rtc-auth started while Redis is not there yet."""
    START_REDIS = False

    def test_not_ready_until_redis_appears(self):
        hp = self.hpb.HealthCheckResponse
        wait_for(lambda: self.auth.http_get("/readyz")[0] == 503,
                 what="/readyz 503 while Redis has never been reachable")
        wait_for(lambda: self.client.health("rtc.auth.v1.Auth") == hp.NOT_SERVING,
                 what="rtc.auth.v1.Auth NOT_SERVING while Redis is unreachable")
        self.assertEqual(self.client.health(""), hp.SERVING)
        self.assertRpcError(SC.UNAVAILABLE, self.verify, self.pyjwt())
        self.redis.start(keep_port=True)  # the port rtc-auth was given
        wait_for(lambda: self.auth.http_get("/readyz")[0] == 200, timeout=30,
                 what="/readyz 200 once Redis is up")
        wait_for(lambda: self.client.health("rtc.auth.v1.Auth") == hp.SERVING, timeout=30,
                 what="SERVING once Redis is up")
        wait_for(lambda: self.verify(self.pyjwt()).HasField("claims"), timeout=30,
                 what="VerifyToken once Redis is up")


# ---- 8. DevLogin ----------------------------------------------------------------------

class DevModeTest(AuthCase):
    SIGNING_KEY = False
    AUTH_ARGS = ("--dev", "--stun-urls", "stun:127.0.0.1:3478")

    @classmethod
    def auth_args(cls):
        a = super().auth_args()
        i = a.index("--api-keys-file")
        del a[i:i + 2]
        # The inline form of the API keys this time.
        return a + ["--api-keys", "%s %s %s;%s %s %s" % (VERIFIER + ISSUER)]

    def dev_login(self, name="Guest", room="lobby"):
        return self.client.call("DevLogin", self.pb.DevLoginRequest(display_name=name,
                                                                    room_id=room))

    def test_dev_login(self):
        keys = self.signing_keys().keys
        self.assertEqual(len(keys), 1, "only the generated key")
        self.assertTrue(keys[0].signing)
        self.assertNotIn(keys[0].key_id, (self.k1.kid, self.k2.kid))
        t0 = now_ms()
        a = self.dev_login("Guest One", "lobby")
        b = self.dev_login("Guest Two", "lobby")
        self.assertTrue(a.identity)
        self.assertNotEqual(a.identity, b.identity, "identity must be unique per call")
        self.assertNotEqual(a.token_id, b.token_id)
        c = jwt.decode(a.access_token, key=keys[0].public_key_pem, algorithms=["ES256"],
                       audience="rtc", issuer="rtc")
        self.assertEqual(c["sub"], a.identity)
        self.assertEqual(c["room"], "lobby")
        self.assertEqual(sorted(c["grants"]), ["create", "join"])
        self.assertEqual(c["name"], "Guest One")
        self.assertEqual(c["jti"], a.token_id)
        self.assertEqual(c["exp"] * 1000, a.expires_at_ms)
        self.assertGreater(a.expires_at_ms, t0)
        self.assertEqual(jwt.get_unverified_header(a.access_token)["kid"], keys[0].key_id)
        cl = self.assertValid(a.access_token)
        self.assertEqual(cl.identity, a.identity)
        self.assertEqual(self.grant_names(cl.grants), ["create", "join"])
        # The dev token works as a bearer.
        self.refresh(a.access_token)
        logs = self.auth.proc.log_text().lower()
        self.assertTrue(re.search(r"generat|ephemeral|in-memory", logs),
                        "README: rtc-auth logs that it generated a key")

    def test_dev_login_bad_input(self):
        for what, name, room in [("empty room", "Guest", ""), ("room with a space", "G", "a b"),
                                 ("65-byte room", "G", "r" * 65),
                                 ("empty display name", "", "lobby"),
                                 ("129-byte display name", "n" * 129, "lobby"),
                                 ("control char in name", "a\x02b", "lobby")]:
            with self.subTest(what):
                self.assertRpcError(SC.INVALID_ARGUMENT, self.dev_login, name, room)

    def test_ice_servers_without_turn_secret(self):
        tok = self.dev_login().access_token
        resp = self.client.call("GetIceServers", self.pb.GetIceServersRequest(),
                                metadata=bearer(tok))
        self.assertEqual(resp.expires_at_ms, 0)
        self.assertTrue(resp.ice_servers)
        for s in resp.ice_servers:
            self.assertEqual((s.username, s.credential, s.expires_at_ms), ("", "", 0))
            for u in s.urls:
                self.assertTrue(u.startswith("stun:"), u)


class StartupTest(unittest.TestCase):
    """Configurations rtc-auth must refuse (exit 2 like a bad flag, say why)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="rtc-auth-start-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.key = H.Key(self.tmp, "k")
        self.redis_url = "redis://127.0.0.1:%d" % H.free_port()

    def refused(self, args, mention):
        rc, text = H.run_expect_exit(auth_exe(), ["--redis", self.redis_url] + args,
                                     os.path.join(self.tmp, "log-%d" % time.monotonic_ns()))
        self.assertEqual(rc, 2, text)
        self.assertNotIn('"msg":"listening"', text)
        self.assertIn(mention, text.lower(), text)

    def test_no_signing_key_without_dev(self):
        self.refused([], "signing-key")

    def test_bad_signing_key(self):
        bad = os.path.join(self.tmp, "bad.pem")
        with open(bad, "w") as f:
            f.write("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
        self.refused(["--signing-key", bad], "key")

    def test_public_key_as_signing_key(self):
        self.refused(["--signing-key", self.key.pub_path], "key")

    def test_bad_api_keys(self):
        self.refused(["--signing-key", self.key.path, "--api-keys", "k1 short-but-ok-secret-123 fly"],
                     "key")


# ---- 10. hostile input ---------------------------------------------------------------

class HostileTest(AuthCase):

    def follow_up(self):
        self.assertValid(self.issue().access_token, "a follow-up call")
        self.assertTrue(self.auth.alive())

    def test_two_mib_request(self):
        self.assertRpcError(SC.RESOURCE_EXHAUSTED, self.verify, "x" * (2 * 1024 * 1024))
        self.assertRpcError(SC.RESOURCE_EXHAUSTED, self.issue, identity="y" * (2 * 1024 * 1024))
        self.follow_up()

    def test_large_token_under_max_message(self):
        try:
            r = self.verify("a." * 200000 + "b")
            self.assertEqual(r.error, self.terr("malformed"), r)
        except grpc.RpcError as e:
            self.assertEqual(e.code(), SC.INVALID_ARGUMENT, e.details())
        self.follow_up()

    def test_invalid_protobuf(self):
        md = key_md(ISSUER)
        bad = [
            ("random bytes", b"\xff\xff\xff\xff\xff"),
            ("truncated length", b"\x0a\x64abc"),
            ("varint too long", b"\x20" + b"\xff" * 11),
            ("invalid UTF-8 in identity", b"\x0a\x02\xff\xfe\x12\x04room\x18\x01"),
            ("group wire type", b"\x0b\x0c"),
        ]
        for what, data in bad:
            with self.subTest(what):
                self.assertRpcError((SC.INTERNAL, SC.INVALID_ARGUMENT), self.client.raw,
                                    "IssueToken", data, metadata=md)
                if "UTF-8" in what:
                    # protobuf-c does not check UTF-8: a refusal of the call or
                    # a MALFORMED verdict on the bytes are both clean.
                    try:
                        raw = self.client.raw("VerifyToken", data, metadata=key_md(VERIFIER))
                    except grpc.RpcError as e:
                        self.assertIn(e.code(), (SC.INTERNAL, SC.INVALID_ARGUMENT), e.details())
                    else:
                        r = self.pb.VerifyTokenResponse.FromString(raw)
                        self.assertEqual(r.error, self.terr("malformed"), r)
                    continue
                self.assertRpcError((SC.INTERNAL, SC.INVALID_ARGUMENT), self.client.raw,
                                    "VerifyToken", data, metadata=key_md(VERIFIER))
        self.follow_up()

    def test_hostile_authorization(self):
        cases = [bearer("x" * 7000), [("authorization", "Basic " + "A" * 7000)],
                 [("authorization", "Bearer")], [("authorization", "bearer " + "a.b.c")],
                 [("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")]]
        for md in cases:
            self.assertRpcError((SC.UNAUTHENTICATED, SC.RESOURCE_EXHAUSTED), self.client.call,
                                "RefreshToken", self.pb.RefreshTokenRequest(), metadata=md)
        # A field value ending in whitespace is not valid HTTP/2 (RFC 9113
        # 8.2.1): the stream may be reset; the server must go on serving.
        for md in ([("authorization", "Bearer  ")], [("authorization", "Basic ")]):
            self.assertRaises(grpc.RpcError, self.client.call, "RefreshToken",
                              self.pb.RefreshTokenRequest(), metadata=md)
        self.follow_up()

    def test_concurrent_calls(self):
        def one(i):
            r = self.issue("user%d" % i, "room-c", ["join"])
            v = self.verify(r.access_token)
            return r.token_id, v.claims.identity
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            results = list(ex.map(one, range(64)))
        self.assertEqual(len({jti for jti, _ in results}), 64)
        self.assertEqual(sorted(i for _, i in results), sorted("user%d" % i for i in range(64)))
        self.follow_up()


# ---- 9. TURN with a real coturn --------------------------------------------------------

class TurnTest(AuthCase):
    SUITE = "turn"
    TURN_TTL_S = 600

    @classmethod
    def extra_setup(cls):
        cls.coturn = H.Coturn(cls.tmp, TURN_SECRET)
        cls.addClassCleanup(cls.coturn.stop)
        cls.coturn.start()
        cls.procs.append(("turnserver", cls.coturn))
        p = cls.coturn.port
        cls.turn_urls = ["turn:127.0.0.1:%d?transport=udp" % p,
                         "turn:127.0.0.1:%d?transport=tcp" % p]
        cls.stun_urls = ["stun:127.0.0.1:%d" % p]

    @classmethod
    def auth_args(cls):
        return super().auth_args() + [
            "--turn-secret", TURN_SECRET, "--turn-urls", ",".join(cls.turn_urls),
            "--stun-urls", ",".join(cls.stun_urls), "--turn-ttl", "%ds" % cls.TURN_TTL_S]

    def ice(self, token=None, ttl_ms=0, md=None):
        resp = self.client.call("GetIceServers", self.pb.GetIceServersRequest(ttl_ms=ttl_ms),
                                metadata=bearer(token) if md is None else md)
        for s in resp.ice_servers:
            if s.credential:
                self.secrets.append(s.credential)
        return resp

    def turn_entries(self, resp):
        return [s for s in resp.ice_servers if any(u.startswith("turn") for u in s.urls)]

    def test_ice_servers(self):
        tok = self.issue("tina", "room-t", ["join"]).access_token
        t0 = now_ms()
        resp = self.ice(tok)
        t1 = now_ms()
        stun = [s for s in resp.ice_servers if all(u.startswith("stun:") for u in s.urls)]
        turn = self.turn_entries(resp)
        self.assertEqual([u for s in stun for u in s.urls], self.stun_urls)
        for s in stun:
            self.assertEqual((s.username, s.credential, s.expires_at_ms), ("", "", 0))
        self.assertEqual(sorted(u for s in turn for u in s.urls), sorted(self.turn_urls))
        for s in turn:
            exp_s, _, ident = s.username.partition(":")
            self.assertEqual(ident, "tina")
            exp_s = int(exp_s)
            self.assertEqual(s.expires_at_ms, exp_s * 1000)
            self.assertGreaterEqual(exp_s, (t0 // 1000) + self.TURN_TTL_S - 1)
            self.assertLessEqual(exp_s, (t1 // 1000) + self.TURN_TTL_S + 1)
            self.assertEqual(s.credential, H.turn_credential(TURN_SECRET, s.username))
        self.assertEqual(resp.expires_at_ms, min(s.expires_at_ms for s in turn))

    def test_ttl(self):
        tok = self.issue("tom", "room-t", ["join"]).access_token
        t0 = now_ms()
        resp = self.ice(tok, ttl_ms=60000)
        for s in self.turn_entries(resp):
            self.assertGreaterEqual(s.expires_at_ms, t0 + 60000 - 1000)
            self.assertLessEqual(s.expires_at_ms, now_ms() + 60000)
        self.assertRpcError(SC.INVALID_ARGUMENT, self.ice, tok, ttl_ms=-1)

    def test_ttl_above_max_is_capped(self):
        # proto: "values above the server's maximum are capped".
        tok = self.issue("tom", "room-t", ["join"]).access_token
        t0 = now_ms()
        resp = self.ice(tok, ttl_ms=24 * 3600 * 1000)
        turn = self.turn_entries(resp)
        self.assertTrue(turn)
        for s in turn:
            self.assertLessEqual(s.expires_at_ms, now_ms() + self.TURN_TTL_S * 1000)
            self.assertGreaterEqual(s.expires_at_ms, t0 + self.TURN_TTL_S * 1000 - 1000)

    def test_callers(self):
        self.assertRpcError(SC.UNAUTHENTICATED, self.ice, md=[])
        self.assertRpcError(SC.UNAUTHENTICATED, self.ice, "garbage")
        now = int(time.time())
        self.assertRpcError(SC.UNAUTHENTICATED, self.ice,
                            self.pyjwt(exp=now - 300, iat=now - 900, nbf=now - 900))
        tok = self.issue()
        self.revoke(tok.token_id, tok.expires_at_ms)
        self.assertRpcError(SC.UNAUTHENTICATED, self.ice, tok.access_token)
        self.assertRpcError((SC.PERMISSION_DENIED, SC.UNAUTHENTICATED), self.ice,
                            md=key_md(VERIFIER))

    def test_api_key_with_issue(self):
        # README: GetIceServers needs "a valid bearer token (or an API key with issue)".
        resp = self.ice(md=key_md(MINTER))
        turn = self.turn_entries(resp)
        self.assertTrue(turn, resp)
        for s in turn:
            self.assertEqual(s.credential, H.turn_credential(TURN_SECRET, s.username))

    def test_coturn_accepts_issued_credentials(self):
        tok = self.issue("uma", "room-t", ["join"]).access_token
        turn = self.turn_entries(self.ice(tok))[0]
        res = H.turn_allocate(self.coturn.port, turn.username, turn.credential)
        self.assertEqual(res[0], "ok", "coturn refused the issued credentials: %s" % (res,))
        for tcp in (False, True):
            rc, out = H.uclient(self.coturn.port, turn.username, turn.credential, tcp=tcp)
            m = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$", out, re.M)
            self.assertEqual(rc, 0, "turnutils_uclient (%s) failed:\n%s" % (
                "tcp" if tcp else "udp", out[-3000:]))
            self.assertNotIn("Cannot complete Allocation", out)
            self.assertTrue(m, out[-3000:])
            sent, recv = map(int, m[-1])
            self.assertGreater(sent, 0, out[-3000:])
            self.assertGreater(recv, 0, "no message came back through the relay:\n" + out[-3000:])

    def assertCoturnRefuses(self, username, credential, what):
        res = H.turn_allocate(self.coturn.port, username, credential)
        self.assertEqual(res[:2], ("error", 401), "%s: coturn answered %s" % (what, res))
        rc, out = H.uclient(self.coturn.port, username, credential)
        self.assertNotEqual(rc, 0, "%s: turnutils_uclient succeeded:\n%s" % (what, out[-3000:]))
        self.assertIn("Cannot complete Allocation", out)

    def test_coturn_refuses_wrong_credential(self):
        tok = self.issue("vic", "room-t", ["join"]).access_token
        turn = self.turn_entries(self.ice(tok))[0]
        self.assertCoturnRefuses(turn.username, H.turn_credential("not-the-secret",
                                                                   turn.username),
                                 "wrong secret")
        self.assertCoturnRefuses(turn.username.replace(":vic", ":mallory"), turn.credential,
                                 "credential of another username")

    def test_coturn_refuses_expired_username(self):
        username = "%d:walt" % (int(time.time()) - 60)
        self.assertCoturnRefuses(username, H.turn_credential(TURN_SECRET, username),
                                 "expired username")
        # The same with a fresh expiry is accepted: the secret itself is right.
        username = "%d:walt" % (int(time.time()) + 300)
        res = H.turn_allocate(self.coturn.port, username, H.turn_credential(TURN_SECRET,
                                                                             username))
        self.assertEqual(res[0], "ok", res)


SUITES = {
    "auth": [IssueAndKeysTest, ForeignTokensTest, ApiKeysTest, IssueInputTest, RefreshTest,
             SessionCapTest, RevocationTest, RedisOutageTest, RedisStallTest, RedisLateTest,
             KeyRotationTest, DevModeTest, StartupTest, HostileTest],
    "turn": [TurnTest],
}
SUITES["all"] = SUITES["auth"] + SUITES["turn"]


def main(argv):
    return H.run_main(argv, sys.modules[__name__], SUITES)


if __name__ == "__main__":
    sys.exit(main(sys.argv))

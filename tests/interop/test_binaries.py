"""rtc-auth and rtc-signaling answer health to grpcio and grpc-js,
UNIMPLEMENTED for methods they do not have, and drain on SIGTERM (exit 0).

rtc-auth runs with --dev (an ephemeral key), both with a Redis address
where nothing listens: the process is alive ("" SERVING) but its service is
NOT_SERVING until Redis answers, and SIGTERM still exits cleanly while the
Redis link keeps retrying.

Usage: /usr/bin/python3 test_binaries.py <bin dir> <repo root>
"""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

import grpc

BIN, ROOT = sys.argv[1], sys.argv[2]
IDENT = (lambda x: x)


def start(name, *extra):
    p = subprocess.Popen([os.path.join(BIN, name), "--listen", "127.0.0.1:0",
                          "--admin", "127.0.0.1:0", *extra], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        rec = json.loads(line)
        if rec.get("msg") == "listening":
            return p, int(rec["grpc_port"])
    p.kill()
    raise AssertionError(f"{name} did not start")


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Binaries(unittest.TestCase):
    def check(self, name, service, unimplemented, service_status=b"\x08\x01", extra=()):
        p, port = start(name, *extra)
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                check = ch.unary_unary("/grpc.health.v1.Health/Check", IDENT, IDENT)
                self.assertEqual(check(b"", timeout=10), b"\x08\x01")  # SERVING
                req = b"\n" + bytes([len(service)]) + service.encode()
                self.assertEqual(check(req, timeout=10), service_status)
                with self.assertRaises(grpc.RpcError) as cm:
                    ch.unary_unary(unimplemented, IDENT, IDENT)(b"", timeout=10)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            js = subprocess.run(
                ["node", "-e", JS, str(port), os.path.join(ROOT, "proto")],
                cwd=os.path.join(ROOT, "tests"), capture_output=True, text=True, timeout=60)
            self.assertEqual(js.returncode, 0, js.stderr)
            self.assertEqual(js.stdout.strip(), "SERVING")
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(timeout=30), 0)
            p.stderr.close()

    def test_auth(self):
        self.check("rtc-auth", "rtc.auth.v1.Auth", "/rtc.auth.v1.Auth/NoSuchMethod",
                   service_status=b"\x08\x02",  # NOT_SERVING: no Redis
                   extra=("--dev", "--redis", f"redis://127.0.0.1:{closed_port()}"))

    def test_signaling(self):
        self.check("rtc-signaling", "rtc.signaling.v1.Signaling",
                   "/rtc.signaling.v1.SignalingAdmin/NoSuchMethod",
                   service_status=b"\x08\x02",  # NOT_SERVING: no Redis
                   extra=("--redis", f"redis://127.0.0.1:{closed_port()}",
                          "--auth", f"127.0.0.1:{closed_port()}"))


JS = r"""
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const [port, protoDir] = process.argv.slice(1);
const def = loader.loadSync('grpc/health/v1/health.proto', {includeDirs: [protoDir], enums: String});
const Health = grpc.loadPackageDefinition(def).grpc.health.v1.Health;
const c = new Health('127.0.0.1:' + port, grpc.credentials.createInsecure());
c.Check({service: ''}, {deadline: Date.now() + 10000}, (err, res) => {
  if (err) { console.error(err); process.exit(1); }
  console.log(res.status); c.close();
});
"""

if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)

// Interop: rtc's gRPC server against npm @grpc/grpc-js + @grpc/proto-loader.
//
//   RTC_TESTSERVER=build/bin/rtc-grpc-testserver RTC_REPO_ROOT=. node tests/interop/test_grpcjs.js
//
// The modules come from tests/node_modules (`cd tests && npm ci`); when they
// are missing the test fails with that instruction rather than skipping.
'use strict';

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { after, before, describe, test } = require('node:test');

const REPO = process.env.RTC_REPO_ROOT || path.resolve(__dirname, '..', '..');
const NODE_MODULES = path.join(REPO, 'tests', 'node_modules');

function need(name) {
  let resolved;
  try {
    resolved = require.resolve(name, { paths: [NODE_MODULES] });
  } catch (e) {
    throw new Error(`${name} is not installed in ${NODE_MODULES}: run "cd tests && npm ci" ` +
      `(${e.message.split('\n')[0]})`);
  }
  return require(resolved);
}

const grpc = need('@grpc/grpc-js');
const protoLoader = need('@grpc/proto-loader');

const TESTSERVER = process.env.RTC_TESTSERVER;
if (!TESTSERVER || !fs.existsSync(TESTSERVER)) {
  throw new Error(`RTC_TESTSERVER=${TESTSERVER} is not set or missing ` +
    '(run through ctest, or point it at build/bin/rtc-grpc-testserver)');
}

const MIB = 1024 * 1024;
const WAIT_MS = 20000;
const TEST_TIMEOUT = 180000;
const { status: Status } = grpc;
const SERVING = 1;
const NOT_SERVING = 2;
const SERVICE_UNKNOWN = 3;
const TRICKY_MESSAGE = 'héllo wörld ✓ 100% done\nline 2\r\n%41%zz end %';

const packageDefinition = protoLoader.loadSync(
  ['rtc/test/v1/test.proto', 'grpc/health/v1/health.proto'],
  {
    includeDirs: [path.join(REPO, 'tests', 'proto'), path.join(REPO, 'proto')],
    keepCase: true,
    longs: Number,
    enums: Number,
    defaults: true,
  });
const pkg = grpc.loadPackageDefinition(packageDefinition);
const TestClient = pkg.rtc.test.v1.Test;
const HealthClient = pkg.grpc.health.v1.Health;

const CLIENT_OPTIONS = {
  'grpc.enable_http_proxy': 0,
  'grpc.max_receive_message_length': 64 * MIB,
  'grpc.max_send_message_length': 64 * MIB,
};

// ---- the server process ---------------------------------------------------

const running = new Set();
process.on('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

class TestServer {
  static start(...args) {
    return new Promise((resolve, reject) => {
      const proc = spawn(TESTSERVER, ['--listen', '127.0.0.1:0', ...args],
        { stdio: ['ignore', 'pipe', 'pipe'] });
      running.add(proc);
      const server = new TestServer(proc);
      let out = '';
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`testserver printed no PORT line in 30s; log:\n${server.log}`));
      }, 30000);
      proc.stdout.on('data', (chunk) => {
        out += chunk.toString();
        const m = /^PORT (\d+)\n/.exec(out);
        if (m && server.port === undefined) {
          clearTimeout(timer);
          server.port = Number(m[1]);
          server.addr = `127.0.0.1:${server.port}`;
          resolve(server);
        }
      });
      proc.on('exit', (code, signal) => {
        running.delete(proc);
        server.exitCode = code;
        server.exitSignal = signal;
        clearTimeout(timer);
        if (server.port === undefined) {
          reject(new Error(`testserver exited (${code ?? signal}) before listening; ` +
            `log:\n${server.log}`));
        }
      });
    });
  }

  constructor(proc) {
    this.proc = proc;
    this.log = '';
    this.exited = new Promise((resolve) => proc.on('exit', (code) => resolve(code)));
    proc.stderr.on('data', (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-20000);
    });
  }

  get alive() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  terminate() {
    this.proc.kill('SIGTERM');
  }

  async waitExit(ms = WAIT_MS) {
    return withTimeout(this.exited, ms, `testserver exit after ${ms} ms`);
  }

  // SIGTERM, and require exit 0 (so sanitizer reports and shutdown hangs
  // fail the test); SIGKILL if it does not exit in time.
  async stop() {
    if (this.alive) {
      this.proc.kill('SIGTERM');
      try {
        await this.waitExit();
      } catch (e) {
        this.proc.kill('SIGKILL');
        await this.exited;
        throw new Error(`testserver ignored SIGTERM; log:\n${this.log}`);
      }
    }
    const code = await this.exited;
    if (code !== 0) {
      throw new Error(`testserver exited with ${code ?? this.proc.signalCode}; log:\n${this.log}`);
    }
  }
}

// ---- helpers ----------------------------------------------------------------

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function waitFor(predicate, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await predicate();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function deadlineIn(ms) {
  return new Date(Date.now() + ms);
}

function unary(client, method, req, { timeoutMs = WAIT_MS, metadata } = {}) {
  return new Promise((resolve, reject) => {
    const md = metadata || new grpc.Metadata();
    const out = {};
    const call = client[method](req, md, { deadline: deadlineIn(timeoutMs) }, (err, resp) => {
      if (err) reject(err);
      else resolve(Object.assign(out, { resp }));
    });
    call.on('metadata', (m) => { out.headers = m; });
    call.on('status', (s) => { out.status = s; });
  });
}

// Resolves with every message once the stream ends OK; rejects on error.
function collect(call) {
  return new Promise((resolve, reject) => {
    const items = [];
    call.on('data', (m) => items.push(m));
    call.on('error', reject);
    call.on('end', () => resolve(items));
  });
}

async function expectCode(promise, code) {
  await assert.rejects(promise, (err) => {
    assert.equal(err.code, code, `expected ${Status[code]}, got ${Status[err.code]}: ` +
      `${err.details}`);
    return true;
  });
}

function makeClients(server) {
  const test = new TestClient(server.addr, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
  const health = new HealthClient(server.addr, grpc.credentials.createInsecure(), CLIENT_OPTIONS);
  const stats = async () => (await unary(test, 'Stats', {})).resp;
  const waitStats = async (pred, what) => {
    let last;
    try {
      return await waitFor(async () => { last = await stats(); return pred(last) && last; }, what);
    } catch (e) {
      e.message += `; last Stats: ${JSON.stringify(last)}`;
      throw e;
    }
  };
  const close = () => { test.close(); health.close(); };
  return { test, health, stats, waitStats, close };
}

// Raw-bytes call on any path (for methods not in the proto).
function rawUnary(client, path) {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(path, (b) => b, (b) => b, Buffer.alloc(0), new grpc.Metadata(),
      { deadline: deadlineIn(WAIT_MS) }, (err, resp) => (err ? reject(err) : resolve(resp)));
  });
}

// ---- tests against one shared server -----------------------------------------

describe('grpc-js against rtc-grpc-testserver', () => {
  let server;
  let c;

  before(async () => {
    server = await TestServer.start();
    c = makeClients(server);
  });

  after(async () => {
    if (c) c.close();
    if (server) await server.stop();
  });

  const it = (name, fn) => test(name, { timeout: TEST_TIMEOUT }, async () => {
    await fn();
    assert.ok(server.alive, `testserver died; log:\n${server.log}`);
  });

  it('unary echo', async () => {
    const payload = crypto.randomBytes(1024);
    const { resp, status } = await unary(c.test, 'Echo', { message: 'héllo', payload });
    assert.equal(resp.message, 'héllo');
    assert.deepEqual(resp.payload, payload);
    assert.equal(status.code, Status.OK);
  });

  it('server streaming of 10,000 messages in order', async () => {
    const items = await collect(c.test.Stream({ count: 10000, size: 8 },
      { deadline: deadlineIn(120000) }));
    assert.equal(items.length, 10000);
    items.forEach((it, i) => {
      assert.equal(it.seq, i);
      assert.deepEqual(it.payload, Buffer.alloc(8, i & 0xff));
    });
  });

  it('a 200 KiB message each way', async () => {
    const payload = crypto.randomBytes(200 * 1024);
    const { resp } = await unary(c.test, 'Echo', { payload }, { timeoutMs: 60000 });
    assert.deepEqual(resp.payload, payload);
    const items = await collect(c.test.Stream({ count: 5, size: 200 * 1024 },
      { deadline: deadlineIn(60000) }));
    assert.deepEqual(items.map((x) => x.seq), [0, 1, 2, 3, 4]);
    items.forEach((x) => assert.deepEqual(x.payload, Buffer.alloc(200 * 1024, x.seq)));
  });

  it('deadline → DEADLINE_EXCEEDED and the handler sees the cancellation', async () => {
    const before = await c.stats();
    await expectCode(unary(c.test, 'Sleep', { ms: 60000 }, { timeoutMs: 500 }),
      Status.DEADLINE_EXCEEDED);
    await c.waitStats((s) => s.sleep_cancelled > before.sleep_cancelled,
      'the Sleep handler to observe the deadline');
  });

  it('client cancellation of a stream reaches the handler', async () => {
    const before = await c.stats();
    const call = c.test.Stream({ count: 1000000, size: 64, interval_ms: 5 },
      { deadline: deadlineIn(120000) });
    const ended = new Promise((resolve) => {
      let n = 0;
      call.on('data', (item) => {
        assert.equal(item.seq, n);
        n += 1;
        if (n === 10) call.cancel();
      });
      call.on('error', (err) => resolve(err));
      call.on('end', () => resolve(null));
    });
    const err = await withTimeout(ended, WAIT_MS, 'the cancelled stream to end');
    assert.ok(err, 'stream ended without error after cancel');
    assert.equal(err.code, Status.CANCELLED);
    await c.waitStats((s) => s.stream_cancelled > before.stream_cancelled,
      'the Stream handler to observe the cancellation');
  });

  it('unary cancellation reaches the handler', async () => {
    const before = await c.stats();
    const call = c.test.Sleep({ ms: 60000 }, { deadline: deadlineIn(120000) }, () => {});
    await c.waitStats((s) => s.active_calls > before.active_calls, 'Sleep to start');
    call.cancel();
    await c.waitStats((s) => s.sleep_cancelled > before.sleep_cancelled,
      'the Sleep handler to observe the cancellation');
  });

  it('unknown method → UNIMPLEMENTED', async () => {
    for (const p of ['/rtc.test.v1.Test/NoSuchMethod', '/no.such.v1.Service/Echo']) {
      await expectCode(rawUnary(c.test, p), Status.UNIMPLEMENTED);
    }
  });

  it('declared but unhandled method → UNIMPLEMENTED', async () => {
    await expectCode(unary(c.test, 'Unhandled', { message: 'x' }), Status.UNIMPLEMENTED);
  });

  it('every status code round-trips with a percent-encoded message', async () => {
    for (let code = 1; code <= 16; code++) {
      const msg = `${Status[code]}(${code}): ${TRICKY_MESSAGE}`;
      await assert.rejects(unary(c.test, 'Echo', { fail_code: code, fail_message: msg }),
        (err) => {
          assert.equal(err.code, code);
          assert.equal(err.details, msg);
          return true;
        });
    }
    const { status } = await unary(c.test, 'Echo', { message: 'ok' });
    assert.equal(status.code, Status.OK);
  });

  it('metadata round trip', async () => {
    const md = new grpc.Metadata();
    md.set('x-test-plain', 'value 1');
    md.set('x-test-blob-bin', Buffer.from([0, 1, 2, 0xfe, 0xff]));
    md.set('x-request-id', 'req-123');
    const { resp, headers, status } = await unary(c.test, 'Metadata', {}, { metadata: md });
    const seen = Object.fromEntries(resp.entries.map((e) => [e.key, e.value]));
    assert.equal(seen['x-test-plain'], 'value 1');
    assert.equal(seen['x-request-id'], 'req-123');
    assert.ok('x-test-blob-bin' in seen);
    for (const k of Object.keys(seen)) assert.ok(!k.startsWith(':'), `pseudo-header ${k}`);
    assert.deepEqual(headers.get('x-test-plain'), ['value 1']);
    assert.deepEqual(headers.get('x-test-blob-bin'), [Buffer.from([0, 1, 2, 0xfe, 0xff])]);
    assert.deepEqual(status.metadata.get('echo-x-test-plain'), ['value 1']);
    assert.deepEqual(status.metadata.get('echo-x-test-blob-bin'),
      [Buffer.from([0, 1, 2, 0xfe, 0xff])]);
  });

  it('health Check', async () => {
    assert.equal((await unary(c.health, 'Check', { service: '' })).resp.status, SERVING);
    assert.equal((await unary(c.health, 'Check', { service: 'rtc.test.v1.Test' })).resp.status,
      SERVING);
    await expectCode(unary(c.health, 'Check', { service: 'no.such.Service' }), Status.NOT_FOUND);
  });

  it('health Watch first message; unknown service → SERVICE_UNKNOWN', async () => {
    for (const [service, want] of [['', SERVING], ['no.such.Service', SERVICE_UNKNOWN]]) {
      const call = c.health.Watch({ service }, { deadline: deadlineIn(120000) });
      const first = await withTimeout(new Promise((resolve, reject) => {
        call.once('data', resolve);
        call.on('error', (e) => { if (e.code !== Status.CANCELLED) reject(e); });
      }), WAIT_MS, 'the first Watch message');
      assert.equal(first.status, want, `Watch(${JSON.stringify(service)})`);
      call.cancel();
    }
  });

  it('200 concurrent calls in flight', async () => {
    const before = await c.stats();
    const calls = [];
    for (let i = 0; i < 200; i++) {
      calls.push(unary(c.test, 'Sleep', { ms: 3000 }, { timeoutMs: 120000 }));
    }
    await c.waitStats((s) => s.active_calls - before.active_calls >= 200,
      '200 Sleep calls in flight');
    const results = await Promise.all(calls);
    results.forEach((r) => assert.equal(r.resp.cancelled, false));
  });
});

// ---- limits ----------------------------------------------------------------

describe('grpc-js: message limits (--max-message 1m)', () => {
  let server;
  let c;

  before(async () => {
    server = await TestServer.start('--max-message', '1m');
    c = makeClients(server);
  });

  after(async () => {
    if (c) c.close();
    if (server) await server.stop();
  });

  test('oversized request → RESOURCE_EXHAUSTED, and the channel still works',
    { timeout: TEST_TIMEOUT }, async () => {
      await expectCode(unary(c.test, 'Echo', { payload: Buffer.alloc(2 * MIB, 1) },
        { timeoutMs: 60000 }), Status.RESOURCE_EXHAUSTED);
      assert.equal((await unary(c.test, 'Echo', { message: 'after' })).resp.message, 'after');
      const payload = crypto.randomBytes(MIB - 64);
      assert.deepEqual((await unary(c.test, 'Echo', { payload }, { timeoutMs: 60000 }))
        .resp.payload, payload);
      assert.ok(server.alive, server.log);
    });

  test('response over max_send_message → RESOURCE_EXHAUSTED', { timeout: TEST_TIMEOUT },
    async () => {
      await assert.rejects(collect(c.test.Stream({ count: 1, size: 5 * MIB },
        { deadline: deadlineIn(60000) })), (err) => {
        assert.equal(err.code, Status.RESOURCE_EXHAUSTED, err.details);
        return true;
      });
    });
});

// ---- graceful shutdown ------------------------------------------------------

describe('grpc-js: SIGTERM', () => {
  test('health Watch sees NOT_SERVING before the stream ends; exit 0',
    { timeout: TEST_TIMEOUT }, async () => {
      const server = await TestServer.start('--drain-ms', '2000');
      const c = makeClients(server);
      try {
        const call = c.health.Watch({ service: '' }, { deadline: deadlineIn(120000) });
        const statuses = [];
        let gotFirst;
        const first = new Promise((resolve) => { gotFirst = resolve; });
        const ended = new Promise((resolve) => {
          call.on('data', (m) => { statuses.push(m.status); gotFirst(); });
          call.on('error', (e) => resolve(e));
          call.on('end', () => resolve(null));
        });
        await withTimeout(first, WAIT_MS, 'the first Watch message');
        assert.equal(statuses[0], SERVING);
        server.terminate();
        const err = await withTimeout(ended, WAIT_MS, 'the Watch stream to end');
        if (err) {
          assert.ok([Status.UNAVAILABLE, Status.CANCELLED].includes(err.code),
            `Watch ended with ${Status[err.code]}: ${err.details}`);
        }
        assert.ok(statuses.includes(NOT_SERVING),
          `Watch never saw NOT_SERVING: ${JSON.stringify(statuses)}`);
        assert.equal(await server.waitExit(), 0, server.log);
      } finally {
        c.close();
        await server.stop();
      }
    });

  test('an in-flight call completes during the drain', { timeout: TEST_TIMEOUT }, async () => {
    const server = await TestServer.start('--drain-ms', '10000');
    const c = makeClients(server);
    try {
      const call = unary(c.test, 'Sleep', { ms: 1000 }, { timeoutMs: 60000 });
      await c.waitStats((s) => s.active_calls >= 1, 'Sleep to start');
      server.terminate();
      assert.equal((await call).resp.cancelled, false);
      assert.equal(await server.waitExit(), 0, server.log);
    } finally {
      c.close();
      await server.stop();
    }
  });
});

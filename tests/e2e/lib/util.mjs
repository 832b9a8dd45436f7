// Small helpers shared by the e2e harness: waiting on conditions (never
// fixed sleeps), free ports, HTTP GETs, Prometheus text, log tails.
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import dgram from 'node:dgram';
import crypto from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';

export const MEDIA_TIMEOUT = 60_000; // media on a busy 2-core machine
export const START_TIMEOUT = 30_000; // a service becoming ready

/** Poll fn() until it returns a truthy value; return it. On timeout throw
 *  an Error naming `what` and the last value/exception seen. */
export async function waitFor(fn, { timeout = MEDIA_TIMEOUT, interval = 250, what = 'condition',
  describe } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  let lastErr;
  for (;;) {
    try {
      last = await fn();
      lastErr = undefined;
      if (last) return last;
    } catch (e) {
      if (e && e.fatal) throw e;
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      let detail = '';
      if (lastErr) detail = `; last error: ${lastErr.stack || lastErr}`;
      else if (describe) {
        try { detail = `; last state: ${await describe()}`; } catch (e) { detail = `; (describe failed: ${e})`; }
      } else detail = `; last value: ${JSON.stringify(last)}`;
      throw new Error(`timed out after ${(timeout / 1000).toFixed(0)} s waiting for ${what}${detail}`);
    }
    await delay(interval);
  }
}

/** An error that stops waitFor at once (e.g. the process died). */
export function fatal(message) {
  const e = new Error(message);
  e.fatal = true;
  return e;
}

const taken = new Set();

/** A TCP port free on 127.0.0.1 (bound and released; never handed out twice
 *  by this process). */
export async function freePort() {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise((resolve, reject) => {
      const s = net.createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const p = s.address().port;
        s.close(() => resolve(p));
      });
    });
    if (!taken.has(port) && await udpFree(port)) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no free port found');
}

function udpFree(port) {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.once('error', () => resolve(false));
    s.bind(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** GET http://127.0.0.1:port/path → { status, body, headers }. */
export function httpGet(port, path, { timeout = 5000, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers, timeout }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET :${port}${path} timed out`)));
    req.on('error', reject);
  });
}

/** Raw request line (for paths a URL parser would normalise, like /../). */
export function rawHttp(port, requestText, { timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks = [];
    s.setTimeout(timeout, () => s.destroy(new Error('raw HTTP timed out')));
    s.on('connect', () => s.write(requestText));
    s.on('data', (c) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    s.on('error', reject);
  });
}

/** Prometheus text → [{ name, labels, value }]. */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line.trim());
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

/** Sum of the samples of `name` whose labels include `labels`. */
export function metricSum(samples, name, labels = {}) {
  return samples.filter((s) => s.name === name &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

export function tail(path, n = 40) {
  let text = '';
  try { text = fs.readFileSync(path, 'utf8'); } catch { return '(no log)'; }
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  return lines.slice(-n).join('\n');
}

/** One STUN Binding request over UDP; true when a matching success answer
 *  comes back within `timeout` ms. */
export function stunBinding(port, timeout = 1000) {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const tid = crypto.randomBytes(12);
    const msg = Buffer.alloc(20);
    msg.writeUInt16BE(0x0001, 0);
    msg.writeUInt16BE(0, 2);
    msg.writeUInt32BE(0x2112a442, 4);
    tid.copy(msg, 8);
    const done = (ok) => { clearTimeout(timer); try { s.close(); } catch { /* closed */ } resolve(ok); };
    const timer = setTimeout(() => done(false), timeout);
    s.on('error', () => done(false));
    s.on('message', (m) => done(m.length >= 20 && m.readUInt16BE(0) === 0x0101 &&
      m.subarray(8, 20).equals(tid)));
    s.send(msg, port, '127.0.0.1', (err) => { if (err) done(false); });
  });
}

/** coturn REST credentials, as rtc-auth makes them. */
export function turnCredential(secret, username) {
  return crypto.createHmac('sha1', secret).update(username).digest('base64');
}

export function randomId(n = 6) {
  return crypto.randomBytes(n).toString('hex');
}

export function log(...args) {
  process.stdout.write(`[e2e ${new Date().toISOString().slice(11, 23)}] ${args.join(' ')}\n`);
}

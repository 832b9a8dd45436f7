// The real rtc stack on 127.0.0.1, started by the test itself: redis-server,
// coturn, rtc-auth (--dev), two rtc-signaling pods, one or two rtc-bridge,
// and a static file server for clients/web. Every process runs in its own
// process group (killed as a group on stop, and on exit of this process
// whatever happens) and under `setpriv --pdeathsig KILL` so nothing outlives
// a killed test run. Readiness is polled (admin /readyz, PING, STUN
// Binding), never slept for.
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { spawn, execFileSync } from 'node:child_process';
import { startStaticServer } from './static.mjs';
import {
  START_TIMEOUT, waitFor, fatal, freePort, httpGet, parseMetrics, metricSum, tail, stunBinding,
  randomId, log,
} from './util.mjs';

function which(name) {
  for (const dir of (process.env.PATH || '/usr/local/bin:/usr/bin:/bin').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = path.join(dir || '.', name);
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch { /* next */ }
  }
  return null;
}

/** Path of a tool or an Error telling how to install it (tests fail, never skip). */
export function needTool(name, pkg) {
  const p = which(name);
  if (!p) throw new Error(`${name} not found on PATH: install it with \`apt-get install -y ${pkg}\` (or scripts/deps.sh)`);
  return p;
}

const SETPRIV = which('setpriv');
const live = new Set();
let exitHooked = false;

function hookExit() {
  if (exitHooked) return;
  exitHooked = true;
  // Last resort: whatever is still running when node exits is killed with
  // its whole process group.
  process.on('exit', () => {
    for (const p of live) p.signalGroup('SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      for (const p of live) p.signalGroup('SIGKILL');
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}

function cleanEnv() {
  // Flags fall back to RTC_* variables: keep the caller's out.
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RTC_')));
}

/** A child process in its own process group, output to a log file. */
export class Proc {
  constructor(name, exe, args, logPath, { env = cleanEnv() } = {}) {
    hookExit();
    this.name = name;
    this.exe = exe;
    this.args = args;
    this.logPath = logPath;
    const fd = fs.openSync(logPath, 'a');
    const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'KILL', '--', exe, ...args]] : [exe, args];
    this.child = spawn(cmd, argv, { detached: true, stdio: ['ignore', fd, fd], env });
    fs.closeSync(fd);
    this.pid = this.child.pid;
    this.code = undefined;
    this.signal = undefined;
    this.done = false;
    live.add(this);
    this.exited = new Promise((resolve) => {
      const finish = (code, sig) => {
        if (this.done) return;
        this.done = true;
        this.code = code;
        this.signal = sig;
        live.delete(this);
        resolve();
      };
      this.child.once('exit', finish);
      this.child.once('error', (e) => { this.spawnError = e; finish(null, null); });
    });
  }

  alive() { return !this.done; }

  status() {
    if (!this.done) return 'running';
    if (this.spawnError) return `failed to start: ${this.spawnError.message}`;
    return this.signal ? `killed by ${this.signal}` : `exited with status ${this.code}`;
  }

  /** Signal the whole process group (the pid is the group leader). */
  signalGroup(sig) {
    if (!this.pid) return;
    try { process.kill(-this.pid, sig); } catch { /* gone */ }
  }

  /** SIGTERM (or sig) to the group, wait, SIGKILL the group after timeout. */
  async stop(sig = 'SIGTERM', timeout = 15_000) {
    if (this.alive()) {
      this.signalGroup(sig);
      let timer;
      const timedOut = await Promise.race([this.exited.then(() => false),
        new Promise((r) => { timer = setTimeout(() => r(true), timeout); })]);
      clearTimeout(timer);
      if (timedOut) this.signalGroup('SIGKILL');
    }
    await this.exited;
    this.signalGroup('SIGKILL'); // stray children of the group, if any
  }

  async kill() { return this.stop('SIGKILL', 15_000); }

  tail(n = 40) { return tail(this.logPath, n); }

  /** Fails at once (fatal for waitFor) when the process is gone. */
  assertAlive() {
    if (!this.alive()) throw fatal(`${this.name} ${this.status()}; log ${this.logPath}:\n${this.tail(30)}`);
  }
}

async function waitReady(proc, port, what) {
  await waitFor(async () => {
    proc.assertAlive();
    const r = await httpGet(port, '/readyz', { timeout: 2000 });
    return r.status === 200;
  }, { timeout: START_TIMEOUT, what: `${what} admin /readyz 200 on :${port}`, interval: 100 });
}

function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.setTimeout(1000, () => { s.destroy(); resolve(false); });
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { buf += d; if (buf.includes('\r\n')) { s.end(); resolve(buf.startsWith('+PONG')); } });
    s.on('error', () => resolve(false));
  });
}

/** One Redis command over a fresh connection (RESP2 reply, decoded). */
export function redisCmd(port, ...args) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    s.setTimeout(5000, () => s.destroy(new Error('redis timeout')));
    s.on('connect', () => {
      let out = `*${args.length}\r\n`;
      for (const a of args) out += `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`;
      s.write(out);
    });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      const r = parseResp(buf, 0);
      if (r) { s.end(); r.value instanceof Error ? reject(r.value) : resolve(r.value); }
    });
    s.on('error', reject);
  });
}

function parseResp(buf, pos) {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return null;
  const kind = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  if (kind === '+') return { value: line, pos: next };
  if (kind === '-') return { value: new Error(line), pos: next };
  if (kind === ':') return { value: Number(line), pos: next };
  if (kind === '$') {
    const n = Number(line);
    if (n < 0) return { value: null, pos: next };
    if (buf.length < next + n + 2) return null;
    return { value: buf.toString('utf8', next, next + n), pos: next + n + 2 };
  }
  if (kind === '*') {
    const n = Number(line);
    if (n < 0) return { value: null, pos: next };
    const arr = [];
    let p = next;
    for (let i = 0; i < n; i++) {
      const r = parseResp(buf, p);
      if (!r) return null;
      arr.push(r.value);
      p = r.pos;
    }
    return { value: arr, pos: p };
  }
  return { value: new Error(`bad RESP ${kind}`), pos: next };
}

export class Stack {
  /**
   * @param {object} o
   * @param {string} o.bin     directory of rtc-auth, rtc-signaling, rtc-bridge
   * @param {string} o.root    repository root (web root is <root>/clients/web)
   * @param {string} o.logDir  where service logs go (kept as artifacts)
   * @param {number} [o.pods=2]
   * @param {number} [o.bridges=2]
   * @param {boolean} [o.turn=true] start coturn and hand its URLs out
   * @param {string[]} [o.authArgs] more rtc-auth flags
   * @param {string[]} [o.podArgs] more rtc-signaling flags
   * @param {boolean} [o.edge=false] put the nginx edge (deploy/edge/nginx.conf)
   *   in front: pages load from it over HTTPS and reach the bridges via WSS
   */
  constructor({ bin, root, logDir, pods = 2, bridges = 2, turn = true, authArgs = [], podArgs = [],
    edge = false }) {
    this.withEdge = edge;
    this.authArgs = authArgs;
    this.podArgs = podArgs;
    this.bin = bin;
    this.root = root;
    this.logDir = logDir;
    this.nPods = pods;
    this.nBridges = bridges;
    this.withTurn = turn;
    this.procs = []; // every Proc ever started, for logs
    this.turnSecret = `e2e-turn-${randomId(12)}`;
    // Scratch files (TURN secret, coturn's db and pid file) live next to the
    // logs, which each run of the suite starts afresh: nothing is left in
    // /tmp even when the run is killed.
    fs.mkdirSync(logDir, { recursive: true });
    this.tmp = fs.mkdtempSync(path.join(logDir, 'tmp-'));
  }

  exe(name) {
    const p = path.join(this.bin, name);
    try { fs.accessSync(p, fs.constants.X_OK); } catch {
      throw new Error(`${p} not found or not executable: build it (cmake --build <build dir> --target ${name})`);
    }
    return p;
  }

  spawn(name, exe, args) {
    const logPath = path.join(this.logDir, `${name}.log`);
    const p = new Proc(name, exe, args, logPath);
    this.procs.push(p);
    return p;
  }

  async start() {
    const t0 = Date.now();
    const auth = this.exe('rtc-auth');
    const sig = this.exe('rtc-signaling');
    const bridge = this.exe('rtc-bridge');
    const redisExe = needTool('redis-server', 'redis-server');

    this.web = await startStaticServer(path.join(this.root, 'clients/web'));
    this.origin = this.web.origin;

    // Redis
    this.redisPort = await freePort();
    this.redis = this.spawn('redis', redisExe, ['--bind', '127.0.0.1', '--port', String(this.redisPort),
      '--save', '', '--appendonly', 'no', '--dir', this.tmp, '--daemonize', 'no', '--logfile', '']);
    await waitFor(async () => { this.redis.assertAlive(); return redisPing(this.redisPort); },
      { timeout: START_TIMEOUT, what: `redis-server PONG on :${this.redisPort}`, interval: 100 });
    const redisUrl = `redis://127.0.0.1:${this.redisPort}`;

    // coturn
    if (this.withTurn) {
      this.turnPort = await freePort();
      await this.startCoturn(this.turnSecret);
    } else {
      this.turnPort = await freePort(); // nothing listens: URLs still handed out
    }
    fs.writeFileSync(path.join(this.tmp, 'turn-secret'), this.turnSecret + '\n', { mode: 0o600 });

    // rtc-auth
    this.authPort = await freePort();
    this.authAdmin = await freePort();
    this.auth = this.spawn('rtc-auth', auth, ['--listen', `127.0.0.1:${this.authPort}`,
      '--admin', `127.0.0.1:${this.authAdmin}`, '--dev', '--redis', redisUrl,
      '--turn-secret-file', path.join(this.tmp, 'turn-secret'),
      '--turn-urls', `turn:127.0.0.1:${this.turnPort}?transport=udp`,
      '--stun-urls', `stun:127.0.0.1:${this.turnPort}`, ...this.authArgs]);
    await waitReady(this.auth, this.authAdmin, 'rtc-auth');

    // signaling pods (fixed ports so a killed pod can come back at the same address)
    this.pods = [];
    for (let i = 0; i < this.nPods; i++) {
      this.pods.push({ name: `pod${i + 1}`, port: await freePort(), admin: await freePort(), proc: null, starts: 0 });
    }
    await Promise.all(this.pods.map((_, i) => this.startPod(i)));

    // The edge's port is known before the bridges start: their Origin
    // allowlist names it.
    const origins = [this.origin];
    if (this.withEdge) {
      this.edgePort = await freePort();
      this.edgeOrigin = `https://127.0.0.1:${this.edgePort}`;
      origins.push(this.edgeOrigin);
    }

    // bridges
    this.bridges = [];
    for (let i = 0; i < this.nBridges; i++) {
      const b = { name: `bridge${i + 1}`, port: await freePort(), admin: await freePort() };
      b.url = `ws://127.0.0.1:${b.port}/ws`;
      b.proc = this.spawn(b.name, bridge, ['--listen', `127.0.0.1:${b.port}`, '--admin', `127.0.0.1:${b.admin}`,
        '--upstream', `rtc.auth.v1.Auth=127.0.0.1:${this.authPort}`,
        '--upstream', `rtc.signaling.v1.Signaling=${this.pods.map((p) => `127.0.0.1:${p.port}`).join(',')}`,
        '--origins', origins.join(',')]);
      this.bridges.push(b);
    }
    await Promise.all(this.bridges.map((b) => waitReady(b.proc, b.admin, b.name)));
    if (this.withEdge) await this.startEdge();
    log(`stack up in ${Date.now() - t0} ms: web ${this.origin}, redis :${this.redisPort}, ` +
      `coturn :${this.turnPort}${this.withTurn ? '' : ' (not started)'}, auth :${this.authPort}, ` +
      `pods ${this.pods.map((p) => `:${p.port}`).join(' ')}, bridges ${this.bridges.map((b) => b.url).join(' ')}; logs in ${this.logDir}`);
    return this;
  }

  async startCoturn(secret, { name = 'coturn' } = {}) {
    const exe = needTool('turnserver', 'coturn');
    const dir = path.join(this.tmp, `${name}-${this.procs.length}`);
    fs.mkdirSync(dir, { recursive: true });
    // Relay ports below Linux's ephemeral range (32768+), where freePort()
    // picks: no clash with the services' ports.
    this.turnRelayRange = [20000, 20999];
    const logFile = path.join(this.logDir, `${name}-${this.procs.length}.turnserver.log`);
    this.coturn = this.spawn(`${name}-${this.procs.length}`, exe, ['-n', '--listening-ip=127.0.0.1',
      '--relay-ip=127.0.0.1', `--listening-port=${this.turnPort}`, '--use-auth-secret',
      `--static-auth-secret=${secret}`, '--realm=rtc.test', '--allow-loopback-peers', '--no-cli',
      '--no-tls', '--no-dtls', '--no-rfc5780', `--min-port=${this.turnRelayRange[0]}`,
      `--max-port=${this.turnRelayRange[1]}`, '--verbose', '--simple-log', `--log-file=${logFile}`,
      `--pidfile=${path.join(dir, 'turnserver.pid')}`, `--db=${path.join(dir, 'turndb')}`]);
    this.coturnLog = logFile;
    await waitFor(async () => {
      this.coturn.assertAlive();
      return stunBinding(this.turnPort, 500);
    }, { timeout: START_TIMEOUT, what: `coturn STUN Binding answer on udp :${this.turnPort}`, interval: 100 });
    return this.coturn;
  }

  /** Restart coturn on the same port with another static-auth-secret. */
  async restartCoturn(secret) {
    if (this.coturn) await this.coturn.stop();
    return this.startCoturn(secret);
  }

  async startPod(i) {
    const p = this.pods[i];
    p.proc = this.spawn(`${p.name}-${p.starts}`, this.exe('rtc-signaling'), ['--listen', `127.0.0.1:${p.port}`,
      '--admin', `127.0.0.1:${p.admin}`, '--redis', `redis://127.0.0.1:${this.redisPort}`,
      '--auth', `127.0.0.1:${this.authPort}`, '--pod-id', p.name, ...this.podArgs]);
    p.starts++;
    await waitReady(p.proc, p.admin, p.name);
  }

  /** SIGKILL one pod (no drain, no goodbye to Redis). */
  async killPod(i) {
    await this.pods[i].proc.kill();
  }

  async podMetrics(i) {
    const r = await httpGet(this.pods[i].admin, '/metrics');
    return parseMetrics(r.body);
  }

  /** Open Subscribe streams on each pod (rtc_signaling_streams); null for a dead pod. */
  async podStreams() {
    return Promise.all(this.pods.map(async (p, i) => {
      if (!p.proc.alive()) return null;
      try { return metricSum(await this.podMetrics(i), 'rtc_signaling_streams'); } catch { return null; }
    }));
  }

  /** SIGKILL one bridge: its WebSockets drop without a close frame. */
  async killBridge(i) {
    await this.bridges[i].proc.kill();
  }

  async bridgeMetrics(i) {
    return parseMetrics((await httpGet(this.bridges[i].admin, '/metrics')).body);
  }

  /**
   * The nginx edge of deploy/edge/nginx.conf, rendered the way
   * deploy/local/up.sh renders it, on free ports, with a fresh self-signed
   * certificate: HTTPS + WSS on edgePort, the demo at /.
   */
  async startEdge() {
    const nginx = needTool('nginx', 'nginx');
    const d = path.join(this.tmp, 'nginx');
    for (const t of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(d, 'tmp', t), { recursive: true });
    const cert = path.join(d, 'edge.crt');
    const key = path.join(d, 'edge.key');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout', key, '-out', cert], { stdio: 'ignore' });
    let user = '';
    if (process.getuid() === 0) {
      // As root the workers run as nobody: they need the temp dirs.
      user = 'user nobody nogroup;';
      execFileSync('chown', ['-R', 'nobody:nogroup', path.join(d, 'tmp')]);
    }
    const vars = {
      USER_LINE: user, STATE: this.tmp, LOGS: this.logDir, MIME_TYPES: '/etc/nginx/mime.types',
      LISTEN_IP: '127.0.0.1', EDGE_PORT: this.edgePort, HTTP_PORT: await freePort(), DEMO_PORT: await freePort(),
      BRIDGE1_PORT: this.bridges[0].port, BRIDGE2_PORT: this.bridges[this.bridges.length > 1 ? 1 : 0].port,
      WS_RATE: 50, WS_BURST: 100, WS_CONNS: 100, TLS_CERT: cert, TLS_KEY: key,
      WEB_ROOT: path.join(this.root, 'clients/web'),
    };
    let conf = fs.readFileSync(path.join(this.root, 'deploy/edge/nginx.conf'), 'utf8');
    conf = conf.replace(/@([A-Z0-9_]+)@/g, (m, k) => {
      if (!(k in vars)) throw new Error(`deploy/edge/nginx.conf: no value for ${m}`);
      return String(vars[k]);
    });
    fs.writeFileSync(path.join(d, 'nginx.conf'), conf);
    this.edge = this.spawn('edge', nginx, ['-p', d, '-c', path.join(d, 'nginx.conf'), '-g', 'daemon off;']);
    await waitFor(async () => {
      this.edge.assertAlive();
      return new Promise((resolve) => {
        const req = https.get({ host: '127.0.0.1', port: this.edgePort, path: '/demo/', rejectUnauthorized: false, timeout: 2000 },
          (res) => { res.resume(); resolve(res.statusCode === 200); });
        req.on('error', () => resolve(false));
        req.on('timeout', () => { req.destroy(); resolve(false); });
      });
    }, { timeout: START_TIMEOUT, what: `nginx edge answering https://127.0.0.1:${this.edgePort}/demo/`, interval: 100 });
    log(`edge up: ${this.edgeOrigin} (WSS /ws to ${this.bridges.map((b) => `:${b.port}`).join(' ')})`);
  }

  /** Where pages come from: the edge when there is one. */
  pageOrigin() { return this.withEdge ? this.edgeOrigin : this.origin; }

  /** The bridge URL(s) pages use: each bridge, or the edge (which balances) for each. */
  bridgeUrls() {
    if (this.withEdge) return this.bridges.map(() => `wss://127.0.0.1:${this.edgePort}/ws`);
    return this.bridges.map((b) => b.url);
  }

  /** The last lines of every service log, for failure reports. */
  logTails(n = 40) {
    let out = '';
    for (const p of this.procs) {
      out += `\n---- ${p.name} (${p.status()}; ${p.logPath}) ----\n${p.tail(n)}\n`;
    }
    if (this.coturnLog) out += `\n---- coturn log file ${this.coturnLog} ----\n${tail(this.coturnLog, n)}\n`;
    return out;
  }

  running() { return this.procs.filter((p) => p.alive()); }

  /** Stop everything (bridges first, Redis last); never throws. */
  async stop() {
    const order = [
      ...(this.bridges || []).map((b) => b.proc),
      ...(this.pods || []).map((p) => p.proc),
      this.auth, this.coturn, this.redis,
    ].filter(Boolean);
    for (const p of this.procs) if (!order.includes(p)) order.push(p);
    for (const p of order) {
      try { await p.stop(); } catch (e) { log(`stopping ${p.name}: ${e}`); }
    }
    if (this.web) await this.web.close().catch(() => {});
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** pids of every process of this stack that the kernel still knows. */
export function leftovers(procs) {
  const out = [];
  for (const p of procs) {
    try { process.kill(p.pid, 0); out.push(`${p.name} pid ${p.pid}`); } catch { /* gone */ }
    try {
      const pg = execFileSync('pgrep', ['-g', String(p.pid)], { encoding: 'utf8' }).trim();
      if (pg) out.push(`${p.name} group ${p.pid}: ${pg.replace(/\n/g, ' ')}`);
    } catch { /* pgrep: none */ }
  }
  return out;
}

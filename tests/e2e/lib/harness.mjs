// One e2e suite: its stack, its browsers and pages, artifacts, and the
// failure report (service log tails, each page's console and stats).
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Stack, leftovers } from './stack.mjs';
import { launch, Tab, pageStats } from './browser.mjs';
import { log } from './util.mjs';

/** bin dir, repo root and artifacts dir: argv (node suite.mjs BIN ROOT ARTIFACTS) or RTC_E2E_*. */
export function config() {
  const [bin, root, artifacts] = process.argv.slice(2);
  const cfg = {
    bin: bin || process.env.RTC_E2E_BIN,
    root: root || process.env.RTC_E2E_ROOT,
    artifacts: process.env.RTC_E2E_ARTIFACTS || artifacts,
  };
  if (!cfg.bin || !cfg.root) {
    throw new Error('usage: node tests/e2e/<suite>.mjs <bin dir> <repo root> [<artifacts dir>] ' +
      '(or RTC_E2E_BIN, RTC_E2E_ROOT, RTC_E2E_ARTIFACTS); normally run through tests/e2e/run.sh');
  }
  cfg.bin = path.resolve(cfg.bin);
  cfg.root = path.resolve(cfg.root);
  cfg.artifacts = path.resolve(cfg.artifacts || path.join(cfg.bin, '..', 'e2e-artifacts'));
  return cfg;
}

export class Suite {
  constructor(name, { stack = {} } = {}) {
    this.name = name;
    this.cfg = config();
    // RTC_E2E_EDGE=1: the same suite through the nginx edge (HTTPS pages, WSS).
    this.stackOpts = process.env.RTC_E2E_EDGE === '1' ? { ...stack, edge: true } : stack;
    this.artifacts = this.cfg.artifacts;
    this.logDir = path.join(this.artifacts, 'logs', name);
    this.browsers = [];
    this.tabs = [];
    this.shots = [];
  }

  async start() {
    // This suite's artifacts of an earlier run go: what is there is this run's.
    fs.rmSync(this.logDir, { recursive: true, force: true });
    fs.mkdirSync(this.logDir, { recursive: true });
    for (const sub of ['screenshots', 'console']) {
      const dir = path.join(this.artifacts, sub);
      for (const f of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
        if (f.startsWith(`${this.name}-`)) fs.rmSync(path.join(dir, f), { force: true });
      }
    }
    log(`suite ${this.name}: bin ${this.cfg.bin}, repo ${this.cfg.root}, artifacts ${this.artifacts}`);
    this.stack = new Stack({ bin: this.cfg.bin, root: this.cfg.root, logDir: this.logDir, ...this.stackOpts });
    try {
      await this.stack.start();
      this.browser = await this.launch();
    } catch (e) {
      this.report('suite start', e);
      throw e;
    }
  }

  async launch(opts = {}) {
    const b = await launch(opts);
    this.browsers.push(b);
    return b;
  }

  /** A new page (own context) named for reports and screenshots. */
  async tab(name, { browser = this.browser, permissions } = {}) {
    const t = await Tab.open(browser, name, { permissions });
    this.tabs.push(t);
    return t;
  }

  demoUrl({ name, room, relay = false, autojoin = true, bridges = this.stack.bridgeUrls() } = {}) {
    const q = new URLSearchParams();
    if (bridges) q.set('bridge', Array.isArray(bridges) ? bridges.join(',') : bridges);
    if (name) q.set('name', name);
    if (room) q.set('room', room);
    if (autojoin) q.set('autojoin', '1');
    if (relay) q.set('relay', '1');
    // Not in the contract: the demo's SDK logging to the console, which the
    // failure report prints (ignored if the demo does not know it).
    q.set('debug', '1');
    return `${this.stack.pageOrigin()}/demo/?${q}`;
  }

  async closeTabs() {
    for (const t of this.tabs) {
      try { t.saveConsole(path.join(this.artifacts, 'console'), this.name); } catch { /* best effort */ }
      await t.close();
    }
    this.tabs = [];
  }

  async stop() {
    await this.closeTabs();
    for (const b of this.browsers) await b.close().catch(() => {});
    this.browsers = [];
    if (this.stack) {
      const procs = this.stack.procs;
      const access = path.join(this.logDir, 'nginx-access.log');
      const upgrades = this.stack.withEdge && fs.existsSync(access)
        ? fs.readFileSync(access, 'utf8').split('\n').filter((l) => l.includes('"GET /ws') && l.includes('" 101 ')).length : 0;
      await this.stack.stop();
      const left = leftovers(procs);
      if (left.length) throw new Error(`processes left running after stop: ${left.join(', ')}`);
      log(`suite ${this.name}: stack stopped, no process left`);
      if (this.stack.withEdge) {
        if (!upgrades) throw new Error(`no WebSocket went through the edge (no "GET /ws … 101" in ${access})`);
        log(`suite ${this.name}: ${upgrades} WebSockets went through the edge`);
      }
    }
    if (this.shots.length) {
      log(`screenshots of ${this.name}:`);
      for (const s of this.shots) log(`  ${s}`);
    }
  }

  /** Screenshot each tab as <scenario>-<tab>.png in the artifacts dir; prints the paths. */
  async screenshots(scenario, tabs = this.tabs) {
    const dir = path.join(this.artifacts, 'screenshots');
    for (const t of tabs) {
      if (t.closed) continue;
      const file = await t.screenshot(dir, `${this.name}-${scenario}`);
      this.shots.push(file);
      log(`screenshot: ${file}`);
    }
  }

  /** The failure report: service logs, and each open page's console, stats and error banner. */
  async report(title, err) {
    const out = [`\n======== e2e ${this.name}: "${title}" failed: ${err && (err.stack || err)}`];
    for (const t of this.tabs) {
      if (t.closed) continue;
      let state = '';
      try {
        state = JSON.stringify(await t.page.evaluate(() => {
          const q = (s) => document.querySelector(s);
          const e = q('#error');
          return { url: location.href, status: q('#status') && [q('#status').getAttribute('data-state'), q('#status').textContent],
            error: e && { hidden: e.hidden || getComputedStyle(e).display === 'none', kind: e.getAttribute('data-kind'), text: e.textContent },
            tiles: [...document.querySelectorAll('#tiles .tile')].map((x) => [x.getAttribute('data-local') ? 'local' : x.getAttribute('data-peer-id'), x.getAttribute('data-state')]),
            chat: [...document.querySelectorAll('#chat-log .chat-msg')].map((x) => [x.getAttribute('data-from'), x.textContent]).slice(-5) };
        }));
      } catch (e) { state = `(page state unavailable: ${e.message})`; }
      let stats = '';
      try { stats = JSON.stringify(await t.page.evaluate(pageStats)); } catch (e) { stats = `(stats unavailable: ${e.message})`; }
      out.push(`\n---- page ${t.name}: ${state}\n---- getStats ${t.name}: ${stats}\n---- console of ${t.name} (last 80 lines) ----\n${t.consoleTail(80)}`);
      try {
        const file = await t.screenshot(path.join(this.artifacts, 'screenshots'), `${this.name}-FAILED-${title}`);
        out.push(`---- failure screenshot: ${file}`);
      } catch { /* page gone */ }
    }
    if (this.stack) out.push(`\n---- service logs (last 40 lines each) ----${this.stack.logTails(40)}`);
    out.push(`======== end of report for "${title}"\n`);
    process.stdout.write(out.join('\n') + '\n');
  }

  /** A node:test test whose failure prints the report. With `after`, the
   *  test builds on the previous scenarios of the suite: when one of them
   *  failed it fails at once, naming it, instead of timing out on a call
   *  that never started. */
  scenario(title, fn, { timeout = 240_000, after = false } = {}) {
    test(title, { timeout }, async (t) => {
      const t0 = Date.now();
      if (after && this.failed) {
        throw new Error(`not run: builds on "${this.failed}", which failed`);
      }
      try {
        await fn(t);
        log(`ok "${title}" in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      } catch (e) {
        this.failed = this.failed || title;
        await this.report(title, e);
        throw e;
      }
    });
  }
}

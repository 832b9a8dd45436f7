// Headless Debian chromium driven by npm playwright-core (never a
// downloaded browser), with fake camera/microphone and loopback ICE
// candidates, and per-page console capture for failure reports.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { log } from './util.mjs';

export const CHROMIUM = process.env.RTC_E2E_CHROMIUM || '/usr/bin/chromium';

const require = createRequire(import.meta.url);

/** playwright-core from tests/node_modules, or an Error that says how to get it. */
export function loadPlaywright() {
  try {
    return require('playwright-core');
  } catch (e) {
    throw new Error(`npm package playwright-core not found (${e.code || e.message}): ` +
      'run `cd tests && npm ci` (or scripts/deps.sh)');
  }
}

// The flags TESTING.md checked for WebRTC on loopback, plus autoplay and no
// background throttling (several pages decode video at once).
export const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection', '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--autoplay-policy=no-user-gesture-required', '--disable-renderer-backgrounding',
  '--disable-background-timer-throttling', '--disable-backgrounding-occluded-windows',
  '--disable-dev-shm-usage',
  // The edge's certificate is self-signed, made by the test.
  '--ignore-certificate-errors',
];

/** Launch chromium. fakeUi: auto-accept getUserMedia (false: no fake UI
 *  flag, so a page without the media permission is refused). */
export async function launch({ fakeUi = true, extra = [] } = {}) {
  try { fs.accessSync(CHROMIUM, fs.constants.X_OK); } catch {
    throw new Error(`${CHROMIUM} not found: install it with \`apt-get install -y chromium\` (or scripts/deps.sh)`);
  }
  const { chromium } = loadPlaywright();
  const args = [...FLAGS, ...(fakeUi ? ['--use-fake-ui-for-media-stream'] : []), ...extra];
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 60_000 });
  log(`chromium ${browser.version()} launched (${fakeUi ? 'fake media UI' : 'no media permission'})`);
  return browser;
}

/**
 * Injected before any page script: wraps RTCPeerConnection so that every
 * state change, description and candidate shows in the page's console
 * ("pcN: …"), which the failure report prints. Observes only; behaviour is
 * unchanged.
 */
export function tracePeerConnections() {
  const Orig = window.RTCPeerConnection;
  if (!Orig || Orig.__e2eTraced) return;
  let n = 0;
  const t0 = performance.now();
  const say = (id, ...a) => console.debug(`pc${id} @${((performance.now() - t0) / 1000).toFixed(2)}s:`, ...a);
  const candText = (c) => (c && c.candidate ? c.candidate.replace(/^candidate:/, '').split(' ').slice(4, 8).join(' ') : 'end-of-candidates');
  class Traced extends Orig {
    constructor(cfg, ...rest) {
      super(cfg, ...rest);
      const id = ++n;
      this.__e2eId = id;
      say(id, 'new', JSON.stringify({ iceTransportPolicy: cfg && cfg.iceTransportPolicy,
        iceServers: ((cfg && cfg.iceServers) || []).map((x) => x.urls) }));
      for (const ev of ['signalingstatechange', 'icegatheringstatechange', 'iceconnectionstatechange', 'connectionstatechange']) {
        this.addEventListener(ev, () => say(id, ev.replace('statechange', ''), '→',
          { signalingstatechange: this.signalingState, icegatheringstatechange: this.iceGatheringState,
            iceconnectionstatechange: this.iceConnectionState, connectionstatechange: this.connectionState }[ev]));
      }
      this.addEventListener('icecandidate', (e) => say(id, 'local candidate', candText(e.candidate)));
      this.addEventListener('icecandidateerror', (e) => {
        say(id, 'candidate error', e.errorCode, e.errorText, e.url);
        (window.__e2eIceErrors = window.__e2eIceErrors || []).push({ pc: id, errorCode: e.errorCode, errorText: e.errorText, url: e.url });
      });
      this.addEventListener('negotiationneeded', () => say(id, 'negotiationneeded'));
    }
    async setLocalDescription(d) {
      const id = this.__e2eId;
      say(id, 'setLocalDescription', d ? d.type : '(implicit)', 'in', this.signalingState);
      try { const r = await super.setLocalDescription(d); say(id, 'setLocalDescription done →', this.localDescription && this.localDescription.type); return r; } catch (e) { say(id, 'setLocalDescription FAILED', e.name, e.message); throw e; }
    }
    async setRemoteDescription(d) {
      const id = this.__e2eId;
      say(id, 'setRemoteDescription', d && d.type, 'in', this.signalingState);
      try { return await super.setRemoteDescription(d); } catch (e) { say(id, 'setRemoteDescription FAILED', e.name, e.message); throw e; }
    }
    async addIceCandidate(c) {
      const id = this.__e2eId;
      try { const r = await super.addIceCandidate(c); say(id, 'remote candidate added', candText(c)); return r; } catch (e) { say(id, 'addIceCandidate FAILED', candText(c), e.name, e.message); throw e; }
    }
  }
  Traced.__e2eTraced = true;
  window.RTCPeerConnection = Traced;
}

/** One page in its own browser context (like a separate browser profile),
 *  with its console and errors recorded. */
export class Tab {
  static async open(browser, name, { permissions } = {}) {
    const context = await browser.newContext({ viewport: { width: 960, height: 640 },
      ...(permissions ? { permissions } : {}) });
    if (process.env.RTC_E2E_TRACE !== '0') await context.addInitScript(tracePeerConnections);
    const page = await context.newPage();
    return new Tab(name, context, page);
  }

  constructor(name, context, page) {
    this.name = name;
    this.context = context;
    this.page = page;
    this.console = [];
    this.closed = false;
    const t0 = Date.now();
    const rec = (line) => {
      this.console.push(`+${((Date.now() - t0) / 1000).toFixed(1)}s ${line}`);
      if (this.console.length > 2000) this.console.splice(0, 500);
    };
    page.on('console', (m) => rec(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => rec(`pageerror: ${e.stack || e}`));
    page.on('requestfailed', (r) => rec(`requestfailed: ${r.url()} ${r.failure()?.errorText}`));
    page.on('response', (r) => { if (r.status() >= 400) rec(`http ${r.status()}: ${r.url()}`); });
    page.on('crash', () => rec('PAGE CRASHED'));
    page.on('websocket', (ws) => {
      rec(`websocket open ${ws.url()}`);
      ws.on('close', () => rec(`websocket closed ${ws.url()}`));
      ws.on('socketerror', (e) => rec(`websocket error ${ws.url()}: ${e}`));
    });
  }

  async goto(url) {
    await this.page.goto(url, { waitUntil: 'load', timeout: 30_000 });
  }

  consoleTail(n = 60) { return this.console.slice(-n).join('\n'); }

  /** Screenshot into dir as <prefix>-<name>.png; returns the path. */
  async screenshot(dir, prefix) {
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${prefix}-${this.name}.png`.replace(/[^A-Za-z0-9._-]/g, '_'));
    await this.page.screenshot({ path: file, fullPage: true, timeout: 20_000 });
    return file;
  }

  saveConsole(dir, prefix) {
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `${prefix}-${this.name}.console.log`.replace(/[^A-Za-z0-9._-]/g, '_'));
    fs.writeFileSync(file, this.console.join('\n') + '\n');
    return file;
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    await this.context.close().catch(() => {});
  }
}

/**
 * Runs in the page: a summary of the demo's RtcClient and of getStats() of
 * every peer connection. Returns null before window.rtcDemo.client exists.
 */
export function pageStats() {
  const c = window.rtcDemo && window.rtcDemo.client;
  if (!c) return null;
  const out = { state: c.state, self: c.self ? c.self.id : null, peers: {} };
  const jobs = [];
  for (const [id, p] of c.peers || []) {
    const r = {
      name: p.participant ? p.participant.displayName : null,
      connectionState: p.pc ? p.pc.connectionState : null,
      iceConnectionState: p.pc ? p.pc.iceConnectionState : null,
      iceGatheringState: p.pc ? p.pc.iceGatheringState : null,
      signalingState: p.pc ? p.pc.signalingState : null,
      negotiations: p.negotiations,
      channel: p.channel ? p.channel.readyState : null,
      video: [], audio: [], outVideo: [], dataChannels: [], localCandidates: [], pair: null,
    };
    out.peers[id] = r;
    if (!p.pc) continue;
    jobs.push(p.pc.getStats().then((stats) => {
      const byId = new Map();
      stats.forEach((s) => byId.set(s.id, s));
      const cand = (s) => s && { type: s.candidateType, address: s.address || s.ip, port: s.port,
        protocol: s.protocol, relayProtocol: s.relayProtocol };
      let pairId = null;
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          r.video.push({ ssrc: s.ssrc, mid: s.mid, framesDecoded: s.framesDecoded || 0,
            framesReceived: s.framesReceived || 0, bytesReceived: s.bytesReceived || 0,
            frameWidth: s.frameWidth, frameHeight: s.frameHeight });
        } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          r.audio.push({ ssrc: s.ssrc, bytesReceived: s.bytesReceived || 0 });
        } else if (s.type === 'outbound-rtp' && s.kind === 'video') {
          r.outVideo.push({ ssrc: s.ssrc, framesEncoded: s.framesEncoded || 0, framesSent: s.framesSent || 0 });
        } else if (s.type === 'data-channel') {
          r.dataChannels.push({ label: s.label, state: s.state, messagesSent: s.messagesSent || 0,
            messagesReceived: s.messagesReceived || 0 });
        } else if (s.type === 'local-candidate') {
          r.localCandidates.push(cand(s));
        } else if (s.type === 'transport' && s.selectedCandidatePairId) {
          pairId = s.selectedCandidatePairId;
        }
      });
      if (!pairId) {
        stats.forEach((s) => {
          if (!pairId && s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pairId = s.id;
        });
      }
      const pair = pairId && byId.get(pairId);
      if (pair) {
        r.pair = { state: pair.state, nominated: pair.nominated, bytesSent: pair.bytesSent,
          bytesReceived: pair.bytesReceived, local: cand(byId.get(pair.localCandidateId)),
          remote: cand(byId.get(pair.remoteCandidateId)) };
      }
    }).catch((e) => { r.statsError = String(e); }));
  }
  return Promise.all(jobs).then(() => out);
}

// Driving the demo app through its DOM/URL contract (clients/web/demo/README.md,
// "Page contract") and reading its RtcClient's getStats().
import assert from 'node:assert/strict';
import { pageStats } from './browser.mjs';
import { MEDIA_TIMEOUT, waitFor } from './util.mjs';

/** The page's visible state, for failure messages. */
export async function uiState(tab) {
  return tab.page.evaluate(() => {
    const q = (s) => document.querySelector(s);
    const vis = (e) => !!e && !e.hidden && !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
    const err = q('#error');
    return JSON.stringify({
      status: q('#status') && { state: q('#status').getAttribute('data-state'), text: q('#status').textContent.trim() },
      callVisible: vis(q('#call')),
      error: err && { visible: vis(err), kind: err.getAttribute('data-kind'), text: err.textContent.trim() },
      tiles: [...document.querySelectorAll('#tiles .tile')].map((t) => ({ local: t.getAttribute('data-local'),
        peer: t.getAttribute('data-peer-id'), state: t.getAttribute('data-state'),
        name: t.querySelector('.name')?.textContent })),
      hasClient: !!(window.rtcDemo && window.rtcDemo.client),
    });
  });
}

export async function stats(tab) {
  return tab.page.evaluate(pageStats);
}

/** Joins through the form: #name, #room, then #join. */
export async function joinViaForm(tab, name, room) {
  await tab.page.locator('#join-form').waitFor({ state: 'visible', timeout: 30_000 });
  await tab.page.fill('#name', name);
  await tab.page.fill('#room', room);
  await tab.page.click('#join');
}

/** Waits until the demo is in the call: #status[data-state=connected],
 *  #call visible, no error banner; returns my participant id. */
export async function waitJoined(tab, { timeout = MEDIA_TIMEOUT } = {}) {
  await waitFor(() => tab.page.evaluate(() => {
    const s = document.querySelector('#status');
    const call = document.querySelector('#call');
    const c = window.rtcDemo && window.rtcDemo.client;
    return s && s.getAttribute('data-state') === 'connected' && call && !call.hidden &&
      call.getClientRects().length > 0 && c && c.self && c.self.id;
  }), { timeout, what: `${tab.name} in the call (#status[data-state=connected], #call visible, client.self)`,
  describe: () => uiState(tab) });
  const err = tab.page.locator('#error');
  assert.equal(await err.isVisible(), false, `${tab.name}: #error shown while connected: ${await uiState(tab)}`);
  return tab.page.evaluate(() => window.rtcDemo.client.self.id);
}

function framesOf(st, peerId) {
  const p = st && st.peers[peerId];
  const m = {};
  for (const v of (p ? p.video : [])) m[v.ssrc] = v.framesDecoded;
  return m;
}

/** A snapshot of frames decoded per (peer, ssrc), as a baseline. */
export async function frames(tab) {
  const st = await stats(tab);
  const out = {};
  for (const id of Object.keys(st ? st.peers : {})) out[id] = framesOf(st, id);
  return out;
}

/** Frames decoded from peerId since baseline (the best ssrc). */
function gained(st, peerId, base = {}) {
  const now = framesOf(st, peerId);
  let best = 0;
  for (const [ssrc, n] of Object.entries(now)) best = Math.max(best, n - (base[ssrc] || 0));
  return best;
}

/**
 * Waits until tab's peer connection to each of peerIds is `connected` and
 * video frames from it are being decoded: at least minFrames more than at
 * `baseline` (default: the frames decoded when this wait starts), so frames
 * are flowing now, not merely decoded once. Returns the last stats.
 */
export async function waitMedia(tab, peerIds, { minFrames = 15, baseline, timeout = MEDIA_TIMEOUT, what = '' } = {}) {
  const base = baseline || await frames(tab);
  let last;
  await waitFor(async () => {
    last = await stats(tab);
    if (!last) return false;
    return peerIds.every((id) => last.peers[id] && last.peers[id].connectionState === 'connected' &&
      gained(last, id, base[id]) >= minFrames);
  }, { timeout, what: `${tab.name}: peers ${peerIds.join(', ')} connected with ≥ ${minFrames} new video frames decoded${what}`,
  describe: async () => `stats ${JSON.stringify(last)}; baseline ${JSON.stringify(base)}; ui ${await uiState(tab)}` });
  return last;
}

/** Remote tiles: one per peer, data-state connected, a <video>, the display name. */
export async function checkTiles(tab, expected /* { peerId: displayName } */) {
  await waitFor(() => tab.page.evaluate((exp) => {
    const tiles = [...document.querySelectorAll('#tiles .tile')];
    const local = tiles.filter((t) => t.getAttribute('data-local') === 'true');
    if (local.length !== 1 || tiles.length !== Object.keys(exp).length + 1) return false;
    return Object.entries(exp).every(([id, name]) => {
      const t = tiles.find((x) => x.getAttribute('data-peer-id') === id);
      return t && t.getAttribute('data-state') === 'connected' && t.querySelector('video') &&
        (t.querySelector('.name')?.textContent || '').includes(name);
    });
  }, expected), { timeout: 30_000, what: `${tab.name}: #tiles = 1 local + ${JSON.stringify(expected)} (connected, video, .name)`,
  describe: () => uiState(tab) });
}

/** Records the RtcClient's 'data' events in window.__e2eData (for `via`). */
export async function recordData(tab) {
  await tab.page.evaluate(() => {
    const c = window.rtcDemo.client;
    if (window.__e2eDataClient === c) return;
    window.__e2eDataClient = c;
    window.__e2eData = window.__e2eData || [];
    c.addEventListener('data', (e) => window.__e2eData.push({ from: e.detail.from, data: String(e.detail.data), via: e.detail.via }));
  });
}

export async function sendChat(tab, text) {
  await tab.page.fill('#chat-input', text);
  await tab.page.click('#chat-send');
  await waitFor(() => tab.page.evaluate((t) => [...document.querySelectorAll('#chat-log .chat-msg[data-from="me"]')]
    .some((m) => m.textContent.includes(t)), text), { timeout: 15_000, what: `${tab.name}: own message in #chat-log (data-from=me)`,
  describe: () => uiState(tab) });
}

/** Waits for a chat message from fromId (named fromName) in tab's #chat-log,
 *  and checks that it came over the data channel (data event via 'channel'). */
export async function waitChat(tab, text, fromId, fromName) {
  await waitFor(() => tab.page.evaluate(({ t, id, name }) => [...document.querySelectorAll('#chat-log .chat-msg')]
    .some((m) => m.getAttribute('data-from') === id && m.textContent.includes(t) && m.textContent.includes(name)),
  { t: text, id: fromId, name: fromName }), { timeout: 30_000,
    what: `${tab.name}: .chat-msg[data-from=${fromId}] with "${text}" and "${fromName}"`,
    describe: async () => `${await uiState(tab)}; log ${await tab.page.evaluate(() => JSON.stringify([...document.querySelectorAll('#chat-log .chat-msg')].map((m) => [m.getAttribute('data-from'), m.textContent])))}` });
  const seen = await tab.page.evaluate(({ t, id }) => (window.__e2eData || []).filter((d) => d.from === id && d.data.includes(t)), { t: text, id: fromId });
  assert.ok(seen.length >= 1, `${tab.name}: no 'data' event from ${fromId} with "${text}"`);
  assert.ok(seen.every((d) => d.via === 'channel'), `${tab.name}: chat must cross the data channel, got via ${JSON.stringify(seen)}`);
}

export async function negotiations(tab, peerId) {
  return tab.page.evaluate((id) => window.rtcDemo.client.peers.get(id)?.negotiations, peerId);
}

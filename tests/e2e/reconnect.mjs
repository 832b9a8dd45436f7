// e2e.reconnect — the signaling pod holding a page's event stream is killed
// (SIGKILL) mid-call: the call survives (frames keep being decoded, the
// peer connections stay connected, the demo stays/returns "connected"), the
// stream is resumed on the other pod, and a later renegotiation (camera
// off/on through #camera) still works. Which pod holds a page's stream is
// read from the pods' rtc_signaling_streams gauge on their admin ports.
// Then the other pod is killed too (after the first came back).
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Suite } from './lib/harness.mjs';
import { waitJoined, waitMedia, frames, negotiations, recordData, sendChat, waitChat, stats, uiState } from './lib/demo.mjs';
import { metricSum, randomId, waitFor, log } from './lib/util.mjs';

const s = new Suite('reconnect');
const room = `reconnect-${randomId(3)}`;
const ids = {};
let ann;
let bob;
let annPod; // index of the pod holding Ann's Subscribe stream

const sum = (xs) => xs.reduce((a, x) => a + (x || 0), 0);

async function waitStreams(pred, what) {
  let last;
  await waitFor(async () => pred(last = await s.stack.podStreams()), {
    what: `rtc_signaling_streams per pod: ${what}`, describe: async () => JSON.stringify(last) });
  return last;
}

async function resumes() {
  let n = 0;
  for (let i = 0; i < s.stack.bridges.length; i++) n += metricSum(await s.stack.bridgeMetrics(i), 'rtc_bridge_stream_resumes_total');
  return n;
}

async function waitConnected(tab) {
  await waitFor(() => tab.page.evaluate(() => document.querySelector('#status')?.getAttribute('data-state') === 'connected' &&
    window.rtcDemo.client.state === 'connected'), { what: `${tab.name}: #status[data-state=connected]`, describe: () => uiState(tab) });
}

/** Camera off then on at `tab` (#camera): each renegotiates with the peer
 *  (negotiations grow on both sides); frames from tab stop while off and
 *  resume when on. */
async function cameraOffOn(tab, peer, tabId, peerId) {
  const cam = tab.page.locator('#camera');
  for (const [step, pressed] of [['off', 'true'], ['on', 'false']]) {
    const n0 = await negotiations(tab, peerId);
    const m0 = await negotiations(peer, tabId);
    assert.ok(Number.isInteger(n0) && Number.isInteger(m0), `negotiations counters exist: ${n0}, ${m0}`);
    await cam.click();
    await waitFor(async () => (await cam.getAttribute('aria-pressed')) === pressed,
      { timeout: 15_000, what: `${tab.name}: #camera aria-pressed=${pressed} (camera ${step})` });
    await waitFor(async () => (await negotiations(tab, peerId)) > n0 && (await negotiations(peer, tabId)) > m0, {
      what: `camera ${step} at ${tab.name}: a renegotiation completes on both sides (negotiations ${tab.name} > ${n0}, ${peer.name} > ${m0})`,
      describe: async () => `${tab.name} ${await negotiations(tab, peerId)} ${await uiState(tab)}; ${peer.name} ${await negotiations(peer, tabId)}; stats ${JSON.stringify(await stats(peer))}` });
    log(`camera ${step} at ${tab.name}: negotiations ${tab.name} ${n0} → ${await negotiations(tab, peerId)}, ${peer.name} ${m0} → ${await negotiations(peer, tabId)}`);
    if (step === 'off') {
      // The peer stops decoding new frames from tab (two samples 1 s apart agree).
      let prev = null;
      await waitFor(async () => {
        const cur = JSON.stringify((await frames(peer))[tabId] || {});
        const same = cur === prev;
        prev = cur;
        return same;
      }, { interval: 1000, timeout: 30_000, what: `${peer.name}: video from ${tab.name} stops while the camera is off` });
    } else {
      await waitMedia(peer, [tabId], { what: ` (frames resume after camera on at ${tab.name})` });
    }
  }
}

describe('e2e.reconnect: a signaling pod dies mid-call (SIGKILL), the call survives and renegotiates', () => {
  before(() => s.start());
  after(() => s.stop());

  s.scenario('Ann joins (her stream lands on one pod), Bob joins: video both ways', async () => {
    const [b1, b2] = s.stack.bridgeUrls();
    ann = await s.tab('ann');
    bob = await s.tab('bob');
    await ann.goto(s.demoUrl({ name: 'Ann', room, bridges: [b1, b2] }));
    ids.ann = await waitJoined(ann);
    const st = await waitStreams((v) => sum(v) === 1, 'exactly one stream (Ann\'s)');
    annPod = st.findIndex((n) => n === 1);
    log(`Ann's event stream is on ${s.stack.pods[annPod].name} (streams per pod ${JSON.stringify(st)})`);
    await bob.goto(s.demoUrl({ name: 'Bob', room, bridges: [b2, b1] }));
    ids.bob = await waitJoined(bob);
    await Promise.all([waitMedia(ann, [ids.bob]), waitMedia(bob, [ids.ann])]);
    const both = await waitStreams((v) => sum(v) === 2, 'two streams (Ann\'s and Bob\'s)');
    assert.ok(both[annPod] >= 1, `Ann's stream still on ${s.stack.pods[annPod].name}: ${JSON.stringify(both)}`);
    await s.screenshots('before-kill', [ann, bob]);
  });

  s.scenario('SIGKILL the pod holding Ann\'s stream: her stream resumes on the other pod, frames keep flowing, still connected', async () => {
    const other = 1 - annPod;
    const before = await s.stack.podStreams();
    assert.ok(before[annPod] >= 1, `Ann's pod ${s.stack.pods[annPod].name} holds ≥ 1 stream before the kill: ${JSON.stringify(before)}`);
    const [fa, fb] = [await frames(ann), await frames(bob)];
    const r0 = await resumes();
    log(`killing ${s.stack.pods[annPod].name} (pid ${s.stack.pods[annPod].proc.pid}) with SIGKILL; streams ${JSON.stringify(before)}`);
    await s.stack.killPod(annPod);
    // Both pages' streams end up on the surviving pod (Ann's was resumed there).
    await waitStreams((v) => v[annPod] === null && v[other] === 2, `both streams on ${s.stack.pods[other].name} after the kill`);
    assert.ok(await resumes() > r0, `the bridges resumed the stream (rtc_bridge_stream_resumes_total ${r0} → ${await resumes()})`);
    // The call survived: frames keep being decoded on both sides after the kill.
    await Promise.all([waitMedia(ann, [ids.bob], { baseline: fa, minFrames: 30 }),
      waitMedia(bob, [ids.ann], { baseline: fb, minFrames: 30 })]);
    await waitConnected(ann);
    await waitConnected(bob);
    for (const [tab, peer] of [[ann, ids.bob], [bob, ids.ann]]) {
      assert.equal((await stats(tab)).peers[peer].connectionState, 'connected', `${tab.name}'s peer connection`);
      assert.equal(await tab.page.locator('#error').isVisible(), false, `${tab.name}: no error banner: ${await uiState(tab)}`);
    }
    await recordData(ann);
    await recordData(bob);
    const m = `still here after the kill ${randomId(3)}`;
    await sendChat(ann, m);
    await waitChat(bob, m, ids.ann, 'Ann');
    await s.screenshots('after-kill', [ann, bob]);
  }, { after: true });

  s.scenario('after the kill, camera off/on (#camera) renegotiates on both sides and frames resume', async () => {
    await cameraOffOn(ann, bob, ids.ann, ids.bob);
    await cameraOffOn(bob, ann, ids.bob, ids.ann);
    await s.screenshots('after-renegotiation', [ann, bob]);
  }, { after: true });

  s.scenario('the killed pod comes back, then the other one is killed: the call survives again', async () => {
    const other = 1 - annPod;
    await s.stack.startPod(annPod);
    const st = await s.stack.podStreams();
    assert.equal(st[other], 2, `both streams still on ${s.stack.pods[other].name}: ${JSON.stringify(st)}`);
    const [fa, fb] = [await frames(ann), await frames(bob)];
    log(`killing ${s.stack.pods[other].name} (pid ${s.stack.pods[other].proc.pid}) with SIGKILL; streams ${JSON.stringify(st)}`);
    await s.stack.killPod(other);
    await waitStreams((v) => v[other] === null && v[annPod] === 2, `both streams on the restarted ${s.stack.pods[annPod].name}`);
    await Promise.all([waitMedia(ann, [ids.bob], { baseline: fa, minFrames: 30 }),
      waitMedia(bob, [ids.ann], { baseline: fb, minFrames: 30 })]);
    await waitConnected(ann);
    await waitConnected(bob);
    await cameraOffOn(ann, bob, ids.ann, ids.bob);
    await s.screenshots('after-second-kill', [ann, bob]);
  }, { after: true });
});

// e2e.sdk — the SDK's own recovery paths, in the demo's pages:
//  - a bridge is killed: the client reconnects to the other bridge, resumes
//    its session (same participant, events from the last id) and the call
//    and server-relayed data go on;
//  - tokens live 20 s here: the client refreshes them before they expire
//    and keeps working after the first one is dead (which the pods refuse);
//  - glare: both sides renegotiate at once (both pages' event handling held
//    until both offers are out): the impolite side ignores the other offer, the
//    polite one rolls its own back, and both settle;
//  - a peer that sends its candidates before its offer: they are held until
//    the offer is set, then used (the selected pair's remote is Raw's host
//    candidate, not a peer-reflexive guess);
//  - a peer connection started over by one side (what the SDK does when a
//    negotiated connection never connects): both sides build new ones and
//    media and chat flow again.
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Suite } from './lib/harness.mjs';
import { waitJoined, waitMedia, recordData, stats, uiState } from './lib/demo.mjs';
import { BLANK_PATH } from './lib/static.mjs';
import { randomId, waitFor } from './lib/util.mjs';

const TOKEN_TTL_S = 20;
const s = new Suite('sdk', {
  stack: {
    turn: false,
    authArgs: ['--token-ttl', `${TOKEN_TTL_S}s`],
    podArgs: ['--leeway', '1s'],
  },
});
const room = `sdk-${randomId(3)}`;
const ids = {};
let ann;
let bob;

/** Records the client's events of these types in window.__e2eEv. */
async function recordEvents(tab, types) {
  await tab.page.evaluate((list) => {
    const c = window.rtcDemo.client;
    window.__e2eEv = window.__e2eEv || [];
    for (const t of list) c.addEventListener(t, (e) => window.__e2eEv.push({ type: t, detail: JSON.parse(JSON.stringify(e.detail)), at: Date.now() }));
  }, types);
}

async function events(tab, type) {
  return tab.page.evaluate((t) => (window.__e2eEv || []).filter((e) => e.type === t), type);
}

/** Sends app data through the server (Signal) and waits for the other page to get it. */
async function serverData(from, to, toId, fromId, text) {
  await from.page.evaluate(({ id, t }) => window.rtcDemo.client.sendData(t, { to: id }), { id: toId, t: text });
  await waitFor(() => to.page.evaluate(({ id, t }) => (window.__e2eData || []).some((d) => d.from === id && d.data === t && d.via === 'server'),
    { id: fromId, t: text }), { timeout: 30_000, what: `${to.name}: server-relayed data "${text}" from ${fromId}`, describe: () => uiState(to) });
}

describe('e2e.sdk: reconnect to another bridge with resume, token refresh, glare, peer connection started over', () => {
  before(async () => {
    await s.start();
    const [b1, b2] = s.stack.bridgeUrls();
    ann = await s.tab('ann');
    bob = await s.tab('bob');
    // Ann tries bridge1 first, Bob bridge2.
    await ann.goto(s.demoUrl({ name: 'Ann', room, bridges: [b1, b2] }));
    ids.ann = await waitJoined(ann);
    await bob.goto(s.demoUrl({ name: 'Bob', room, bridges: [b2, b1] }));
    ids.bob = await waitJoined(bob);
    await Promise.all([waitMedia(ann, [ids.bob]), waitMedia(bob, [ids.ann])]);
    for (const t of [ann, bob]) {
      await recordData(t);
      await recordEvents(t, ['state', 'reconnected', 'token-refreshed', 'negotiated']);
    }
  });
  after(() => s.stop());

  s.scenario('bridge1 is killed: Ann reconnects through bridge2, resumes her session, the call and server data go on', async () => {
    const before = await ann.page.evaluate(() => ({ id: window.rtcDemo.client.self.id, url: window.rtcDemo.client.rpc.url }));
    assert.equal(before.url, s.stack.bridges[0].url, 'Ann starts on bridge1');
    await s.stack.killBridge(0);
    await waitFor(async () => (await events(ann, 'reconnected')).length > 0 &&
      await ann.page.evaluate(() => window.rtcDemo.client.state === 'connected'),
    { timeout: 60_000, what: 'Ann: reconnected event and state connected again', describe: () => uiState(ann) });
    const rec = await events(ann, 'reconnected');
    assert.deepEqual(rec.map((e) => e.detail), [{ resumed: true }], 'one reconnect, session resumed');
    const states = (await events(ann, 'state')).map((e) => e.detail.state);
    assert.deepEqual(states, ['reconnecting', 'connected'], `Ann's states: ${states}`);
    const afterKill = await ann.page.evaluate(() => ({ id: window.rtcDemo.client.self.id, url: window.rtcDemo.client.rpc.url }));
    assert.equal(afterKill.id, before.id, 'the same participant after resuming');
    assert.equal(afterKill.url, s.stack.bridges[1].url, 'Ann is on bridge2 now');
    // Media never depended on the bridge; events flow both ways again.
    await Promise.all([waitMedia(ann, [ids.bob]), waitMedia(bob, [ids.ann])]);
    await serverData(bob, ann, ids.ann, ids.bob, `to Ann after the kill ${randomId(3)}`);
    await serverData(ann, bob, ids.bob, ids.ann, `from Ann after the kill ${randomId(3)}`);
    assert.deepEqual(await events(bob, 'reconnected'), [], 'Bob (on bridge2) never reconnected');
    await s.screenshots('after-bridge-kill', [ann, bob]);
  });

  s.scenario(`tokens live ${TOKEN_TTL_S} s: both refresh before expiry and keep working after the first token is dead`, async () => {
    const first = await ann.page.evaluate(() => ({ token: window.rtcDemo.client.token, exp: window.rtcDemo.client.tokenExpiresAt }));
    await waitFor(async () => (await events(ann, 'token-refreshed')).length > 0 && (await events(bob, 'token-refreshed')).length > 0,
      { timeout: TOKEN_TTL_S * 1000 + 30_000, what: 'token-refreshed on both pages' });
    const refreshed = (await events(ann, 'token-refreshed'))[0];
    assert.ok(refreshed.at < first.exp, `refreshed at ${refreshed.at}, before the old token expired at ${first.exp}`);
    assert.ok(refreshed.detail.expiresAtMs > first.exp, `new expiry ${refreshed.detail.expiresAtMs} > old ${first.exp}`);
    // Past the first token's expiry (+ the pods' 1 s leeway).
    await waitFor(async () => Date.now() > first.exp + 3000, { timeout: TOKEN_TTL_S * 1000 + 10_000, what: 'the first token expired' });
    // The pods refuse the old token now: a raw call with it.
    const code = await ann.page.evaluate(async ({ token, url }) => {
      const { RpcSocket } = await import('/sdk/rtc.js');
      const r = new RpcSocket(url);
      await r.open();
      await r.call('session.authenticate', { accessToken: token });
      try {
        await r.call('rtc.signaling.v1.Signaling/Heartbeat', { sessionId: window.rtcDemo.client.sessionId });
        return 0;
      } catch (e) {
        return e.code;
      } finally {
        r.close();
      }
    }, { token: first.token, url: s.stack.bridges[1].url });
    assert.equal(code, 16, 'the expired first token is refused UNAUTHENTICATED');
    // The clients themselves work on their refreshed tokens.
    await serverData(ann, bob, ids.bob, ids.ann, `after expiry ${randomId(3)}`);
    await serverData(bob, ann, ids.ann, ids.bob, `after expiry too ${randomId(3)}`);
    for (const t of [ann, bob]) {
      const st = await t.page.evaluate(() => window.rtcDemo.client.state);
      assert.equal(st, 'connected', `${t.name} still connected`);
    }
  });

  s.scenario('glare: both renegotiate at once (camera off, then on); the impolite side ignores, the polite one rolls back', async () => {
    const pcState = (t, id) => t.page.evaluate((pid) => {
      const p = window.rtcDemo.client.peers.get(pid);
      return { sig: p.pc.signalingState, dir: p.videoTransceiver && p.videoTransceiver.currentDirection, n: p.negotiations };
    }, id);
    const glares = (t) => t.console.filter((l) => l.includes('rtc: glare with')).length;
    for (const enabled of [false, true]) {
      const g0 = { ann: glares(ann), bob: glares(bob) };
      const n0 = { ann: (await pcState(ann, ids.bob)).n, bob: (await pcState(bob, ids.ann)).n };
      // Neither side handles an event until both have sent their offer:
      // each then gets the other's offer in have-local-offer, a certain
      // collision on both sides.
      const hold = (t) => t.page.evaluate(() => {
        const c = window.rtcDemo.client;
        c.events = c.events.then(() => new Promise((resolve) => { window.__e2eRelease = resolve; }));
      });
      const release = (t) => t.page.evaluate(() => window.__e2eRelease && window.__e2eRelease());
      await hold(ann);
      await hold(bob);
      try {
        await Promise.all([ann, bob].map((t) => t.page.evaluate((on) => window.rtcDemo.client.setVideoEnabled(on), enabled)));
        await waitFor(async () => (await pcState(ann, ids.bob)).sig === 'have-local-offer' && (await pcState(bob, ids.ann)).sig === 'have-local-offer',
          { timeout: 30_000, what: 'both sides have sent an offer',
            describe: async () => JSON.stringify({ ann: await pcState(ann, ids.bob), bob: await pcState(bob, ids.ann) }) });
      } finally {
        await release(ann);
        await release(bob);
      }
      const want = enabled ? 'sendrecv' : 'inactive';
      await waitFor(async () => {
        const a = await pcState(ann, ids.bob);
        const b = await pcState(bob, ids.ann);
        return a.sig === 'stable' && b.sig === 'stable' && a.dir === want && b.dir === want && a.n > n0.ann && b.n > n0.bob;
      }, { timeout: 60_000, what: `both stable with video ${want} after the collision`,
        describe: async () => JSON.stringify({ ann: await pcState(ann, ids.bob), bob: await pcState(bob, ids.ann), n0 }) });
      assert.ok(glares(ann) > g0.ann && glares(bob) > g0.bob,
        `both sides saw the collision (console 'rtc: glare with': ann ${g0.ann}→${glares(ann)}, bob ${g0.bob}→${glares(bob)})`);
    }
    await Promise.all([waitMedia(ann, [ids.bob]), waitMedia(bob, [ids.ann])]);
  });

  s.scenario('a peer that sends its candidates before its offer: the SDK holds them, then uses them', async () => {
    // "Raw" is a participant written here with a bare RTCPeerConnection: it
    // gathers every candidate first, sends them, and only then its offer.
    const raw = await s.tab('raw');
    await raw.goto(`${s.stack.origin}${BLANK_PATH}`);
    const rawId = await raw.page.evaluate(async ({ url, room, annId }) => {
      const { RpcSocket } = await import('/sdk/rtc.js');
      const SIG = 'rtc.signaling.v1.Signaling/';
      const r = new RpcSocket(url);
      await r.open();
      const login = await r.call('rtc.auth.v1.Auth/DevLogin', { displayName: 'Raw', roomId: room });
      await r.call('session.authenticate', { accessToken: login.accessToken });
      const j = await r.call(SIG + 'Join', {});
      const pc = new RTCPeerConnection();
      window.__raw = { r, pc };
      const signal = (payload) => r.call(SIG + 'Signal', { sessionId: j.sessionId, toParticipantId: annId, payload });
      let queue = Promise.resolve();
      await r.subscribe(SIG + 'Subscribe', { sessionId: j.sessionId }, (ev) => {
        queue = queue.then(async () => {
          const p = ev.signal && ev.signal.fromParticipantId === annId && ev.signal.payload;
          if (!p) return;
          if (p.description) {
            await pc.setRemoteDescription({ type: p.description.type === 'SDP_TYPE_OFFER' ? 'offer' : 'answer', sdp: p.description.sdp });
            if (p.description.type === 'SDP_TYPE_OFFER') {
              await pc.setLocalDescription();
              await signal({ description: { type: 'SDP_TYPE_ANSWER', sdp: pc.localDescription.sdp } });
            }
          } else if (p.candidate) {
            await pc.addIceCandidate({ candidate: p.candidate.candidate, sdpMid: p.candidate.sdpMid, sdpMLineIndex: p.candidate.sdpMlineIndex ?? null });
          }
        }).catch((e) => console.error('raw:', e));
      }, () => {});
      pc.addTransceiver('video', { direction: 'recvonly' });
      pc.createDataChannel('chat', { negotiated: true, id: 0 });
      const cands = [];
      const gathered = new Promise((resolve) => { pc.onicecandidate = (e) => (e.candidate ? cands.push(e.candidate) : resolve()); });
      await pc.setLocalDescription();
      const offer = pc.localDescription.sdp; // taken before any candidate was gathered
      await gathered;
      for (const c of cands) {
        await signal({ candidate: { candidate: c.candidate, sdpMid: c.sdpMid, sdpMlineIndex: c.sdpMLineIndex } });
      }
      await signal({ description: { type: 'SDP_TYPE_OFFER', sdp: offer } });
      return j.participant.id;
    }, { url: s.stack.bridges[1].url, room, annId: ids.ann });
    await waitFor(async () => {
      const st = await stats(ann);
      const p = st && st.peers[rawId];
      return p && p.connectionState === 'connected' && p.pair && p.pair.remote.type === 'host';
    }, { timeout: 60_000, what: 'Ann connected to Raw over the host candidate Raw sent before its offer',
      describe: async () => JSON.stringify((await stats(ann)).peers[rawId]) });
    assert.ok(ann.console.some((l) => l.includes(`rtc: candidate from ${rawId} held until their description is set`)),
      "Ann's SDK held Raw's early candidates (console)");
    await raw.page.evaluate(async () => {
      const { r, pc } = window.__raw;
      pc.close();
      r.close();
    });
    await raw.close();
    // Raw's session times out or is swept; Ann and Bob are unaffected.
    await Promise.all([waitMedia(ann, [ids.bob]), waitMedia(bob, [ids.ann])]);
  });

  s.scenario('one side starts its peer connection over: both build new ones, media and chat flow again', async () => {
    // The impolite side is the one that starts over (the SDK's watchdog).
    const annPolite = await ann.page.evaluate((id) => window.rtcDemo.client.peers.get(id).polite, ids.bob);
    const [actor, other, actorId, otherId] = annPolite ? [bob, ann, ids.bob, ids.ann] : [ann, bob, ids.ann, ids.bob];
    const fp = (t, id) => t.page.evaluate((pid) => {
      const pc = window.rtcDemo.client.peers.get(pid).pc;
      return /^a=fingerprint:(.+)$/m.exec(pc.localDescription.sdp)[1];
    }, id);
    const before = { actor: await fp(actor, otherId), other: await fp(other, actorId) };
    await actor.page.evaluate((pid) => {
      const c = window.rtcDemo.client;
      c._rebuildPeer(c.peers.get(pid), true);
    }, otherId);
    await Promise.all([waitMedia(actor, [otherId], { baseline: {} }), waitMedia(other, [actorId], { baseline: {} })]);
    const after = { actor: await fp(actor, otherId), other: await fp(other, actorId) };
    assert.notEqual(after.actor, before.actor, `${actor.name} has a new peer connection`);
    assert.notEqual(after.other, before.other, `${other.name} started over too`);
    const text = `chat on the new connection ${randomId(3)}`;
    await waitFor(() => actor.page.evaluate((t) => window.rtcDemo.client.sendChat(t) === 1, text),
      { timeout: 30_000, what: `${actor.name}: chat channel open on the new connection` });
    await waitFor(() => other.page.evaluate(({ id, t }) => (window.__e2eData || []).some((d) => d.from === id && d.data === t && d.via === 'channel'),
      { id: actorId, t: text }), { timeout: 30_000, what: `${other.name}: chat over the new data channel` });
    await s.screenshots('after-restart', [ann, bob]);
  });
});

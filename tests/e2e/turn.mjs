// e2e.turn — the same call with relay=1 (iceTransportPolicy 'relay') through
// a real coturn that checks the REST credentials rtc-auth hands out (in Join
// and GetIceServers): the selected candidate pair is relay on both sides.
// Then coturn is restarted with another secret: no relay candidate, no
// connection.
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Suite } from './lib/harness.mjs';
import { waitJoined, waitMedia, checkTiles, stats, uiState } from './lib/demo.mjs';
import { randomId, turnCredential, waitFor } from './lib/util.mjs';

const s = new Suite('turn');

const escapeRe = (x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function inRelayRange(port) {
  const [lo, hi] = s.stack.turnRelayRange;
  return port >= lo && port <= hi;
}

function assertRelayPair(st, peerId, who) {
  const p = st.peers[peerId];
  assert.ok(p && p.pair, `${who}: no selected candidate pair to ${peerId}: ${JSON.stringify(p)}`);
  const { local, remote, state } = p.pair;
  assert.ok(state === 'succeeded' || p.pair.nominated, `${who}: selected pair ${JSON.stringify(p.pair)}`);
  assert.equal(local.type, 'relay', `${who}: selected local candidate must be relay: ${JSON.stringify(p.pair)}`);
  assert.equal(local.address, '127.0.0.1', `${who}: ${JSON.stringify(local)}`);
  assert.ok(inRelayRange(local.port), `${who}: local relay port ${local.port} in coturn's --min-port/--max-port ${s.stack.turnRelayRange}`);
  // The remote end is the other page's relayed address (relay, or prflx when
  // its check arrived before the trickled candidate): a coturn relay port too.
  assert.ok(['relay', 'prflx'].includes(remote.type), `${who}: remote candidate ${JSON.stringify(remote)}`);
  // (Chrome does not reveal the address of a peer-reflexive remote candidate: "".)
  assert.ok((remote.address === '127.0.0.1' || (remote.type === 'prflx' && !remote.address)) && inRelayRange(remote.port),
    `${who}: remote is a coturn relay address: ${JSON.stringify(remote)}`);
  const nonRelay = p.localCandidates.filter((c) => c.type !== 'relay');
  assert.deepEqual(nonRelay, [], `${who}: iceTransportPolicy relay gathers relay candidates only`);
}

describe('e2e.turn: relay-only call through coturn with REST credentials from rtc-auth', () => {
  before(() => s.start());
  after(() => s.stop());

  s.scenario('relay=1: video both ways, selected candidate pair is relay on both sides', async () => {
    const room = `turn-${randomId(3)}`;
    const ann = await s.tab('ann');
    const bob = await s.tab('bob');
    await ann.goto(s.demoUrl({ name: 'Ann', room, relay: true }));
    const annId = await waitJoined(ann);
    await bob.goto(s.demoUrl({ name: 'Bob', room, relay: true, bridges: [...s.stack.bridgeUrls()].reverse() }));
    const bobId = await waitJoined(bob);
    const [sa, sb] = await Promise.all([waitMedia(ann, [bobId]), waitMedia(bob, [annId])]);
    assertRelayPair(sa, bobId, 'ann');
    assertRelayPair(sb, annId, 'bob');
    await checkTiles(ann, { [bobId]: 'Bob' });
    await checkTiles(bob, { [annId]: 'Ann' });
    // The credentials are the ones GetIceServers hands out (same secret as coturn).
    const ice = await ann.page.evaluate(() => window.rtcDemo.client.call('rtc.auth.v1.Auth/GetIceServers', {}));
    const turn = ice.iceServers.find((x) => x.urls.some((u) => u.startsWith('turn:')));
    assert.ok(turn, `GetIceServers: ${JSON.stringify(ice)}`);
    assert.deepEqual(turn.urls, [`turn:127.0.0.1:${s.stack.turnPort}?transport=udp`]);
    assert.equal(turn.credential, turnCredential(s.stack.turnSecret, turn.username), 'credential = base64(HMAC-SHA1(secret, username))');
    // coturn allocated for both pages' REST usernames (<expiry>:<identity>).
    const tlog = fs.readFileSync(s.stack.coturnLog, 'utf8');
    for (const tab of [ann, bob]) {
      const identity = await tab.page.evaluate(() => window.rtcDemo.client.self.identity);
      assert.ok(identity, `${tab.name}: client.self.identity`);
      assert.match(tlog, new RegExp(`user <\\d+:${escapeRe(identity)}>: incoming packet ALLOCATE processed, success`),
        `coturn log (${s.stack.coturnLog}) shows a successful ALLOCATE for ${tab.name}'s identity ${identity}`);
    }
    await s.screenshots('relay', [ann, bob]);
    await s.closeTabs();
  });

  s.scenario('a wrong TURN secret (coturn restarted with another one): no relay candidate, no connection', async () => {
    await s.closeTabs(); // the relay call's pages, if that test failed before closing them
    await s.stack.restartCoturn(`wrong-${randomId(8)}`);
    const room = `turn-bad-${randomId(3)}`;
    const carol = await s.tab('carol');
    const dave = await s.tab('dave');
    await carol.goto(s.demoUrl({ name: 'Carol', room, relay: true }));
    const carolId = await waitJoined(carol);
    await dave.goto(s.demoUrl({ name: 'Dave', room, relay: true }));
    const daveId = await waitJoined(dave);
    // Both sides know each other and are done gathering, or were told 401 by
    // the TURN server (icecandidateerror, recorded by the harness' trace).
    const settled = async (tab, peerId) => {
      const st = await stats(tab);
      const p = st && st.peers[peerId];
      const told401 = await tab.page.evaluate(() => (window.__e2eIceErrors || []).some((e) => e.errorCode === 401));
      return p && (p.iceGatheringState === 'complete' || p.connectionState === 'failed' || told401) ? st : null;
    };
    let sc;
    let sd;
    await waitFor(async () => (sc = await settled(carol, daveId)) && (sd = await settled(dave, carolId)), {
      what: 'both peer connections done gathering ICE candidates, failed, or told 401 by coturn',
      describe: async () => `carol ${JSON.stringify(await stats(carol))} ${await uiState(carol)}; dave ${JSON.stringify(await stats(dave))}` });
    for (const [st, peerId, who] of [[sc, daveId, 'carol'], [sd, carolId, 'dave']]) {
      const p = st.peers[peerId];
      assert.deepEqual(p.localCandidates.filter((c) => c.type === 'relay'), [], `${who}: no relay candidate with a wrong secret`);
      assert.notEqual(p.connectionState, 'connected', `${who}: must not connect: ${JSON.stringify(p)}`);
      assert.ok(!p.pair || p.pair.state !== 'succeeded', `${who}: no succeeded pair: ${JSON.stringify(p.pair)}`);
      assert.ok(p.video.every((v) => v.framesDecoded === 0), `${who}: no frames: ${JSON.stringify(p.video)}`);
    }
    // coturn refused both pages' credentials, and the browsers were told (401).
    const tlog = fs.readFileSync(s.stack.coturnLog, 'utf8');
    for (const tab of [carol, dave]) {
      const identity = await tab.page.evaluate(() => window.rtcDemo.client.self.identity);
      assert.match(tlog, new RegExp(`check_stun_auth: Cannot find credentials of user <\\d+:${escapeRe(identity)}>`),
        `coturn log (${s.stack.coturnLog}) refuses ${tab.name}'s REST username (identity ${identity})`);
      const errs = await tab.page.evaluate(() => window.__e2eIceErrors || []);
      assert.ok(errs.some((e) => e.errorCode === 401 && String(e.url).startsWith('turn:')),
        `${tab.name}: icecandidateerror 401 from the TURN server, got ${JSON.stringify(errs)}`);
    }
    await s.screenshots('wrong-secret', [carol, dave]);
  });
});

// e2e.call — the demo app in headless chromium with fake camera and
// microphone: two pages join one room (one through the form, one with
// autojoin=1, on different bridges), decode each other's video (getStats),
// chat over the data channel; a third page joins: a mesh of 3. Screenshots
// of every page are saved as artifacts.
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Suite } from './lib/harness.mjs';
import { joinViaForm, waitJoined, waitMedia, checkTiles, recordData, sendChat, waitChat, stats } from './lib/demo.mjs';
import { randomId } from './lib/util.mjs';

const s = new Suite('call');
const room = `call-${randomId(3)}`;
const ids = {};
let ann;
let bob;
let carl;

function assertLoopbackPair(st, peerId, who) {
  const p = st.peers[peerId];
  assert.ok(p && p.pair, `${who}: no selected candidate pair to ${peerId}: ${JSON.stringify(p)}`);
  // The transport's selected pair (Chrome may report a nominated pair in use
  // as 'in-progress' while it re-checks it).
  assert.ok(p.pair.state === 'succeeded' || p.pair.nominated, `${who}: selected pair ${JSON.stringify(p.pair)}`);
  assert.match(String(p.pair.local.address), /^127\./, `${who}: media must stay on loopback: ${JSON.stringify(p.pair)}`);
  // Chrome does not reveal the address of a peer-reflexive remote candidate ("").
  if (p.pair.remote.address || p.pair.remote.type !== 'prflx') {
    assert.match(String(p.pair.remote.address), /^127\./, `${who}: media must stay on loopback: ${JSON.stringify(p.pair)}`);
  }
}

describe('e2e.call: demo call in chromium — 2 pages, chat over the data channel, mesh of 3', () => {
  before(() => s.start());
  after(() => s.stop());

  s.scenario('two pages join one room and decode each other\'s video (getStats framesDecoded, connected)', async () => {
    const [b1, b2] = s.stack.bridgeUrls();
    ann = await s.tab('ann');
    bob = await s.tab('bob');
    // Ann through the form, on bridge1 first; Bob with autojoin=1, on bridge2 first.
    await ann.goto(s.demoUrl({ autojoin: false, bridges: [b1, b2] }));
    await joinViaForm(ann, 'Ann', room);
    ids.ann = await waitJoined(ann);
    await bob.goto(s.demoUrl({ name: 'Bob', room, bridges: [b2, b1] }));
    ids.bob = await waitJoined(bob);
    assert.notEqual(ids.ann, ids.bob);
    const [sa, sb] = await Promise.all([waitMedia(ann, [ids.bob]), waitMedia(bob, [ids.ann])]);
    assertLoopbackPair(sa, ids.bob, 'ann');
    assertLoopbackPair(sb, ids.ann, 'bob');
    assert.ok(sa.peers[ids.bob].video.some((v) => v.frameWidth > 0), `ann decodes sized frames: ${JSON.stringify(sa.peers[ids.bob].video)}`);
    await checkTiles(ann, { [ids.bob]: 'Bob' });
    await checkTiles(bob, { [ids.ann]: 'Ann' });
    await s.screenshots('2-pages', [ann, bob]);
  });

  s.scenario('a chat message crosses the data channel, both ways', async () => {
    await recordData(ann);
    await recordData(bob);
    const before = (await stats(bob)).peers[ids.ann].dataChannels.reduce((a, d) => a + d.messagesReceived, 0);
    const m1 = `hello from Ann ${randomId(3)}`;
    await sendChat(ann, m1);
    await waitChat(bob, m1, ids.ann, 'Ann');
    const after = (await stats(bob)).peers[ids.ann].dataChannels.reduce((a, d) => a + d.messagesReceived, 0);
    assert.ok(after > before, `bob's data-channel stats count the message (messagesReceived ${before} → ${after})`);
    const m2 = `hi Ann, Bob here ${randomId(3)}`;
    await sendChat(bob, m2);
    await waitChat(ann, m2, ids.bob, 'Bob');
    await s.screenshots('2-pages-chat', [ann, bob]);
  }, { after: true });

  s.scenario('a third page joins: mesh of 3, every page decodes both others, chat reaches both', async () => {
    carl = await s.tab('carl');
    await carl.goto(s.demoUrl({ name: 'Carl', room }));
    ids.carl = await waitJoined(carl);
    const [sa, sb, sc] = await Promise.all([
      waitMedia(ann, [ids.bob, ids.carl]),
      waitMedia(bob, [ids.ann, ids.carl]),
      waitMedia(carl, [ids.ann, ids.bob]),
    ]);
    for (const [st, who, others] of [[sa, 'ann', [ids.bob, ids.carl]], [sb, 'bob', [ids.ann, ids.carl]], [sc, 'carl', [ids.ann, ids.bob]]]) {
      assert.deepEqual(Object.keys(st.peers).sort(), [...others].sort(), `${who} has exactly the two others as peers`);
      for (const id of others) assertLoopbackPair(st, id, who);
    }
    await checkTiles(ann, { [ids.bob]: 'Bob', [ids.carl]: 'Carl' });
    await checkTiles(bob, { [ids.ann]: 'Ann', [ids.carl]: 'Carl' });
    await checkTiles(carl, { [ids.ann]: 'Ann', [ids.bob]: 'Bob' });
    await recordData(carl);
    const m = `Carl says hi ${randomId(3)}`;
    await sendChat(carl, m);
    await waitChat(ann, m, ids.carl, 'Carl');
    await waitChat(bob, m, ids.carl, 'Carl');
    await s.screenshots('mesh-3', [ann, bob, carl]);
  }, { after: true });
});

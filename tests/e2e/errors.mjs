// e2e.errors — the demo tells the user what went wrong: a bridge URL on a
// closed port gives #error[data-kind=unreachable]; a browser without the
// fake media UI and no camera/microphone permission (getUserMedia rejects)
// gives #error[data-kind=media-denied].
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Suite } from './lib/harness.mjs';
import { uiState, joinViaForm } from './lib/demo.mjs';
import { freePort, randomId, waitFor, MEDIA_TIMEOUT } from './lib/util.mjs';

const s = new Suite('errors');

async function waitError(tab, kind) {
  const loc = tab.page.locator(`#error[data-kind="${kind}"]`);
  await waitFor(() => loc.isVisible(), { timeout: MEDIA_TIMEOUT, what: `${tab.name}: #error[data-kind=${kind}] visible`,
    describe: () => uiState(tab) });
  const text = (await loc.textContent()).trim();
  assert.ok(text.length >= 10 && /[a-z]/i.test(text), `${tab.name}: #error holds a human sentence, got "${text}"`);
  return text;
}

describe('e2e.errors: the demo shows clear errors (server unreachable, camera denied)', () => {
  before(() => s.start());
  after(() => s.stop());

  s.scenario('bridge URL on a closed port: #error[data-kind=unreachable] is shown, never "connected"', async () => {
    const closed = await freePort(); // nothing listens there
    const t = await s.tab('unreachable');
    await t.goto(s.demoUrl({ name: 'Ann', room: `err-${randomId(3)}`, bridges: [`ws://127.0.0.1:${closed}/ws`] }));
    const text = await waitError(t, 'unreachable');
    assert.notEqual(await t.page.locator('#status').getAttribute('data-state'), 'connected');
    console.log(`#error (unreachable): "${text}"`);
    await s.screenshots('unreachable', [t]);
    await t.close();
  });

  s.scenario('camera/microphone denied (no fake media UI, no permission): #error[data-kind=media-denied] is shown', async () => {
    const denying = await s.launch({ fakeUi: false });
    const t = await s.tab('media-denied', { browser: denying });
    // A reachable stack, so the only thing that can go wrong is the camera.
    await t.goto(s.demoUrl({ autojoin: false }));
    const gum = await t.page.evaluate(() => navigator.mediaDevices.getUserMedia({ audio: true, video: true })
      .then((st) => { st.getTracks().forEach((x) => x.stop()); return 'granted'; }, (e) => e.name));
    assert.equal(gum, 'NotAllowedError', 'precondition: getUserMedia is refused in this browser');
    await joinViaForm(t, 'Ann', `err-${randomId(3)}`);
    const text = await waitError(t, 'media-denied');
    assert.notEqual(await t.page.locator('#status').getAttribute('data-state'), 'connected');
    console.log(`#error (media-denied): "${text}"`);
    await s.screenshots('media-denied', [t]);
  });

  s.scenario('no error banner in a working call (the banner is not always on)', async () => {
    const t = await s.tab('ok');
    await t.goto(s.demoUrl({ name: 'Ann', room: `ok-${randomId(3)}` }));
    await waitFor(() => t.page.evaluate(() => document.querySelector('#status')?.getAttribute('data-state') === 'connected'),
      { what: 'ok: connected', describe: () => uiState(t) });
    assert.equal(await t.page.locator('#error').isVisible(), false, await uiState(t));
  });
});

// e2e.smoke — the harness itself, independent of the demo app: the stack
// comes up inside the network namespace, the static server is safe, coturn
// answers STUN, chromium loads a page from the static server and talks to
// the bridges with a raw WebSocket (DevLogin, Join, Subscribe,
// GetIceServers with coturn REST credentials), the Origin allowlist holds,
// and everything is stopped with nothing left running.
import { describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Suite } from './lib/harness.mjs';
import { BLANK_PATH } from './lib/static.mjs';
import { leftovers } from './lib/stack.mjs';
import { httpGet, metricSum, rawHttp, stunBinding, turnCredential, randomId, waitFor } from './lib/util.mjs';

const s = new Suite('smoke');

/** In the page: a raw JSON-RPC 2.0 session on one bridge WebSocket. */
function rawSession({ url, name, room, subscribe }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, 'rtc.v1.jsonrpc');
    const pending = new Map();
    const events = [];
    let next = 1;
    const call = (method, params) => new Promise((res, rej) => {
      const id = next++;
      pending.set(id, { res, rej, method });
      ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    });
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.id != null && pending.has(msg.id)) {
        const p = pending.get(msg.id);
        pending.delete(msg.id);
        if (msg.error) p.rej(new Error(`${p.method}: ${JSON.stringify(msg.error)}`));
        else p.res(msg.result);
      } else if (msg.method === 'rpc.event') {
        events.push(msg.params.result);
      }
    };
    ws.onerror = () => reject(new Error(`WebSocket error on ${url}`));
    ws.onclose = (e) => reject(new Error(`WebSocket closed ${e.code} ${e.reason}`));
    ws.onopen = async () => {
      try {
        const login = await call('rtc.auth.v1.Auth/DevLogin', { displayName: name, roomId: room });
        await call('session.authenticate', { accessToken: login.accessToken });
        const join = await call('rtc.signaling.v1.Signaling/Join', {});
        const ice = await call('rtc.auth.v1.Auth/GetIceServers', {});
        let sub = null;
        if (subscribe) sub = await call('rtc.signaling.v1.Signaling/Subscribe', { sessionId: join.sessionId });
        window.__raw = { ws, events, call, join };
        resolve({ protocol: ws.protocol, identity: login.identity, join, ice, sub });
      } catch (e) {
        reject(e);
      }
    };
  });
}

describe('e2e.smoke: the harness (stack in a network namespace, chromium, static server)', () => {
  before(() => s.start());
  after(() => s.stop());

  s.scenario('only loopback exists in this network namespace', async () => {
    const ifs = Object.keys(os.networkInterfaces());
    assert.deepEqual(ifs, ['lo'], `interfaces seen: ${ifs.join(', ')} — run through tests/e2e/run.sh (unshare -n)`);
  });

  s.scenario('static server: MIME types, index, redirect, no way out of clients/web', async () => {
    const port = s.stack.web.port;
    const blank = await httpGet(port, BLANK_PATH);
    assert.equal(blank.status, 200);
    assert.match(blank.headers['content-type'], /^text\/html/);
    const web = path.join(s.cfg.root, 'clients/web');
    for (const [file, type] of [['sdk/rtc.js', /^text\/javascript/], ['demo/app.js', /^text\/javascript/],
      ['demo/style.css', /^text\/css/], ['demo/index.html', /^text\/html/], ['index.html', /^text\/html/]]) {
      const r = await httpGet(port, `/${file}`);
      if (fs.existsSync(path.join(web, file))) {
        assert.equal(r.status, 200, `/${file}`);
        assert.match(r.headers['content-type'], type, `/${file}`);
        assert.equal(r.body, fs.readFileSync(path.join(web, file), 'utf8'), `/${file} body`);
      } else {
        assert.equal(r.status, 404, `/${file} does not exist yet`);
      }
    }
    if (fs.existsSync(path.join(web, 'demo/index.html'))) {
      const r = await httpGet(port, '/demo?x=1');
      assert.equal(r.status, 301);
      assert.equal(r.headers.location, '/demo/?x=1');
      assert.match((await httpGet(port, '/demo/')).headers['content-type'], /^text\/html/);
    }
    for (const p of ['/../../../../etc/passwd', '/%2e%2e/%2e%2e/%2e%2e/etc/passwd', '/sdk/..%2f..%2f..%2f..%2fetc%2fpasswd',
      '/..%5c..%5cetc/passwd', '/sdk/%00', '/%ff', '//etc/passwd']) {
      const raw = await rawHttp(port, `GET ${p} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
      const status = Number(/^HTTP\/1\.1 (\d+)/.exec(raw)?.[1]);
      assert.ok([400, 403, 404].includes(status), `GET ${p} → ${raw.split('\r\n')[0]}`);
      assert.doesNotMatch(raw, /root:/, `GET ${p} leaked a file`);
    }
    const post = await rawHttp(port, 'POST /demo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    assert.match(post, /^HTTP\/1\.1 405/);
  });

  s.scenario('coturn answers STUN on its port', async () => {
    assert.ok(await stunBinding(s.stack.turnPort, 2000), `no STUN Binding answer on udp :${s.stack.turnPort}`);
  });

  s.scenario('a page from the static server: DevLogin, Join, Subscribe, GetIceServers over raw WebSockets on both bridges', async () => {
    const room = `smoke-${randomId(3)}`;
    const a = await s.tab('raw-a');
    const b = await s.tab('raw-b');
    await a.goto(s.stack.origin + BLANK_PATH);
    await b.goto(s.stack.origin + BLANK_PATH);
    const [b1, b2] = s.stack.bridgeUrls();
    const ra = await a.page.evaluate(rawSession, { url: b1, name: 'Ann', room, subscribe: true });
    assert.equal(ra.protocol, 'rtc.v1.jsonrpc');
    assert.ok(ra.join.sessionId && ra.join.participant?.id, JSON.stringify(ra.join));
    assert.ok(ra.sub?.subscription, `Subscribe answered ${JSON.stringify(ra.sub)}`);
    // ICE servers, in Join and from GetIceServers: our coturn, REST credentials with our secret.
    for (const [what, list] of [['Join', ra.join.iceServers], ['GetIceServers', ra.ice.iceServers]]) {
      const turn = (list || []).find((x) => x.urls.some((u) => u.startsWith('turn:')));
      assert.ok(turn, `${what} has no TURN entry: ${JSON.stringify(list)}`);
      assert.deepEqual(turn.urls, [`turn:127.0.0.1:${s.stack.turnPort}?transport=udp`], what);
      assert.match(turn.username, /^\d+:/, `${what}: username <expiry>:<identity>`);
      assert.equal(turn.credential, turnCredential(s.stack.turnSecret, turn.username), `${what}: credential = base64(HMAC-SHA1(secret, username))`);
      assert.ok((list || []).some((x) => x.urls.includes(`stun:127.0.0.1:${s.stack.turnPort}`)), `${what} has our STUN URL: ${JSON.stringify(list)}`);
    }
    // A second tab on the other bridge joins: the first hears of it on its stream.
    const rb = await b.page.evaluate(rawSession, { url: b2, name: 'Bob', room, subscribe: false });
    assert.equal(rb.join.participants.length, 1, JSON.stringify(rb.join.participants));
    assert.equal(rb.join.participants[0].id, ra.join.participant.id);
    await waitFor(() => a.page.evaluate((id) => window.__raw.events.some((e) => e.participantJoined?.participant?.id === id),
      rb.join.participant.id), { timeout: 20_000, what: 'participant_joined for Bob on Ann\'s stream',
      describe: () => a.page.evaluate(() => JSON.stringify(window.__raw.events)) });
    // A signal from b to a arrives on a's stream.
    await b.page.evaluate(({ to }) => window.__raw.call('rtc.signaling.v1.Signaling/Signal', {
      sessionId: window.__raw.join.sessionId, toParticipantId: to, payload: { data: btoa('ping') } }), { to: ra.join.participant.id });
    await waitFor(() => a.page.evaluate(() => window.__raw.events.some((e) => e.signal)), { timeout: 20_000,
      what: 'the signal on Ann\'s stream', describe: () => a.page.evaluate(() => JSON.stringify(window.__raw.events)) });
    const streams = await s.stack.podStreams();
    assert.equal(streams.reduce((x, y) => x + (y || 0), 0), 1, `rtc_signaling_streams over the pods: ${streams}`);
    await s.closeTabs();
  });

  s.scenario('the bridge refuses a page of another origin (Origin allowlist)', async () => {
    const refused0 = metricSum(await s.stack.bridgeMetrics(0), 'rtc_bridge_upgrades_refused_total');
    const t = await s.tab('other-origin');
    await t.goto(`http://localhost:${s.stack.web.port}${BLANK_PATH}`);
    const r = await t.page.evaluate((url) => new Promise((resolve) => {
      const ws = new WebSocket(url, 'rtc.v1.jsonrpc');
      ws.onopen = () => { ws.close(); resolve('open'); };
      ws.onerror = () => resolve('error');
    }), s.stack.bridgeUrls()[0]);
    assert.equal(r, 'error', 'a WebSocket from http://localhost:… must be refused (403 before upgrade)');
    const refused = metricSum(await s.stack.bridgeMetrics(0), 'rtc_bridge_upgrades_refused_total');
    assert.equal(refused, refused0 + 1, 'rtc_bridge_upgrades_refused_total counts the refused upgrade');
    await s.closeTabs();
  });

  s.scenario('the stack stops cleanly: no process left', async () => {
    const procs = s.stack.procs;
    assert.ok(procs.every((p) => p.alive()), 'every service still running before stop');
    for (const b of s.browsers) await b.close();
    s.browsers = [];
    await s.stack.stop();
    assert.deepEqual(leftovers(procs), []);
    for (const p of procs) assert.ok(!p.alive(), `${p.name}: ${p.status()}`);
    s.stack = null;
  });
});

/**
 * rtc browser SDK: rooms, signaling and a mesh of peer connections over
 * rtc-bridge (WebSocket JSON-RPC 2.0, subprotocol `rtc.v1.jsonrpc`).
 *
 * One ES module, no build step, no dependencies. See README.md next to it.
 *
 * @module rtc
 */

const SUBPROTOCOL = 'rtc.v1.jsonrpc';
const AUTH = 'rtc.auth.v1.Auth/';
const SIG = 'rtc.signaling.v1.Signaling/';

/* gRPC status codes the client acts on (DESIGN §6: error.code). */
const DEADLINE_EXCEEDED = 4;
const RESOURCE_EXHAUSTED = 8;
const ABORTED = 10;
const OUT_OF_RANGE = 11;
const UNAVAILABLE = 14;
const UNAUTHENTICATED = 16;

/* A peer that joined after us offers first; we send our own offer only if
   theirs has not come after this long. */
const OFFER_WAIT_MS = 5000;
/* A peer connection not connected this long after a completed negotiation
   is restarted (ICE restart); the polite side waits longer, so both do not
   restart at once. */
const CONNECT_WATCHDOG_MS = 15000;
/* After ICE fails, the impolite side restarts at once, the polite one only
   if that did not happen. */
const POLITE_RESTART_DELAY_MS = 5000;

const SDP_TYPES = {
  offer: 'SDP_TYPE_OFFER',
  answer: 'SDP_TYPE_ANSWER',
  pranswer: 'SDP_TYPE_PRANSWER',
  rollback: 'SDP_TYPE_ROLLBACK',
};
const SDP_TYPE_NAMES = Object.fromEntries(Object.entries(SDP_TYPES).map(([k, v]) => [v, k]));

/**
 * A failed request: a JSON-RPC error (-32xxx) or a gRPC status from the
 * service behind the bridge.
 */
export class RpcError extends Error {
  /**
   * @param {number} code JSON-RPC error code or gRPC status number
   * @param {string} message human-readable reason
   * @param {?object} data `error.data` from the bridge (`{status}` for gRPC failures)
   */
  constructor(code, message, data = null) {
    super(message);
    this.name = 'RpcError';
    /** @type {number} */
    this.code = code;
    /** @type {string} gRPC status name, e.g. `'NOT_FOUND'`, or `''` for JSON-RPC errors */
    this.status = (data && data.status) || '';
    /** @type {?object} */
    this.data = data;
  }

  /** @returns {boolean} whether the same request may succeed if sent again */
  get retryable() {
    return this.code === UNAVAILABLE || this.code === DEADLINE_EXCEEDED || this.code === RESOURCE_EXHAUSTED;
  }
}

function unavailable(message) {
  return new RpcError(UNAVAILABLE, message, { status: 'UNAVAILABLE' });
}

function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function randomId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function toBase64(text) {
  const bytes = new TextEncoder().encode(text);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(b64) {
  const s = atob(b64 || '');
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return new TextDecoder().decode(bytes);
}

/* The `exp` of a JWT, in ms, or 0 when it cannot be read (the SDK then never refreshes it). */
function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : 0;
  } catch {
    return 0;
  }
}

/**
 * One WebSocket to a bridge: JSON-RPC requests with deadlines, and server
 * streams (`subscription` + `rpc.event` + `rpc.end`). Used by RtcClient;
 * exported for callers that want raw RPCs.
 */
export class RpcSocket {
  /**
   * @param {string} url bridge URL, e.g. `wss://example.com/ws`
   * @param {{timeoutMs?: number, onClose?: function(CloseEvent): void, logger?: object}} [options]
   */
  constructor(url, { timeoutMs = 15000, onClose = null, logger = null } = {}) {
    this.url = url;
    this.timeoutMs = timeoutMs;
    this.onClose = onClose;
    this.log = logger;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {resolve, reject, timer}
    this.streams = new Map(); // subscription id -> {onEvent, onEnd}
    this.early = new Map(); // events that raced ahead of their subscription's answer
    this.closed = false;
  }

  /**
   * Opens the socket.
   * @param {number} [timeoutMs] how long the connection may take
   * @returns {Promise<void>} resolves when open; rejects with UNAVAILABLE
   */
  open(timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url, SUBPROTOCOL);
      } catch (err) {
        reject(unavailable(`cannot connect to ${this.url}: ${err.message}`));
        return;
      }
      this.ws = ws;
      let opened = false;
      const timer = setTimeout(() => {
        if (!opened) {
          ws.close();
          reject(unavailable(`cannot connect to ${this.url}: timed out`));
        }
      }, timeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        if (ws.protocol !== SUBPROTOCOL) {
          ws.close(1002, 'subprotocol');
          reject(unavailable(`${this.url} did not accept subprotocol ${SUBPROTOCOL}`));
          return;
        }
        resolve();
      };
      ws.onmessage = (ev) => this._onMessage(ev.data);
      ws.onclose = (ev) => {
        clearTimeout(timer);
        if (!opened) reject(unavailable(`cannot connect to ${this.url} (close ${ev.code})`));
        this._onClose(ev);
      };
      ws.onerror = () => {}; // onclose follows with the details there are
    });
  }

  /**
   * Sends a request and waits for its answer.
   * @param {string} method gRPC method name (`rtc.signaling.v1.Signaling/Join`) or a bridge method
   * @param {object} [params] proto3 JSON of the request
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<any>} the `result`; rejects with RpcError
   */
  call(method, params = {}, { timeoutMs = this.timeoutMs } = {}) {
    if (this.closed || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(unavailable('not connected'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RpcError(DEADLINE_EXCEEDED, `${method}: no answer in ${timeoutMs} ms`, { status: 'DEADLINE_EXCEEDED' }));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    });
  }

  /**
   * Opens a server stream.
   * @param {string} method a server-streaming gRPC method
   * @param {object} params proto3 JSON of the request
   * @param {function(object): void} onEvent called with each message
   * @param {function(?RpcError): void} onEnd called once when the stream ends (null: ended OK)
   * @returns {Promise<string>} the subscription id
   */
  async subscribe(method, params, onEvent, onEnd) {
    const { subscription } = await this.call(method, params);
    this.streams.set(subscription, { onEvent, onEnd });
    const early = this.early.get(subscription);
    if (early) {
      this.early.delete(subscription);
      for (const msg of early) this._dispatch(msg);
    }
    return subscription;
  }

  /**
   * Cancels a stream opened with subscribe(); its onEnd is not called.
   * @param {string} subscription
   */
  cancel(subscription) {
    if (!this.streams.delete(subscription)) return;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ jsonrpc: '2.0', method: 'rpc.cancel', params: { subscription } }));
    }
  }

  /**
   * Closes the socket; pending requests fail with UNAVAILABLE, open streams end.
   * @param {number} [code] WebSocket close code
   * @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code, reason);
    this._onClose(null);
  }

  _onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      this.log?.warn?.('rtc: unparsable message from the bridge');
      return;
    }
    if (msg.method === 'rpc.event' || msg.method === 'rpc.end') {
      this._dispatch(msg);
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.error) p.reject(new RpcError(msg.error.code, msg.error.message, msg.error.data || null));
    else p.resolve(msg.result);
  }

  _dispatch(msg) {
    const sid = msg.params && msg.params.subscription;
    const s = this.streams.get(sid);
    if (!s) {
      // An event can only precede its subscription's answer by a hair;
      // keep a few until subscribe() registers the handler.
      if (sid && this.early.size < 16) {
        const list = this.early.get(sid) || [];
        if (list.length < 1024) list.push(msg);
        this.early.set(sid, list);
      }
      return;
    }
    if (msg.method === 'rpc.event') {
      s.onEvent(msg.params.result);
    } else {
      this.streams.delete(sid);
      const e = msg.params.error;
      s.onEnd(e ? new RpcError(e.code, e.message, e.data || null) : null);
    }
  }

  _onClose(ev) {
    if (this.closed) return;
    this.closed = true;
    const err = unavailable(ev ? `connection to ${this.url} closed (${ev.code}${ev.reason ? ' ' + ev.reason : ''})` : 'connection closed');
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const s of streams) s.onEnd(err);
    if (ev && this.onClose) this.onClose(ev);
  }
}

/**
 * The other end of one peer connection in the mesh.
 */
export class RemotePeer {
  /**
   * Made by RtcClient for each other participant; read-only for callers.
   * @param {object} participant the participant as the service describes it
   * @param {boolean} polite whether this side yields on offer glare
   */
  constructor(participant, polite) {
    /** @type {string} participant id */
    this.id = participant.id;
    /** @type {object} the participant as the service describes it */
    this.participant = participant;
    /** @type {boolean} perfect negotiation role: the polite peer yields on glare */
    this.polite = polite;
    /** @type {?RTCPeerConnection} */
    this.pc = null;
    /** @type {MediaStream} remote tracks */
    this.stream = new MediaStream();
    /** @type {?RTCDataChannel} the chat channel */
    this.channel = null;
    /** @type {string} the peer connection's connectionState */
    this.connectionState = 'new';
    /** @type {number} completed offer/answer exchanges */
    this.negotiations = 0;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.answerPending = false;
    this.candidates = []; // received before a remote description was set
    this.sendQueue = Promise.resolve(); // signals to this peer, in order
    this.videoTransceiver = null;
    this.passive = false; // waiting for their first offer before sending media
    this.watchdog = null;
    this.restarts = 0; // watchdog firings since last connected
    this.closed = false;
  }
}

/**
 * A participant in one room: connects to a bridge, joins, and keeps a peer
 * connection to every other participant (perfect negotiation, trickle ICE,
 * ICE restart), reconnecting and resuming by itself until close().
 *
 * Events are CustomEvents; see README.md for each `detail`.
 */
export class RtcClient extends EventTarget {
  /**
   * @param {object} options see README.md
   * @param {string|string[]} options.url bridge URL(s)
   * @param {string} [options.token] access token
   * @param {function(): Promise<string>} [options.getToken] token source, also used to refresh
   * @param {{displayName: string, roomId: string}} [options.devLogin] guest login (dev servers)
   * @param {MediaStream} [options.localStream] media sent to every peer
   * @param {'all'|'relay'} [options.iceTransportPolicy]
   * @param {RTCIceServer[]} [options.iceServers] override the servers handed out at Join
   * @param {boolean} [options.dataChannel] open the `chat` data channel (default true)
   * @param {number} [options.rpcTimeoutMs]
   * @param {{minDelayMs?: number, maxDelayMs?: number}} [options.reconnect]
   * @param {number} [options.refreshBeforeMs]
   * @param {object} [options.logger] console-like
   */
  constructor(options) {
    super();
    if (!options || !options.url || (Array.isArray(options.url) && options.url.length === 0)) {
      throw new TypeError('RtcClient: options.url (bridge WebSocket URL) is required');
    }
    if (!options.token && !options.getToken && !options.devLogin) {
      throw new TypeError('RtcClient: one of options.token, options.getToken or options.devLogin is required');
    }
    this.opts = {
      iceTransportPolicy: 'all',
      dataChannel: true,
      rpcTimeoutMs: 15000,
      refreshBeforeMs: 60000,
      ...options,
      reconnect: { minDelayMs: 250, maxDelayMs: 5000, ...(options.reconnect || {}) },
    };
    this.urls = Array.isArray(options.url) ? [...options.url] : [options.url];
    this.urlIndex = 0;
    this.log = options.logger || null;
    /** @type {string} */
    this.state = 'idle';
    /** @type {?object} my participant */
    this.self = null;
    /** @type {string} */
    this.sessionId = '';
    /** @type {string} */
    this.roomId = (options.devLogin && options.devLogin.roomId) || '';
    /** @type {Map<string, RemotePeer>} */
    this.peers = new Map();
    this.localStream = options.localStream || null;
    this.token = options.token || '';
    this.tokenExpiresAt = this.token ? tokenExpiry(this.token) : 0;
    this.rpc = null;
    this.resumeToken = '';
    this.lastEventId = '';
    this.iceServers = options.iceServers || [];
    this.subscription = '';
    this.metadata = '';
    this.events = Promise.resolve(); // incoming events, handled one at a time
    this.timers = new Set();
    this.refreshTimer = null;
    this.videoEnabled = true;
    this.wake = null; // resolves reconnect waits early
  }

  /**
   * Connects, authenticates, joins the token's room and subscribes to its
   * events; opens a peer connection to each participant already there.
   * @param {{metadata?: string}} [options] participant metadata others see
   * @returns {Promise<{sessionId: string, participant: object, participants: object[], room: object}>}
   *   rejects with RpcError (UNAVAILABLE when no bridge answers)
   */
  async join({ metadata = '' } = {}) {
    if (this.state !== 'idle') throw new Error(`RtcClient.join: already ${this.state}`);
    this.metadata = metadata;
    this._setState('connecting');
    let lastErr = null;
    for (let i = 0; i < this.urls.length; i++) {
      try {
        const res = await this._establish();
        if (this.state === 'closed') throw unavailable('client closed');
        this._setState('connected');
        return res;
      } catch (err) {
        lastErr = err;
        this.log?.warn?.('rtc: join via', this.urls[this.urlIndex], 'failed:', err.message);
        if (this.rpc) this.rpc.close();
        this.rpc = null;
        if (!(err instanceof RpcError) || err.code !== UNAVAILABLE || this.state === 'closed') break;
        this.urlIndex = (this.urlIndex + 1) % this.urls.length;
      }
    }
    this._teardown();
    this._setState('closed');
    throw lastErr;
  }

  /**
   * Leaves the room and releases everything (peer connections, socket,
   * timers). The local media tracks are left to their owner.
   * @returns {Promise<void>}
   */
  async close() {
    if (this.state === 'closed') return;
    const wasConnected = this.state === 'connected';
    this._setState('closed');
    if (wasConnected && this.rpc && this.sessionId) {
      try {
        await this.rpc.call(SIG + 'Leave', { sessionId: this.sessionId }, { timeoutMs: 3000 });
      } catch (err) {
        this.log?.debug?.('rtc: leave failed:', err.message);
      }
    }
    this._teardown();
  }

  /**
   * Calls any RPC the bridge exposes.
   * @param {string} method e.g. `rtc.auth.v1.Auth/GetIceServers`
   * @param {object} [params] proto3 JSON request
   * @returns {Promise<any>} proto3 JSON response; rejects with RpcError
   */
  call(method, params = {}) {
    if (!this.rpc) return Promise.reject(unavailable('not connected'));
    return this.rpc.call(method, params);
  }

  /**
   * Sends these tracks to every peer instead of the current ones. A track of
   * a kind already sent replaces it without renegotiation; a new kind is
   * added (renegotiates).
   * @param {MediaStream} stream
   */
  setLocalStream(stream) {
    this.localStream = stream;
    for (const peer of this.peers.values()) {
      if (!peer.passive) this._attachLocal(peer);
    }
  }

  /**
   * Mutes or unmutes the microphone (the track keeps flowing as silence).
   * @param {boolean} muted
   */
  setAudioMuted(muted) {
    for (const t of this.localStream ? this.localStream.getAudioTracks() : []) t.enabled = !muted;
  }

  /**
   * Camera off / on: video stops being sent (transceiver `recvonly`) and
   * resumes (`sendrecv`); each peer renegotiates.
   * @param {boolean} enabled
   */
  setVideoEnabled(enabled) {
    this.videoEnabled = enabled;
    for (const t of this.localStream ? this.localStream.getVideoTracks() : []) t.enabled = enabled;
    for (const peer of this.peers.values()) {
      const tr = peer.videoTransceiver;
      if (tr && tr.currentDirection !== 'stopped') tr.direction = enabled ? 'sendrecv' : 'recvonly';
    }
  }

  /**
   * Sends another camera's track in place of the current one (no renegotiation).
   * @param {MediaStreamTrack} track a video track
   * @returns {Promise<void>}
   */
  async replaceVideoTrack(track) {
    if (this.localStream) {
      for (const old of this.localStream.getVideoTracks()) this.localStream.removeTrack(old);
      this.localStream.addTrack(track);
    } else {
      this.localStream = new MediaStream([track]);
    }
    track.enabled = this.videoEnabled;
    await Promise.all([...this.peers.values()].map(async (peer) => {
      if (peer.videoTransceiver) await peer.videoTransceiver.sender.replaceTrack(track);
      else if (!peer.passive) this._attachLocal(peer);
    }));
  }

  /**
   * Sends a text message over every open chat data channel.
   * @param {string} text
   * @returns {number} how many peers it was sent to
   */
  sendChat(text) {
    let n = 0;
    for (const peer of this.peers.values()) {
      if (peer.channel && peer.channel.readyState === 'open') {
        peer.channel.send(String(text));
        n++;
      }
    }
    return n;
  }

  /**
   * Sends application data through the server: to one participant
   * (`Signal`), or to everyone else in the room (`Broadcast`).
   * @param {string} data text
   * @param {{to?: string}} [options] recipient participant id
   * @returns {Promise<object>} the service's answer
   */
  sendData(data, { to } = {}) {
    const b64 = toBase64(String(data));
    if (to) return this._reliableCall(SIG + 'Signal', { toParticipantId: to, payload: { data: b64 } });
    return this._reliableCall(SIG + 'Broadcast', { data: b64 });
  }

  /* ---- connection, join, resume -------------------------------------------------- */

  _setState(state) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    this._emit('state', { state, previous });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _timeout(fn, ms) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  async _obtainToken() {
    if (this.token && (!this.tokenExpiresAt || this.tokenExpiresAt - Date.now() > 5000)) return;
    if (this.opts.getToken) {
      this._setToken(await this.opts.getToken(), 0);
    } else if (this.opts.devLogin) {
      const r = await this.rpc.call(AUTH + 'DevLogin', {
        displayName: this.opts.devLogin.displayName,
        roomId: this.opts.devLogin.roomId,
      });
      this._setToken(r.accessToken, Number(r.expiresAtMs));
    }
    // A fixed token is used as it is; the service refuses it once expired.
  }

  _setToken(token, expiresAtMs) {
    this.token = token;
    this.tokenExpiresAt = expiresAtMs || tokenExpiry(token);
  }

  /* One connection attempt: socket, token, Join (resuming when there is a
     session), Subscribe after the last event seen. */
  async _establish() {
    const url = this.urls[this.urlIndex];
    const rpc = new RpcSocket(url, {
      timeoutMs: this.opts.rpcTimeoutMs,
      logger: this.log,
      onClose: (ev) => this._onSocketClosed(rpc, ev),
    });
    this.rpc = rpc;
    await rpc.open();
    await this._obtainToken();
    await rpc.call('session.authenticate', { accessToken: this.token });

    const resuming = Boolean(this.resumeToken);
    let joined;
    try {
      joined = await rpc.call(SIG + 'Join', { metadata: this.metadata, resumeToken: this.resumeToken });
    } catch (err) {
      if (!resuming || err.retryable || err.code === UNAUTHENTICATED) throw err;
      // The old session is beyond resuming (expired, removed): join afresh.
      this.log?.info?.('rtc: session not resumable:', err.message);
      this.resumeToken = '';
      joined = await rpc.call(SIG + 'Join', { metadata: this.metadata });
    }
    if (resuming && !joined.resumed) this._resetPeers();
    if (!joined.resumed) this.lastEventId = '';
    this.sessionId = joined.sessionId;
    this.resumeToken = joined.resumeToken;
    this.self = joined.participant;
    if (joined.room) this.roomId = joined.room.id;
    if (!this.opts.iceServers) this.iceServers = (joined.iceServers || []).map(toRtcIceServer);
    this._scheduleRefresh();

    await this._subscribe(rpc);
    // A new session offers to everyone already in the room (they wait for
    // it: no glare). A resumed one has its peers; anyone new since comes as
    // participant_joined in the replay.
    if (!joined.resumed) {
      for (const p of joined.participants || []) {
        if (p.id === this.self.id) continue;
        this._peer(p, true);
        // After a rejoin the app saw everyone leave (_resetPeers): they are back.
        if (resuming) this._emit('participant-joined', { participant: p });
      }
    }
    if (resuming) this._emit('reconnected', { resumed: Boolean(joined.resumed) });
    for (const peer of this.peers.values()) {
      if (peer.connectionState === 'failed') this._restartIce(peer);
    }
    return {
      sessionId: this.sessionId,
      participant: this.self,
      participants: joined.participants || [],
      room: joined.room || null,
    };
  }

  async _subscribe(rpc) {
    this.subscription = await rpc.subscribe(
      SIG + 'Subscribe',
      { sessionId: this.sessionId, afterEventId: this.lastEventId },
      (ev) => this._onEvent(ev),
      (err) => this._onStreamEnd(rpc, err),
    );
  }

  _onStreamEnd(rpc, err) {
    if (this.state === 'closed' || rpc !== this.rpc || rpc.closed) return; // socket loss: handled there
    if (!err) {
      // The service ended the stream: kicked, room closed or left.
      this.events = this.events.then(() => this._finish());
      return;
    }
    if (err.code === ABORTED) {
      // A newer Subscribe of this session took over (the same session
      // opened elsewhere): taking it back would only fight over it.
      this._emit('error', { error: err });
      this._finish('session taken over');
      return;
    }
    if (err.code === OUT_OF_RANGE) {
      // Events were trimmed before we read them: only a fresh join is consistent.
      this.resumeToken = '';
    }
    this.log?.warn?.('rtc: event stream ended:', err.message, '- reconnecting');
    rpc.close(4000, 'stream ended');
    this._onSocketClosed(rpc, null);
  }

  _onSocketClosed(rpc, ev) {
    // While connecting or reconnecting, the attempt in progress sees the
    // failure itself.
    if (rpc !== this.rpc || this.state !== 'connected') return;
    this.log?.warn?.('rtc: connection lost', ev ? `(${ev.code})` : '');
    this.rpc = null;
    this._setState('reconnecting');
    this._reconnect();
  }

  async _reconnect() {
    const { minDelayMs, maxDelayMs } = this.opts.reconnect;
    let wait = minDelayMs;
    let first = true;
    while (this.state === 'reconnecting') {
      if (!first) {
        await new Promise((resolve) => {
          this.wake = resolve;
          this._timeout(resolve, wait * (0.5 + Math.random() / 2));
        });
        wait = Math.min(maxDelayMs, wait * 2);
        if (this.state !== 'reconnecting') return;
      }
      first = false;
      this.urlIndex = (this.urlIndex + 1) % this.urls.length;
      try {
        await this._establish();
        if (this.state !== 'reconnecting') return;
        this._setState('connected');
        return;
      } catch (err) {
        this.log?.warn?.('rtc: reconnect via', this.urls[this.urlIndex], 'failed:', err.message);
        if (this.rpc) {
          const r = this.rpc;
          this.rpc = null;
          r.close();
        }
        if (err.code === UNAUTHENTICATED && !this.opts.getToken && !this.opts.devLogin) {
          this._emit('error', { error: err });
          this._setState('closed');
          this._teardown();
          return;
        }
        if (err.code === UNAUTHENTICATED) this.token = ''; // fetch a new one next time
      }
    }
  }

  /* Resolves when the client is connected (or rejects when closed). */
  async _connected() {
    while (this.state !== 'connected') {
      if (this.state === 'closed') throw unavailable('client closed');
      await new Promise((resolve) => {
        const on = () => {
          this.removeEventListener('state', on);
          resolve();
        };
        this.addEventListener('state', on);
      });
    }
  }

  /* A request that is retried (same client_msg_id, so never applied twice)
     until it succeeds, fails for good, or the client closes. */
  async _reliableCall(method, params) {
    const body = { ...params, clientMsgId: randomId() };
    let wait = 200;
    for (;;) {
      await this._connected();
      const rpc = this.rpc;
      try {
        return await rpc.call(method, { ...body, sessionId: this.sessionId });
      } catch (err) {
        if (!(err instanceof RpcError) || !err.retryable || this.state === 'closed') throw err;
        this.log?.debug?.('rtc:', method, 'retried after', err.message);
        await delay(wait);
        wait = Math.min(wait * 2, 3000);
      }
    }
  }

  _scheduleRefresh() {
    if (this.refreshTimer) {
      clearTimeout(this.refreshTimer);
      this.timers.delete(this.refreshTimer);
      this.refreshTimer = null;
    }
    if (!this.tokenExpiresAt || (!this.opts.getToken && !this.opts.devLogin)) return;
    const left = this.tokenExpiresAt - Date.now();
    // refreshBeforeMs ahead of expiry, but not before half the token's life.
    const at = Math.max(1000, left / 2, left - this.opts.refreshBeforeMs);
    this.refreshTimer = this._timeout(() => this._refreshToken(), at);
  }

  async _refreshToken() {
    this.refreshTimer = null;
    if (this.state === 'closed') return;
    try {
      await this._connected();
      if (this.opts.getToken) {
        this._setToken(await this.opts.getToken(), 0);
      } else {
        const r = await this.rpc.call(AUTH + 'RefreshToken', {});
        this._setToken(r.accessToken, Number(r.expiresAtMs));
      }
      await this.rpc.call('session.authenticate', { accessToken: this.token });
      this._emit('token-refreshed', { expiresAtMs: this.tokenExpiresAt });
      this._scheduleRefresh();
    } catch (err) {
      if (this.state === 'closed') return;
      this.log?.warn?.('rtc: token refresh failed:', err.message);
      if (this.tokenExpiresAt && this.tokenExpiresAt <= Date.now()) {
        this._emit('error', { error: err });
      }
      this.refreshTimer = this._timeout(() => this._refreshToken(), 5000);
    }
  }

  _finish(reason) {
    if (this.state === 'closed') return;
    this.log?.info?.('rtc: session ended', reason || '');
    this._setState('closed');
    this._teardown();
  }

  _teardown() {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.refreshTimer = null;
    if (this.wake) this.wake();
    for (const peer of [...this.peers.values()]) this._closePeer(peer);
    if (this.rpc) {
      const r = this.rpc;
      this.rpc = null;
      r.close(1000, 'bye');
    }
  }

  /* The session was replaced by a new one: every peer starts over. */
  _resetPeers() {
    for (const peer of [...this.peers.values()]) {
      this._closePeer(peer);
      this._emit('participant-left', { participant: peer.participant, reason: 'LEAVE_REASON_TIMED_OUT' });
    }
  }

  /* ---- events from the service ----------------------------------------------------- */

  _onEvent(ev) {
    // Counted as seen on receipt: a resumed stream starts after it, and
    // what is queued here is handled whatever happens to the socket.
    if (ev.id) this.lastEventId = ev.id;
    // Handled strictly in order: a description must be applied before the
    // candidates that follow it.
    this.events = this.events.then(() => this._handleEvent(ev)).catch((err) => {
      this.log?.warn?.('rtc: event handling failed:', err);
      this._emit('error', { error: err });
    });
  }

  async _handleEvent(ev) {
    if (this.state === 'closed') return;
    if (ev.participantJoined) {
      const p = ev.participantJoined.participant;
      if (!p || (this.self && p.id === this.self.id)) return;
      const known = this.peers.has(p.id);
      this._peer(p, false);
      if (!known) this._emit('participant-joined', { participant: p });
    } else if (ev.participantLeft) {
      const p = ev.participantLeft.participant || {};
      const peer = this.peers.get(p.id);
      if (peer) this._closePeer(peer);
      this._emit('participant-left', { participant: p, reason: ev.participantLeft.reason || 'LEAVE_REASON_UNSPECIFIED' });
    } else if (ev.signal) {
      await this._onSignal(ev.signal.fromParticipantId, ev.signal.payload || {});
    } else if (ev.data) {
      this._emit('data', { from: ev.data.fromParticipantId || '', data: fromBase64(ev.data.data), via: 'server' });
    } else if (ev.kicked) {
      this._emit('kicked', { reason: ev.kicked.reason || '' });
      this._finish('kicked');
    } else if (ev.roomClosed) {
      this._emit('room-closed', { reason: ev.roomClosed.reason || '' });
      this._finish('room closed');
    }
  }

  async _onSignal(from, payload) {
    let peer = this.peers.get(from);
    if (!peer) {
      if (payload.data !== undefined) {
        this._emit('data', { from, data: fromBase64(payload.data), via: 'server' });
        return;
      }
      peer = this._peer({ id: from }, false);
    }
    if (payload.data !== undefined) {
      this._emit('data', { from, data: fromBase64(payload.data), via: 'server' });
    } else if (payload.description) {
      const type = SDP_TYPE_NAMES[payload.description.type];
      if (!type) return;
      await this._onDescription(peer, { type, sdp: payload.description.sdp || '' });
    } else if (payload.candidate) {
      const c = payload.candidate;
      await this._onCandidate(peer, {
        candidate: c.candidate,
        sdpMid: c.sdpMid || null,
        sdpMLineIndex: c.sdpMlineIndex ?? null,
        usernameFragment: c.usernameFragment || null,
      });
    } else if (payload.endOfCandidates) {
      await this._onCandidate(peer, null);
    }
  }

  /* Perfect negotiation (W3C WebRTC §10.7): the impolite peer ignores a
     colliding offer; the polite one rolls its own back and answers. */
  async _onDescription(peer, description) {
    if (!peer.pc || peer.closed) return;
    if (description.type === 'offer' && peer.pc.remoteDescription &&
        fingerprint(peer.pc.remoteDescription.sdp) !== fingerprint(description.sdp)) {
      // The other side started over with a new peer connection.
      this._rebuildPeer(peer, false);
    }
    const pc = peer.pc;
    const readyForOffer = !peer.makingOffer && (pc.signalingState === 'stable' || peer.answerPending);
    const collision = description.type === 'offer' && !readyForOffer;
    peer.ignoreOffer = !peer.polite && collision;
    if (peer.ignoreOffer) {
      this.log?.debug?.('rtc: glare with', peer.id, '- ignoring their offer');
      return;
    }
    if (collision) {
      this.log?.debug?.('rtc: glare with', peer.id, '- rolling back mine');
      await pc.setLocalDescription({ type: 'rollback' });
    }
    peer.answerPending = description.type === 'answer';
    try {
      await pc.setRemoteDescription(description);
    } finally {
      peer.answerPending = false;
    }
    if (description.type === 'answer') this._negotiated(peer);
    await this._flushCandidates(peer);
    if (description.type === 'offer') {
      // Our media rides on the transceivers their offer made: no new offer.
      if (peer.passive) this._activate(peer);
      await pc.setLocalDescription();
      this._sendSignal(peer, { description: { type: SDP_TYPES[pc.localDescription.type], sdp: pc.localDescription.sdp } });
      this._negotiated(peer);
    }
  }

  _negotiated(peer) {
    peer.negotiations++;
    this._emit('negotiated', { participantId: peer.id, count: peer.negotiations });
    this._armWatchdog(peer);
  }

  /* Whatever stalls a connection after a negotiation (a lost candidate, an
     ICE agent stuck after glare), an ICE restart recovers it. */
  _armWatchdog(peer) {
    if (peer.watchdog) {
      clearTimeout(peer.watchdog);
      this.timers.delete(peer.watchdog);
    }
    const ms = CONNECT_WATCHDOG_MS * (peer.polite ? 2 : 1);
    peer.watchdog = this._timeout(() => {
      peer.watchdog = null;
      if (peer.closed || peer.pc.connectionState === 'connected' || this.state !== 'connected') return;
      this.log?.warn?.('rtc: no connection to', peer.id, `${ms} ms after negotiating (${peer.pc.connectionState})`);
      // An ICE restart first. Chromium can also leave an ICE agent that never
      // gathers again (seen after offer glare): then only a new peer
      // connection helps. Only the impolite side starts one, so the two
      // never replace each other's in a loop.
      peer.restarts = (peer.restarts || 0) + 1;
      if (peer.restarts >= 2 && !peer.polite) this._rebuildPeer(peer, true);
      else this._restartIce(peer);
    }, ms);
  }

  /* Candidates wait until the remote description they belong to is set. */
  async _onCandidate(peer, candidate) {
    if (!peer.pc || peer.closed) return;
    if (!peer.pc.remoteDescription) {
      this.log?.debug?.('rtc: candidate from', peer.id, 'held until their description is set');
      peer.candidates.push(candidate);
      return;
    }
    await this._addCandidate(peer, candidate);
  }

  async _flushCandidates(peer) {
    const list = peer.candidates;
    peer.candidates = [];
    for (const c of list) await this._addCandidate(peer, c);
  }

  async _addCandidate(peer, candidate) {
    try {
      if (candidate) await peer.pc.addIceCandidate(candidate);
      else await peer.pc.addIceCandidate();
    } catch (err) {
      // Candidates of an offer we ignored, or of an ICE generation that is
      // gone, fail harmlessly.
      if (!peer.ignoreOffer) this.log?.debug?.('rtc: candidate from', peer.id, 'not added:', err.message);
    }
  }

  /* ---- peer connections -------------------------------------------------------------- */

  /* The peer for a participant, made on first sight. An initiator (we are
     the newcomer) sends media and offers at once; otherwise we wait for
     their offer, then answer with our media. */
  _peer(participant, initiator) {
    let peer = this.peers.get(participant.id);
    if (peer) {
      if (participant.displayName !== undefined) peer.participant = participant;
      return peer;
    }
    peer = new RemotePeer(participant, Boolean(this.self) && this.self.id < participant.id);
    this.peers.set(peer.id, peer);
    this._openPc(peer, initiator);
    return peer;
  }

  /* A new RTCPeerConnection for a peer; handlers of a replaced one go quiet. */
  _openPc(peer, initiator) {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.opts.iceTransportPolicy,
    });
    peer.pc = pc;

    pc.onnegotiationneeded = async () => {
      if (peer.pc !== pc) return;
      try {
        peer.makingOffer = true;
        await pc.setLocalDescription();
        const d = pc.localDescription;
        this._sendSignal(peer, { description: { type: SDP_TYPES[d.type], sdp: d.sdp } });
      } catch (err) {
        this.log?.warn?.('rtc: offer to', peer.id, 'failed:', err.message);
      } finally {
        peer.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      if (peer.closed || peer.pc !== pc) return;
      if (!candidate || !candidate.candidate) {
        this._sendSignal(peer, { endOfCandidates: {} });
        return;
      }
      const c = { candidate: candidate.candidate };
      if (candidate.sdpMid != null) c.sdpMid = candidate.sdpMid;
      if (candidate.sdpMLineIndex != null) c.sdpMlineIndex = candidate.sdpMLineIndex;
      if (candidate.usernameFragment) c.usernameFragment = candidate.usernameFragment;
      this._sendSignal(peer, { candidate: c });
    };
    pc.ontrack = ({ track, streams }) => {
      if (peer.pc !== pc) return;
      if (!peer.stream.getTracks().includes(track)) peer.stream.addTrack(track);
      track.addEventListener('ended', () => peer.stream.removeTrack(track));
      this._emit('track', { participantId: peer.id, track, streams: [peer.stream, ...streams] });
    };
    pc.onconnectionstatechange = () => {
      if (peer.pc !== pc) return;
      const state = pc.connectionState;
      peer.connectionState = state;
      this._emit('connection-state', { participantId: peer.id, state });
      if (state === 'connected') {
        peer.restarts = 0;
        if (peer.watchdog) {
          clearTimeout(peer.watchdog);
          this.timers.delete(peer.watchdog);
          peer.watchdog = null;
        }
      }
      if (state === 'failed') {
        if (!peer.polite) this._restartIce(peer);
        else {
          this._timeout(() => {
            if (pc.connectionState === 'failed') this._restartIce(peer);
          }, POLITE_RESTART_DELAY_MS);
        }
      }
    };
    if (initiator) {
      this._activate(peer);
    } else {
      peer.passive = true;
      this._timeout(() => {
        if (peer.passive && !peer.closed && peer.pc === pc) {
          this.log?.info?.('rtc: no offer from', peer.id, 'yet: offering');
          this._activate(peer);
        }
      }, OFFER_WAIT_MS);
    }
  }

  /* Starts a peer over with a fresh RTCPeerConnection (new ICE agent, new
     DTLS certificate fingerprint). The other side sees the new fingerprint
     in our offer and starts over too (_onDescription). */
  _rebuildPeer(peer, initiator) {
    this.log?.warn?.('rtc: new peer connection for', peer.id, initiator ? '(offering)' : '(their offer changed certificates)');
    const old = peer.pc;
    peer.pc = null;
    try {
      old.close();
    } catch {
      // already closed
    }
    for (const t of peer.stream.getTracks()) peer.stream.removeTrack(t);
    peer.channel = null;
    peer.videoTransceiver = null;
    peer.makingOffer = false;
    peer.ignoreOffer = false;
    peer.answerPending = false;
    peer.candidates = [];
    this._openPc(peer, initiator);
  }

  /* Media and the chat channel onto a peer connection. */
  _activate(peer) {
    peer.passive = false;
    if (this.opts.dataChannel && !peer.channel) {
      // Negotiated with a fixed id: both sides open it, no glare to resolve.
      const ch = peer.pc.createDataChannel('chat', { negotiated: true, id: 0 });
      ch.onmessage = (e) => {
        if (typeof e.data === 'string') this._emit('data', { from: peer.id, data: e.data, via: 'channel' });
      };
      peer.channel = ch;
    }
    this._attachLocal(peer);
  }

  /* Local tracks onto a peer: a track of a kind already sent replaces it;
     others are added (addTrack reuses a transceiver the remote offer made).
     The peer connection can always receive audio and video. */
  _attachLocal(peer) {
    const pc = peer.pc;
    const tracks = this.localStream ? this.localStream.getTracks() : [];
    const kinds = new Set();
    let video = null;
    for (const track of tracks) {
      kinds.add(track.kind);
      let sender = pc.getSenders().find((s) => s.track && s.track.kind === track.kind);
      if (sender) {
        if (sender.track !== track) sender.replaceTrack(track).catch(() => {});
      } else {
        sender = pc.addTrack(track, this.localStream);
      }
      if (track.kind === 'video') video = sender;
    }
    for (const kind of ['audio', 'video']) {
      if (!kinds.has(kind) && !pc.getTransceivers().some((t) => t.receiver.track.kind === kind)) {
        pc.addTransceiver(kind, { direction: 'recvonly' });
      }
    }
    peer.videoTransceiver = (video && pc.getTransceivers().find((t) => t.sender === video)) || null;
    if (peer.videoTransceiver && !this.videoEnabled) peer.videoTransceiver.direction = 'recvonly';
  }

  _restartIce(peer) {
    if (peer.closed || this.state !== 'connected') return; // retried after reconnecting
    this.log?.info?.('rtc: ICE restart with', peer.id);
    peer.pc.restartIce();
  }

  /* Signals to one peer go out one at a time, in order: two calls in flight
     could take different pods and overtake each other. */
  _sendSignal(peer, payload) {
    peer.sendQueue = peer.sendQueue.then(async () => {
      if (peer.closed) return;
      try {
        await this._reliableCall(SIG + 'Signal', { toParticipantId: peer.id, payload });
      } catch (err) {
        if (this.state === 'closed' || peer.closed) return;
        this.log?.warn?.('rtc: signal to', peer.id, 'failed:', err.message);
        if (err.code !== 5 /* NOT_FOUND: the peer left */) this._emit('error', { error: err });
      }
    });
  }

  _closePeer(peer) {
    if (peer.closed) return;
    peer.closed = true;
    if (peer.watchdog) {
      clearTimeout(peer.watchdog);
      this.timers.delete(peer.watchdog);
    }
    this.peers.delete(peer.id);
    try {
      peer.pc.close();
    } catch {
      // already closed
    }
    peer.connectionState = 'closed';
    this._emit('connection-state', { participantId: peer.id, state: 'closed' });
  }
}

/* The DTLS certificate fingerprint of an SDP: it changes only with a new peer connection. */
function fingerprint(sdp) {
  const m = /^a=fingerprint:(.+)$/m.exec(sdp || '');
  return m ? m[1].trim() : '';
}

/* proto3 JSON IceServer → RTCIceServer. */
function toRtcIceServer(s) {
  const out = { urls: s.urls || [] };
  if (s.username) out.username = s.username;
  if (s.credential) out.credential = s.credential;
  return out;
}

// rtc demo call app: a mesh video call for up to 6 people on the rtc browser
// SDK (../sdk/rtc.js; ../sdk/README.md has its API, README.md here the DOM/URL
// contract this page keeps). No build step, no dependencies.
//
// User text (names, room ids, chat, server messages) only ever reaches the
// page through textContent / text nodes: never innerHTML.

const MAX_PEOPLE = 6;            // mesh limit, me included
const SLOW_CONNECT_MS = 4000;    // "Cannot reach the server" while still connecting
const SLOW_RECONNECT_MS = 3000;  // ... or while reconnecting
const RETRY_MIN_MS = 1000;       // join() failed: first retry after this
const RETRY_MAX_MS = 10000;
const SPEAKING_LEVEL = 0.04;     // audioLevel (0..1) above which a tile lights up
const CHAT_MAX_MESSAGES = 500;
const ROOM_RE = /^[A-Za-z0-9._-]{1,64}$/;

const AUDIO = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30, max: 30 } };

const $ = (id) => document.getElementById(id);
const el = {
  joinForm: $('join-form'), name: $('name'), room: $('room'), join: $('join'),
  joinLabel: document.querySelector('#join .join-label'), cancelJoin: $('cancel-join'),
  nameError: $('name-error'), roomError: $('room-error'), joinNote: $('join-note'),
  main: $('main'), lobby: $('lobby'), call: $('call'), stage: $('stage'), tiles: $('tiles'), leave: $('leave'),
  status: $('status'), banner: $('banner'), error: $('error'), errorDetail: $('error-detail'),
  errorActions: $('error-actions'), errorClose: $('error-close'),
  mute: $('mute'), camera: $('camera'), switchCamera: $('switch-camera'),
  chatToggle: $('chat-toggle'), chatClose: $('chat-close'), unread: $('unread'),
  chat: $('chat'), chatLog: $('chat-log'), chatEmpty: $('chat-empty'), chatForm: $('chat-form'),
  chatInput: $('chat-input'), chatSend: $('chat-send'),
  roomInfo: $('room-info'), roomLabel: $('room-label'), people: $('people-count'), copyLink: $('copy-link'),
  toasts: $('toasts'), tileTemplate: $('tile-template'),
};

/** For tests and the curious: `rtcDemo.client` is the current (or last) RtcClient. */
window.rtcDemo = { client: null };

const params = new URLSearchParams(location.search);
const config = {
  urls: bridgeUrls(params.get('bridge')),
  relay: params.get('relay') === '1',
  autojoin: params.get('autojoin') === '1',
  debug: params.get('debug') === '1',
};

const S = {
  view: 'lobby',          // 'lobby' | 'joining' | 'call'
  client: null,           // the RtcClient of the join in progress or the call
  gen: 0,                 // bumped by every join attempt, leave and cancel: stale async work checks it
  stream: null,           // local MediaStream (possibly without tracks: receive-only)
  micMuted: false,
  camOff: false,
  name: '',
  room: '',
  people: new Map(),      // remote participant id -> participant, present in the call
  names: new Map(),       // participant id -> display name (kept after they leave, for chat)
  errorKind: null,
  slowTimer: 0,
  retryTimer: 0,
  retryTick: 0,
  retryDelay: RETRY_MIN_MS,
  statsTimer: 0,
  unread: 0,
  videoInputs: [],
  switching: false,
  ending: false,           // the call is being ended on purpose (leave, kick, room closed, full)
  endReason: '',          // why the session ended, when the SDK told us before closing
  joinNote: '',           // said once the call starts (e.g. "You joined without camera.")
};

const tiles = new Map();  // 'local' | participant id -> tile record

/* ---- small helpers ---------------------------------------------------------------- */

/** createElement with attributes and children; strings become text nodes. */
function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split('.');
  const node = document.createElement(name);
  if (classes.length) node.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'text') node.textContent = String(v);
    else if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  node.append(...children.flat().filter((c) => c != null));
  return node;
}

const store = {
  get(key) {
    try { return localStorage.getItem(`rtc-demo.${key}`); } catch { return null; }
  },
  set(key, value) {
    try { localStorage.setItem(`rtc-demo.${key}`, value); } catch { /* private mode: not remembered */ }
  },
};

function bridgeUrls(param) {
  if (param) {
    const list = param.split(',').map((s) => s.trim()).filter(Boolean);
    if (list.length) return list;
  }
  if (location.protocol === 'https:') return [`wss://${location.host}/ws`];
  const host = location.hostname || '127.0.0.1'; // IPv6 hostnames come bracketed
  return [`ws://${host}:8080/ws`, `ws://${host}:8090/ws`];
}

function displayName(p) {
  return (p && (p.displayName || p.identity)) || 'Guest';
}

function initials(name) {
  const words = String(name).trim().split(/\s+/).filter(Boolean);
  const first = (w) => (w ? Array.from(w)[0] : '');
  const s = words.length > 1 ? first(words[0]) + first(words[words.length - 1]) : Array.from(words[0] || '?').slice(0, 2).join('');
  return s.toUpperCase();
}

function hue(text) {
  let x = 0;
  for (const ch of String(text)) x = (x * 31 + ch.codePointAt(0)) >>> 0;
  return x % 360;
}

function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

function truncate(text, n) {
  const chars = Array.from(text);
  return chars.length > n ? chars.slice(0, n - 1).join('') + '…' : text;
}

/* ---- SDK ------------------------------------------------------------------------ */

let sdkPromise = null;
function loadSdk() {
  sdkPromise ||= import('../sdk/rtc.js').catch((err) => {
    sdkPromise = null;
    throw err;
  });
  return sdkPromise;
}

/* ---- status, banner, toasts ----------------------------------------------------- */

const STATUS_TEXT = {
  idle: 'offline',
  connecting: 'connecting…',
  connected: 'connected',
  reconnecting: 'reconnecting…',
  closed: 'offline',
};

function setStatus(state) {
  el.status.dataset.state = state;
  el.status.textContent = STATUS_TEXT[state] || state;
}

/**
 * Shows the banner. `#error` gets the sentence only; details and buttons go
 * next to it. kind: 'media-denied' | 'unreachable' | 'other'.
 */
function showError(kind, sentence, { detail = '', actions = [], focus = false } = {}) {
  const same = S.errorKind === kind && el.error.textContent === sentence && !el.banner.hidden;
  S.errorKind = kind;
  el.banner.dataset.kind = kind;
  el.error.dataset.kind = kind;
  if (!same) el.error.textContent = sentence; // unchanged text is not announced again
  setErrorDetail(detail);
  el.errorActions.replaceChildren(...actions.map((a, i) => h(`button.btn.${a.primary || (i === 0 && actions.length > 1) ? 'primary' : 'ghost'}`, {
    type: 'button', text: a.label, onclick: a.onClick,
  })));
  el.error.hidden = false;
  el.banner.hidden = false;
  if (focus && el.errorActions.firstElementChild) el.errorActions.firstElementChild.focus({ preventScroll: true });
}

function setErrorDetail(detail) {
  el.errorDetail.textContent = detail || '';
  el.errorDetail.hidden = !detail;
}

/** Hides the banner (only when it shows `kind`, if given). */
function hideError(kind) {
  if (kind && S.errorKind !== kind) return;
  S.errorKind = null;
  el.banner.hidden = true;
  el.error.hidden = true;
  el.error.textContent = '';
  el.error.dataset.kind = 'other';
  setErrorDetail('');
  el.errorActions.replaceChildren();
}

function toast(text, ms = 4000) {
  const t = h('div.toast', { text });
  el.toasts.append(t);
  while (el.toasts.children.length > 3) el.toasts.firstElementChild.remove();
  setTimeout(() => {
    t.classList.add('out');
    setTimeout(() => t.remove(), 350);
  }, ms);
}

/* ---- views ------------------------------------------------------------------------ */

function setView(view) {
  S.view = view;
  document.body.dataset.view = view === 'call' ? 'call' : 'lobby';
  el.lobby.hidden = view === 'call';
  el.call.hidden = view !== 'call';
  el.roomInfo.hidden = view !== 'call';
  const joining = view === 'joining';
  el.join.dataset.busy = String(joining);
  el.join.disabled = joining;
  el.joinLabel.textContent = joining ? 'Joining…' : 'Join';
  el.cancelJoin.hidden = !joining;
  el.name.readOnly = joining;
  el.room.readOnly = joining;
  document.title = view === 'call' ? `${S.room} · rtc call` : 'rtc call';
  // The banner: above the form in the lobby, floating over the tiles in the call.
  if (view === 'call') {
    if (el.banner.parentElement !== document.body) document.body.insertBefore(el.banner, el.main);
  } else if (el.banner.parentElement !== el.lobby) {
    el.lobby.prepend(el.banner);
  }
  if (view === 'call') requestAnimationFrame(layoutTiles);
}

/* ---- lobby form --------------------------------------------------------------------- */

function fieldError(input, box, message) {
  box.textContent = message;
  input.setAttribute('aria-invalid', String(Boolean(message)));
}

/** The form's name and room, or null (with the problems shown) when invalid. */
function readForm() {
  const name = el.name.value.trim().replace(/\s+/g, ' ');
  const room = el.room.value.trim();
  let nameErr = '';
  if (!name) nameErr = 'Enter your name.';
  // eslint-disable-next-line no-control-regex
  else if (/[\u0000-\u001f\u007f]/.test(name)) nameErr = 'The name cannot contain control characters.';
  else if (new TextEncoder().encode(name).length > 128) nameErr = 'The name is too long.';
  let roomErr = '';
  if (!room) roomErr = 'Enter a room name.';
  else if (!ROOM_RE.test(room)) roomErr = 'Use only letters, digits, dots, dashes and underscores (at most 64).';
  fieldError(el.name, el.nameError, nameErr);
  fieldError(el.room, el.roomError, roomErr);
  if (nameErr) el.name.focus();
  else if (roomErr) el.room.focus();
  return nameErr || roomErr ? null : { name, room };
}

/* ---- media ------------------------------------------------------------------------- */

function liveTrack(kind) {
  if (!S.stream) return null;
  const list = kind === 'audio' ? S.stream.getAudioTracks() : S.stream.getVideoTracks();
  return list.find((t) => t.readyState === 'live') || null;
}

function stopLocalMedia() {
  if (S.stream) for (const t of S.stream.getTracks()) t.stop();
  S.stream = null;
  S.micMuted = false;
  S.camOff = false;
}

/**
 * Gets the local media for a join. want: 'av' (camera and microphone),
 * 'audio' (no camera: microphone if possible, else nothing), 'none'.
 * Returns { stream, note } or null when the user has to decide (the banner
 * says what happened and offers the choices).
 */
async function acquireMedia(want) {
  if (want === 'none') return { stream: new MediaStream(), note: 'You joined without camera and microphone: you can see and hear the others.' };
  const md = navigator.mediaDevices;
  if (!md || !md.getUserMedia) {
    mediaProblem({ name: 'InsecureContext' });
    return null;
  }
  if (want === 'audio') {
    try {
      return { stream: await md.getUserMedia({ audio: AUDIO }), note: 'You joined without camera.' };
    } catch {
      return { stream: new MediaStream(), note: 'You joined without camera and microphone: you can see and hear the others.' };
    }
  }
  try {
    return { stream: await md.getUserMedia({ audio: AUDIO, video: { ...VIDEO, facingMode: 'user' } }) };
  } catch (err) {
    if (err.name !== 'NotFoundError' && err.name !== 'OverconstrainedError') {
      mediaProblem(err);
      return null;
    }
    // A device is missing: take what there is.
    try {
      return { stream: await md.getUserMedia({ audio: AUDIO }), note: 'No camera found: you joined with your microphone only.' };
    } catch { /* no microphone either */ }
    try {
      return { stream: await md.getUserMedia({ video: VIDEO }), note: 'No microphone found: you joined with your camera only.' };
    } catch { /* nothing */ }
    return { stream: new MediaStream(), note: 'No camera or microphone found: you can see and hear the others.' };
  }
}

/** The banner for a getUserMedia failure before joining, with the choices. */
function mediaProblem(err) {
  const denied = err.name === 'NotAllowedError' || err.name === 'SecurityError' || err.name === 'PermissionDeniedError';
  const retry = { label: 'Try again', onClick: () => beginJoin('av') };
  const without = { label: 'Join without camera', primary: true, onClick: () => beginJoin('audio') };
  const listen = { label: 'Just watch and listen', onClick: () => beginJoin('none') };
  if (denied) {
    showError('media-denied', 'Camera or microphone access was denied. You can join without camera, or allow access in your browser and try again.', {
      detail: 'Without camera you join with your microphone if it is allowed. To allow access, use the camera icon in the address bar.',
      actions: [without, retry, listen],
      focus: true,
    });
  } else if (err.name === 'InsecureContext') {
    showError('other', 'This page cannot use your camera or microphone: it must be opened over https (or on localhost).', {
      detail: 'You can still join to see and hear the others.',
      actions: [listen],
      focus: true,
    });
  } else {
    const busy = err.name === 'NotReadableError' || err.name === 'AbortError' || err.name === 'TrackStartError';
    showError('other', busy
      ? 'Your camera or microphone could not be started: another application may be using it.'
      : 'Your camera or microphone could not be started.', {
      detail: `${err.name}${err.message ? `: ${err.message}` : ''}`,
      actions: [without, retry, listen],
      focus: true,
    });
  }
}

/** One new track of `kind` during the call, or null (the banner says why). */
async function getTrack(kind) {
  const md = navigator.mediaDevices;
  const what = kind === 'audio' ? 'Microphone' : 'Camera';
  if (!md || !md.getUserMedia) {
    showError('other', `${what} is not available: the page must be opened over https (or on localhost).`);
    return null;
  }
  try {
    const s = await md.getUserMedia(kind === 'audio' ? { audio: AUDIO } : { video: { ...VIDEO, facingMode: 'user' } });
    return s.getTracks()[0] || null;
  } catch (err) {
    if (err.name === 'NotAllowedError' || err.name === 'SecurityError') {
      showError('media-denied', `${what} access was denied. Allow it in your browser (the camera icon in the address bar) and try again.`);
    } else if (err.name === 'NotFoundError') {
      showError('other', `No ${what.toLowerCase()} was found on this device.`);
    } else {
      showError('other', `Your ${what.toLowerCase()} could not be started: another application may be using it.`, {
        detail: `${err.name}${err.message ? `: ${err.message}` : ''}`,
      });
    }
    return null;
  }
}

function watchLocalTrack(track) {
  track.addEventListener('ended', () => {
    if (S.view !== 'call' || !S.stream || !S.stream.getTracks().includes(track)) return;
    toast(track.kind === 'audio' ? 'Your microphone stopped.' : 'Your camera stopped.');
    updateControls();
  });
}

/* ---- joining ---------------------------------------------------------------------------- */

function onJoinSubmit(e) {
  e.preventDefault();
  if (S.view === 'lobby') beginJoin('av');
}

/**
 * Joins with the form's name and room: gets media as asked, then connects
 * (retrying while the server is unreachable).
 */
async function beginJoin(want) {
  if (S.view !== 'lobby') return;
  const v = readForm();
  if (!v) return;
  S.name = v.name;
  S.room = v.room;
  store.set('name', v.name);
  store.set('room', v.room);
  hideError();
  clearRetry();
  const gen = ++S.gen;
  setView('joining');
  stopLocalMedia();
  const media = await acquireMedia(want);
  if (gen !== S.gen) {
    if (media) for (const t of media.stream.getTracks()) t.stop();
    return;
  }
  if (!media) {
    setView('lobby');
    return;
  }
  S.stream = media.stream;
  S.joinNote = media.note || '';
  S.camOff = S.stream.getVideoTracks().length === 0;
  S.micMuted = false;
  for (const t of S.stream.getTracks()) watchLocalTrack(t);
  S.retryDelay = RETRY_MIN_MS;
  connect(gen);
}

async function connect(gen) {
  let sdk;
  try {
    sdk = await loadSdk();
  } catch (err) {
    if (gen !== S.gen) return;
    console.warn('rtc demo: cannot load the SDK:', err);
    stopLocalMedia();
    setView('lobby');
    showError('other', 'The call library could not be loaded, so the page cannot join calls.', { detail: String(err.message || err) });
    return;
  }
  if (gen !== S.gen) return;
  let c;
  try {
    c = new sdk.RtcClient({
      url: config.urls,
      devLogin: { displayName: S.name, roomId: S.room },
      localStream: S.stream,
      iceTransportPolicy: config.relay ? 'relay' : 'all',
      logger: config.debug ? console : undefined,
    });
  } catch (err) {
    stopLocalMedia();
    setView('lobby');
    showError('other', 'The call could not be started.', { detail: String(err.message || err) });
    return;
  }
  S.client = c;
  window.rtcDemo.client = c;
  S.ending = false;
  wireClient(c);
  let res;
  try {
    res = await c.join();
  } catch (err) {
    if (gen !== S.gen || c !== S.client) return;
    S.client = null;
    c.close().catch(() => {});
    clearTiles();
    if (isUnreachable(err)) {
      scheduleRetry(gen, err);
      return;
    }
    stopLocalMedia();
    setView('lobby');
    joinFailed(err);
    return;
  }
  if (gen !== S.gen || c !== S.client) {
    c.close().catch(() => {});
    return;
  }
  const others = (res.participants || []).filter((p) => p.id !== res.participant.id);
  if (others.length >= MAX_PEOPLE) {
    refuseFull(others.length);
    return;
  }
  enterCall(res, others);
}

function isUnreachable(err) {
  // The SDK reports sockets that do not open (or close) as UNAVAILABLE.
  return Boolean(err) && (err.code === 14 || err.code === 4);
}

function joinFailed(err) {
  console.warn('rtc demo: join failed:', err);
  const detail = `${err.status || err.name || 'Error'}: ${err.message || err}`;
  let sentence;
  switch (err.code) {
    case 8:
      sentence = `The room “${S.room}” is full or the server is busy. Try again in a moment or choose another room.`;
      break;
    case 3:
      sentence = 'The server did not accept this name or room.';
      break;
    case 12:
    case -32601:
      sentence = 'This server does not offer guest sign-in (it is not running in development mode).';
      break;
    case 7:
    case 16:
      sentence = 'The server refused to let you into this room.';
      break;
    case 5:
      sentence = `The room “${S.room}” does not exist.`;
      break;
    default:
      sentence = 'Could not join the call.';
  }
  showError('other', sentence, { detail });
}

function scheduleRetry(gen, err) {
  const delay = Math.round(S.retryDelay * (0.8 + Math.random() * 0.4));
  S.retryDelay = Math.min(RETRY_MAX_MS, S.retryDelay * 2);
  const at = Date.now() + delay;
  const why = err && err.message ? `${err.message}. ` : '';
  const tick = () => {
    const s = Math.max(0, Math.ceil((at - Date.now()) / 1000));
    setErrorDetail(`${why}Trying again in ${s} s…`);
  };
  showError('unreachable', 'Cannot reach the server. The call will start as soon as it answers.', {
    detail: '',
    actions: [{ label: 'Retry now', primary: true, onClick: () => retryNow(gen) }],
  });
  tick();
  clearInterval(S.retryTick);
  S.retryTick = setInterval(tick, 1000);
  S.retryTimer = setTimeout(() => retryNow(gen), delay);
}

function retryNow(gen) {
  if (gen !== S.gen || S.view !== 'joining' || S.client) return;
  clearRetry();
  setErrorDetail('Trying again…');
  connect(gen);
}

function clearRetry() {
  clearTimeout(S.retryTimer);
  clearInterval(S.retryTick);
  S.retryTimer = 0;
  S.retryTick = 0;
}

function cancelJoin() {
  S.gen++;
  clearRetry();
  const c = S.client;
  S.client = null;
  if (c) c.close().catch(() => {});
  clearTiles();
  stopLocalMedia();
  hideError();
  setView('lobby');
  setStatus(c ? c.state : 'idle');
  el.join.focus();
}

/** Joined a room that already had MAX_PEOPLE: leave again at once. */
function refuseFull(othersCount) {
  const c = S.client;
  S.gen++;
  S.client = null;
  S.ending = true;
  if (c) c.close().catch(() => {});
  teardownCall();
  stopLocalMedia();
  setView('lobby');
  if (c) setStatus(c.state);
  showError('other', `This room is full: a call has at most ${MAX_PEOPLE} people and “${S.room}” already has ${othersCount}. Try again later or choose another room.`);
}

/* ---- the client's events --------------------------------------------------------------- */

function wireClient(c) {
  const on = (type, fn) => c.addEventListener(type, (e) => {
    try {
      fn(e.detail || {});
    } catch (err) {
      console.warn(`rtc demo: ${type} handler failed:`, err);
    }
  });
  const current = () => c === S.client;

  on('state', ({ state, previous }) => {
    if (c === window.rtcDemo.client) setStatus(state);
    if (!current()) return;
    clearTimeout(S.slowTimer);
    if (state === 'connecting' || state === 'reconnecting') {
      S.slowTimer = setTimeout(() => {
        if (!current() || c.state !== state) return;
        if (state === 'connecting') {
          showError('unreachable', 'Cannot reach the server. Still trying…', {
            detail: `Connecting to ${config.urls.join(' or ')}.`,
          });
        } else {
          showError('unreachable', 'Cannot reach the server. Reconnecting…', {
            detail: 'Video and chat with the others go on while the connections between browsers hold; nobody new can join until the server is back.',
          });
        }
      }, state === 'connecting' ? SLOW_CONNECT_MS : SLOW_RECONNECT_MS);
    } else if (state === 'connected') {
      if (S.errorKind === 'unreachable') {
        hideError('unreachable');
        if (previous === 'reconnecting') toast('Connected to the server again.');
      }
    } else if (state === 'closed' && S.view === 'call' && !S.ending) {
      // kicked / room-closed come first and end the call with their reason;
      // a close without one is reported here.
      setTimeout(() => {
        if (current() && S.view === 'call' && !S.ending) endCall(S.endReason || 'The call ended: the server closed the session.');
      }, 0);
    }
  });

  on('participant-joined', ({ participant }) => {
    if (!current() || !participant) return;
    const known = S.people.has(participant.id);
    addPeer(participant);
    if (!known && S.view === 'call') toast(`${displayName(participant)} joined.`);
    enforceCapacity();
  });

  on('participant-left', ({ participant, reason }) => {
    if (!current() || !participant) return;
    const was = S.people.has(participant.id) || tiles.has(participant.id);
    const name = S.names.get(participant.id) || displayName(participant);
    removePeer(participant.id);
    // While reconnecting the SDK drops peers it will set up again: no toast.
    if (!was || S.view !== 'call' || c.state !== 'connected') return;
    const why = {
      LEAVE_REASON_TIMED_OUT: `${name} lost the connection.`,
      LEAVE_REASON_REMOVED: `${name} was removed from the call.`,
    }[reason] || `${name} left.`;
    toast(why);
  });

  on('track', ({ participantId, track, streams }) => {
    if (!current()) return;
    const peer = c.peers.get(participantId);
    const stream = (peer && peer.stream) || (streams && streams[0]);
    attachRemote(participantId, track, stream);
  });

  on('connection-state', ({ participantId, state }) => {
    if (!current()) return;
    if (state === 'closed' && !tiles.has(participantId)) return;
    if (!tiles.has(participantId)) {
      const peer = c.peers.get(participantId);
      if (!peer) return;
      addPeer(peer.participant);
    }
    setPeerState(participantId, state);
  });

  on('negotiated', ({ participantId }) => {
    if (!current()) return;
    const t = tiles.get(participantId);
    if (t && !remoteSendsVideo(participantId)) setRemoteVideo(t, false); // their camera went off
  });

  on('data', ({ from, data }) => {
    if (!current() || typeof data !== 'string') return;
    addChat(from, data);
  });

  on('reconnected', ({ resumed }) => {
    if (!current()) return;
    syncPeers();
    if (!resumed) toast('Reconnected: you re-joined the room.');
  });

  on('kicked', ({ reason }) => {
    if (!current()) return;
    S.ending = true;
    endCall(reason ? `You were removed from the call: ${reason}` : 'You were removed from the call by an administrator.');
  });

  on('room-closed', ({ reason }) => {
    if (!current()) return;
    S.ending = true;
    endCall(reason ? `The call has ended: the room was closed (${reason}).` : 'The call has ended: the room was closed.');
  });

  on('error', ({ error }) => {
    console.warn('rtc demo: client error:', error);
    if (!current()) return;
    if (error && error.code === 10) S.endReason = 'The call was opened in another tab or window, so it ended here.';
  });
}

/* ---- in the call ---------------------------------------------------------------------- */

function enterCall(res, others) {
  clearRetry();
  S.endReason = '';
  setView('call');
  hideError();
  el.roomLabel.textContent = (res.room && res.room.id) || S.room;
  makeLocalTile();
  for (const p of others) addPeer(p);
  syncPeers();
  updateControls();
  refreshDevices();
  updatePeople();
  clearInterval(S.statsTimer);
  S.statsTimer = setInterval(pollStats, 500);
  if (S.joinNote) toast(S.joinNote);
  toast(others.length
    ? `You joined “${el.roomLabel.textContent}” with ${plural(others.length, 'other person', 'other people')}.`
    : `You joined “${el.roomLabel.textContent}”. Copy the link to invite others.`);
  el.call.focus({ preventScroll: true }); // keyboard users continue in the call (Tab: controls)
  enforceCapacity();
}

/** The SDK's peers are the truth: add the missing tiles, drop the stale ones. */
function syncPeers() {
  const c = S.client;
  if (!c) return;
  for (const peer of c.peers.values()) {
    addPeer(peer.participant);
    setPeerState(peer.id, peer.connectionState || 'new');
    if (peer.stream && peer.stream.getTracks().length) {
      for (const t of peer.stream.getTracks()) attachRemote(peer.id, t, peer.stream);
    }
  }
  for (const id of [...S.people.keys()]) if (!c.peers.has(id)) removePeer(id);
}

function addPeer(participant) {
  if (!participant || !participant.id) return;
  const old = S.people.get(participant.id);
  const merged = old && !participant.displayName ? { ...participant, ...old } : participant;
  S.people.set(participant.id, merged);
  S.names.set(participant.id, displayName(merged));
  const t = tiles.get(participant.id);
  if (t) setTileName(t, displayName(merged));
  else makeRemoteTile(merged);
  updatePeople();
}

function removePeer(id) {
  S.people.delete(id);
  const t = tiles.get(id);
  if (t) {
    t.video.srcObject = null;
    t.node.remove();
    tiles.delete(id);
    layoutTiles();
  }
  updatePeople();
}

function updatePeople() {
  const n = 1 + S.people.size;
  el.people.textContent = `${plural(n, 'person', 'people')}`;
}

/** A 7th participant that raced past join()'s check: the latest to join leaves. */
function enforceCapacity() {
  const c = S.client;
  if (!c || !c.self || S.view !== 'call') return;
  const everyone = [c.self, ...S.people.values()];
  if (everyone.length <= MAX_PEOPLE) return;
  everyone.sort((a, b) => (Number(a.joinedAtMs) || 0) - (Number(b.joinedAtMs) || 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  if (everyone.findIndex((p) => p.id === c.self.id) >= MAX_PEOPLE) refuseFull(everyone.length - 1);
}

async function leave() {
  const c = S.client;
  S.ending = true;
  S.gen++;
  S.client = null;
  teardownCall();
  stopLocalMedia();
  hideError();
  setView('lobby');
  toast('You left the call.');
  el.join.focus();
  if (c) {
    const closing = c.close();
    setStatus(c.state);
    await closing.catch(() => {});
  }
}

/** The call is over for a reason the user should read. */
function endCall(message) {
  const c = S.client;
  S.gen++;
  S.client = null;
  if (c) c.close().catch(() => {});
  teardownCall();
  stopLocalMedia();
  setView('lobby');
  if (c) setStatus(c.state);
  showError('other', message);
  el.join.focus({ preventScroll: true });
}

function teardownCall() {
  clearTimeout(S.slowTimer);
  clearInterval(S.statsTimer);
  clearRetry();
  clearTiles();
  S.people.clear();
  el.chatLog.replaceChildren();
  el.chatEmpty.hidden = false;
  S.unread = 0;
  updateUnread();
  soundButton(false);
}

/* ---- tiles ------------------------------------------------------------------------------ */

function makeTile(id, name) {
  const node = el.tileTemplate.content.firstElementChild.cloneNode(true);
  const t = {
    id,
    node,
    video: node.querySelector('video'),
    badge: node.querySelector('.badge'),
    name: node.querySelector('.name'),
    initials: node.querySelector('.initials'),
    micOff: node.querySelector('.mic-off'),
    you: node.querySelector('.you'),
    state: 'new',
    frames: -1,       // remote: inbound video frames decoded at the last poll
    stalls: 0,        // remote: polls in a row without a new frame
  };
  node.dataset.video = 'off';
  setTileName(t, name);
  tiles.set(id, t);
  return t;
}

function setTileName(t, name) {
  t.displayName = name;
  t.name.textContent = name;
  t.initials.textContent = initials(name);
  t.initials.style.setProperty('--hue', String(hue(t.id === 'local' ? S.name : t.id + name)));
  t.node.setAttribute('aria-label', t.id === 'local' ? `${name} (you)` : `${name}, ${BADGE[t.state] || t.state}`);
}

function makeLocalTile() {
  const old = tiles.get('local');
  if (old) old.node.remove();
  const t = makeTile('local', S.name);
  t.node.dataset.local = 'true';
  t.node.dataset.mirror = 'true';
  t.you.hidden = false;
  t.video.muted = true;
  t.video.defaultMuted = true;
  t.video.setAttribute('muted', '');
  el.tiles.prepend(t.node);
  updateLocalTile();
  layoutTiles();
}

function updateLocalTile() {
  const t = tiles.get('local');
  if (!t) return;
  const vt = liveTrack('video');
  if (S.stream && t.video.srcObject !== S.stream) t.video.srcObject = S.stream;
  t.node.dataset.video = vt && !S.camOff ? 'on' : 'off';
  const facing = vt && vt.getSettings ? vt.getSettings().facingMode : '';
  t.node.dataset.mirror = String(facing !== 'environment');
  t.micOff.toggleAttribute('hidden', !(S.micMuted || !liveTrack('audio'))); // an SVG element: no .hidden property
  if (vt) play(t.video);
}

function makeRemoteTile(participant) {
  const t = makeTile(participant.id, displayName(participant));
  t.node.dataset.peerId = participant.id;
  setPeerState(participant.id, 'new', t);
  el.tiles.append(t.node);
  layoutTiles();
  return t;
}

const BADGE = {
  new: 'connecting',
  connecting: 'connecting',
  connected: 'connected',
  disconnected: 'reconnecting',
  failed: 'failed',
  closed: 'disconnected',
};

function setPeerState(id, state, t = tiles.get(id)) {
  if (!t || t.id === 'local') return;
  t.state = state;
  t.node.dataset.state = state;
  const label = BADGE[state] || state;
  t.badge.textContent = label;
  t.badge.dataset.badge = label;
  t.node.setAttribute('aria-label', `${t.displayName}, ${label}`);
}

function attachRemote(id, track, stream) {
  let t = tiles.get(id);
  if (!t) {
    const peer = S.client && S.client.peers.get(id);
    if (!peer) return;
    addPeer(peer.participant);
    t = tiles.get(id);
    if (!t) return;
  }
  if (stream && t.video.srcObject !== stream) {
    t.video.srcObject = stream;
    if (!t.videoEvents) {
      t.videoEvents = true;
      // First frame (or a new size after a camera switch): show the video.
      for (const ev of ['loadeddata', 'resize']) {
        t.video.addEventListener(ev, () => {
          if (t.video.videoWidth > 0 && remoteSendsVideo(id)) setRemoteVideo(t, true);
        });
      }
    }
  }
  if (track && track.kind === 'video') track.addEventListener('ended', () => setRemoteVideo(t, remoteSendsVideo(id) && t.video.videoWidth > 0));
  play(t.video);
}

/*
 * Whether a remote tile shows video or the avatar: from the negotiated
 * direction (their camera is off when they stop sending) and whether frames
 * are decoded (pollStats). Not from track.muted, which is not reliable:
 * Chrome left receiving tracks muted on a peer that had rolled back an
 * offer, although frames arrived and played.
 */
function setRemoteVideo(t, on) {
  const v = on ? 'on' : 'off';
  if (t.node.dataset.video !== v) t.node.dataset.video = v;
}

function remoteSendsVideo(id) {
  const peer = S.client && S.client.peers.get(id);
  if (!peer || !peer.pc) return false;
  return peer.pc.getTransceivers().some((tr) => tr.receiver.track.kind === 'video'
    && (tr.currentDirection === 'sendrecv' || tr.currentDirection === 'recvonly'));
}

function clearTiles() {
  for (const t of tiles.values()) {
    t.video.srcObject = null;
    t.node.remove();
  }
  tiles.clear();
}

/* Autoplay with sound needs a user gesture; without one (autojoin), play
   muted and offer a button. */
function play(video) {
  if (!video.srcObject) return;
  const p = video.play();
  if (!p) return;
  p.catch((err) => {
    if (err.name !== 'NotAllowedError' || video.muted) return;
    video.muted = true;
    video.play().catch(() => {});
    soundButton(true);
  });
}

let soundBtn = null;
function soundButton(show) {
  if (!show) {
    if (soundBtn) soundBtn.hidden = true;
    return;
  }
  if (!soundBtn) {
    soundBtn = h('button.btn.primary.sound-on', {
      type: 'button',
      text: 'Turn on sound',
      onclick: () => {
        for (const t of tiles.values()) {
          if (t.id === 'local') continue;
          t.video.muted = false;
          play(t.video);
        }
        soundBtn.hidden = true;
      },
    });
    el.stage.append(soundBtn);
  }
  soundBtn.hidden = false;
}

/* Tile size: the largest that fits n tiles in the stage, between 4:3 and
   16:9 on a landscape stage (3:4 on a portrait one, so phones stack). */
function layoutTiles() {
  const n = el.tiles.children.length;
  el.tiles.dataset.count = String(n);
  if (!n || el.call.hidden) return;
  const cs = getComputedStyle(el.stage);
  const gap = parseFloat(getComputedStyle(el.tiles).columnGap) || 12;
  const W = el.stage.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const H = el.stage.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
  if (W <= 0 || H <= 0) return;
  const maxA = 16 / 9;
  const minA = W < H ? 3 / 4 : 4 / 3;
  const options = [];
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    let w = (W - gap * (cols - 1)) / cols;
    let h = (H - gap * (rows - 1)) / rows;
    if (w <= 0 || h <= 0) continue;
    if (w / h > maxA) w = h * maxA;
    else if (w / h < minA) h = w / minA;
    options.push({ cols, w: Math.floor(w), h: Math.floor(h), area: w * h });
  }
  if (!options.length) return;
  const top = Math.max(...options.map((o) => o.area));
  // Landscape: side by side when that is nearly as large; portrait: the largest.
  const near = options.filter((o) => o.area >= top * (W >= H ? 0.9 : 1));
  const best = near[near.length - 1];
  el.tiles.style.setProperty('--tile-w', `${best.w}px`);
  el.tiles.style.setProperty('--tile-h', `${best.h}px`);
  el.tiles.style.setProperty('--tiles-w', `${best.cols * best.w + (best.cols - 1) * gap + 1}px`);
}

/* Speaking rings from the audio levels; remote video on/off from frames decoded. */
let polling = false;
async function pollStats() {
  const c = S.client;
  if (!c || S.view !== 'call' || polling) return;
  polling = true;
  let mine = 0;
  try {
    for (const peer of [...c.peers.values()]) {
      const t = tiles.get(peer.id);
      if (!peer.pc || peer.pc.connectionState !== 'connected') {
        setSpeaking(peer.id, false);
        if (t) setRemoteVideo(t, false);
        continue;
      }
      let level = 0;
      let frames = 0;
      try {
        const stats = await peer.pc.getStats();
        stats.forEach((r) => {
          if (r.type === 'inbound-rtp' && r.kind === 'video') frames += r.framesDecoded || 0;
          if (r.kind !== 'audio' || typeof r.audioLevel !== 'number') return;
          if (r.type === 'inbound-rtp') level = Math.max(level, r.audioLevel);
          else if (r.type === 'media-source') mine = Math.max(mine, r.audioLevel);
        });
      } catch { /* closed meanwhile */ }
      setSpeaking(peer.id, level > SPEAKING_LEVEL);
      if (t) {
        if (frames > t.frames && t.frames >= 0) t.stalls = 0;
        else t.stalls++;
        t.frames = frames;
        // Frames flowing → video; none for ~1.5 s (camera off, frozen) → avatar.
        setRemoteVideo(t, t.stalls === 0 ? remoteSendsVideo(peer.id) || t.video.videoWidth > 0 : t.stalls < 3 && t.node.dataset.video === 'on');
      }
    }
    setSpeaking('local', !S.micMuted && mine > SPEAKING_LEVEL);
  } finally {
    polling = false;
  }
}

function setSpeaking(id, on) {
  const t = tiles.get(id);
  if (t && (t.node.dataset.speaking === 'true') !== on) t.node.dataset.speaking = String(on);
}

/* ---- controls --------------------------------------------------------------------------- */

function updateControls() {
  const mic = liveTrack('audio');
  const cam = liveTrack('video');
  const muted = S.micMuted || !mic;
  const camOff = S.camOff || !cam;
  el.mute.setAttribute('aria-pressed', String(muted));
  el.mute.title = mic ? (muted ? 'Unmute microphone (M)' : 'Mute microphone (M)') : 'Turn on your microphone (M)';
  el.camera.setAttribute('aria-pressed', String(camOff));
  el.camera.title = cam ? (camOff ? 'Turn camera on (V)' : 'Turn camera off (V)') : 'Turn on your camera (V)';
  el.switchCamera.disabled = S.switching || !cam || camOff || S.videoInputs.length < 2;
  updateLocalTile();
}

async function toggleMute() {
  const c = S.client;
  if (!c || S.view !== 'call') return;
  if (!liveTrack('audio')) {
    // Joined without a microphone: ask for one now.
    el.mute.disabled = true;
    const track = await getTrack('audio');
    el.mute.disabled = false;
    if (!track || c !== S.client) {
      if (track) track.stop();
      return;
    }
    addLocalTrack(c, track);
    S.micMuted = false;
    c.setAudioMuted(false);
    hideError('media-denied');
    updateControls();
    return;
  }
  S.micMuted = !S.micMuted;
  c.setAudioMuted(S.micMuted);
  if (S.micMuted) setSpeaking('local', false);
  updateControls();
}

async function toggleCamera() {
  const c = S.client;
  if (!c || S.view !== 'call') return;
  if (!liveTrack('video')) {
    el.camera.disabled = true;
    const track = await getTrack('video');
    el.camera.disabled = false;
    if (!track || c !== S.client) {
      if (track) track.stop();
      return;
    }
    S.camOff = false;
    c.setVideoEnabled(true);
    addLocalTrack(c, track);
    hideError('media-denied');
    updateControls();
    refreshDevices();
    return;
  }
  S.camOff = !S.camOff;
  c.setVideoEnabled(!S.camOff);
  updateControls();
}

/** A track of a kind not sent yet (joined without it): every peer renegotiates. */
function addLocalTrack(c, track) {
  if (!S.stream) S.stream = new MediaStream();
  for (const old of track.kind === 'audio' ? S.stream.getAudioTracks() : S.stream.getVideoTracks()) {
    S.stream.removeTrack(old);
    old.stop();
  }
  S.stream.addTrack(track);
  watchLocalTrack(track);
  c.setLocalStream(S.stream);
  const t = tiles.get('local');
  if (t) t.video.srcObject = null; // re-read the stream's tracks
}

async function refreshDevices() {
  const md = navigator.mediaDevices;
  if (!md || !md.enumerateDevices) return;
  try {
    const all = await md.enumerateDevices();
    S.videoInputs = all.filter((d) => d.kind === 'videoinput' && d.deviceId);
  } catch {
    S.videoInputs = [];
  }
  updateControls();
}

async function switchCamera() {
  const c = S.client;
  const old = liveTrack('video');
  if (!c || !old || S.switching || S.videoInputs.length < 2) return;
  S.switching = true;
  updateControls();
  try {
    const current = old.getSettings().deviceId;
    const i = S.videoInputs.findIndex((d) => d.deviceId === current);
    const next = S.videoInputs[(i + 1) % S.videoInputs.length];
    const constraints = { video: { ...VIDEO, deviceId: { exact: next.deviceId } } };
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (err) {
      // Some phones cannot open two cameras at once.
      if (err.name !== 'NotReadableError' && err.name !== 'AbortError') throw err;
      old.stop();
      stream = await navigator.mediaDevices.getUserMedia(constraints);
    }
    const track = stream.getVideoTracks()[0];
    if (c !== S.client) {
      track.stop();
      return;
    }
    await c.replaceVideoTrack(track);
    // The SDK swaps the track inside its localStream; keep ours in step if that is another object.
    if (c.localStream !== S.stream && S.stream) {
      for (const t of S.stream.getVideoTracks()) S.stream.removeTrack(t);
      S.stream.addTrack(track);
    }
    old.stop();
    track.enabled = !S.camOff;
    watchLocalTrack(track);
    const t = tiles.get('local');
    if (t) t.video.srcObject = null;
    toast(`Camera: ${next.label || `camera ${S.videoInputs.indexOf(next) + 1}`}`);
  } catch (err) {
    console.warn('rtc demo: camera switch failed:', err);
    toast(`Could not switch the camera (${err.name || 'error'}).`);
  } finally {
    S.switching = false;
    updateControls();
  }
}

/* ---- chat --------------------------------------------------------------------------------- */

function chatOpen() {
  return el.call.dataset.chat === 'open';
}

function setChatOpen(open, { focus = false } = {}) {
  el.call.dataset.chat = open ? 'open' : 'closed';
  document.body.dataset.chat = el.call.dataset.chat;
  el.chatToggle.setAttribute('aria-expanded', String(open));
  if (open) {
    S.unread = 0;
    updateUnread();
    el.chatLog.scrollTop = el.chatLog.scrollHeight;
    if (focus) el.chatInput.focus({ preventScroll: true });
  }
  requestAnimationFrame(layoutTiles);
}

function updateUnread() {
  el.unread.textContent = S.unread > 99 ? '99+' : String(S.unread);
  el.unread.hidden = S.unread === 0;
  el.chatToggle.setAttribute('aria-label', S.unread ? `Chat, ${plural(S.unread, 'unread message', 'unread messages')}` : 'Chat');
}

function addChat(from, text, { mine = false } = {}) {
  const peer = from && S.client ? S.client.peers.get(from) : null;
  const name = mine ? S.name : from ? (S.names.get(from) || (peer && peer.participant.displayName) || 'Someone') : 'Server';
  const now = new Date();
  const msg = h('div.chat-msg', { 'data-from': mine ? 'me' : (from || 'server') },
    h('div.chat-meta', {},
      h('span.chat-name', { text: name }),
      mine ? h('span.chat-you', { text: '(you)' }) : null,
      h('time', { datetime: now.toISOString(), text: clock(now) })),
    h('p.chat-text', { text }));
  const log = el.chatLog;
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  log.append(msg);
  while (log.children.length > CHAT_MAX_MESSAGES) log.firstElementChild.remove();
  el.chatEmpty.hidden = true;
  if (mine || atBottom) log.scrollTop = log.scrollHeight;
  if (!mine && !(chatOpen() && isVisible(el.chatLog))) {
    S.unread++;
    updateUnread();
    toast(`${name}: ${truncate(text, 90)}`);
  }
}

function isVisible(node) {
  return node.offsetParent !== null || node.getClientRects().length > 0;
}

function sendChat(e) {
  e.preventDefault();
  const c = S.client;
  const text = el.chatInput.value.trim();
  if (!text || !c || S.view !== 'call') return;
  try {
    c.sendChat(text);
  } catch (err) {
    console.warn('rtc demo: sendChat failed:', err);
  }
  // Peers whose data channel is not open (yet) get it through the server.
  for (const peer of c.peers.values()) {
    if (peer.channel && peer.channel.readyState === 'open') continue;
    c.sendData(text, { to: peer.id }).catch((err) => {
      if (err && err.code === 5) return; // they left
      console.warn('rtc demo: message not delivered:', err);
      toast(`Your message did not reach ${S.names.get(peer.id) || 'someone'}.`);
    });
  }
  addChat('me', text, { mine: true });
  el.chatInput.value = '';
}

/* ---- invite link ----------------------------------------------------------------------------- */

async function copyLink() {
  const url = new URL(location.href);
  url.hash = '';
  for (const k of ['name', 'autojoin']) url.searchParams.delete(k);
  url.searchParams.set('room', el.roomLabel.textContent || S.room);
  const link = url.href;
  try {
    await navigator.clipboard.writeText(link);
    toast('Link copied: send it to the people you want to invite.');
  } catch {
    toast(`Invite link: ${link}`, 10000);
  }
}

/* ---- wiring ------------------------------------------------------------------------------------ */

function onKey(e) {
  if (e.key === 'Escape') {
    if (S.view === 'call' && chatOpen() && matchMedia('(max-width: 720px)').matches) {
      setChatOpen(false);
      el.chatToggle.focus();
    } else if (!el.banner.hidden && S.errorKind !== 'unreachable') {
      hideError();
    }
    return;
  }
  if (S.view !== 'call' || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  const target = e.target;
  if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) return;
  const key = e.key.toLowerCase();
  if (key === 'm') toggleMute();
  else if (key === 'v') toggleCamera();
  else if (key === 'c') setChatOpen(!chatOpen(), { focus: true });
  else return;
  e.preventDefault();
}

function init() {
  // Prefill: URL first, then what was used last time.
  el.name.value = params.get('name') ?? store.get('name') ?? '';
  el.room.value = params.get('room') ?? store.get('room') ?? `room-${Math.random().toString(36).slice(2, 8)}`;
  setStatus('idle');
  setView('lobby');
  setChatOpen(!matchMedia('(max-width: 720px)').matches);

  el.joinForm.addEventListener('submit', onJoinSubmit);
  el.cancelJoin.addEventListener('click', cancelJoin);
  for (const [input, box] of [[el.name, el.nameError], [el.room, el.roomError]]) {
    input.addEventListener('input', () => {
      if (input.getAttribute('aria-invalid') === 'true') fieldError(input, box, '');
    });
  }
  el.errorClose.addEventListener('click', () => hideError());
  el.leave.addEventListener('click', leave);
  el.mute.addEventListener('click', toggleMute);
  el.camera.addEventListener('click', toggleCamera);
  el.switchCamera.addEventListener('click', switchCamera);
  el.chatToggle.addEventListener('click', () => setChatOpen(!chatOpen(), { focus: true }));
  el.chatClose.addEventListener('click', () => {
    setChatOpen(false);
    el.chatToggle.focus();
  });
  el.chatForm.addEventListener('submit', sendChat);
  el.copyLink.addEventListener('click', copyLink);
  document.addEventListener('keydown', onKey);
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener('devicechange', () => {
      if (S.view === 'call') refreshDevices();
    });
  }
  new ResizeObserver(() => layoutTiles()).observe(el.stage);
  window.addEventListener('online', () => {
    if (S.view === 'joining' && !S.client && S.retryTimer) retryNow(S.gen);
  });
  window.addEventListener('pagehide', () => {
    if (S.client) S.client.close().catch(() => {});
  });

  // Start fetching the SDK now; a failure is reported at once.
  loadSdk().catch((err) => {
    console.warn('rtc demo: cannot load the SDK:', err);
    showError('other', 'The call library could not be loaded, so the page cannot join calls.', { detail: String(err.message || err) });
  });

  if (config.autojoin) {
    beginJoin('av');
  } else if (!el.name.value) {
    el.name.focus();
  }
}

init();

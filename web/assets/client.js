// kaskade web client. Speaks the signaling protocol of docs/SIGNALING.md over one WebSocket,
// sends camera + microphone on one RTCPeerConnection, and shows everyone in a grid of tiles.
// No build step and no dependencies: this file is served as-is at /static/client.js.
//
// Joining and failover. The page asks where to join, `POST /api/meetings/{meeting}/join` on its
// own origin (a locator, or a node without one) with {name, token?, region?, avoid_node?}
// (`region` from a `?region=` query parameter, `token` from `?token=`), then opens the answer's
// `signaling_url` and sends `join` with the answer's token. When the connection is lost (the
// socket closes or errors, the peer connection fails, or stays "disconnected" for 1.5 s), the
// page joins again by itself, without a reload: the same API call with the last `welcome`'s
// reconnect token and `avoid_node` = the node it was on, a new socket and a fresh peer
// connection that sends the same camera and microphone. Attempts follow at once, then after
// 250 ms, 500 ms, 1 s, then every 2 s, with the status line saying so. A refused reconnect
// token (a restarted node, an expired token) makes the next attempt join as at first. Fatal
// refusals (bad_token, meeting_locked, meeting_full, a malformed request) end it with a message.
//
// State for automated tests lives on window.kaskade (see `state` below).
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const MEETING_RE = /^[A-Za-z0-9_.-]{1,64}$/;

  if (document.body.dataset.page === 'index') {
    initIndex();
    return;
  }

  // ---------------------------------------------------------------- constants

  const FATAL_ERRORS = {
    bad_token: 'Access refused: the meeting token is missing, expired or for another meeting.',
    meeting_full: 'This meeting is full.',
    meeting_locked: 'This meeting is locked: a moderator stopped new joins.',
    token_used: 'This invitation was already used: ask for a new link.',
    unauthorized: 'Access refused: this meeting needs a token.',
  };
  /** Refusals worth retrying: another node, or the same one a little later, may have room. */
  const CAPACITY_ERRORS = {
    node_full: 'The server is at capacity right now; trying again…',
    no_capacity: 'No server has room right now; trying again…',
    rate_limited: 'Too many joins from your network right now; trying again…',
  };
  const DISCONNECT_GRACE_MS = 1500; // a peer connection "disconnected" longer than this => rejoin
  const CONNECT_TIMEOUT_MS = 10000; // from asking where to join to media "connected"
  const API_TIMEOUT_MS = 4000;      // for the join API's answer
  const RETRY_DELAYS_MS = [0, 250, 500, 1000, 2000]; // before each retry; the last one repeats
  const MAX_TILES = 10;
  /**
   * The layers the camera is sent in (simulcast): the node gives each viewer the smallest layer
   * that fills the viewer's tile (it ranks layers by their pictures, not by this order). The
   * full-size layer's cap is the chosen bitrate, the others' follow their picture height
   * (LAYER_CAPS), so that the smallest layer fits a thin downlink beside the audio (a 320x240
   * layer at 150 kbit/s and Opus come to about 230 kbit/s on the wire). Full size comes first: Chromium sends fewer
   * layers of a small picture and drops them from the end of this list, and a peer that does
   * not take simulcast gets the first. Chromium pauses upper layers when short of bandwidth;
   * the node follows. `?simulcast=0` sends one stream.
   */
  const SIMULCAST_LAYERS = [
    { rid: 'f', scaleResolutionDownBy: 1 },
    { rid: 'h', scaleResolutionDownBy: 2 },
    { rid: 'q', scaleResolutionDownBy: 4 },
  ];
  /** A reduced layer's cap by its picture height: [up to this height, kbit/s]. */
  const LAYER_CAPS = [[135, 80], [270, 150], [405, 450], [Infinity, 1200]];
  const VIEWING_DEBOUNCE_MS = 200; // tile sizes settle before the node is told

  // ---------------------------------------------------------------- state

  /** Everything a test (or a curious developer) may want to look at. */
  const state = {
    you: null,          // own participant from `welcome` (id, name, role, audio_muted, video_muted)
    participants: {},   // everyone else, by id: {id, name, role, audio_muted, video_muted}
    speaker: null,      // id of the active speaker, or null
    pc: null,           // the current RTCPeerConnection
    locked: false,
    recording: false,
    mayDial: false,     // may place SIP calls (`welcome.may_dial`): a moderator, or a dial right
    callMe: false,      // the node can call this participant's phone (`welcome.call_me`)
    dialIn: false,      // phones can dial in to the meeting (`welcome.dial_in`)
    status: '',         // text shown in #status
    statusCode: null,   // machine-readable: 'connected', 'reconnecting', 'removed', an error code...
    slots: {},          // receive slots by mid: {kind, participant}
    meeting: '',
    frames: [],         // the last 200 signaling frames, for debugging: {t, dir, type, frame}
    node: null,         // the node of the current connection, as the join API named it
    reconnects: 0,      // times the page joined again after losing its connection
    stats: collectStats,
    leave,
  };
  window.kaskade = state;

  /** Local capture; survives reconnects. */
  const local = {
    stream: null, audio: null, video: null,
    audioMuted: false, videoMuted: false,
    bitrateKbps: 1000, resolution: '640x480',
    simulcast: true,
    mediaNote: '',      // why we are receive-only, if we are
  };

  const urlParams = new URLSearchParams(location.search);
  const urlToken = urlParams.get('token') || null;
  const urlRegion = urlParams.get('region') || null;
  if (urlParams.get('simulcast') === '0') local.simulcast = false;
  let joinName = '';
  let joinToken = urlToken;   // replaced by the token of each `welcome`
  let avoidNode = null;       // the node whose connection was lost, for the join API
  let session = null;         // the current connection attempt, see connect()
  let wantJoined = false;     // false before Join, after Leave and after a fatal error
  let welcomedOnce = false;   // since Join: a later `welcome` is a reconnect
  let attempt = 0;            // consecutive failed attempts, for the backoff
  let reconnectTimer = null;
  const tiles = new Map();    // remote participant id -> tile element
  let viewingTimer = null;
  /** Watches remote tiles' videos: their heights go to the node (see reportViewing). */
  const tileSizes = new ResizeObserver(() => {
    clearTimeout(viewingTimer);
    viewingTimer = setTimeout(reportViewing, VIEWING_DEBOUNCE_MS);
  });
  let selfTile = null;

  // ---------------------------------------------------------------- pages

  function initIndex() {
    const form = $('#start-form');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const meeting = $('#meeting').value.trim();
      const name = $('#name').value.trim();
      const status = $('#status');
      if (!MEETING_RE.test(meeting) || !name) {
        status.hidden = false;
        status.textContent = 'Meeting names use 1 to 64 letters, digits, "_", "." or "-".';
        return;
      }
      location.href = `/m/${encodeURIComponent(meeting)}?name=${encodeURIComponent(name)}&autojoin=1`;
    });
  }

  function initMeeting() {
    state.meeting = meetingFromUrl();
    $('#meeting-name').textContent = state.meeting;
    document.title = `${state.meeting} · kaskade`;
    $('#name').value = urlParams.get('name') || '';
    selfTile = createTile(null, true);
    layoutGrid();

    $('#join-form').addEventListener('submit', (ev) => { ev.preventDefault(); join(); });
    $('#btn-audio').addEventListener('click', () => setLocalMute('audio', !local.audioMuted));
    $('#btn-video').addEventListener('click', () => setLocalMute('video', !local.videoMuted));
    $('#sel-resolution').addEventListener('change', (ev) => applyResolution(ev.target.value));
    $('#sel-bitrate').addEventListener('change', (ev) => applyBitrate(Number(ev.target.value)));
    $('#btn-lock').addEventListener('click', () => send({ type: 'lock', locked: !state.locked }));
    $('#btn-record').addEventListener('click', toggleRecording);
    $('#btn-camera').addEventListener('click', openCameraDialog);
    $('#camera-form').addEventListener('submit', (ev) => { ev.preventDefault(); addCamera(); });
    $('#camera-cancel').addEventListener('click', () => $('#camera-dialog').close());
    $('#btn-call').addEventListener('click', openCallDialog);
    $('#call-form').addEventListener('submit', (ev) => { ev.preventDefault(); placeCall(); });
    $('#call-cancel').addEventListener('click', () => $('#call-dialog').close());
    $('#call-room').addEventListener('change', roomPicked);
    $('#btn-phone').addEventListener('click', openPhoneDialog);
    $('#btn-dial-in').addEventListener('click', openDialInDialog);
    $('#dial-in-form').addEventListener('submit', (ev) => { ev.preventDefault(); savePin(); });
    $('#dial-in-close').addEventListener('click', () => $('#dial-in-dialog').close());
    $('#phone-form').addEventListener('submit', (ev) => { ev.preventDefault(); callMyPhone(); });
    $('#phone-cancel').addEventListener('click', () => $('#phone-dialog').close());
    for (const key of document.querySelectorAll('#keypad-dialog .key')) {
      key.addEventListener('click', () => pressKey(key.dataset.key));
    }
    $('#keypad-close').addEventListener('click', () => $('#keypad-dialog').close());
    $('#btn-leave').addEventListener('click', leave);
    // Browsers may refuse to autoplay sound before a user gesture: retry on the first click.
    document.addEventListener('click', playAllAudio);
    renderControls();

    if (!MEETING_RE.test(state.meeting)) {
      setStatus('Invalid meeting name in the address.', 'bad_request', 'error');
      $('#join').disabled = true;
    } else if (urlParams.get('autojoin') === '1' && $('#name').value.trim()) {
      join();
    }
  }

  /** `/m/<meeting>`; `?meeting=` as a fallback for pages served from elsewhere. */
  function meetingFromUrl() {
    const m = location.pathname.match(/^\/m\/([^/]+)\/?$/);
    if (m) return decodeURIComponent(m[1]);
    return urlParams.get('meeting') || 'test';
  }

  // ---------------------------------------------------------------- status line

  function setStatus(text, code = null, level = 'info') {
    state.status = text;
    state.statusCode = code;
    const el = $('#status');
    el.textContent = text;
    el.dataset.level = level;
    el.dataset.code = code || '';
    el.hidden = !text;
  }

  // ---------------------------------------------------------------- local media

  /** Opens camera and microphone once; failures leave us receive-only with a message. */
  async function getLocalMedia() {
    if (local.stream) return;
    local.mediaNote = '';
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      local.mediaNote = 'Camera and microphone need HTTPS (or localhost): you join receive-only.';
      return;
    }
    const [w, h] = local.resolution.split('x').map(Number);
    const video = { width: { ideal: w }, height: { ideal: h } };
    let stream = null;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
    } catch (err) {
      if (isDenied(err)) {
        local.mediaNote = 'Camera and microphone access was denied: you join receive-only. ' +
          'Allow access in the browser and rejoin to send.';
      } else {
        // One device missing or busy: try each alone before giving up.
        stream = await tryGetUserMedia({ audio: true }) || await tryGetUserMedia({ video });
        local.mediaNote = stream
          ? `Only part of your devices are available (${err.name}).`
          : `No camera or microphone available (${err.name}): you join receive-only.`;
      }
    }
    if (!stream) return;
    local.stream = stream;
    local.audio = stream.getAudioTracks()[0] || null;
    local.video = stream.getVideoTracks()[0] || null;
    if (local.audio) local.audio.enabled = !local.audioMuted;
    if (local.video) local.video.enabled = !local.videoMuted;
    attachVideo(selfTile, local.video ? stream : null);
  }

  function isDenied(err) {
    return err && (err.name === 'NotAllowedError' || err.name === 'SecurityError' ||
                   err.name === 'PermissionDeniedError');
  }

  async function tryGetUserMedia(constraints) {
    try { return await navigator.mediaDevices.getUserMedia(constraints); } catch { return null; }
  }

  function stopLocalMedia() {
    if (local.stream) local.stream.getTracks().forEach((t) => t.stop());
    local.stream = local.audio = local.video = null;
    attachVideo(selfTile, null);
  }

  /**
   * Mutes own audio or video. Both use `track.enabled = false`: the browser then sends silence
   * or black frames at a trickle, the node stops forwarding on our `mute` frame, and unmuting
   * is instant with no renegotiation (replaceTrack(null) would stop the encoder and need a
   * keyframe round trip on unmute, and would complicate resolution changes while muted).
   */
  function setLocalMute(kind, muted) {
    const track = kind === 'audio' ? local.audio : local.video;
    if (!track) return;
    track.enabled = !muted;
    if (kind === 'audio') local.audioMuted = muted; else local.videoMuted = muted;
    if (state.you) state.you[`${kind}_muted`] = muted;
    send({ type: 'mute', [kind]: muted });
    renderControls();
    renderSelf();
  }

  /** Our own tile shows our local truth: muted, or nothing to send at all. */
  function renderSelf() {
    renderTile(selfTile, {
      name: state.you ? state.you.name : joinName,
      audio_muted: local.audioMuted || !local.audio,
      video_muted: local.videoMuted || !local.video,
    });
  }

  /**
   * Changes the camera resolution during the call. applyConstraints can only scale down from
   * the format the camera was opened with, so a larger size reopens the camera and swaps the
   * new track into the live sender with replaceTrack (no renegotiation, no rejoin).
   */
  async function applyResolution(value) {
    local.resolution = value;
    if (!local.video) return;
    const [w, h] = value.split('x').map(Number);
    try {
      await local.video.applyConstraints({ width: { ideal: w }, height: { ideal: h } });
      const s = local.video.getSettings();
      if (s.width < w && s.height < h) await reopenCamera(w, h);
      const now = local.video.getSettings();
      console.info(`kaskade: camera now ${now.width}x${now.height}`);
      await applyBitrate(local.bitrateKbps); // the reduced layers' caps follow their size
    } catch (err) {
      setStatus(`Could not change the resolution: ${err.message || err.name}`, 'resolution', 'warn');
    }
  }

  /** The browser shares one capture format per camera, so the old track stops first. */
  async function reopenCamera(w, h) {
    const old = local.video;
    const { deviceId } = old.getSettings();
    const open = (width, height) => navigator.mediaDevices.getUserMedia({
      video: { deviceId, width: { ideal: width }, height: { ideal: height } } });
    const before = old.getSettings();
    old.stop();
    let fresh;
    try { fresh = await open(w, h); } catch (err) { fresh = await open(before.width, before.height); }
    const track = fresh.getVideoTracks()[0];
    track.enabled = !local.videoMuted;
    if (session && session.videoSender) await session.videoSender.replaceTrack(track);
    local.stream.removeTrack(old);
    local.stream.addTrack(track);
    local.video = track;
  }

  /** The encodings the camera is sent in, each capped at most at `kbps`. */
  function sendEncodings(kbps) {
    if (!local.simulcast) return [{ maxBitrate: kbps * 1000 }];
    const height = (local.video && local.video.getSettings().height) || Number(local.resolution.split('x')[1]);
    return SIMULCAST_LAYERS.map(({ rid, scaleResolutionDownBy }) => {
      const layerHeight = height / scaleResolutionDownBy;
      const cap = scaleResolutionDownBy === 1 ? Infinity : LAYER_CAPS.find(([h]) => layerHeight <= h)[1];
      return { rid, scaleResolutionDownBy, maxBitrate: Math.min(cap, kbps) * 1000 };
    });
  }

  /**
   * The node says which simulcast layers anyone receives: the others are paused (no encoding,
   * no uplink) until it wants them again. Its order is our encodings' order.
   */
  function onLayers(sess, msg) {
    const sender = sess.videoSender;
    if (!sender || !local.simulcast) return;
    const active = Array.isArray(msg.active) ? msg.active : [];
    changeSender(sender, (params) => {
      if (params.encodings.length < 2) return;
      params.encodings.forEach((e, i) => { e.active = active[i] !== false; });
    }).catch((err) => {
      console.warn(`kaskade: could not pause or resume simulcast layers: ${err.message || err}`);
    });
  }

  /** Caps the video encoder's bitrate on the live sender (no renegotiation). */
  async function applyBitrate(kbps) {
    local.bitrateKbps = kbps;
    const sender = session && session.videoSender;
    if (!sender) return; // used for the next connection
    const caps = sendEncodings(kbps);
    try {
      await changeSender(sender, (params) => {
        params.encodings.forEach((e, i) => { e.maxBitrate = (caps[i] || caps[caps.length - 1]).maxBitrate; });
      });
    } catch (err) {
      setStatus(`Could not change the bitrate: ${err.message || err.name}`, 'bitrate', 'warn');
    }
  }

  let senderChanges = Promise.resolve();
  /**
   * Changes the video sender's parameters one change at a time: each reads what the last one
   * set (two at once would fail on a stale transaction and lose one). Resolves or rejects with
   * this change.
   */
  function changeSender(sender, change) {
    const run = async () => {
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length === 0) params.encodings = [{}];
      change(params);
      await sender.setParameters(params);
    };
    const done = senderChanges.then(run);
    senderChanges = done.catch(() => {});
    return done;
  }

  // ---------------------------------------------------------------- join / leave / reconnect

  async function join() {
    const name = $('#name').value.trim();
    if (!name) { setStatus('Please enter your name.', 'name', 'warn'); return; }
    joinName = name.slice(0, 64);
    wantJoined = true;
    welcomedOnce = false;
    avoidNode = null;
    attempt = 0;
    $('#join-form').hidden = true;
    renderSelf();
    setStatus('Starting camera and microphone…', 'media');
    await getLocalMedia();
    renderControls();
    renderSelf();
    if (local.mediaNote) setStatus(local.mediaNote, 'camera_denied', 'warn');
    if (wantJoined) connect();
  }

  /**
   * One connection attempt: ask the join API where to join, open that WebSocket, then (after
   * `welcome`) a peer connection.
   */
  async function connect() {
    const sess = {
      ws: null, pc: null, welcomed: false, closed: false, videoSender: null,
      streams: new Map(), // mid -> MediaStream holding that slot's receiver track
      graceTimer: null,
      api: new AbortController(),
      watchdog: setTimeout(() => { if (sess === session) reconnect('timed out connecting'); },
        CONNECT_TIMEOUT_MS),
      usedWelcomeToken: joinToken !== null && joinToken !== urlToken,
    };
    session = sess;
    if (attempt === 0 && !local.mediaNote && !welcomedOnce) setStatus('Joining…', 'joining');
    let placement;
    try {
      placement = await locate(sess);
      if (sess !== session) return;
      sess.ws = new WebSocket(placement.signaling_url);
    } catch (err) {
      if (sess === session) refused(sess, err.code || 'unreachable', err.message || String(err));
      return;
    }
    state.node = placement.node || null;
    const ws = sess.ws;
    ws.onopen = () => {
      const frame = { type: 'join', meeting: state.meeting, name: joinName, client: 'browser' };
      if (placement.token) frame.token = placement.token;
      send(frame);
    };
    ws.onmessage = (ev) => onFrame(sess, ev.data);
    // A socket that errors also closes: one handler covers both.
    ws.onclose = () => { if (sess === session) reconnect('connection to the server lost'); };
  }

  /**
   * `POST /api/meetings/{meeting}/join` on this page's origin: {node, signaling_url, token}. Throws
   * {code, message}: the API's error, or `unreachable` when there is no answer.
   */
  async function locate(sess) {
    const body = { name: joinName };
    if (joinToken) body.token = joinToken;
    if (urlRegion) body.region = urlRegion;
    if (avoidNode) body.avoid_node = avoidNode;
    const timer = setTimeout(() => sess.api.abort(), API_TIMEOUT_MS);
    let response;
    let answer = null;
    try {
      response = await fetch(`/api/meetings/${encodeURIComponent(state.meeting)}/join`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: sess.api.signal,
        cache: 'no-store',
      });
      answer = await response.json().catch(() => null);
    } catch (err) {
      throw { code: 'unreachable', message: err.name === 'AbortError' ? 'no answer' : err.message };
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok || !answer || typeof answer.signaling_url !== 'string') {
      const code = (answer && answer.error) || (response.status >= 500 ? 'unreachable' : 'bad_request');
      throw { code, message: (answer && answer.message) || `HTTP ${response.status}` };
    }
    // A page served over HTTPS (behind a TLS proxy) may only open secure sockets.
    if (location.protocol === 'https:' && answer.signaling_url.startsWith('ws:')) {
      answer.signaling_url = `wss:${answer.signaling_url.slice(3)}`;
    }
    return answer;
  }

  /** Closes the current attempt (socket, peer connection, remote tiles); keeps local media. */
  function teardown() {
    const sess = session;
    session = null;
    if (!sess) return;
    sess.closed = true;
    clearTimeout(sess.watchdog);
    clearTimeout(sess.graceTimer);
    sess.api.abort();
    if (sess.ws) {
      sess.ws.onclose = sess.ws.onmessage = sess.ws.onopen = null;
      if (sess.ws.readyState <= WebSocket.OPEN) sess.ws.close();
    }
    if (sess.pc) sess.pc.close();
    state.pc = null;
    state.slots = {};
    state.participants = {};
    state.speaker = null;
    tileSizes.disconnect();
    for (const tile of tiles.values()) tile.remove();
    tiles.clear();
    $('#audio-sinks').replaceChildren();
    layoutGrid();
    renderControls();
  }

  /**
   * Tears down and schedules a rejoin after RETRY_DELAYS_MS[attempt] (at once, 250 ms, 500 ms,
   * 1 s, then every 2 s), avoiding the node that was lost. `status` replaces the usual text.
   */
  function reconnect(reason, status = null) {
    if (!wantJoined || reconnectTimer) return;
    if (state.node) avoidNode = state.node;
    teardown();
    const delay = RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)];
    attempt += 1;
    console.warn(`kaskade: ${reason}; rejoining in ${delay} ms`);
    if (status) setStatus(status.text, status.code, 'warn');
    else if (welcomedOnce) setStatus(`Connection lost (${reason}). Reconnecting…`, 'reconnecting', 'warn');
    else setStatus(`Could not join yet (${reason}). Retrying…`, 'reconnecting', 'warn');
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      if (wantJoined) connect();
    }, delay);
  }

  /** Ends the meeting for us without reconnecting (fatal error, removal, leave). */
  function stop(text, code, level) {
    wantJoined = false;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    teardown();
    setStatus(text, code, level);
    $('#join-form').hidden = false;
  }

  function leave() {
    send({ type: 'leave' });
    stop('You left the meeting.', 'left', 'info');
  }

  function send(frame) {
    const ws = session && session.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    if (frame.type !== 'join' && frame.type !== 'offer' && !session.welcomed) return false;
    ws.send(JSON.stringify(frame));
    logFrame('out', frame);
    return true;
  }

  function logFrame(dir, msg) {
    const frame = msg.sdp ? { ...msg, sdp: `(${msg.sdp.length} bytes)` } : msg;
    state.frames.push({ t: Math.round(performance.now()), dir, type: msg.type, frame });
    if (state.frames.length > 200) state.frames.shift();
  }

  // ---------------------------------------------------------------- signaling frames

  const HANDLERS = {
    welcome: onWelcome, answer: onAnswer, slots: onSlots, joined: onJoined, left: onLeft,
    updated: onUpdated, speaker: (s, m) => setSpeaker(m.id), lock: (s, m) => setLocked(m.locked),
    recording: (s, m) => setRecording(!!m.active),
    muted_by_moderator: onMutedByModerator, removed: onRemoved, error: onError, layers: onLayers,
    camera_added: onCameraAdded, dialling: onDialling, directory: onDirectory,
    dial_in: onDialIn,
  };

  function onFrame(sess, data) {
    if (sess !== session) return;
    let msg;
    try { msg = JSON.parse(data); } catch { console.warn('kaskade: non-JSON frame', data); return; }
    if (msg && typeof msg === 'object') logFrame('in', msg);
    const handler = HANDLERS[msg && msg.type];
    if (!handler) { console.warn('kaskade: unknown frame', msg); return; }
    Promise.resolve()
      .then(() => handler(sess, msg))
      .catch((err) => {
        console.error(`kaskade: handling ${msg.type} failed`, err);
        if (sess === session) reconnect(`${msg.type} failed: ${err.message || err}`);
      });
  }

  async function onWelcome(sess, msg) {
    sess.welcomed = true;
    if (welcomedOnce) state.reconnects += 1;
    welcomedOnce = true;
    state.you = { ...msg.you };
    state.mayDial = !!msg.may_dial;
    state.callMe = !!msg.call_me;
    state.dialIn = !!msg.dial_in;
    if (msg.token) joinToken = msg.token;
    state.participants = {};
    for (const p of msg.participants || []) addParticipant(p);
    selfTile.dataset.participantId = String(msg.you.id);
    renderSelf();
    setLocked(!!msg.locked);
    setRecording(!!msg.recording);
    setSpeaker(msg.speaker ?? null);
    renderControls();
    // A rejoin starts unmuted on the node: restore our own mute state.
    if (local.audioMuted) send({ type: 'mute', audio: true });
    if (local.videoMuted) send({ type: 'mute', video: true });
    if (local.audioMuted) state.you.audio_muted = true;
    if (local.videoMuted) state.you.video_muted = true;
    await startPeer(sess, Number(msg.recv_slots) || 0);
  }

  async function onAnswer(sess, msg) {
    await sess.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
    sess.viewing = '';
    reportViewing();
  }

  function onSlots(sess, msg) {
    state.slots = {};
    for (const s of msg.slots || []) state.slots[s.mid] = { kind: s.kind, participant: s.participant };
    applySlots();
  }

  function onJoined(sess, msg) {
    addParticipant(msg.participant);
    applySlots();
  }

  function onLeft(sess, msg) {
    delete state.participants[msg.id];
    const tile = tiles.get(msg.id);
    if (tile) {
      tileSizes.unobserve($('video', tile));
      tile.remove();
    }
    tiles.delete(msg.id);
    if (state.speaker === msg.id) setSpeaker(null);
    layoutGrid();
  }

  function onUpdated(sess, msg) {
    const p = msg.participant;
    if (state.you && p.id === state.you.id) {
      Object.assign(state.you, p);
      renderSelf();
      return;
    }
    state.participants[p.id] = { ...state.participants[p.id], ...p };
    const tile = tiles.get(p.id);
    if (tile) renderTile(tile, state.participants[p.id]);
  }

  function onMutedByModerator(sess, msg) {
    const what = [];
    // The node already stopped forwarding; we mirror it locally so the UI tells the truth.
    if (msg.audio && local.audio) { local.audio.enabled = false; local.audioMuted = true; what.push('microphone'); }
    if (msg.video && local.video) { local.video.enabled = false; local.videoMuted = true; what.push('camera'); }
    if (state.you) {
      if (msg.audio) state.you.audio_muted = true;
      if (msg.video) state.you.video_muted = true;
    }
    renderSelf();
    renderControls();
    setStatus(`A moderator muted your ${what.join(' and ') || 'media'}. Unmute when you are ready.`,
      'muted_by_moderator', 'warn');
  }

  function onRemoved() {
    stopLocalMedia();
    stop('You were removed from the meeting by a moderator.', 'removed', 'error');
  }

  function onError(sess, msg) {
    if (cameraPending && CAMERA_ERRORS.includes(msg.code)) {
      cameraFailed(msg.message || msg.code);
      return;
    }
    if (dialInPending && CALL_ERRORS.includes(msg.code)) {
      dialInFailed(msg.message || msg.code);
      return;
    }
    if ((dialPending || directoryPending) && CALL_ERRORS.includes(msg.code)) {
      directoryPending = false;
      dialFailed(dialPending || 'call', msg.message || msg.code);
      return;
    }
    if (msg.code === 'call_failed') {
      setStatus(`Call failed: ${msg.message}`, 'call_failed', 'warn');
      return;
    }
    const refusal = msg.code in FATAL_ERRORS || msg.code in CAPACITY_ERRORS ||
      (msg.code === 'bad_request' && !sess.welcomed);
    if (!refusal) {
      console.warn('kaskade: error from node', msg);
      setStatus(`Server: ${msg.message || msg.code}`, msg.code, 'warn');
      return;
    }
    refused(sess, msg.code, msg.message);
  }

  /** A join refused by the join API or the node: retry if another try may pass, else stop. */
  function refused(sess, code, message) {
    if ((code === 'bad_token' || code === 'token_used') && sess.usedWelcomeToken) {
      // The reconnect token is not valid here (a node that restarted, a token that expired
      // during a long outage): join as at first, right away.
      joinToken = urlToken;
      attempt = 0;
      reconnect('session token refused');
    } else if (code in FATAL_ERRORS || code === 'bad_request') {
      stop(FATAL_ERRORS[code] || `Could not join: ${message || code}`, code, 'error');
    } else if (code in CAPACITY_ERRORS) {
      reconnect(code, { text: CAPACITY_ERRORS[code], code });
    } else {
      reconnect(code === 'unreachable' ? `server unreachable: ${message}` : `${code}: ${message}`);
    }
  }

  // ---------------------------------------------------------------- peer connection

  /** Builds the peer connection exactly as SIGNALING.md section 2 says, and sends the offer. */
  async function startPeer(sess, recvSlots) {
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
    sess.pc = pc;
    state.pc = pc;
    if (local.audio) {
      preferRed(pc.addTransceiver(local.audio, { direction: 'sendonly', streams: [local.stream] }));
    }
    if (local.video) {
      const t = pc.addTransceiver(local.video, {
        direction: 'sendonly', streams: [local.stream],
        sendEncodings: sendEncodings(local.bitrateKbps),
      });
      sess.videoSender = t.sender;
      preferH264(t, 'sender');
    }
    for (let i = 0; i < recvSlots; i++) pc.addTransceiver('audio', { direction: 'recvonly' });
    for (let i = 0; i < recvSlots; i++) {
      preferH264(pc.addTransceiver('video', { direction: 'recvonly' }), 'receiver');
    }
    pc.addEventListener('connectionstatechange', () => onPeerState(sess));

    // The node is ICE-lite and learns our address from our connectivity checks, so the offer
    // goes out at once, without waiting for candidate gathering.
    await pc.setLocalDescription(await pc.createOffer());
    if (sess.closed) return;
    createAudioSinks(sess);
    applySlots();
    send({ type: 'offer', sdp: pc.localDescription.sdp });
  }

  /** Puts H.264 constrained baseline, packetization-mode 1 (42e01f) first, other H.264 next. */
  function preferH264(transceiver, side) {
    preferCodecs(transceiver, 'video', side, (c) => {
      const mime = c.mimeType.toLowerCase();
      const fmtp = (c.sdpFmtpLine || '').toLowerCase();
      if (mime !== 'video/h264') return mime === 'video/vp8' ? 3 : 4;
      const pm1 = fmtp.includes('packetization-mode=1');
      if (pm1 && fmtp.includes('profile-level-id=42e01f')) return 0;
      return pm1 ? 1 : 2;
    });
  }

  /**
   * Puts redundant audio (RED, RFC 2198) first and Opus next on the audio we publish, so that
   * the browser sends RED: each packet also carries the one before it, and the node makes good
   * what the uplink loses. Browsers without RED keep Opus.
   */
  function preferRed(transceiver) {
    preferCodecs(transceiver, 'audio', 'sender', (c) => {
      const mime = c.mimeType.toLowerCase();
      return mime === 'audio/red' ? 0 : mime === 'audio/opus' ? 1 : 2;
    });
  }

  /** Orders `kind`'s codecs by `rank` (lowest first) on `transceiver`. */
  function preferCodecs(transceiver, kind, side, rank) {
    if (typeof transceiver.setCodecPreferences !== 'function') return;
    // Browsers validate preferences against sender or receiver capabilities depending on
    // version and direction: try the natural side first, then the other.
    const sides = side === 'sender' ? [RTCRtpSender, RTCRtpReceiver] : [RTCRtpReceiver, RTCRtpSender];
    for (const api of sides) {
      const caps = api.getCapabilities && api.getCapabilities(kind);
      if (!caps) continue;
      const codecs = [...caps.codecs].sort((a, b) => rank(a) - rank(b)); // stable sort
      try { transceiver.setCodecPreferences(codecs); return; } catch (err) { /* next side */ }
    }
    console.warn(`kaskade: could not set the ${kind} codec preference`);
  }

  function onPeerState(sess) {
    if (sess !== session) return;
    const st = sess.pc.connectionState;
    if (st === 'connected') {
      attempt = 0;
      clearTimeout(sess.watchdog);
      clearTimeout(sess.graceTimer);
      sess.graceTimer = null;
      if (state.statusCode !== 'muted_by_moderator') {
        setStatus(local.mediaNote || 'Connected.', local.mediaNote ? 'camera_denied' : 'connected',
          local.mediaNote ? 'warn' : 'ok');
      }
      renderControls();
    } else if (st === 'failed') {
      reconnect('media connection failed');
    } else if (st === 'disconnected' && !sess.graceTimer) {
      sess.graceTimer = setTimeout(() => {
        sess.graceTimer = null;
        const now = sess.pc.connectionState;
        if (sess === session && (now === 'disconnected' || now === 'failed')) {
          reconnect(`media connection ${now}`);
        }
      }, DISCONNECT_GRACE_MS);
    }
  }

  function transceiverByMid(pc, mid) {
    return pc.getTransceivers().find((t) => t.mid === mid) || null;
  }

  /** A MediaStream per slot, wrapping the slot receiver's track (stable for the session). */
  function slotStream(sess, mid) {
    if (!sess.streams.has(mid)) {
      const t = transceiverByMid(sess.pc, mid);
      if (!t) return null;
      sess.streams.set(mid, new MediaStream([t.receiver.track]));
    }
    return sess.streams.get(mid);
  }

  /** One hidden, always-playing <audio> per audio slot; the node mixes nothing, we just play. */
  function createAudioSinks(sess) {
    const sinks = $('#audio-sinks');
    sinks.replaceChildren();
    for (const t of sess.pc.getTransceivers()) {
      if (t.receiver.track.kind !== 'audio' || t.direction !== 'recvonly') continue;
      const audio = document.createElement('audio');
      audio.autoplay = true;
      audio.dataset.mid = t.mid;
      audio.srcObject = slotStream(sess, t.mid);
      sinks.append(audio);
    }
    playAllAudio();
  }

  function playAllAudio() {
    for (const a of document.querySelectorAll('#audio-sinks audio')) {
      a.play().catch(() => {
        if (!state.statusCode || state.statusCode === 'connected') {
          setStatus('Click anywhere to enable sound.', 'autoplay', 'warn');
        }
      });
    }
  }

  /** Points each remote tile's <video> at the slot that currently carries its video. */
  function applySlots() {
    const sess = session;
    if (!sess || !sess.pc) return;
    const videoMid = new Map();
    for (const [mid, s] of Object.entries(state.slots)) {
      if (s.kind === 'video') videoMid.set(s.participant, mid);
    }
    for (const [id, tile] of tiles) {
      const mid = videoMid.get(id);
      attachVideo(tile, mid !== undefined ? slotStream(sess, mid) : null);
      tile.dataset.mid = mid ?? '';
    }
  }

  // ---------------------------------------------------------------- stats for tests

  /**
   * Per remote participant: {framesDecoded, audioBytes}, from inbound-rtp stats joined with the
   * slot map by mid. A slot keeps its SSRC across reassignments, so counts are per slot and
   * include what the slot carried for earlier occupants.
   */
  async function collectStats() {
    const pc = state.pc;
    const out = {};
    if (!pc) return out;
    const midOfTrack = new Map(pc.getTransceivers().map((t) => [t.receiver.track.id, t.mid]));
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const slot = state.slots[s.mid ?? midOfTrack.get(s.trackIdentifier)];
      if (!slot) return;
      const e = out[slot.participant] || (out[slot.participant] = { framesDecoded: 0, audioBytes: 0 });
      if (s.kind === 'video') e.framesDecoded += s.framesDecoded || 0;
      else if (s.kind === 'audio') e.audioBytes += s.bytesReceived || 0;
    });
    return out;
  }

  // ---------------------------------------------------------------- participants and tiles

  function addParticipant(p) {
    if (state.you && p.id === state.you.id) return;
    state.participants[p.id] = { ...p };
    let tile = tiles.get(p.id);
    if (!tile) {
      if (tiles.size + 1 >= MAX_TILES) console.warn('kaskade: more participants than tiles');
      tile = createTile(p.id, false);
      tiles.set(p.id, tile);
    }
    renderTile(tile, state.participants[p.id]);
    layoutGrid();
  }

  const ICON_MIC_OFF = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.9V21h2v-3.1A7 7 0 0 0 19 11zM3 3l18 18" stroke="currentColor" stroke-width="2" fill="none"/></svg>';
  const ICON_PHONE = '<svg class="icon-phone" viewBox="0 0 24 24" aria-hidden="true"><path d="M6.6 10.8a15 15 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25 11.4 11.4 0 0 0 3.6.57 1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1z" fill="currentColor"/></svg>';
  const ICON_CAM_OFF = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 7h11a1 1 0 0 1 1 1v8a1 1 0 0 1-1 1H3a1 1 0 0 1-1-1V8a1 1 0 0 1 1-1zm12 4 6-4v10l-6-4M3 3l18 18" stroke="currentColor" stroke-width="2" fill="none"/></svg>';

  /** A tile: <video>, an avatar for when there is no picture, name, indicators, moderator tools. */
  function createTile(id, isSelf) {
    const tile = document.createElement('div');
    tile.className = isSelf ? 'tile self' : 'tile';
    tile.dataset.participantId = id === null ? '' : String(id);
    tile.innerHTML = `
      <video autoplay playsinline muted></video>
      <div class="avatar" aria-hidden="true"></div>
      <div class="label">
        <span class="name"></span>
        <span class="ind ind-audio" title="Microphone muted">${ICON_MIC_OFF}</span>
        <span class="ind ind-video" title="Camera off">${ICON_CAM_OFF}</span>
        <span class="source-badge" hidden></span>
      </div>
      ${isSelf ? '' : `<div class="mod-actions">
        <button type="button" class="mod-keys" title="Send keys to this call's menu" hidden>Keypad</button>
        <button type="button" class="mod-mute" title="Mute this participant">Mute</button>
        <button type="button" class="mod-remove" title="Remove from the meeting">Remove</button>
      </div>`}`;
    $('video', tile).addEventListener('loadeddata', onVideoFrameSize);
    $('video', tile).addEventListener('resize', onVideoFrameSize);
    if (!isSelf) {
      tileSizes.observe($('video', tile));
      $('.mod-keys', tile).addEventListener('click', () => openKeypad(id));
      $('.mod-mute', tile).addEventListener('click', () => moderate('mute_audio', id));
      $('.mod-remove', tile).addEventListener('click', () => moderate('remove', id));
    }
    $('#grid').append(tile);
    return tile;
  }

  // ---------------------------------------------------------------- tile sizes (simulcast)

  /**
   * Tells the node how tall each remote tile is on screen, in device pixels, when that
   * changed: it sends each publisher's smallest layer that fills the tile (0: not shown).
   */
  function reportViewing() {
    const sess = session;
    if (!sess || !sess.pc || sess.closed) return;
    const list = [];
    for (const [id, tile] of tiles) {
      const video = $('video', tile);
      list.push({ participant: id, height: Math.round(video.clientHeight * (window.devicePixelRatio || 1)) });
    }
    const key = JSON.stringify(list);
    if (key === sess.viewing) return;
    sess.viewing = key;
    send({ type: 'viewing', tiles: list });
  }

  function moderate(action, target) {
    send({ type: 'moderate', action, target });
  }

  function renderTile(tile, p) {
    const name = p.name || '';
    $('.name', tile).textContent = tile.classList.contains('self') ? `${name} (you)` : name;
    $('.avatar', tile).textContent = name.trim().charAt(0).toUpperCase() || '?';
    tile.classList.toggle('audio-muted', !!p.audio_muted);
    tile.classList.toggle('video-muted', !!p.video_muted);
    tile.classList.toggle('speaking', state.speaker !== null && tile.dataset.participantId === String(state.speaker));
    renderSource(tile, p.source);
  }

  /** What a source's badge says in each state. */
  const SOURCE_LABELS = {
    camera: { live: 'Camera', reconnecting: 'Camera · reconnecting…' },
    sip: { calling: 'SIP · calling…', ringing: 'SIP · ringing…', live: 'SIP' },
    phone: { calling: 'Phone · calling…', ringing: 'Phone · ringing…', live: 'Phone' },
  };
  /** Kinds of source that are calls: hung up from the tile. */
  const CALL_KINDS = ['sip', 'phone'];

  /** A source's tile (a camera, a SIP call) says what it is and how it is doing (and why);
   * a call's remove button hangs up. */
  function renderSource(tile, source) {
    const badge = $('.source-badge', tile);
    if (!badge) return;
    tile.classList.toggle('source', !!source);
    const call = !!source && CALL_KINDS.includes(source.kind);
    tile.classList.toggle('sip', call);
    tile.classList.toggle('phone', !!source && source.kind === 'phone');
    tile.classList.toggle('mine', myPhones.has(Number(tile.dataset.participantId)));
    tile.classList.toggle('reconnecting', !!source && source.state !== 'live');
    badge.hidden = !source;
    if (!source) return;
    const labels = SOURCE_LABELS[source.kind] || {};
    badge.textContent = labels[source.state] || source.kind;
    if (source.kind === 'phone') badge.insertAdjacentHTML('afterbegin', ICON_PHONE);
    badge.title = source.detail || '';
    const remove = $('.mod-remove', tile);
    if (remove && call) remove.textContent = 'Hang up';
    const keys = $('.mod-keys', tile);
    if (keys) keys.hidden = !(source.kind === 'sip' && source.state === 'live');
  }

  /** Shows `stream` in the tile; the avatar stays until a frame with a size has arrived. */
  function attachVideo(tile, stream) {
    const video = $('video', tile);
    if (video.srcObject === stream) return;
    video.srcObject = stream;
    tile.classList.remove('has-video');
    if (stream) video.play().catch(() => {});
  }

  function onVideoFrameSize(ev) {
    const video = ev.target;
    video.closest('.tile').classList.toggle('has-video', !!video.srcObject && video.videoWidth > 0);
  }

  /** Picks the column count from the number of tiles (CSS narrows it on small screens). */
  function layoutGrid() {
    const n = $('#grid').children.length;
    const cols = n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : 4;
    const grid = $('#grid');
    grid.dataset.cols = String(cols);
    grid.style.setProperty('--fit', String(cols / Math.max(1, Math.ceil(n / cols))));
  }

  function setSpeaker(id) {
    state.speaker = id;
    for (const tile of document.querySelectorAll('#grid .tile')) {
      tile.classList.toggle('speaking', id !== null && tile.dataset.participantId === String(id));
    }
  }

  function setRecording(active) {
    state.recording = active;
    $('#rec-badge').hidden = !active;
    renderControls();
  }

  // ---------------------------------------------------------------- recording (moderators)

  /** The locator's recordings API for this meeting, with the moderator's token. */
  async function recordingsApi(method, suffix = '') {
    const response = await fetch(`/api/meetings/${encodeURIComponent(state.meeting)}/recordings${suffix}`, {
      method,
      headers: { authorization: `Bearer ${joinToken}` },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.message || `${response.status} ${response.statusText}`);
    return body;
  }

  /** Starts a recording, or stops the running one (whoever started it). */
  async function toggleRecording() {
    const button = $('#btn-record');
    button.disabled = true;
    try {
      if (state.recording) {
        const running = (await recordingsApi('GET')).filter((r) => r.state === 'recording');
        for (const r of running) await recordingsApi('DELETE', `/${encodeURIComponent(r.id)}`);
        setStatus('Recording stopped: it is being finished for playback.', null, 'info');
      } else {
        await recordingsApi('POST');
        setStatus('Recording started.', null, 'info');
      }
    } catch (e) {
      setStatus(`Recording: ${e.message}`, 'recording', 'error');
    } finally {
      button.disabled = false;
    }
  }

  // ---------------------------------------------------------------- cameras (moderators)

  /** Error codes that answer an add_camera request. */
  const CAMERA_ERRORS = ['source_failed', 'bad_request', 'forbidden'];
  /** An add_camera request is waiting for its answer (the node connects to the camera first). */
  let cameraPending = false;

  function openCameraDialog() {
    $('#camera-error').hidden = true;
    $('#camera-add').disabled = false;
    $('#camera-dialog').showModal();
    $('#camera-url').focus();
  }

  function addCamera() {
    const url = $('#camera-url').value.trim();
    if (!/^rtsp:\/\//i.test(url)) {
      cameraFailed('Use an rtsp:// URL, for example rtsp://192.0.2.10:554/stream1.');
      return;
    }
    const frame = {
      type: 'add_camera', url, name: $('#camera-name').value.trim(),
      transport: $('#camera-transport').value,
    };
    const username = $('#camera-user').value;
    if (username) {
      frame.username = username;
      frame.password = $('#camera-password').value;
    }
    if (!send(frame)) {
      cameraFailed('Not connected to the meeting.');
      return;
    }
    cameraPending = true;
    $('#camera-add').disabled = true;
    $('#camera-add').textContent = 'Connecting…';
    $('#camera-error').hidden = true;
  }

  function onCameraAdded(sess, msg) {
    cameraPending = false;
    $('#camera-add').disabled = false;
    $('#camera-add').textContent = 'Add camera';
    $('#camera-form').reset();
    $('#camera-dialog').close();
    setStatus(`Camera "${msg.name}" added.`, null, 'info');
  }

  function cameraFailed(message) {
    cameraPending = false;
    $('#camera-add').disabled = false;
    $('#camera-add').textContent = 'Add camera';
    const error = $('#camera-error');
    error.textContent = message;
    error.hidden = false;
  }

  // ---------------------------------------------------------------- SIP calls (moderators)

  /** Error codes that answer a dial request before the call is placed. */
  const CALL_ERRORS = ['call_failed', 'bad_request', 'forbidden', 'not_found', 'unavailable'];
  /** The dialog whose request waits for the node's `dialling` (or its refusal): 'call' (a room
   * system) or 'phone' (call-me), or null. */
  let dialPending = null;
  /** The directory was asked for and has not come yet. */
  let directoryPending = false;
  /** Participant ids of the phones this participant had called (they may hang them up). */
  const myPhones = new Set();

  function openCallDialog() {
    $('#call-error').hidden = true;
    $('#call-place').disabled = false;
    directoryPending = send({ type: 'directory' });
    $('#call-dialog').showModal();
    $('#call-room').focus();
  }

  /** Fills the dialog's room list with the directory's rooms (keeping the one picked). */
  function onDirectory(sess, msg) {
    directoryPending = false;
    const select = $('#call-room');
    const picked = select.value;
    for (const option of [...select.options].slice(1)) option.remove();
    for (const room of msg.entries || []) {
      const option = document.createElement('option');
      option.value = room.id;
      option.textContent = room.name;
      option.title = room.uri;
      select.append(option);
    }
    select.value = [...select.options].some((o) => o.value === picked) ? picked : '';
    const note = $('#call-directory-note');
    note.hidden = select.options.length > 1;
    note.textContent = 'The directory has no rooms yet: type an address.';
    roomPicked();
  }

  /** A room of the directory is dialled by its id; the address field is for typing one. */
  function roomPicked() {
    const room = $('#call-room').value;
    $('#call-uri').disabled = !!room;
    $('#call-uri').placeholder = room
      ? $('#call-room').selectedOptions[0].title : 'sip:boardroom@mcu.example.org';
  }

  function placeCall() {
    const entry = $('#call-room').value;
    const uri = $('#call-uri').value.trim();
    if (!entry && !/^sips?:\S+$/i.test(uri)) {
      dialFailed('call', 'Pick a room, or use a sip: address (sips: for TLS), for example sip:boardroom@mcu.example.org.');
      return;
    }
    const name = $('#call-name').value.trim();
    request('call', entry ? { type: 'dial', entry, name } : { type: 'dial', uri, name });
  }

  function openPhoneDialog() {
    $('#phone-error').hidden = true;
    $('#phone-call').disabled = false;
    $('#phone-dialog').showModal();
    $('#phone-number').focus();
  }

  function callMyPhone() {
    const number = $('#phone-number').value.trim();
    if (!/^\+?[0-9 ().-]{3,30}$/.test(number)) {
      dialFailed('phone', 'Type a phone number, for example +47 22 00 00 00.');
      return;
    }
    request('phone', { type: 'call_me', number });
  }

  /** Sends the request of dialog `which` ('call' or 'phone') and waits for its answer. */
  function request(which, frame) {
    if (!send(frame)) {
      dialFailed(which, 'Not connected to the meeting.');
      return;
    }
    dialPending = which;
    $(which === 'call' ? '#call-place' : '#phone-call').disabled = true;
    $(`#${which}-error`).hidden = true;
  }

  function onDialling(sess, msg) {
    const which = dialPending;
    dialPending = null;
    if (which === 'phone') {
      myPhones.add(msg.id);
      $('#phone-call').disabled = false;
      $('#phone-dialog').close();
      setStatus('Calling your phone…', null, 'info');
      const tile = tiles.get(msg.id);
      if (tile) tile.classList.add('mine');
      return;
    }
    $('#call-place').disabled = false;
    $('#call-form').reset();
    roomPicked();
    $('#call-dialog').close();
    setStatus(`Calling ${msg.uri}…`, null, 'info');
  }

  /** Shows why the request of dialog `which` failed, in that dialog. */
  function dialFailed(which, message) {
    dialPending = null;
    $(which === 'call' ? '#call-place' : '#phone-call').disabled = false;
    const error = $(`#${which}-error`);
    error.textContent = message;
    error.hidden = false;
  }

  // ---------------------------------------------------------------- dial-in (moderators)

  /** The dial-in dialog waits for the node's `dial_in` (or its refusal). */
  let dialInPending = false;

  function openDialInDialog() {
    $('#dial-in-error').hidden = true;
    $('#dial-in-number').textContent = '…';
    dialInPending = send({ type: 'dial_in' });
    $('#dial-in-dialog').showModal();
  }

  function savePin() {
    const pin = $('#dial-in-pin').value.trim();
    if (pin && !/^[0-9]{4,8}$/.test(pin)) {
      dialInFailed('A PIN is 4 to 8 digits (or empty for none).');
      return;
    }
    dialInPending = send({ type: 'set_pin', pin: pin || null });
  }

  /** Shows the meeting's number (grouped in threes), its PIN and the phone number to call. */
  function onDialIn(sess, msg) {
    dialInPending = false;
    $('#dial-in-error').hidden = true;
    $('#dial-in-number').textContent = String(msg.number).replace(/(\d{3})(?=\d)/g, '$1 ');
    $('#dial-in-pin').value = msg.pin || '';
    $('#dial-in-phone').hidden = !msg.phone;
    $('#dial-in-phone strong').textContent = msg.phone || '';
  }

  function dialInFailed(message) {
    dialInPending = false;
    const error = $('#dial-in-error');
    error.textContent = message;
    error.hidden = false;
  }

  /** The call the keypad sends to. */
  let keypadTarget = null;

  function openKeypad(id) {
    keypadTarget = id;
    const tile = tiles.get(id);
    $('#keypad-title').textContent = `Keypad: ${tile ? $('.name', tile).textContent : 'call'}`;
    $('#keypad-sent').textContent = '';
    $('#keypad-dialog').showModal();
  }

  /** Sends one key of the keypad to its call (RFC 4733 or SIP INFO, as the call agreed). */
  function pressKey(key) {
    if (keypadTarget === null) return;
    if (send({ type: 'dtmf', target: keypadTarget, digits: key })) {
      $('#keypad-sent').textContent += key;
    }
  }

  function setLocked(locked) {
    state.locked = locked;
    $('#lock-badge').hidden = !locked;
    renderControls();
  }

  /** Button labels, pressed states and which controls are usable right now. */
  function renderControls() {
    const inCall = !!(session && session.welcomed);
    const isModerator = inCall && state.you && state.you.role === 'moderator';
    document.body.classList.toggle('moderator', !!isModerator);
    document.body.classList.toggle('in-call', inCall);
    $('#role-badge').hidden = !isModerator;

    const audio = $('#btn-audio');
    audio.disabled = !local.audio;
    audio.textContent = !local.audio ? 'No mic' : local.audioMuted ? 'Unmute mic' : 'Mute mic';
    audio.setAttribute('aria-pressed', String(local.audioMuted));
    audio.classList.toggle('off', local.audioMuted || !local.audio);

    const video = $('#btn-video');
    video.disabled = !local.video;
    video.textContent = !local.video ? 'No camera' : local.videoMuted ? 'Start video' : 'Stop video';
    video.setAttribute('aria-pressed', String(local.videoMuted));
    video.classList.toggle('off', local.videoMuted || !local.video);

    $('#sel-resolution').disabled = !local.video;
    $('#btn-camera').hidden = !isModerator;
    const mayDial = inCall && !!state.mayDial;
    document.body.classList.toggle('dialler', mayDial);
    $('#btn-call').hidden = !mayDial;
    $('#btn-phone').hidden = !(inCall && state.callMe);
    $('#btn-dial-in').hidden = !(isModerator && state.dialIn);
    const lock = $('#btn-lock');
    lock.hidden = !isModerator;
    lock.textContent = state.locked ? 'Unlock meeting' : 'Lock meeting';
    lock.setAttribute('aria-pressed', String(state.locked));
    const record = $('#btn-record');
    record.hidden = !isModerator;
    record.textContent = state.recording ? '\u25A0 Stop recording' : '\u25CF Record';
    record.classList.toggle('on', state.recording);
    record.setAttribute('aria-pressed', String(state.recording));
    $('#btn-leave').disabled = !wantJoined;
  }

  initMeeting(); // last, once every const above is initialized
})();

// htcstream viewer: lists the hub's streams and plays every one of them
// over WHEP (RFC 9725) as the page opens, with the detections of the frame
// on screen (from the "detections" data channel) shown under its video.
//
// window.__htcstats[stream] exposes what each player saw, for tests and
// for anyone curious in the console.
'use strict';

const players = new Map();
// Streams the user stopped: the page starts every other one by itself.
const stoppedByUser = new Set();
// ?play=a,b plays only those; without it the page plays every stream.
const only = (new URLSearchParams(location.search).get('play') || '').split(',').filter(Boolean);
window.__htcstats = {};

const $ = (sel, root = document) => root.querySelector(sel);

// The access token: a server serving beyond this machine asks for a bearer
// token on /streams and WHEP. The page asks for it once, or takes it from a
// link's fragment (#token=..., which never reaches a server or a log) and
// strips it from the address bar; it is kept in this browser's
// localStorage for this origin and sent as "Authorization: Bearer".
const TOKEN_KEY = 'htcstream.token';

function takeTokenFromFragment() {
  const frag = new URLSearchParams(location.hash.slice(1));
  if (!frag.has('token')) return false;
  const t = frag.get('token');
  if (t) setToken(t);
  frag.delete('token');
  const rest = frag.toString();
  history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  return true;
}

// A link with the token opened in a tab already on the page changes only
// the fragment: no reload, so take the token here too.
window.addEventListener('hashchange', () => {
  if (!takeTokenFromFragment()) return;
  $('#auth').hidden = true;
  refreshList();
});

// setToken keeps the token, also as the cookie that lets <img> and <video>
// fetch snapshots, clips and recordings (they cannot send headers); the
// server takes the cookie for reading only.
function setToken(t) {
  if (t) {
    localStorage.setItem(TOKEN_KEY, t);
    document.cookie = `htcstream_token=${encodeURIComponent(t)}; path=/; SameSite=Strict${location.protocol === 'https:' ? '; Secure' : ''}`;
  } else {
    localStorage.removeItem(TOKEN_KEY);
    document.cookie = 'htcstream_token=; path=/; max-age=0; SameSite=Strict';
  }
}
if (localStorage.getItem(TOKEN_KEY)) setToken(localStorage.getItem(TOKEN_KEY));

function authHeaders(extra = {}) {
  const t = localStorage.getItem(TOKEN_KEY);
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

// askToken shows the token form; a stored token that was refused goes.
function askToken(res) {
  if (!/bearer/i.test(res.headers.get('WWW-Authenticate') || '')) return false;
  const had = localStorage.getItem(TOKEN_KEY) !== null;
  setToken('');
  $('#auth-msg').textContent = had ? 'the token was refused' : '';
  $('#auth').hidden = false;
  $('#token').focus();
  return true;
}

$('#auth').addEventListener('submit', (e) => {
  e.preventDefault();
  setToken($('#token').value.trim());
  $('#token').value = '';
  $('#auth').hidden = true;
  refreshList();
});

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// api GETs a JSON document of the web API with the page's credentials; a
// refused token brings the token form back.
async function api(path) {
  const res = await fetch(path, { cache: 'no-store', headers: authHeaders() });
  if (res.status === 401 && askToken(res)) throw new Error('an access token is needed');
  if (!res.ok) throw new Error(`${res.status} ${(await res.text()).trim()}`);
  return res.json();
}

async function refreshList() {
  if (!$('#auth').hidden) return; // waiting for the token
  let streams;
  try {
    streams = await api('streams');
  } catch (err) {
    $('#status').textContent = `cannot list streams: ${err.message}`;
    $('#status').className = 'error';
    return;
  }
  $('#status').textContent = streams.length ? `${streams.length} stream(s)` : 'no streams yet';
  $('#status').className = 'muted';
  const body = $('#streams tbody');
  body.replaceChildren(...streams.map((s) => {
    const tr = el('tr');
    tr.append(
      el('td', s.id),
      el('td', s.codec),
      el('td', s.width ? `${s.width}×${s.height}` : '–'),
      el('td', s.fps.toFixed(1), 'num'),
      el('td', String(s.viewers), 'num'),
      el('td', String(s.frames), 'num'),
      el('td', String(s.dropped), 'num'),
    );
    const td = el('td');
    const b = el('button', players.has(s.id) ? 'stop' : 'play');
    b.onclick = () => (players.has(s.id) ? stop(s.id, true) : (stoppedByUser.delete(s.id), play(s.id)));
    td.append(b);
    tr.append(td);
    return tr;
  }));
  for (const s of streams) {
    if ($('#tab-live').hidden) break; // video plays on the live tab only
    if (players.has(s.id) || stoppedByUser.has(s.id)) continue;
    if (only.length && !only.includes(s.id)) continue;
    play(s.id);
  }
}

// whep connects to a WHEP endpoint. The client makes the offer, so it also
// creates the data channel; the server takes it up. Ordered with no
// retransmissions: messages never arrive out of order or late-and-stale,
// a lost one is simply skipped.
async function whep(url, video, onMessage) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  const dc = pc.createDataChannel('detections', { ordered: true, maxRetransmits: 0 });
  dc.onmessage = (e) => {
    try { onMessage(JSON.parse(e.data)); } catch (err) { console.warn('bad detections message', err); }
  };
  pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  // No trickle ICE: the offer goes once it holds its candidates.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const t = setTimeout(resolve, 3000);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
    });
  });
  const res = await fetch(url, {
    method: 'POST',
    headers: authHeaders({ 'Content-Type': 'application/sdp' }),
    body: pc.localDescription.sdp,
  });
  if (res.status === 401) askToken(res);
  if (res.status !== 201) {
    pc.close();
    throw new Error(`${res.status}: ${await res.text()}`);
  }
  const session = new URL(res.headers.get('Location'), url).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: await res.text() });
  return {
    pc,
    close() {
      pc.close();
      fetch(session, { method: 'DELETE', keepalive: true, headers: authHeaders() }).catch(() => {});
    },
  };
}

function median(xs) {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function play(id) {
  if (players.has(id)) return;
  const node = $('#player').content.firstElementChild.cloneNode(true);
  $('.name', node).textContent = id;
  $('.stop', node).onclick = () => stop(id, true);
  const video = $('video', node);
  video.muted = true; // browsers autoplay only muted video without a click
  $('#players').append(node);

  const st = {
    state: 'connecting', hello: false, detections: 0, lastSeq: -1, outOfOrder: 0,
    lastCount: 0, lastLabels: [], framesDecoded: 0, framesDropped: 0, fps: 0,
    latencyMs: [], latencyMedianMs: NaN,
    // shownRtp: the RTP timestamp of the frame on screen; labelsRtp: that
    // of the frame whose detections are shown (equal when in step);
    // lagging: the browser cannot tell which frame is shown, so labels
    // are the newest message's and say so.
    shownRtp: -1, labelsRtp: -1, labelsSeq: -1, synced: 0, lagging: false,
  };
  window.__htcstats[id] = st;
  const p = { node, video, st, conn: null, timer: 0 };
  players.set(id, p);

  // Latency: a message carries the frame's RTP timestamp and when the hub
  // got the frame; requestVideoFrameCallback tells when the frame with
  // that RTP timestamp went to the screen. Whichever comes second matches.
  const sentAt = new Map();
  const shownAt = new Map();
  const record = (ms) => {
    st.latencyMs.push(ms);
    if (st.latencyMs.length > 300) st.latencyMs.shift();
    st.latencyMedianMs = median(st.latencyMs);
  };
  const trim = (m) => { if (m.size > 300) m.delete(m.keys().next().value); };
  // Detections wait here, by their frame's RTP timestamp, until the frame
  // itself is shown: the data channel is faster than the video's jitter
  // buffer, so showing a message on arrival would label a frame not yet on
  // screen.
  const pending = new Map();
  const showLabels = (m, synced) => {
    st.lastCount = m.count;
    st.lastLabels = m.labels;
    st.labelsSeq = m.seq;
    if (synced) { st.labelsRtp = m.rtp_ts; st.synced++; }
    $('.count', node).textContent = `${m.count} detection${m.count === 1 ? '' : 's'}`;
    $('.labels', node).replaceChildren(...m.labels.map((l) => {
      const c = el('span', `${l.label}${l.track_id ? ' #' + l.track_id : ''} ${l.score.toFixed(2)}`, 'chip');
      if (l.stage_scores) c.title = window.stageText ? window.stageText(l.stage_scores, l.score) : '';
      if (l.propagated) c.classList.add('propagated');
      c.tabIndex = 0; // a tap shows the title's stage scores on phones too
      return c;
    }));
    if (m.keyframe !== undefined) {
      // what made this frame's detections: the model, the tracker, or the
      // tracker because nothing moved (motion gating keeps the model idle)
      $('.model', node).textContent = m.keyframe ? '· model' : m.still ? '· still: no motion' : '· tracked';
    }
    $('.det', node).classList.toggle('lagging', !synced);
    $('.det', node).title = synced ? `detections of frame ${m.seq}, the one shown` : 'the newest detections; they may lag or lead the picture';
  };
  const syncable = 'requestVideoFrameCallback' in video;
  st.lagging = !syncable;
  const onFrame = (now, meta) => {
    if (meta.rtpTimestamp !== undefined) {
      const ts = meta.rtpTimestamp;
      st.shownRtp = ts;
      const shown = performance.timeOrigin + meta.presentationTime;
      const sent = sentAt.get(ts);
      if (sent !== undefined) { record(shown - sent); sentAt.delete(ts); }
      else { shownAt.set(ts, shown); trim(shownAt); }
      const m = pending.get(ts);
      if (m) showLabels(m, true);
      // Older messages belong to frames that will never be shown now
      // (dropped or skipped); RTP timestamps grow with the frames.
      for (const k of pending.keys()) { if (k === ts || ((ts - k) >>> 0) < 0x80000000) pending.delete(k); }
    }
    if (players.get(id) === p) video.requestVideoFrameCallback(onFrame);
  };
  if (syncable) video.requestVideoFrameCallback(onFrame);

  const onMessage = (m) => {
    if (m.type === 'hello') { st.hello = true; return; }
    if (m.type !== 'detections') return;
    st.detections++;
    if (m.seq <= st.lastSeq) st.outOfOrder++;
    st.lastSeq = m.seq;
    if (m.rtp_ts === undefined || !syncable) { showLabels(m, false); return; }
    const shown = shownAt.get(m.rtp_ts);
    if (shown !== undefined) {
      // its frame went to the screen before the message came
      record(shown - m.sent_ms); shownAt.delete(m.rtp_ts);
      if (st.shownRtp === m.rtp_ts) showLabels(m, true);
      return;
    }
    sentAt.set(m.rtp_ts, m.sent_ms); trim(sentAt);
    pending.set(m.rtp_ts, m); trim(pending);
  };

  try {
    p.conn = await whep(new URL(`whep/${encodeURIComponent(id)}`, location.href).href, video, onMessage);
  } catch (err) {
    st.state = 'error';
    $('.state', node).textContent = err.message;
    $('.state', node).className = 'state error';
    return;
  }
  const pc = p.conn.pc;
  const showState = () => {
    st.state = pc.connectionState;
    $('.state', node).textContent = pc.connectionState;
  };
  pc.onconnectionstatechange = showState;
  showState();
  p.timer = setInterval(async () => {
    const stats = await pc.getStats();
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        st.framesDecoded = r.framesDecoded || 0;
        st.framesDropped = r.framesDropped || 0;
        st.fps = r.framesPerSecond || 0;
      }
    });
    const lat = Number.isNaN(st.latencyMedianMs) ? '–' : `${st.latencyMedianMs.toFixed(0)} ms`;
    $('.stats', node).textContent =
      `${st.fps.toFixed(1)} fps · ${st.framesDecoded} decoded · ${st.framesDropped} dropped · ` +
      `${st.detections} detection messages · latency (hub → screen, median) ${lat}`;
  }, 500);
  refreshList();
}

function stop(id, byUser = false) {
  const p = players.get(id);
  if (!p) return;
  if (byUser) stoppedByUser.add(id);
  players.delete(id);
  clearInterval(p.timer);
  if (p.conn) p.conn.close();
  p.node.remove();
  window.__htcstats[id].state = 'stopped';
  refreshList();
}

// Sessions end with the page, not ICE timeouts later.
window.addEventListener('pagehide', () => { for (const id of [...players.keys()]) stop(id); });

takeTokenFromFragment();

// ?play=a,b starts those at once (the list may not know them yet).
for (const id of only) play(id);
refreshList();
setInterval(refreshList, 2000);

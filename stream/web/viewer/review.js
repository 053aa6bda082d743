// htcstream review: the Events and Recordings tabs of the page, read from
// the event store through /api/events and /api/recordings (docs/web-api.md).
// It shares viewer.js's helpers ($, el, api and the token handling).
'use strict';

// Tabs: #live (default), #events, #recordings; the token fragment
// (#token=...) is taken by viewer.js before this runs.
function currentTab() {
  const h = new URLSearchParams(location.hash.slice(1));
  for (const t of ['events', 'recordings']) if (h.has(t)) return t;
  return 'live';
}

function showTab() {
  const tab = currentTab();
  // a clip left open would keep the new tab inert behind it
  if ($('#clip').open) $('#clip').close();
  for (const s of document.querySelectorAll('.tab')) s.hidden = s.id !== `tab-${tab}`;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('on', a.dataset.tab === tab);
  // players stop off the live tab (a phone's data and battery) and start
  // again on it
  if (tab !== 'live') for (const id of [...players.keys()]) stop(id);
  else refreshList();
  if (tab === 'events') loadEvents();
  if (tab === 'recordings') loadRecordings();
}
window.addEventListener('hashchange', showTab);

const fmtTime = (iso) => new Date(iso).toLocaleString([], { dateStyle: 'short', timeStyle: 'medium' });
const fmtDur = (s) => (s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`);

// stageText is an instance's per-stage scores, the cascade's own view of it:
// each stage's score and the ensemble's.
function stageText(stages, score) {
  const parts = (stages || []).map((s, i) => `stage ${i + 1} ${s.toFixed(2)}`);
  if (score !== undefined) parts.push(`ensemble ${score.toFixed(2)}`);
  return parts.join(' · ');
}
window.stageText = stageText;

// Cameras known to the page: the live streams and what events name.
const cameras = new Set();
async function fillCameras() {
  try {
    for (const s of await api('streams')) cameras.add(s.id);
  } catch (err) { /* the events may still list some */ }
  for (const sel of document.querySelectorAll('select[name=camera]')) {
    const keep = sel.value;
    const first = sel.querySelector('option[value=""]');
    sel.replaceChildren(...(first ? [first] : []), ...[...cameras].sort().map((c) => {
      const o = el('option', c); o.value = c; return o;
    }));
    if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  }
}

function isoOf(local) { return local ? new Date(local).toISOString() : ''; }

let eventsShown = [];
async function loadEvents() {
  await fillCameras();
  const f = new FormData($('#event-filter'));
  const q = new URLSearchParams({ limit: '50' });
  for (const k of ['camera', 'label', 'zone']) if (f.get(k)) q.set(k, f.get(k));
  for (const k of ['after', 'before']) if (f.get(k)) q.set(k, isoOf(f.get(k)));
  let evs;
  try {
    evs = (await api(`api/events?${q}`)).events;
  } catch (err) {
    $('#event-msg').textContent = `cannot list events: ${err.message}`;
    $('#event-msg').className = 'error';
    return;
  }
  eventsShown = evs;
  $('#event-msg').className = 'muted';
  $('#event-msg').textContent = evs.length ? `${evs.length} event(s), newest first` : 'no events match';
  const labels = new Set(evs.map((e) => e.label));
  $('#labels').replaceChildren(...[...labels].map((l) => { const o = el('option'); o.value = l; return o; }));
  for (const e of evs) cameras.add(e.camera);
  $('#event-list').replaceChildren(...evs.map((e, i) => eventCard(e, i)));
}

function eventCard(e, i) {
  const card = el('article', undefined, 'card');
  card.dataset.index = String(i);
  card.tabIndex = 0;
  const thumb = el('div', undefined, 'thumb');
  if (e.snapshot_url) {
    const img = el('img');
    img.loading = 'lazy';
    img.alt = `${e.label} on ${e.camera}`;
    img.src = e.snapshot_url.replace(/^\//, '');
    thumb.append(img);
  } else {
    thumb.append(el('span', 'no snapshot', 'muted'));
  }
  const title = el('div', undefined, 'title');
  title.append(el('b', e.label), el('span', ` #${e.track_id} · ${e.camera}`, 'muted'));
  const score = el('span', e.best_score.toFixed(2), 'score');
  score.title = stageText(e.stage_scores, e.best_score);
  title.append(' ', score);
  const when = el('div', `${fmtTime(e.first_seen)} · ${fmtDur(e.duration_s)}${e.ended ? '' : ' · going on'}`, 'muted');
  const zones = el('div', (e.entered_zones || []).length ? `zones: ${e.entered_zones.join(', ')}` : '', 'muted');
  const stages = el('div', stageText(e.stage_scores, e.best_score), 'stages');
  card.append(thumb, title, when, zones, stages);
  card.onclick = () => openEvent(e);
  card.onkeydown = (k) => { if (k.key === 'Enter') openEvent(e); };
  return card;
}

function openEvent(e) {
  const d = $('#clip');
  const v = $('video', d);
  const meta = $('.meta', d);
  meta.replaceChildren(
    el('b', `${e.label} #${e.track_id} on ${e.camera}`),
    el('div', `${fmtTime(e.first_seen)} for ${fmtDur(e.duration_s)}`, 'muted'),
    el('div', stageText(e.stage_scores, e.best_score), 'stages'),
  );
  if (e.clip_url) {
    v.hidden = false;
    v.src = e.clip_url.replace(/^\//, '');
    v.play().catch(() => {});
  } else {
    v.hidden = true;
    v.removeAttribute('src');
    meta.append(el('div', e.ended ? 'no clip for this event' : 'the clip is made when the event ends', 'muted'));
  }
  d.dataset.event = e.id;
  if (!d.open) d.showModal();
}
$('#clip').addEventListener('close', () => { const v = $('#clip video'); v.pause(); v.removeAttribute('src'); v.load(); });

$('#event-filter').addEventListener('submit', (e) => { e.preventDefault(); loadEvents(); });
$('#event-filter').addEventListener('change', () => loadEvents());

// Recordings: a day's segments of one camera on a 24-hour line; a click
// plays the segment holding that moment from there.
let recSegments = [];
function dayBounds() {
  const day = $('#rec-filter [name=day]').value;
  const start = day ? new Date(`${day}T00:00:00`) : new Date(new Date().toDateString());
  return [start, new Date(start.getTime() + 24 * 3600 * 1000)];
}

async function loadRecordings() {
  await fillCameras();
  const sel = $('#rec-filter [name=camera]');
  const dayInput = $('#rec-filter [name=day]');
  if (!dayInput.value) {
    const t = new Date();
    dayInput.value = `${t.getFullYear()}-${String(t.getMonth() + 1).padStart(2, '0')}-${String(t.getDate()).padStart(2, '0')}`;
  }
  if (!sel.value) { $('#rec-msg').textContent = 'no camera yet'; return; }
  const [a, b] = dayBounds();
  const q = new URLSearchParams({ camera: sel.value, after: a.toISOString(), before: b.toISOString(), limit: '1000' });
  const evq = new URLSearchParams({ camera: sel.value, after: a.toISOString(), before: b.toISOString(), limit: '500' });
  try {
    recSegments = (await api(`api/recordings?${q}`)).segments;
    drawTimeline(a, recSegments, (await api(`api/events?${evq}`)).events);
  } catch (err) {
    $('#rec-msg').textContent = `cannot list recordings: ${err.message}`;
    $('#rec-msg').className = 'error';
    return;
  }
  $('#rec-msg').className = 'muted';
  const bytes = recSegments.reduce((n, s) => n + s.bytes, 0);
  $('#rec-msg').textContent = recSegments.length
    ? `${recSegments.length} segment(s), ${(bytes / 1e6).toFixed(1)} MB; click the line to play`
    : 'nothing recorded on this day';
}

function drawTimeline(dayStart, segs, evs) {
  const line = $('#timeline');
  const day = 24 * 3600 * 1000;
  const pct = (t) => `${Math.max(0, Math.min(100, (100 * (new Date(t) - dayStart)) / day))}%`;
  const blocks = segs.map((s) => {
    const b = el('span', undefined, 'seg');
    b.style.left = pct(s.start);
    b.style.width = `calc(${pct(s.end)} - ${pct(s.start)} + 2px)`;
    b.title = `${fmtTime(s.start)} – ${fmtTime(s.end)}`;
    return b;
  });
  const ticks = evs.map((e) => {
    const k = el('span', undefined, 'tick');
    k.style.left = pct(e.first_seen);
    k.title = `${e.label} #${e.track_id} ${fmtTime(e.first_seen)}`;
    return k;
  });
  line.replaceChildren(...blocks, ...ticks);
  line.onclick = (ev) => {
    const r = line.getBoundingClientRect();
    playAt(new Date(dayStart.getTime() + ((ev.clientX - r.left) / r.width) * day));
  };
}

// playAt plays the recording at wall time t, or the next one after it.
function playAt(t) {
  const seg = recSegments.find((s) => new Date(s.end) >= t) || recSegments[recSegments.length - 1];
  if (!seg) return;
  const name = seg.path.split('/').pop();
  const v = $('#rec-video');
  const offset = Math.max(0, (t - new Date(seg.start)) / 1000);
  v.src = `recordings/${encodeURIComponent(seg.camera)}/${encodeURIComponent(name)}`;
  v.addEventListener('loadedmetadata', () => {
    // a fragmented segment may not state its length (the newest is still
    // growing): seek only where a length is known to hold it
    v.currentTime = Number.isFinite(v.duration) ? Math.min(offset, Math.max(0, v.duration - 0.1)) : offset;
    v.play().catch(() => {});
  }, { once: true });
  $('#rec-now').textContent = `${seg.camera} at ${fmtTime(new Date(new Date(seg.start).getTime() + offset * 1000).toISOString())}${seg.worker ? ` (recorded by ${seg.worker})` : ''}`;
  window.__htcrec = { segment: name, offset };
}
window.playAt = playAt;

$('#rec-filter').addEventListener('change', () => loadRecordings());

showTab();

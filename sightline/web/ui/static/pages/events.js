// Live events: the newest events with their properties, filtered by event name and properties,
// refreshed every few seconds (pausable). The URL keeps the filters: /events?event=...&properties=[...]
import { api, eventNames, project, propertyNames } from '../api.js';
import { setQuery } from '../router.js';
import { acField, autocomplete, clear, debounce, h, pageHeader, select } from '../ui.js';

const REFRESH_MS = 3000;
const MAX_ROWS = 300;
export const OPERATORS = [
  ['exact', '= equals'], ['is_not', '≠ does not equal'], ['icontains', 'contains'], ['not_icontains', 'does not contain'],
  ['regex', 'matches regex'], ['gt', '> greater than'], ['lt', '< less than'], ['is_set', 'is set'], ['is_not_set', 'is not set'],
];
const NO_VALUE = new Set(['is_set', 'is_not_set']);

export const eventUrl = (p) => p.$current_url || p.$screen_name || p.$pathname || '';
export const timeText = (iso) => new Date(iso).toLocaleString(undefined,
  { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** A property filter's value as sent: numbers for numeric operators, text otherwise. */
export function filterValue(op, raw) {
  if (NO_VALUE.has(op)) return undefined;
  if ((op === 'gt' || op === 'lt') && raw.trim() !== '' && Number.isFinite(Number(raw))) return Number(raw);
  return raw;
}

/** One editable property-filter row (key, operator, value, remove); calls onChange on edits. */
export function propertyFilterRow(f, onChange, onRemove, { type = 'event', index = 0 } = {}) {
  const key = autocomplete({ value: f.key || '', 'aria-label': `Filter ${index + 1} property`, placeholder: 'property', class: 'prop-key' },
    () => propertyNames(f.type || type));
  const op = select(OPERATORS, f.operator || 'exact', { 'aria-label': `Filter ${index + 1} operator`, class: 'prop-op' });
  const value = h('input', { type: 'text', value: f.value ?? '', 'aria-label': `Filter ${index + 1} value`, placeholder: 'value', class: 'prop-value' });
  const later = debounce(onChange, 400);
  const sync = (now) => {  // the filter is always current; onChange (a reload) waits for typing to pause
    f.key = key.input.value.trim();
    f.operator = op.value;
    f.value = filterValue(op.value, value.value);
    value.hidden = NO_VALUE.has(op.value);
    if (now === true) onChange(); else later();
  };
  key.input.addEventListener('change', () => sync(true));
  key.input.addEventListener('input', sync);
  op.addEventListener('change', () => sync(true));
  value.addEventListener('input', sync);
  value.hidden = NO_VALUE.has(op.value);
  return h('div', { class: 'row prop-filter' }, key, op, value,
    h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': `Remove filter ${index + 1}`, onclick: onRemove }, '×'));
}

export async function render(main, ctx) {
  ctx.setTitle('Live events');
  const state = { event: ctx.query.get('event') || '', properties: [] };
  try {
    const p = JSON.parse(ctx.query.get('properties') || '[]');
    if (Array.isArray(p)) state.properties = p.filter((f) => f && typeof f === 'object');
  } catch { /* ignore a bad URL */ }

  let rows = [];       // the events on screen, newest first
  let latest = null;   // the poll cursor (server's stored-at time)
  let paused = false;
  let timer = null;
  let seq = 0;
  const expanded = new Set();

  const eventAc = autocomplete({ value: state.event, placeholder: 'All events', id: 'event-filter' }, eventNames,
    { describe: (d) => `${d.volume ?? ''} events` });
  const filters = h('div', { class: 'stack', id: 'property-filters' });
  const addBtn = h('button', { type: 'button', class: 'btn', id: 'add-property-filter', onclick: () => {
    state.properties.push({ key: '', operator: 'exact', value: '', type: 'event' });
    drawFilters();
    filters.querySelector('.prop-filter:last-child input')?.focus();
  } }, '+ Property filter');
  const pauseBtn = h('button', { type: 'button', class: 'btn', id: 'pause-live', 'aria-pressed': 'false', onclick: () => {
    paused = !paused;
    pauseBtn.setAttribute('aria-pressed', String(paused));
    pauseBtn.textContent = paused ? 'Resume' : 'Pause';
    drawStatus();
    if (!paused) poll();
  } }, 'Pause');
  const status = h('p', { class: 'muted small', id: 'live-status', 'aria-live': 'polite' });
  const tbody = h('tbody', {});
  const table = h('div', { class: 'table-wrap', style: 'max-height:none' }, h('table', { class: 'table', id: 'events-table' },
    h('caption', { class: 'visually-hidden' }, 'Newest events; open a row to see its properties'),
    h('thead', {}, h('tr', {}, ['', 'Time', 'Event', 'Person', 'URL / screen', 'Browser'].map((c, i) =>
      h('th', { scope: 'col' }, i === 0 ? h('span', { class: 'visually-hidden' }, 'Details') : c)))), tbody));

  const eventChanged = () => { if (eventAc.input.value.trim() !== state.event) { state.event = eventAc.input.value.trim(); reload(); } };
  eventAc.input.addEventListener('change', eventChanged);
  eventAc.input.addEventListener('input', debounce(eventChanged, 600));
  eventAc.input.addEventListener('keydown', (e) => { if (e.key === 'Enter') { e.preventDefault(); state.event = eventAc.input.value.trim(); reload(); } });

  main.append(pageHeader('Live events', pauseBtn),
    h('form', { class: 'card toolbar', 'aria-label': 'Filters', onsubmit: (e) => e.preventDefault() },
      acField('Event', eventAc), h('div', { class: 'field' }, h('span', { class: 'label-like' }), addBtn),
      h('div', { style: 'flex-basis:100%' }, filters)),
    status, table);

  function drawFilters() {
    clear(filters, state.properties.map((f, i) => propertyFilterRow(f, () => reload(),
      () => { state.properties.splice(i, 1); drawFilters(); reload(); }, { index: i })));
  }

  function drawStatus() {
    clear(status, h('span', { class: 'live-dot' + (paused ? ' paused' : ''), 'aria-hidden': 'true' }),
      paused ? 'Paused. ' : `Live: refreshing every ${REFRESH_MS / 1000} s. `,
      `${rows.length} event${rows.length === 1 ? '' : 's'} shown.`);
  }

  const activeFilters = () => state.properties.filter((f) => f.key && (NO_VALUE.has(f.operator) || (f.value !== '' && f.value !== undefined)))
    .map((f) => ({ key: f.key, operator: f.operator, type: f.type || 'event', ...(NO_VALUE.has(f.operator) ? {} : { value: f.value }) }));

  function params(extra = {}) {
    const p = { limit: '100', ...extra };
    if (state.event) p.event = state.event;
    const props = activeFilters();
    if (props.length) p.properties = JSON.stringify(props);
    return project('live_events/') + '?' + new URLSearchParams(p);
  }

  function syncUrl() {
    const q = {};
    if (state.event) q.event = state.event;
    const props = activeFilters();
    if (props.length) q.properties = JSON.stringify(props);
    if (ctx.isCurrent()) setQuery(q);
  }

  async function reload() {
    const mine = ++seq;
    clearTimeout(timer);
    syncUrl();
    tbody.setAttribute('aria-busy', 'true');
    try {
      const r = await api(params());
      if (mine !== seq || !ctx.isCurrent()) return;
      rows = r.results;
      latest = r.latest;
      expanded.clear();
      drawRows();
    } catch (err) {
      if (mine !== seq) return;
      rows = [];
      clear(tbody, h('tr', {}, h('td', { colspan: 6, class: 'error', role: 'alert' }, err.message)));
    } finally {
      tbody.removeAttribute('aria-busy');
      drawStatus();
      schedule();
    }
  }

  function schedule() {
    clearTimeout(timer);
    if (!paused && ctx.isCurrent()) timer = setTimeout(poll, REFRESH_MS);
  }

  async function poll() {
    if (paused || !ctx.isCurrent()) return;
    const mine = seq;
    try {
      const r = await api(params(latest ? { since: latest } : {}), { quiet: true });
      if (mine !== seq || !ctx.isCurrent() || paused) return;
      if (r.results.length) {
        const known = new Set(rows.map((e) => e.uuid));
        const fresh = r.results.filter((e) => !known.has(e.uuid));
        rows = [...fresh, ...rows].sort((a, b) => (a.timestamp < b.timestamp ? 1 : -1)).slice(0, MAX_ROWS);
        fresh.forEach((e) => { e._new = true; });
        drawRows();
      }
      if (r.latest) latest = r.latest;
      drawStatus();
    } catch { /* try again next time */ }
    schedule();
  }

  function drawRows() {
    if (!rows.length) {
      clear(tbody, h('tr', {}, h('td', { colspan: 6 }, h('div', { class: 'empty' },
        h('p', {}, 'No events match these filters yet.'), h('p', {}, h('a', { href: '/settings' }, 'Set up an SDK to send events →'))))));
      return;
    }
    clear(tbody, rows.map((e) => {
      const open = expanded.has(e.uuid);
      const toggle = h('button', { type: 'button', class: 'btn btn-ghost btn-icon row-toggle', 'aria-expanded': String(open),
        'aria-label': `Properties of ${e.event} at ${timeText(e.timestamp)}`,
        onclick: (ev) => { ev.stopPropagation(); flip(e.uuid); } }, open ? '▾' : '▸');
      const p = e.properties || {};
      const tr = h('tr', { class: 'clickable event-row' + (open ? ' expanded' : ''), dataset: { uuid: e.uuid, event: e.event },
        onclick: (ev) => { if (!ev.target.closest('a')) flip(e.uuid); } },
      h('td', {}, toggle),
      h('td', { class: 'nowrap' }, h('time', { datetime: e.timestamp, title: e.timestamp }, timeText(e.timestamp))),
      h('td', { class: 'event-name' }, e.event),
      h('td', { class: 'ellipsis' }, e.person_id ? h('a', { href: `/persons/${e.person_id}` }, e.distinct_id) : e.distinct_id),
      h('td', { class: 'ellipsis', title: eventUrl(p) }, eventUrl(p)),
      h('td', {}, p.$browser || ''));
      if (!open) return tr;
      return [tr, h('tr', { class: 'detail-row' }, h('td', { colspan: 6, class: 'detail' },
        h('pre', { tabindex: '0', 'aria-label': `Properties of ${e.event}` }, JSON.stringify({ uuid: e.uuid, distinct_id: e.distinct_id,
          person_id: e.person_id, timestamp: e.timestamp, properties: p }, null, 2))))];
    }));
  }

  function flip(uuid) {
    if (expanded.has(uuid)) expanded.delete(uuid); else expanded.add(uuid);
    drawRows();
    tbody.querySelector(`tr[data-uuid="${CSS.escape(uuid)}"] .row-toggle`)?.focus();
  }

  drawFilters();
  drawStatus();
  await reload();
  return () => { paused = true; clearTimeout(timer); seq++; };
}

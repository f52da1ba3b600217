// Persons: search (distinct id, email, name, any property value), a paged list, and one person's
// page: properties, distinct ids (the ids merged into this person), merges, and the event timeline.
import { api, project } from '../api.js';
import { setQuery } from '../router.js';
import { clear, debounce, empty, h, pageHeader, relTime } from '../ui.js';
import { eventUrl, timeText } from './events.js';

const PAGE = 50;
const TIMELINE = 50;
const localPath = (url) => { const u = new URL(url, location.href); return u.pathname + u.search; };

export async function render(main, ctx) {
  if (ctx.params.id) return person(main, ctx, ctx.params.id);
  return list(main, ctx);
}

async function list(main, ctx) {
  ctx.setTitle('Persons');
  const search = h('input', { type: 'search', id: 'person-search', value: ctx.query.get('search') || '',
    placeholder: 'Distinct id, email, name…', 'aria-describedby': 'person-search-hint', autocomplete: 'off' });
  const status = h('p', { class: 'muted small', 'aria-live': 'polite', id: 'persons-status' });
  const tbody = h('tbody', {});
  const prev = h('button', { type: 'button', class: 'btn', disabled: true, onclick: () => go(-1) }, '← Previous');
  const next = h('button', { type: 'button', class: 'btn', disabled: true, onclick: () => go(1) }, 'Next →');
  const pages = [project('persons/') + '?' + new URLSearchParams({ limit: String(PAGE) })];
  let index = 0;
  let seq = 0;

  main.append(pageHeader('Persons'),
    h('form', { class: 'card toolbar', role: 'search', 'aria-label': 'Search persons', onsubmit: (e) => { e.preventDefault(); restart(); } },
      h('div', { class: 'field', style: 'flex:1 1 320px' }, h('label', { for: 'person-search' }, 'Search'), search,
        h('small', { class: 'hint', id: 'person-search-hint' }, 'Matches distinct ids and any person property (email, name…).')),
      h('button', { type: 'submit', class: 'btn btn-primary' }, 'Search')),
    status,
    h('div', { class: 'table-wrap', style: 'max-height:none' }, h('table', { class: 'table', id: 'persons-table' },
      h('caption', { class: 'visually-hidden' }, 'Persons, newest first'),
      h('thead', {}, h('tr', {}, ['Person', 'Email', 'Distinct ids', 'First seen'].map((c) => h('th', { scope: 'col' }, c)))), tbody)),
    h('nav', { class: 'pager', 'aria-label': 'Pages of persons' }, prev, next));

  search.addEventListener('input', debounce(restart, 350));

  function restart() {
    const s = search.value.trim();
    setQuery(s ? { search: s } : {});
    pages.length = 0;
    pages.push(project('persons/') + '?' + new URLSearchParams({ limit: String(PAGE), ...(s ? { search: s } : {}) }));
    index = 0;
    load();
  }

  function go(d) { index += d; load(); }

  async function load() {
    const mine = ++seq;
    tbody.setAttribute('aria-busy', 'true');
    try {
      const r = await api(pages[index]);
      if (mine !== seq || !ctx.isCurrent()) return;
      if (r.next && pages.length === index + 1) pages.push(localPath(r.next));
      prev.disabled = index === 0;
      next.disabled = !r.next;
      status.textContent = r.results.length ? `Page ${index + 1}: ${r.results.length} person${r.results.length === 1 ? '' : 's'}` : '';
      if (!r.results.length) {
        clear(tbody, h('tr', {}, h('td', { colspan: 4 }, empty(search.value ? `Nobody matches “${search.value}”.` : 'No persons yet.'))));
        return;
      }
      clear(tbody, r.results.map((p) => h('tr', { class: 'person-row' },
        h('th', { scope: 'row' }, h('a', { href: `/persons/${p.id}` }, p.properties.name || p.name)),
        h('td', {}, p.properties.email || ''),
        h('td', { class: 'ellipsis mono', title: p.distinct_ids.join(', ') }, p.distinct_ids.slice(0, 3).join(', ') + (p.distinct_ids.length > 3 ? ` +${p.distinct_ids.length - 3}` : '')),
        h('td', { title: p.created_at }, relTime(p.created_at)))));
    } finally {
      if (mine === seq) tbody.removeAttribute('aria-busy');
    }
  }
  await load();
}

async function person(main, ctx, id) {
  let p;
  try {
    p = await api(project(`persons/${encodeURIComponent(id)}/`), { quiet: true });
  } catch (err) {
    main.append(h('div', { class: 'empty' }, h('h1', {}, 'Person not found'), h('p', {}, err.message), h('a', { href: '/persons' }, 'All persons')));
    return;
  }
  const title = p.properties.name || p.name;
  ctx.setTitle(title);
  const props = Object.entries(p.properties).sort(([a], [b]) => (a.startsWith('$') - b.startsWith('$')) || a.localeCompare(b));
  const propsTable = h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'person-properties' },
    h('caption', { class: 'visually-hidden' }, 'Person properties'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Property'), h('th', { scope: 'col' }, 'Value'))),
    h('tbody', {}, props.length ? props.map(([k, v]) => h('tr', {}, h('th', { scope: 'row', class: 'mono' }, k),
      h('td', { class: 'prop-value' }, typeof v === 'object' ? JSON.stringify(v) : String(v))))
      : h('tr', {}, h('td', { colspan: 2, class: 'muted' }, 'No properties.')))));
  const merges = h('div', { id: 'person-merges' });
  const timeline = h('ol', { class: 'timeline', id: 'person-timeline', 'aria-label': 'Events, newest first', tabindex: '0' });
  const more = h('button', { type: 'button', class: 'btn', id: 'timeline-more', hidden: true }, 'Load more');
  const tlStatus = h('p', { class: 'muted small', 'aria-live': 'polite' });

  main.append(h('p', {}, h('a', { href: '/persons', class: 'btn btn-ghost btn-small' }, '← Persons')),
    pageHeader(title),
    h('p', { class: 'muted small' }, `Person ${p.id} · first seen ${new Date(p.created_at).toLocaleString()} · `,
      p.is_identified ? 'identified' : 'anonymous'),
    h('div', { class: 'two-col' },
      h('div', { class: 'stack' },
        h('section', { class: 'card', 'aria-labelledby': 'ids-h' }, h('h2', { id: 'ids-h' }, `Distinct ids (${p.distinct_ids.length})`),
          h('p', { class: 'muted small' }, 'Every id this person was seen with; ids merged by identify or alias are listed together.'),
          h('ul', { class: 'chips', id: 'person-distinct-ids' }, p.distinct_ids.map((d) => h('li', { class: 'chip' }, d))), merges),
        h('section', { 'aria-labelledby': 'props-h' }, h('h2', { id: 'props-h' }, 'Properties'), propsTable)),
      h('section', { class: 'card timeline-card', 'aria-labelledby': 'tl-h' }, h('h2', { id: 'tl-h' }, 'Events'), timeline, tlStatus, more)));

  api(project(`persons/${encodeURIComponent(p.id)}/merges/`), { quiet: true }).then((r) => {
    if (!r.results.length) return;
    merges.append(h('h3', { class: 'small', style: 'margin:12px 0 4px' }, 'Merges'),
      h('ul', { class: 'activity' }, r.results.map((m) => h('li', {},
        `${new Date(m.merged_at).toLocaleString()}: `, h('span', { class: 'mono' }, (m.source_distinct_ids || []).join(', ')),
        ` merged in (${m.reason || 'identify'})`, m.undone ? h('span', { class: 'badge', style: 'margin-left:6px' }, 'undone') : null))));
  }).catch(() => {});

  let nextUrl = project('events/') + '?' + new URLSearchParams({ person_id: p.id, limit: String(TIMELINE) });
  async function loadMore() {
    if (!nextUrl) return;
    more.disabled = true;
    try {
      const r = await api(nextUrl);
      if (!ctx.isCurrent()) return;
      timeline.append(...r.results.map((e) => h('li', { class: 'timeline-event' },
        h('time', { datetime: e.timestamp }, timeText(e.timestamp)), h('strong', {}, e.event),
        eventUrl(e.properties) ? h('span', { class: 'muted small' }, ' · ', eventUrl(e.properties)) : null,
        h('details', {}, h('summary', { class: 'small' }, 'Properties'),
          h('pre', { class: 'small', style: 'white-space:pre-wrap;overflow-wrap:anywhere' }, JSON.stringify(e.properties, null, 2))))));
      nextUrl = r.next ? localPath(r.next) : null;
      more.hidden = !nextUrl;
      tlStatus.textContent = timeline.children.length ? `${timeline.children.length} events shown${nextUrl ? '' : ' (all)'}.` : 'No events.';
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener('click', loadMore);
  await loadMore();
}

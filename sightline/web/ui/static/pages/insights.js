// Saved insights: search, open, delete; and the way to a new one.
import { api, project } from '../api.js';
import { KINDS } from './insight.js';
import { debounce, empty, h, pageHeader, relTime } from '../ui.js';

const kindLabel = Object.fromEntries(KINDS);

export async function render(main, ctx) {
  ctx.setTitle('Insights');
  const search = h('input', { type: 'search', placeholder: 'Search insights', 'aria-label': 'Search insights', value: ctx.query.get('search') || '' });
  const list = h('div', {});
  main.append(pageHeader('Insights', search, h('a', { class: 'btn btn-primary', href: '/insights/new' }, 'New insight')), list);

  async function load() {
    const q = search.value.trim();
    const { results, count } = await api(project('insights/') + (q ? `?search=${encodeURIComponent(q)}` : ''));
    if (!ctx.isCurrent()) return;
    if (!results.length) {
      list.replaceChildren(empty(q ? 'No insight matches.' : 'No saved insights yet.', h('a', { class: 'btn btn-primary', href: '/insights/new' }, 'Create one')));
      return;
    }
    list.replaceChildren(h('div', { class: 'table-wrap', style: 'max-height:none' }, h('table', { class: 'table' },
      h('caption', { class: 'visually-hidden' }, `${count} saved insights`),
      h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Dashboards', 'Last modified', 'Created by', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, results.map((i) => h('tr', {},
        h('th', { scope: 'row' }, h('a', { href: `/insights/${i.id}` }, i.name), i.description ? h('div', { class: 'muted small' }, i.description) : null),
        h('td', {}, kindLabel[i.query.kind] || i.query.kind), h('td', {}, String(i.dashboards.length)),
        h('td', {}, relTime(i.updated_at)), h('td', { class: 'muted' }, i.created_by || ''),
        h('td', {}, h('button', { class: 'btn btn-ghost btn-small btn-danger', type: 'button', 'aria-label': `Delete ${i.name}`,
          onclick: async () => {
            if (!confirm(`Delete the insight "${i.name}"?`)) return;
            await api(project(`insights/${i.id}/`), { method: 'DELETE' });
            load();
          } }, 'Delete'))))))));
  }
  search.addEventListener('input', debounce(load, 250));
  await load();
}

// The list of dashboards; "/" opens the first (pinned) one.
import { api, project } from '../api.js';
import { empty, field, h, pageHeader, relTime } from '../ui.js';

export async function render(main, ctx) {
  const { results } = await api(project('dashboards/'));
  if (ctx.route.home && results.length) return ctx.navigate(`/dashboard/${results[0].id}`, { replace: true });
  ctx.setTitle('Dashboards');
  const name = h('input', { type: 'text', required: true, maxlength: 400, placeholder: 'e.g. Growth' });
  const form = h('form', { class: 'card inline-fields', hidden: true, 'aria-label': 'New dashboard' },
    field('Dashboard name', name), h('button', { class: 'btn btn-primary', type: 'submit' }, 'Create'),
    h('button', { class: 'btn', type: 'button', onclick: () => { form.hidden = true; } }, 'Cancel'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const d = await api(project('dashboards/'), { method: 'POST', body: { name: name.value.trim() } });
    ctx.navigate(`/dashboard/${d.id}`);
  });
  const newBtn = h('button', { class: 'btn btn-primary', type: 'button', onclick: () => { form.hidden = false; name.focus(); } }, 'New dashboard');
  main.append(pageHeader('Dashboards', newBtn), form, h('div', { style: 'height:12px' }),
    results.length ? h('div', { class: 'list-cards' }, results.map((d) => h('a', { class: 'card', href: `/dashboard/${d.id}` },
      h('h2', {}, d.name, d.pinned ? h('span', { class: 'badge', style: 'margin-left:6px' }, 'Pinned') : null),
      h('p', { class: 'muted small' }, d.description || ''),
      h('p', { class: 'muted small' }, `${d.tile_count} insight${d.tile_count === 1 ? '' : 's'} · updated ${relTime(d.updated_at)}`))))
      : empty('No dashboards yet.'));
}

// One dashboard: its insights as tiles, with a shared date filter.
import { api, project, runQuery } from '../api.js';
import { loadPlotly, renderResult } from '../charts.js';
import { DATE_PRESETS } from './insight.js';
import { clear, empty, h, pageHeader, select, toast } from '../ui.js';

// Kinds whose date range the dashboard filter replaces (retention keeps its own periods).
const DATED = new Set(['TrendsQuery', 'FunnelsQuery', 'LifecycleQuery', 'StickinessQuery', 'PathsQuery']);

export function withDashboardFilters(query, filters) {
  if (!filters?.date_from || !DATED.has(query.kind)) return query;
  return { ...query, dateRange: { date_from: filters.date_from, ...(filters.date_to ? { date_to: filters.date_to } : {}) } };
}

export async function render(main, ctx) {
  let dashboard;
  try {
    dashboard = await api(project(`dashboards/${encodeURIComponent(ctx.params.id)}/`), { quiet: true });
  } catch (err) {
    main.append(empty(`Dashboard not found (${err.message}).`, h('a', { href: '/dashboard' }, 'All dashboards')));
    return;
  }
  ctx.setTitle(dashboard.name);
  const presets = [['', 'Each insight’s own dates'], ...DATE_PRESETS.filter(([v]) => v !== 'custom')];
  const dateSel = select(presets, dashboard.filters?.date_from || '', { 'aria-label': 'Date range for every tile', id: 'dashboard-date' });
  const refresh = h('button', { class: 'btn', type: 'button', onclick: () => drawTiles(true) }, 'Refresh');
  const add = h('a', { class: 'btn btn-primary', href: `/insights/new?dashboard=${dashboard.id}` }, 'Add insight');
  const rename = h('button', { class: 'btn', type: 'button', onclick: async () => {
    const name = prompt('Dashboard name', dashboard.name);
    if (!name || !name.trim() || name.trim() === dashboard.name) return;
    const updated = await api(project(`dashboards/${dashboard.id}/`), { method: 'PATCH', body: { name: name.trim() } });
    dashboard = { ...dashboard, ...updated };
    main.querySelector('#page-title').textContent = dashboard.name;
    ctx.setTitle(dashboard.name);
  } }, 'Rename');
  const remove = h('button', { class: 'btn btn-danger', type: 'button', onclick: async () => {
    if (!confirm(`Delete the dashboard "${dashboard.name}"? Its insights stay saved.`)) return;
    await api(project(`dashboards/${dashboard.id}/`), { method: 'DELETE' });
    toast(`Deleted ${dashboard.name}.`);
    ctx.navigate('/dashboard');
  } }, 'Delete');
  const grid = h('div', { class: 'grid', id: 'tiles' });
  main.append(pageHeader(dashboard.name, dateSel, refresh, rename, remove, add),
    dashboard.description ? h('p', { class: 'muted', style: 'margin-top:-8px' }, dashboard.description) : null, grid);

  dateSel.addEventListener('change', async () => {
    const filters = dateSel.value ? { date_from: dateSel.value } : {};
    dashboard = { ...dashboard, ...(await api(project(`dashboards/${dashboard.id}/`), { method: 'PATCH', body: { filters } })) };
    drawTiles(false);
  });

  function drawTiles(force) {
    if (!dashboard.tiles.length) {
      clear(grid, empty('This dashboard has no insights yet.', add.cloneNode(true)));
      return;
    }
    clear(grid, dashboard.tiles.map((tile) => tileView(tile, force)));
  }

  function tileView(tile, force) {
    const insight = tile.insight;
    const chart = h('div', { class: 'chart loading', 'aria-busy': 'true' });
    const query = withDashboardFilters(insight.query, dashboard.filters);
    const remove = h('button', { class: 'btn btn-ghost btn-small', type: 'button', 'aria-label': `Remove ${insight.name} from this dashboard`,
      onclick: async () => {
        await api(project(`insights/${insight.id}/`), { method: 'PATCH',
          body: { dashboards: insight.dashboards.filter((d) => d !== dashboard.id) } });
        dashboard.tiles = dashboard.tiles.filter((t) => t !== tile);
        toast(`Removed ${insight.name}.`);
        drawTiles(false);
      } }, 'Remove');
    const el = h('article', { class: 'tile', 'aria-labelledby': `tile-${tile.id}`, dataset: { insightId: insight.id } },
      h('div', { class: 'tile-head' }, h('h2', { id: `tile-${tile.id}` },
        h('a', { href: `/insights/${insight.id}?q=${encodeURIComponent(JSON.stringify(query))}` }, insight.name)), remove),
      insight.description ? h('p', { class: 'tile-desc' }, insight.description) : null, chart);
    Promise.all([runQuery(query, { refresh: force }), loadPlotly().catch(() => null)])
      .then(([response]) => (ctx.isCurrent() ? renderResult(chart, query, response, { compact: true }) : null))
      .then(() => { chart.dataset.ready = 'true'; })
      .catch((err) => { clear(chart, h('p', { class: 'error', role: 'alert' }, err.message)); chart.dataset.ready = 'error'; })
      .finally(() => { chart.classList.remove('loading'); chart.removeAttribute('aria-busy'); });
    return el;
  }

  drawTiles(false);
}

// The insight explorer: build any query kind, see it as a chart, save it, put it on a dashboard.
// The URL always reproduces what is on screen: /insights/new?q=<query JSON> or /insights/<id>[?q=...].
import { api, eventNames, project, propertyNames, propertyValues, runQuery } from '../api.js';
import { DISPLAYS, loadPlotly, renderResult, seriesTable, toCSV, toRows } from '../charts.js';
import { setQuery } from '../router.js';
import { acField, autocomplete, clear, debounce, field, h, select, toast } from '../ui.js';

export const KINDS = [
  ['TrendsQuery', 'Trends'], ['FunnelsQuery', 'Funnels'], ['RetentionQuery', 'Retention'],
  ['LifecycleQuery', 'Lifecycle'], ['StickinessQuery', 'Stickiness'], ['PathsQuery', 'Paths'], ['HogQLQuery', 'SQL'],
];
const ev = (event) => ({ kind: 'EventsNode', event, name: event, math: 'total' });

export function defaultQuery(kind, from = {}) {
  const dateRange = from.dateRange || { date_from: kind === 'PathsQuery' ? '-7d' : '-30d' };
  const series = (from.series || []).map((s) => ({ ...s }));
  switch (kind) {
    case 'FunnelsQuery':
      return { kind, series: series.length >= 2 ? series : [ev('$pageview'), ev('signed_up')], dateRange,
        funnelsFilter: { funnelWindowInterval: 14, funnelWindowIntervalUnit: 'day', funnelOrderType: 'ordered' } };
    case 'RetentionQuery': {
      const first = series[0]?.event || '$pageview';
      return { kind, dateRange, retentionFilter: { targetEntity: { id: first, name: first, type: 'events' },
        returningEntity: { id: '$pageview', name: '$pageview', type: 'events' }, period: 'Week', totalIntervals: 8,
        retentionType: 'retention_first_time' } };
    }
    case 'LifecycleQuery':
      return { kind, series: [{ ...(series[0] || ev('$pageview')), math: 'total' }], interval: 'day', dateRange };
    case 'StickinessQuery':
      return { kind, series: series.length ? series.map((s) => ({ ...s, math: 'total' })) : [ev('$pageview')], interval: 'day', dateRange };
    case 'PathsQuery':
      return { kind, dateRange, pathsFilter: { includeEventTypes: ['$pageview'], stepLimit: 5 } };
    case 'HogQLQuery':
      return { kind, query: 'SELECT event, count() AS events, count(DISTINCT person_id) AS persons\nFROM events\n'
        + "WHERE timestamp > now() - INTERVAL 7 DAY\nGROUP BY event\nORDER BY events DESC\nLIMIT 100" };
    default:
      return { kind: 'TrendsQuery', series: series.length ? series : [ev('$pageview')], interval: 'day', dateRange,
        trendsFilter: { display: 'ActionsLineGraph' } };
  }
}

export const DATE_PRESETS = [
  ['-24h', 'Last 24 hours'], ['-7d', 'Last 7 days'], ['-14d', 'Last 14 days'], ['-30d', 'Last 30 days'],
  ['-90d', 'Last 90 days'], ['-180d', 'Last 180 days'], ['mStart', 'This month'], ['-1mStart', 'Last month'],
  ['all', 'All time'], ['custom', 'Custom…'],
];
const MATHS = [
  ['total', 'Total count'], ['dau', 'Unique users'], ['weekly_active', 'Weekly active users'],
  ['monthly_active', 'Monthly active users'], ['unique_session', 'Unique sessions'],
  ['avg_count_per_actor', 'Average per user'], ['sum', 'Sum of property'], ['avg', 'Average of property'],
  ['min', 'Minimum of property'], ['max', 'Maximum of property'], ['median', 'Median of property'],
  ['p90', '90th percentile of property'], ['p99', '99th percentile of property'],
];
const PROPERTY_MATHS = new Set(['sum', 'avg', 'min', 'max', 'median', 'p75', 'p90', 'p95', 'p99']);
const OPERATORS = [
  ['exact', '= equals'], ['is_not', '≠ does not equal'], ['icontains', 'contains'], ['not_icontains', 'does not contain'],
  ['regex', 'matches regex'], ['gt', '> greater than'], ['lt', '< less than'], ['is_set', 'is set'], ['is_not_set', 'is not set'],
];
const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';

export function encodeQuery(q) { return JSON.stringify(q); }

export function decodeQuery(text) {
  try {
    const q = JSON.parse(text);
    if (q && typeof q === 'object' && q.kind) return q.kind === 'InsightVizNode' ? q.source : q;
  } catch { /* fall through */ }
  return null;
}

export async function render(main, ctx) {
  const id = ctx.params.id;
  let insight = null;
  if (id) {
    try {
      insight = await api(project(`insights/${encodeURIComponent(id)}/`), { quiet: true });
    } catch (err) {
      main.append(h('div', { class: 'empty' }, h('h1', {}, 'Insight not found'), h('p', {}, err.message),
        h('a', { href: '/insights' }, 'All insights')));
      return;
    }
  }
  const fromUrl = ctx.query.get('q') ? decodeQuery(ctx.query.get('q')) : null;
  if (ctx.query.get('q') && !fromUrl) toast('The query in the URL is not valid JSON; showing the default.', 'error');
  let query = fromUrl || (insight ? insight.query : defaultQuery('TrendsQuery'));
  const dashboardFromUrl = ctx.query.get('dashboard');
  let lastResponse = null;
  let lastQuery = null;
  let plotDiv = null;
  let controller = null;

  ctx.setTitle(insight ? insight.name : 'New insight');

  // -- header: name and actions ---------------------------------------------------------
  const nameInput = h('input', { type: 'text', id: 'insight-name', value: insight ? insight.name : '',
    placeholder: 'Name this insight', 'aria-label': 'Insight name', class: 'insight-name' });
  const saveBtn = h('button', { class: 'btn btn-primary', type: 'button', onclick: () => save(false) }, insight ? 'Save' : 'Save insight');
  const saveAsBtn = insight ? h('button', { class: 'btn', type: 'button', onclick: () => save(true) }, 'Save as new') : null;
  const dashSelect = h('select', { 'aria-label': 'Dashboard to add this insight to', id: 'add-to-dashboard' },
    h('option', { value: '' }, 'Add to dashboard…'));
  const csvBtn = h('button', { class: 'btn', type: 'button', onclick: exportCSV }, 'Export CSV');
  const pngBtn = h('button', { class: 'btn', type: 'button', onclick: exportPNG }, 'Export PNG');
  const unsaved = h('span', { class: 'badge', hidden: true }, 'Unsaved changes');
  const header = h('header', { class: 'page-header' },
    h('div', { class: 'save-bar' }, h('h1', { id: 'page-title', class: 'visually-hidden' }, insight ? insight.name : 'New insight'),
      h('a', { href: '/insights', class: 'btn btn-ghost btn-small' }, '← Insights'), nameInput, unsaved),
    h('div', { class: 'page-actions' }, dashSelect, csvBtn, pngBtn, saveAsBtn, saveBtn));

  api(project('dashboards/'), { quiet: true }).then((r) => {
    for (const d of r.results) dashSelect.append(h('option', { value: d.id }, d.name));
    if (dashboardFromUrl) dashSelect.value = dashboardFromUrl;
  }).catch(() => {});
  dashSelect.addEventListener('change', async () => {
    const did = Number(dashSelect.value);
    if (!did) return;
    if (!insight) { toast('Saving the insight first…'); await save(false, did); return; }
    const dashboards = [...new Set([...(insight.dashboards || []), did])];
    insight = await api(project(`insights/${insight.id}/`), { method: 'PATCH', body: { dashboards } });
    toast(`Added to ${dashSelect.selectedOptions[0].textContent}.`);
    dashSelect.value = '';
  });

  // -- editor and result ---------------------------------------------------------------
  const tabs = h('div', { class: 'kind-tabs', role: 'tablist', 'aria-label': 'Insight kind' });
  const editor = h('form', { class: 'editor', 'aria-label': 'Query', onsubmit: (e) => e.preventDefault() });
  const status = h('p', { class: 'muted small', 'aria-live': 'polite', id: 'result-status' });
  const chart = h('div', { class: 'chart', id: 'insight-chart' });
  const details = h('div', { class: 'details' });
  const result = h('section', { class: 'result', 'aria-label': 'Result' },
    h('div', { class: 'result-bar' }, status), chart, details);
  main.append(header, tabs, h('div', { class: 'explorer' }, editor, result));

  function drawTabs() {
    clear(tabs, KINDS.map(([kind, label]) => h('button', { type: 'button', role: 'tab', id: `tab-${kind}`,
      'aria-selected': String(query.kind === kind), tabindex: query.kind === kind ? '0' : '-1',
      onclick: () => {
        if (query.kind === kind) return;
        const hadFocus = tabs.contains(document.activeElement);
        query = defaultQuery(kind, query);
        changed();
        drawEditor();
        drawTabs();
        if (hadFocus) document.getElementById(`tab-${kind}`).focus();  // keep keyboard users on the tabs
      },
      onkeydown: (e) => {
        const i = KINDS.findIndex(([k]) => k === kind);
        const j = e.key === 'ArrowRight' ? (i + 1) % KINDS.length : e.key === 'ArrowLeft' ? (i + KINDS.length - 1) % KINDS.length : -1;
        if (j >= 0) { e.preventDefault(); tabs.children[j].focus(); tabs.children[j].click(); }
      } }, label)));
  }

  const changed = debounce(() => { syncUrl(); run(); }, 350);
  const changedNow = () => { syncUrl(); run(); };

  function syncUrl() {
    if (!ctx.isCurrent()) return;
    const params = { q: encodeQuery(query) };
    if (dashboardFromUrl && !insight) params.dashboard = dashboardFromUrl;
    const unchanged = insight && JSON.stringify(query) === JSON.stringify(insight.query);
    if (unchanged) setQuery({});
    else setQuery(params);
    unsaved.hidden = !insight || unchanged;
  }

  async function run({ refresh = false } = {}) {
    if (controller) controller.abort();
    controller = new AbortController();
    const mine = controller;
    chart.classList.add('loading');
    chart.setAttribute('aria-busy', 'true');
    status.textContent = 'Calculating…';
    const started = performance.now();
    try {
      const snapshot = JSON.parse(JSON.stringify(query));  // the editors keep changing `query`
      const [response] = await Promise.all([runQuery(snapshot, { signal: mine.signal, refresh }), loadPlotly().catch(() => null)]);
      if (mine !== controller || !ctx.isCurrent()) return;
      lastResponse = response;
      lastQuery = snapshot;
      plotDiv = await renderResult(chart, snapshot, response);
      clear(details, seriesTable(snapshot, response));
      status.textContent = `Calculated in ${Math.round(performance.now() - started)} ms`;
      chart.dataset.query = JSON.stringify(snapshot);  // what is drawn (tests and tools read it)
      chart.dataset.ready = 'true';
    } catch (err) {
      if (err.name === 'AbortError' || mine !== controller) return;
      lastResponse = null;
      plotDiv = null;
      clear(chart, h('div', { class: 'empty', role: 'alert' }, h('p', { class: 'error' }, err.message)));
      clear(details);
      status.textContent = 'The query failed.';
      chart.dataset.ready = 'error';
    } finally {
      if (mine === controller) { chart.classList.remove('loading'); chart.removeAttribute('aria-busy'); }
    }
  }

  // -- editor sections -------------------------------------------------------------------
  function drawEditor() {
    const k = query.kind;
    const sections = [];
    if (k === 'HogQLQuery') sections.push(sqlSection());
    else {
      if (k !== 'RetentionQuery' && k !== 'PathsQuery') sections.push(seriesSection());
      if (k === 'RetentionQuery') sections.push(retentionSection());
      if (k === 'PathsQuery') sections.push(pathsSection());
      if (k === 'FunnelsQuery') sections.push(funnelOptions());
      sections.push(filtersSection());
      if (k === 'TrendsQuery' || k === 'FunnelsQuery' || k === 'RetentionQuery') sections.push(breakdownSection());
      sections.push(dateSection());
    }
    clear(editor, sections);
  }

  function eventInput(value, onChange, label) {
    const ac = autocomplete({ value: value || '', 'aria-label': label, placeholder: 'Event name', class: 'event-input' },
      () => eventNames(), { describe: (i) => `${i.volume.toLocaleString()} events` });
    ac.input.addEventListener('change', () => onChange(ac.input.value.trim()));
    return ac;
  }

  function seriesSection() {
    const k = query.kind;
    const funnel = k === 'FunnelsQuery';
    const single = k === 'LifecycleQuery';
    const rows = query.series.map((s, i) => {
      const label = funnel ? `Step ${i + 1}` : `Series ${LETTERS[i]}`;
      const row = h('div', { class: 'row series-row' }, h('span', { class: 'series-letter', 'aria-hidden': 'true' }, funnel ? i + 1 : LETTERS[i]),
        eventInput(s.event, (v) => { s.event = v || null; s.name = v || 'All events'; changed(); }, `${label} event`));
      if (k === 'TrendsQuery') {
        const math = select(MATHS, s.math || 'total', { 'aria-label': `${label} aggregation` });
        math.addEventListener('change', () => {
          s.math = math.value;
          if (!PROPERTY_MATHS.has(s.math)) delete s.math_property;
          drawEditor();
          if (!PROPERTY_MATHS.has(s.math) || s.math_property) changed();
        });
        row.append(math);
        if (PROPERTY_MATHS.has(s.math)) {
          const prop = autocomplete({ value: s.math_property || '', 'aria-label': `${label} property to aggregate`, placeholder: 'Numeric property' },
            () => propertyNames('event', [s.event]).then((l) => l.filter((p) => p.is_numerical)));
          prop.input.addEventListener('change', () => { s.math_property = prop.input.value.trim() || undefined; changed(); });
          row.append(prop);
        }
      }
      const min = funnel ? 2 : 1;
      if (!single && query.series.length > min) {
        row.append(h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': `Remove ${label}`,
          onclick: () => { query.series.splice(i, 1); drawEditor(); changedNow(); } }, '×'));
      }
      return row;
    });
    const add = single ? null : h('button', { type: 'button', class: 'btn btn-small', onclick: () => {
      query.series.push(ev(funnel ? 'purchase' : '$pageview'));
      drawEditor();
      editor.querySelectorAll('.series-row input')[query.series.length - 1]?.focus();
      changedNow();
    } }, funnel ? '+ Add step' : '+ Add series');
    const display = k === 'TrendsQuery' ? field('Chart', (() => {
      const sel = select(DISPLAYS, query.trendsFilter?.display || 'ActionsLineGraph', { id: 'display-select' });
      sel.addEventListener('change', () => { query.trendsFilter = { ...(query.trendsFilter || {}), display: sel.value }; changedNow(); });
      return sel;
    })()) : null;
    return h('section', {}, h('h2', {}, funnel ? 'Steps' : 'Series'), rows, add, display ? h('div', { style: 'margin-top:10px' }, display) : null);
  }

  function funnelOptions() {
    const f = query.funnelsFilter || {};
    const setF = (k, v) => { query.funnelsFilter = { ...(query.funnelsFilter || {}), [k]: v }; };
    const win = h('input', { type: 'number', min: 1, value: f.funnelWindowInterval ?? 14, style: 'width:80px' });
    win.addEventListener('change', () => { setF('funnelWindowInterval', Math.max(1, parseInt(win.value, 10) || 14)); changed(); });
    const unit = select([['minute', 'minutes'], ['hour', 'hours'], ['day', 'days'], ['week', 'weeks'], ['month', 'months']],
      f.funnelWindowIntervalUnit || 'day', { 'aria-label': 'Conversion window unit' });
    unit.addEventListener('change', () => { setF('funnelWindowIntervalUnit', unit.value); changedNow(); });
    const order = select([['ordered', 'Sequential'], ['strict', 'Strict order'], ['unordered', 'Any order']], f.funnelOrderType || 'ordered');
    order.addEventListener('change', () => { setF('funnelOrderType', order.value); changedNow(); });
    return h('section', {}, h('h2', {}, 'Conversion'), h('div', { class: 'inline-fields' },
      field('Conversion window', win), h('div', { class: 'field' }, unit), field('Step order', order)));
  }

  function retentionSection() {
    const f = query.retentionFilter;
    const target = eventInput(f.targetEntity?.id, (v) => { f.targetEntity = { id: v, name: v, type: 'events' }; changed(); }, 'Cohort event');
    const ret = eventInput(f.returningEntity?.id, (v) => { f.returningEntity = { id: v, name: v, type: 'events' }; changed(); }, 'Returning event');
    const period = select([['Day', 'Day'], ['Week', 'Week'], ['Month', 'Month']], f.period || 'Day');
    period.addEventListener('change', () => { f.period = period.value; changedNow(); });
    const n = h('input', { type: 'number', min: 1, max: 60, value: f.totalIntervals ?? 8, style: 'width:80px' });
    n.addEventListener('change', () => { f.totalIntervals = Math.min(60, Math.max(1, parseInt(n.value, 10) || 8)); changed(); });
    const type = select([['retention_first_time', 'for the first time'], ['retention_recurring', 'each time (recurring)']],
      f.retentionType || 'retention_recurring');
    type.addEventListener('change', () => { f.retentionType = type.value; changedNow(); });
    return h('section', {}, h('h2', {}, 'Retention'),
      acField('Cohort: persons who did', target), field('Counting the cohort event', type),
      acField('Returning: persons who then did', ret),
      h('div', { class: 'inline-fields' }, field('Period', period), field('Periods', n)));
  }

  function pathsSection() {
    const f = query.pathsFilter || {};
    const setF = (k, v) => { query.pathsFilter = { ...(query.pathsFilter || {}), [k]: v }; if (v === undefined) delete query.pathsFilter[k]; };
    const types = new Set(f.includeEventTypes || ['$pageview']);
    const boxes = [['$pageview', 'Pageviews'], ['$screen', 'Screens'], ['custom_event', 'Custom events']].map(([v, l]) => {
      const cb = h('input', { type: 'checkbox', id: `path-type-${v}`, checked: types.has(v) });
      cb.addEventListener('change', () => {
        if (cb.checked) types.add(v); else types.delete(v);
        if (!types.size) { types.add('$pageview'); cb.checked = v === '$pageview'; }
        setF('includeEventTypes', [...types]);
        changedNow();
      });
      return h('label', { class: 'check', for: cb.id }, cb, ' ', l);
    });
    const start = h('input', { type: 'text', value: f.startPoint || '', placeholder: 'Any (e.g. a URL)' });
    start.addEventListener('change', () => { setF('startPoint', start.value.trim() || undefined); changed(); });
    const end = h('input', { type: 'text', value: f.endPoint || '', placeholder: 'Any' });
    end.addEventListener('change', () => { setF('endPoint', end.value.trim() || undefined); changed(); });
    const steps = h('input', { type: 'number', min: 2, max: 20, value: f.stepLimit ?? 5, style: 'width:80px' });
    steps.addEventListener('change', () => { setF('stepLimit', Math.min(20, Math.max(2, parseInt(steps.value, 10) || 5))); changed(); });
    return h('section', {}, h('h2', {}, 'Paths'), h('fieldset', { class: 'checks' }, h('legend', {}, 'Include'), boxes),
      field('Starting at', start), field('Ending at', end), field('Steps', steps));
  }

  function filtersSection() {
    if (query.properties && !Array.isArray(query.properties)) {
      return h('section', {}, h('h2', {}, 'Filters'), h('p', { class: 'muted small' },
        'This query has nested AND/OR filters; they are kept as they are (edit them in the URL or the API).'));
    }
    const list = query.properties || [];
    const events = (query.series || []).map((s) => s.event).filter(Boolean);
    const rows = list.map((f, i) => {
      const n = i + 1;
      const type = select([['event', 'Event'], ['person', 'Person']], f.type || 'event', { 'aria-label': `Filter ${n} property type` });
      const key = autocomplete({ value: f.key || '', placeholder: 'Property', 'aria-label': `Filter ${n} property`, class: 'filter-key' },
        () => propertyNames(f.type === 'person' ? 'person' : 'event', f.type === 'person' ? [] : events).then(sortProps));
      const op = select(OPERATORS, f.operator || 'exact', { 'aria-label': `Filter ${n} operator` });
      const value = autocomplete({ value: f.value === undefined || f.value === null ? '' : String(Array.isArray(f.value) ? f.value.join(', ') : f.value),
        placeholder: 'Value', 'aria-label': `Filter ${n} value`, class: 'filter-value' },
      () => (f.key ? propertyValues(f.key, f.type === 'person' ? 'person' : 'event', events.length === 1 ? events[0] : '') : []));
      const noValue = () => f.operator === 'is_set' || f.operator === 'is_not_set';
      value.hidden = noValue();
      type.addEventListener('change', () => { f.type = type.value; key.input.reload(); if (f.key) changed(); });
      key.input.addEventListener('change', () => { f.key = key.input.value.trim(); value.input.reload(); if (f.key && (f.value !== undefined || noValue())) changed(); });
      op.addEventListener('change', () => { f.operator = op.value; value.hidden = noValue(); if (noValue()) delete f.value; if (f.key) changed(); });
      value.input.addEventListener('change', () => { f.value = parseValue(value.input.value, f.operator); if (f.key) changed(); });
      return h('div', { class: 'row filter-row' }, type, key, op, value,
        h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': `Remove filter ${n}`,
          onclick: () => { list.splice(i, 1); if (!list.length) delete query.properties; drawEditor(); changedNow(); } }, '×'));
    });
    const testAccounts = h('input', { type: 'checkbox', id: 'filter-test-accounts', checked: !!query.filterTestAccounts });
    testAccounts.addEventListener('change', () => { query.filterTestAccounts = testAccounts.checked; changedNow(); });
    return h('section', {}, h('h2', {}, 'Filters'), rows,
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => {
        query.properties = list;
        list.push({ key: '', value: '', operator: 'exact', type: 'event' });
        drawEditor();
        [...editor.querySelectorAll('.filter-key')].pop()?.focus();
      } }, '+ Add filter'),
      h('label', { class: 'check', for: 'filter-test-accounts', style: 'display:block;margin-top:8px' }, testAccounts, ' Filter out internal and test users'));
  }

  function breakdownSection() {
    const b = query.breakdownFilter || {};
    const type = select([['event', 'Event property'], ['person', 'Person property']], b.breakdown_type || 'event', { 'aria-label': 'Breakdown property type' });
    const events = (query.series || []).map((s) => s.event).filter(Boolean);
    const prop = autocomplete({ value: b.breakdown || '', placeholder: 'No breakdown', 'aria-label': 'Breakdown by', id: 'breakdown-input' },
      () => propertyNames(type.value, type.value === 'person' ? [] : events).then(sortProps));
    const apply = () => {
      const v = prop.input.value.trim();
      if (v) query.breakdownFilter = { ...(query.breakdownFilter || {}), breakdown_type: type.value, breakdown: v };
      else delete query.breakdownFilter;
      changed();
    };
    type.addEventListener('change', () => { prop.input.reload(); if (prop.input.value.trim()) apply(); });
    prop.input.addEventListener('change', apply);
    return h('section', {}, h('h2', {}, 'Breakdown'), h('div', { class: 'row' }, type, prop,
      b.breakdown ? h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': 'Remove breakdown',
        onclick: () => { delete query.breakdownFilter; drawEditor(); changedNow(); } }, '×') : null));
  }

  function dateSection() {
    const dr = query.dateRange || {};
    const preset = DATE_PRESETS.some(([v]) => v === dr.date_from) && !dr.date_to ? dr.date_from : (dr.date_from ? 'custom' : 'all');
    const sel = select(DATE_PRESETS, preset, { id: 'date-range' });
    const from = h('input', { type: 'date', value: isoDay(dr.date_from) });
    const to = h('input', { type: 'date', value: isoDay(dr.date_to) });
    const custom = h('div', { class: 'inline-fields', hidden: preset !== 'custom' }, field('From', from), field('To', to));
    sel.addEventListener('change', () => {
      custom.hidden = sel.value !== 'custom';
      if (sel.value === 'custom') { from.focus(); return; }
      query.dateRange = sel.value === 'all' ? { date_from: 'all' } : { date_from: sel.value };
      changedNow();
    });
    const setCustom = () => {
      if (!from.value) return;
      query.dateRange = { date_from: from.value, ...(to.value ? { date_to: to.value } : {}), explicitDate: true };
      changed();
    };
    from.addEventListener('change', setCustom);
    to.addEventListener('change', setCustom);
    const parts = [field('Date range', sel), custom];
    if (['TrendsQuery', 'LifecycleQuery', 'StickinessQuery'].includes(query.kind)) {
      const iv = select([['hour', 'Hour'], ['day', 'Day'], ['week', 'Week'], ['month', 'Month']], query.interval || 'day', { id: 'interval' });
      iv.addEventListener('change', () => { query.interval = iv.value; changedNow(); });
      parts.push(field('Grouped by', iv));
    }
    if (query.kind === 'TrendsQuery') {
      const cmp = h('input', { type: 'checkbox', id: 'compare-previous', checked: !!query.compareFilter?.compare });
      cmp.addEventListener('change', () => {
        if (cmp.checked) query.compareFilter = { compare: true };
        else delete query.compareFilter;
        changedNow();
      });
      parts.push(h('label', { class: 'check', for: 'compare-previous' }, cmp, ' Compare to the previous period'));
    }
    return h('section', {}, h('h2', {}, 'Date range'), parts);
  }

  function sqlSection() {
    const ta = h('textarea', { id: 'sql-input', spellcheck: 'false', rows: 12 }, query.query || '');
    ta.value = query.query || '';
    const go = () => { query.query = ta.value; changedNow(); };
    ta.addEventListener('keydown', (e) => { if ((e.ctrlKey || e.metaKey) && e.key === 'Enter') { e.preventDefault(); go(); } });
    return h('section', {}, h('h2', {}, 'SQL'), field('Read-only SQL over events, persons and sessions', ta,
      { hint: 'Ctrl+Enter runs it. Tables: events, persons, sessions.' }),
    h('button', { type: 'button', class: 'btn btn-primary', onclick: go }, 'Run'));
  }

  // -- save and export -------------------------------------------------------------------
  async function save(asNew, addToDashboard) {
    const name = nameInput.value.trim() || suggestName(query);
    nameInput.value = name;
    let dashboards = addToDashboard ? [addToDashboard] : [];
    if (!insight && dashboardFromUrl && !addToDashboard) dashboards = [Number(dashboardFromUrl)];
    try {
      if (insight && !asNew) {
        insight = await api(project(`insights/${insight.id}/`), { method: 'PATCH', body: { name, query } });
        toast('Saved.');
        syncUrl();
      } else {
        insight = await api(project('insights/'), { method: 'POST', body: { name, query, dashboards } });
        toast(dashboards.length ? 'Saved and added to the dashboard.' : 'Saved.');
        ctx.navigate(`/insights/${insight.id}`, { replace: true });
      }
    } catch { /* api() showed the error */ }
  }

  function exportCSV() {
    if (!lastResponse) return toast('Nothing to export yet.', 'error');
    const blob = new Blob([toCSV(toRows(lastQuery, lastResponse))], { type: 'text/csv' });
    download(URL.createObjectURL(blob), `${fileName()}.csv`);
  }

  async function exportPNG() {
    if (!plotDiv) return toast('This view has no chart to export (try CSV).', 'error');
    const Plotly = await loadPlotly();
    Plotly.downloadImage(plotDiv, { format: 'png', filename: fileName(), width: 1200, height: 600 });
  }

  function fileName() { return (nameInput.value.trim() || suggestName(query)).replace(/[^\w.-]+/g, '_').slice(0, 80); }

  drawTabs();
  drawEditor();
  syncUrl();
  run();
  return () => { if (controller) controller.abort(); };
}

function download(url, name) {
  const a = h('a', { href: url, download: name, style: 'display:none' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function sortProps(list) {
  // the product's own properties first, then PostHog's $-properties
  return [...list].sort((a, b) => (a.name.startsWith('$') - b.name.startsWith('$')) || b.count - a.count);
}

function parseValue(text, operator) {
  const v = text.trim();
  if (['gt', 'gte', 'lt', 'lte'].includes(operator) && v !== '' && !Number.isNaN(Number(v))) return Number(v);
  if ((operator === 'exact' || operator === 'is_not') && v.includes(',')) return v.split(',').map((s) => s.trim()).filter(Boolean);
  return v;
}

function isoDay(v) { return v && /^\d{4}-\d{2}-\d{2}/.test(v) ? v.slice(0, 10) : ''; }

export function suggestName(q) {
  const names = (q.series || []).map((s) => s.custom_name || s.event || 'All events');
  switch (q.kind) {
    case 'FunnelsQuery': return `Funnel: ${names.join(' → ')}`;
    case 'RetentionQuery': return `Retention: ${q.retentionFilter?.targetEntity?.id || '$pageview'}`;
    case 'LifecycleQuery': return `Lifecycle: ${names[0]}`;
    case 'StickinessQuery': return `Stickiness: ${names.join(', ')}`;
    case 'PathsQuery': return 'User paths';
    case 'HogQLQuery': return 'SQL query';
    default: return `${names.join(', ')}${q.breakdownFilter?.breakdown ? ` by ${q.breakdownFilter.breakdown}` : ''}`;
  }
}

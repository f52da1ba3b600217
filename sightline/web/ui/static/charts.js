// Results of every insight kind as charts and tables. Charts are drawn by Plotly, which Sightline
// serves from the installed `plotly` Python package (no network requests).
import { fmt, h, pct } from './ui.js';

let plotlyPromise = null;

/** Load plotly.min.js once (a classic script: it defines window.Plotly). */
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const src = document.querySelector('meta[name="plotly-src"]')?.content || '/static/vendor/plotly.min.js';
      const s = document.createElement('script');
      s.src = src;
      s.async = true;
      s.onload = () => resolve(window.Plotly);
      s.onerror = () => { plotlyPromise = null; reject(new Error('could not load the charting library')); };
      document.head.append(s);
    });
  }
  return plotlyPromise;
}

export const COLORS = ['#1d4aff', '#cd0f74', '#2e8540', '#f57c00', '#6a1b9a', '#00838f', '#c62828', '#5d4037',
  '#3949ab', '#7cb342', '#8e24aa', '#455a64'];

export const DISPLAYS = [
  ['ActionsLineGraph', 'Line'], ['ActionsLineGraphCumulative', 'Cumulative line'], ['ActionsAreaGraph', 'Area'],
  ['ActionsBar', 'Bar (over time)'], ['ActionsBarValue', 'Bar (total by series)'], ['BoldNumber', 'Number'],
  ['ActionsTable', 'Table'], ['ActionsPie', 'Pie'],
];

const baseLayout = (compact) => ({
  margin: { l: 48, r: 16, t: 12, b: compact ? 36 : 48 },
  font: { family: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif', size: 12, color: '#1d2329' },
  paper_bgcolor: '#fff', plot_bgcolor: '#fff',
  xaxis: { gridcolor: '#eef0f3', linecolor: '#dfe3e8', automargin: true },
  yaxis: { gridcolor: '#eef0f3', zerolinecolor: '#dfe3e8', rangemode: 'tozero', automargin: true },
  legend: { orientation: 'h', y: -0.18 },
  hoverlabel: { font: { size: 12 } },
  showlegend: true,
});
const config = { displaylogo: false, responsive: true, displayModeBar: 'hover',
  modeBarButtonsToRemove: ['lasso2d', 'select2d', 'autoScale2d'] };

const SPECIAL = { '$$_posthog_breakdown_other_$$': 'Other', '$$_posthog_breakdown_null_$$': '(none)' };
export const breakdownLabel = (v) => (Array.isArray(v) ? v.map(breakdownLabel).join(', ') : SPECIAL[v] ?? (v === '' || v === null ? '(none)' : String(v)));

export function seriesLabel(item, query) {
  const name = item.action?.custom_name || item.action?.name || item.label;
  const multi = (query.series || []).length > 1;
  if (item.breakdown_value !== undefined && item.breakdown_value !== null) {
    const bv = breakdownLabel(item.breakdown_value);
    return multi ? `${name} · ${bv}` : String(bv);
  }
  if (item.compare_label) return `${name} (${item.compare_label})`;
  return name;
}

async function plot(el, data, layout, label) {
  const Plotly = await loadPlotly();
  const div = h('div', { class: 'plot', role: 'img', 'aria-label': label });
  el.replaceChildren(div);
  await Plotly.newPlot(div, data, layout, config);
  return div;
}

/** Draw ``response`` (the /query/ answer for ``query``) into ``el``. Returns the Plotly div, if any. */
export async function renderResult(el, query, response, { compact = false } = {}) {
  const results = response?.results;
  const kind = query.kind;
  if (kind === 'HogQLQuery') return el.replaceChildren(sqlTable(response)), null;
  if (!results || (Array.isArray(results) && results.length === 0)) {
    el.replaceChildren(h('div', { class: 'empty' }, h('p', {}, 'No data for this query and date range.')));
    return null;
  }
  if (kind === 'TrendsQuery') return trends(el, query, results, compact);
  if (kind === 'FunnelsQuery') return funnel(el, query, results, compact);
  if (kind === 'RetentionQuery') return retention(el, query, results, compact);
  if (kind === 'LifecycleQuery') return lifecycle(el, query, results, compact);
  if (kind === 'StickinessQuery') return stickiness(el, query, results, compact);
  if (kind === 'PathsQuery') return paths(el, query, results, compact);
  el.replaceChildren(h('pre', {}, JSON.stringify(response, null, 2)));
  return null;
}

function trends(el, query, results, compact) {
  const display = query.trendsFilter?.display || 'ActionsLineGraph';
  const layout = baseLayout(compact);
  if (display === 'BoldNumber') {
    const item = results[0];
    const value = item.aggregated_value ?? item.count;
    el.replaceChildren(h('div', { class: 'bold-number', 'data-value': value }, fmt(value)),
      h('p', { class: 'bold-label' }, seriesLabel(item, query)));
    return null;
  }
  if (display === 'ActionsTable') {
    el.replaceChildren(table(['Series', 'Value'], results.map((r) => [seriesLabel(r, query), r.aggregated_value ?? r.count]), [false, true]));
    return null;
  }
  if (display === 'ActionsBarValue' || display === 'ActionsPie') {
    const sorted = [...results].sort((a, b) => (b.aggregated_value ?? b.count) - (a.aggregated_value ?? a.count));
    const labels = sorted.map((r) => seriesLabel(r, query));
    const values = sorted.map((r) => r.aggregated_value ?? r.count);
    if (display === 'ActionsPie') {
      return plot(el, [{ type: 'pie', labels, values, hole: 0.45, marker: { colors: COLORS }, textinfo: 'percent', sort: false }],
        { ...layout, showlegend: true }, `Pie chart of ${labels.length} values`);
    }
    return plot(el, [{ type: 'bar', orientation: 'h', y: labels, x: values, marker: { color: COLORS[0] },
      text: values.map(fmt), textposition: 'auto', hovertemplate: '%{y}: %{x}<extra></extra>' }],
    { ...layout, showlegend: false, yaxis: { ...layout.yaxis, autorange: 'reversed', automargin: true, rangemode: undefined },
      xaxis: { ...layout.xaxis, rangemode: 'tozero' }, margin: { ...layout.margin, l: 12 } },
    `Bar chart of ${labels.length} values`);
  }
  const area = display === 'ActionsAreaGraph';
  const bar = display === 'ActionsBar';
  // compared periods: the previous period is drawn over the current one's dates, dotted
  const current = results.filter((r) => r.compare_label !== 'previous');
  const colorOf = (r) => COLORS[Math.max(0, current.findIndex((c) => seriesLabel(c, query).replace(/ \(current\)$/, '')
    === seriesLabel(r, query).replace(/ \((current|previous)\)$/, ''))) % COLORS.length];
  const data = results.map((r, i) => ({
    type: bar ? 'bar' : 'scatter', mode: 'lines+markers', name: seriesLabel(r, query),
    x: r.compare_label === 'previous' ? (current[0]?.days || r.days) : r.days, y: r.data,
    customdata: r.days, marker: { color: r.compare ? colorOf(r) : COLORS[i % COLORS.length], size: compact ? 4 : 5 },
    opacity: r.compare_label === 'previous' ? 0.6 : 1,
    line: { width: 2, color: r.compare ? colorOf(r) : COLORS[i % COLORS.length], dash: r.compare_label === 'previous' ? 'dot' : 'solid' },
    fill: area ? (i === 0 ? 'tozeroy' : 'tonexty') : undefined, stackgroup: area ? 'one' : undefined,
    hovertemplate: '%{y:,}<extra>%{fullData.name}</extra>',
  }));
  const interval = query.interval || 'day';
  return plot(el, data, { ...layout, barmode: 'stack', hovermode: 'x unified', showlegend: results.length > 1,
    xaxis: { ...layout.xaxis, type: 'date', tickangle: 0, nticks: compact ? 6 : 10 } },
  `Line chart of ${results.length} series over ${results[0].days.length} ${interval}s`);
}

function funnelSteps(results) {
  // no breakdown: a list of steps; with one: a list of lists of steps
  return Array.isArray(results[0]) ? results : [results];
}

function stepName(s) { return `${s.order + 1}. ${s.custom_name || s.name}`; }

function funnel(el, query, results, compact) {
  const groups = funnelSteps(results);
  const names = groups[0].map(stepName);
  const data = groups.map((steps, i) => {
    const first = steps[0].count || 0;
    const bv = steps[0].breakdown_value ?? steps[0].breakdown;
    return { type: 'bar', name: bv === undefined ? 'Persons' : breakdownLabel(bv),
      x: names, y: steps.map((s) => s.count), marker: { color: COLORS[i % COLORS.length] },
      text: steps.map((s) => `${fmt(s.count)} (${pct(first ? s.count / first : 0)})`), textposition: 'outside',
      cliponaxis: false, hovertemplate: '%{x}: %{text}<extra>%{fullData.name}</extra>' };
  });
  const layout = baseLayout(compact);
  const wrap = h('div', {});
  const chart = h('div', {});
  wrap.append(chart);
  if (!compact || groups.length === 1) wrap.append(funnelTable(groups, compact));
  el.replaceChildren(wrap);
  return plot(chart, data, { ...layout, barmode: 'group', showlegend: groups.length > 1, bargap: 0.25,
    height: compact ? 240 : 360, yaxis: { ...layout.yaxis, title: { text: 'Persons' } } },
  `Funnel of ${names.length} steps: ${groups[0].map((s) => `${s.name} ${s.count}`).join(', ')}`);
}

function funnelTable(groups, compact) {
  if (groups.length === 1) {
    const steps = groups[0];
    const first = steps[0].count || 0;
    const rows = steps.map((s, i) => {
      const prev = i ? steps[i - 1].count : s.count;
      return [stepName(s), fmt(s.count), pct(first ? s.count / first : 0), i ? pct(prev ? s.count / prev : 0) : '–',
        i ? fmt(prev - s.count) : '–', s.median_conversion_time == null ? '–' : duration(s.median_conversion_time)];
    });
    return table(['Step', 'Persons', 'Conversion', 'From previous', 'Dropped off', 'Median time'], rows,
      [false, true, true, true, true, true], compact ? 'funnel-table compact' : 'funnel-table');
  }
  const names = groups[0].map(stepName);
  const rows = groups.map((steps) => {
    const bv = steps[0].breakdown_value ?? steps[0].breakdown;
    const first = steps[0].count || 0;
    const last = steps[steps.length - 1].count;
    return [breakdownLabel(bv), ...steps.map((s) => fmt(s.count)), pct(first ? last / first : 0)];
  });
  return table(['Breakdown', ...names, 'Conversion'], rows, [false, ...names.map(() => true), true], 'funnel-table');
}

export function duration(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function retention(el, query, results, compact) {
  const periods = results[0].values.length;
  const head = ['Cohort', 'Persons', ...results[0].values.map((v) => v.label)];
  const tbody = h('tbody', {}, results.map((row, ri) => {
    const size = row.values[0]?.count || 0;
    return h('tr', {}, h('th', { scope: 'row' }, cohortLabel(row, query)), h('td', { class: 'num' }, fmt(size)),
      row.values.map((v, i) => {
        const share = size ? v.count / size : 0;
        const future = ri + i >= results.length && v.count === 0;  // that period has not happened yet
        // dark text on at most 60% blue keeps WCAG AA contrast in every cell
        const bg = future ? '#fff' : `rgba(29, 74, 255, ${(0.06 + 0.54 * share).toFixed(3)})`;
        const color = '#10213f';
        return h('td', { class: 'num heat-cell', style: `background:${bg};color:${color}`, title: `${v.count} of ${size}` },
          future ? '' : pct(share));
      }));
  }));
  const tableEl = h('table', { class: 'table heat' },
    h('caption', { class: 'visually-hidden' }, 'Retention by cohort: share of each cohort that came back in each period'),
    h('thead', {}, h('tr', {}, head.map((c, i) => h('th', { scope: 'col', class: i ? 'num' : '' }, c)))), tbody);
  const wrap = h('div', {});
  const chart = h('div', {});
  if (!compact) wrap.append(chart);
  wrap.append(h('div', { class: 'table-wrap' }, tableEl));
  el.replaceChildren(wrap);
  if (compact) return null;
  // the mean retention curve, weighted by cohort size, over cohorts old enough for each period
  const curve = [];
  for (let i = 0; i < periods; i++) {
    let num = 0; let den = 0;
    results.forEach((r, ri) => { if (ri < results.length - i) { num += r.values[i].count; den += r.values[0].count; } });
    curve.push(den ? (100 * num) / den : null);
  }
  return plot(chart, [{ type: 'scatter', mode: 'lines+markers', name: 'Mean retention', x: results[0].values.map((v) => v.label),
    y: curve, line: { color: COLORS[0], width: 2 }, hovertemplate: '%{y:.1f}%<extra></extra>' }],
  { ...baseLayout(false), height: 260, showlegend: false, yaxis: { ...baseLayout(false).yaxis, ticksuffix: '%', range: [0, 100] } },
  'Mean retention curve');
}

function cohortLabel(row, query) {
  const d = row.date ? new Date(row.date) : null;
  const label = d && !Number.isNaN(d.getTime()) ? d.toISOString().slice(0, 10) : row.label;
  return row.breakdown_value !== undefined ? `${row.breakdown_value} · ${label}` : label;
}

function lifecycle(el, query, results, compact) {
  const colors = { new: '#1d4aff', returning: '#2e8540', resurrecting: '#8e24aa', dormant: '#c62828' };
  const data = results.map((r) => ({ type: 'bar', name: r.status, x: r.days, y: r.data,
    marker: { color: colors[r.status] || '#888' }, hovertemplate: '%{y:,}<extra>%{fullData.name}</extra>' }));
  const layout = baseLayout(compact);
  return plot(el, data, { ...layout, barmode: 'relative', hovermode: 'x unified',
    xaxis: { ...layout.xaxis, type: 'date', nticks: compact ? 6 : 10 }, yaxis: { ...layout.yaxis, rangemode: undefined } },
  'Lifecycle: new, returning, resurrecting and dormant persons per period');
}

function stickiness(el, query, results, compact) {
  const data = results.map((r, i) => ({ type: 'bar', name: seriesLabel(r, query), x: r.labels, y: r.data,
    marker: { color: COLORS[i % COLORS.length] }, hovertemplate: '%{x}: %{y:,}<extra>%{fullData.name}</extra>' }));
  const layout = baseLayout(compact);
  return plot(el, data, { ...layout, barmode: 'group', showlegend: results.length > 1,
    xaxis: { ...layout.xaxis, type: 'category' }, yaxis: { ...layout.yaxis, title: { text: 'Persons' } } },
  'Stickiness: persons by number of active periods');
}

export function shortPath(node) {
  let s = String(node).replace(/^\d+_/, '');
  try { s = new URL(s).pathname; } catch { /* not a URL: an event name */ }
  return s.length > 32 ? s.slice(0, 31) + '…' : s;
}

function paths(el, query, results, compact) {
  const index = new Map();
  const labels = [];
  const nodeOf = (n) => {
    if (!index.has(n)) { index.set(n, labels.length); labels.push(n); }
    return index.get(n);
  };
  const source = []; const target = []; const value = [];
  for (const r of results) { source.push(nodeOf(r.source)); target.push(nodeOf(r.target)); value.push(r.value); }
  const step = labels.map((l) => parseInt(String(l).split('_')[0], 10) || 1);
  const maxStep = Math.max(...step);
  const data = [{ type: 'sankey', orientation: 'h', arrangement: 'snap',
    node: { label: labels.map(shortPath), pad: 12, thickness: 14, color: labels.map((_, i) => COLORS[i % COLORS.length]),
      x: step.map((s) => (maxStep > 1 ? (s - 1) / (maxStep - 1) * 0.98 + 0.01 : 0.5)),
      customdata: labels, hovertemplate: '%{customdata}<br>%{value:,} persons<extra></extra>' },
    link: { source, target, value, color: 'rgba(29,74,255,0.18)', hovertemplate: '%{source.label} → %{target.label}: %{value:,}<extra></extra>' } }];
  return plot(el, data, { ...baseLayout(compact), height: compact ? 300 : 520, showlegend: false,
    margin: { l: 8, r: 8, t: 8, b: 8 } }, `Paths: ${results.length} transitions between ${labels.length} steps`);
}

function sqlTable(response) {
  const cols = response.columns || [];
  const rows = (response.results || []).slice(0, 1000);
  const numeric = cols.map((_, i) => rows.length > 0 && rows.every((r) => r[i] === null || typeof r[i] === 'number'));
  return h('div', {},
    table(cols, rows.map((r) => r.map((v, i) => (numeric[i] ? fmt(v) : cellText(v)))), numeric),
    h('p', { class: 'muted small' }, `${response.results?.length ?? 0} rows${response.truncated ? ' (truncated)' : ''}`));
}

const cellText = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));

export function table(columns, rows, numeric = [], className = '') {
  return h('div', { class: 'table-wrap' }, h('table', { class: 'table ' + className },
    h('thead', {}, h('tr', {}, columns.map((c, i) => h('th', { scope: 'col', class: numeric[i] ? 'num' : '' }, c)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, r.map((v, i) => h(i === 0 ? 'th' : 'td',
      { class: numeric[i] ? 'num' : '', scope: i === 0 ? 'row' : null }, typeof v === 'number' ? fmt(v) : cellText(v))))))));
}

/** The data table under a time-series chart: one row per series, one column per date. */
export function seriesTable(query, response) {
  const results = response?.results || [];
  if (!['TrendsQuery', 'StickinessQuery', 'LifecycleQuery'].includes(query.kind) || !results.length || !results[0].data?.length) return null;
  const labels = results[0].labels || results[0].days;
  return table(['Series', 'Total', ...labels], results.map((r) => [r.status || seriesLabel(r, query), r.count, ...r.data]),
    [false, true, ...labels.map(() => true)], 'series-table');
}

/** The result as CSV rows (first row: the header). */
export function toRows(query, response) {
  const results = response?.results || [];
  switch (query.kind) {
    case 'HogQLQuery': return [response.columns, ...results];
    case 'TrendsQuery': case 'StickinessQuery': case 'LifecycleQuery': {
      if (!results.length) return [['series']];
      if (!results[0].data?.length) return [['series', 'value'], ...results.map((r) => [seriesLabel(r, query), r.aggregated_value ?? r.count])];
      return [['series', ...(results[0].days || results[0].labels)], ...results.map((r) => [r.status || seriesLabel(r, query), ...r.data])];
    }
    case 'FunnelsQuery': {
      const out = [['breakdown', 'step', 'event', 'persons', 'conversion_from_start', 'median_conversion_seconds']];
      for (const steps of funnelSteps(results)) {
        const first = steps[0].count || 0;
        for (const s of steps) {
          const bv = s.breakdown_value ?? s.breakdown ?? '';
          out.push([Array.isArray(bv) ? bv.join('|') : bv, s.order + 1, s.name, s.count, first ? s.count / first : 0, s.median_conversion_time ?? '']);
        }
      }
      return out;
    }
    case 'RetentionQuery':
      return [['cohort', ...results[0].values.map((v) => v.label)], ...results.map((r) => [cohortLabel(r, query), ...r.values.map((v) => v.count)])];
    case 'PathsQuery':
      return [['source', 'target', 'persons'], ...results.map((r) => [r.source, r.target, r.value])];
    default: return [];
  }
}

export function toCSV(rows) {
  const esc = (v) => {
    const s = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return rows.map((r) => r.map(esc).join(',')).join('\n') + '\n';
}

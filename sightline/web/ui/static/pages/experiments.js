// Experiments: the list, the create form, and one experiment's page: lifecycle buttons (launch,
// stop, ship) and its results (SRM warning, recommendation, variant table per metric, lift
// intervals chart, cumulative chart).
import { api, ApiError, eventNames, project, propertyNames } from '../api.js';
import { COLORS, loadPlotly } from '../charts.js';
import { autocomplete, acField, clear, empty, field, fmt, h, pageHeader, relTime, select, toast } from '../ui.js';

export const METRIC_KINDS = [
  ['funnel', 'Conversion: share of exposed users who do an event'],
  ['count', 'Count: events per exposed user'],
  ['mean', 'Mean of a property per exposed user (e.g. revenue)'],
];
const WINDOW_UNITS = [['hour', 'hours'], ['day', 'days'], ['week', 'weeks']];
const ACTIONS = { ship: 'Ship', keep_running: 'Keep running', roll_back: 'Roll back' };

export const signedPct = (x) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : `${x > 0 ? '+' : ''}${(x * 100).toFixed(1)}%`);
export function metricValue(metric, v) {
  if (v === null || v === undefined) return '–';
  return metric.metric_type === 'funnel' ? `${(v * 100).toFixed(2)}%` : fmt(Math.round(v * 1000) / 1000);
}

export async function render(main, ctx) {
  if (ctx.params.id === 'new') return createForm(main, ctx);
  if (ctx.params.id) return detail(main, ctx, ctx.params.id);
  return list(main, ctx);
}

function statusBadge(status) {
  return h('span', { class: `status status-${status}`, dataset: { status } }, status[0].toUpperCase() + status.slice(1));
}

async function list(main, ctx) {
  ctx.setTitle('Experiments');
  const { results } = await api(project('experiments/'));
  const rows = results.filter((e) => !e.deleted);
  main.append(pageHeader('Experiments', h('a', { class: 'btn btn-primary', href: '/experiments/new', id: 'new-experiment' }, 'New experiment')),
    rows.length ? h('div', { class: 'table-wrap', style: 'max-height:none' }, h('table', { class: 'table', id: 'experiments-table' },
      h('caption', { class: 'visually-hidden' }, 'Experiments'),
      h('thead', {}, h('tr', {}, ['Name', 'Status', 'Feature flag', 'Variants', 'Started'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((e) => h('tr', { class: 'experiment-row' },
        h('th', { scope: 'row' }, h('a', { href: `/experiments/${e.id}` }, e.name)),
        h('td', {}, statusBadge(e.status), e.shipped_variant ? h('span', { class: 'muted small' }, ` shipped ${e.shipped_variant}`) : null),
        h('td', { class: 'mono' }, e.feature_flag?.id ? h('a', { href: `/feature_flags/${e.feature_flag.id}` }, e.feature_flag_key) : e.feature_flag_key),
        h('td', {}, e.parameters.feature_flag_variants.map((v) => `${v.key} ${v.rollout_percentage}%`).join(' / ')),
        h('td', { title: e.start_date || '' }, e.start_date ? new Date(e.start_date).toLocaleDateString() : '–'))))))
      : empty('No experiments yet.', h('a', { class: 'btn btn-primary', href: '/experiments/new' }, 'Create the first one')));
}

// -- create -----------------------------------------------------------------------------------
/** An editor for one metric; returns {el, value()} where value() is the API's metric JSON. */
function metricEditor(label, initial = {}, onRemove = null) {
  const m = { metric_type: 'funnel', event: '', window: '', unit: 'day', math: 'sum', property: '', goal: 'increase', name: '', ...initial };
  const kind = select(METRIC_KINDS, m.metric_type, { class: 'metric-kind' });
  const ev = autocomplete({ value: m.event, placeholder: 'e.g. purchase', class: 'metric-event', required: true }, eventNames);
  const win = h('input', { type: 'number', min: 1, step: 1, value: m.window, placeholder: 'any time', class: 'metric-window', style: 'width:110px' });
  const unit = select(WINDOW_UNITS, m.unit, { 'aria-label': `${label}: window unit` });
  const math = select([['sum', 'Sum per user'], ['avg', 'Average per event']], m.math, { class: 'metric-math' });
  const prop = autocomplete({ value: m.property, placeholder: 'e.g. revenue', class: 'metric-property' }, () => propertyNames('event', [ev.input.value]));
  const goal = select([['increase', 'Higher is better'], ['decrease', 'Lower is better']], m.goal);
  const name = h('input', { type: 'text', value: m.name, placeholder: 'optional', class: 'metric-name' });
  const winField = h('div', { class: 'field' }, h('label', { for: win.id = win.id || `w-${Math.random().toString(36).slice(2)}` }, 'Within (after exposure)'),
    h('div', { class: 'row' }, win, unit));
  const mathField = field('Aggregate', math);
  const propField = acField('Numeric property', prop);
  const sync = () => {
    winField.hidden = kind.value !== 'funnel';
    mathField.hidden = propField.hidden = kind.value !== 'mean';
  };
  kind.addEventListener('change', sync);
  sync();
  const el = h('fieldset', { class: 'sub metric' }, h('legend', {}, label),
    h('div', { class: 'form-grid' }, field('Metric', kind), acField('Event', ev), winField, mathField, propField, field('Goal', goal), field('Name', name)),
    onRemove ? h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: () => { el.remove(); onRemove(); } }, 'Remove metric') : null);
  el.value = () => {
    const event = ev.input.value.trim();
    if (!event) throw new Error(`${label}: choose an event.`);
    const out = { metric_type: kind.value, goal: goal.value };
    if (name.value.trim()) out.name = name.value.trim();
    if (kind.value === 'funnel') {
      out.series = [{ event }];
      if (win.value) { out.conversion_window = Number(win.value); out.conversion_window_unit = unit.value; }
    } else if (kind.value === 'count') {
      out.source = { event, math: 'total' };
    } else {
      if (!prop.input.value.trim()) throw new Error(`${label}: choose the numeric property to average or sum.`);
      out.source = { event, math: math.value, math_property: prop.input.value.trim() };
    }
    return out;
  };
  return el;
}

async function createForm(main, ctx) {
  ctx.setTitle('New experiment');
  const error = h('div', { class: 'inline-error', role: 'alert', id: 'experiment-error' });
  const name = h('input', { type: 'text', required: true, maxlength: 400, placeholder: 'e.g. Shorter sign-up form', name: 'name' });
  const hypothesis = h('textarea', { rows: 2, style: 'min-height:54px;font-family:var(--font)', placeholder: 'If we …, then … because …', name: 'hypothesis' });
  const flagKey = autocomplete({ placeholder: 'e.g. short-signup', required: true, spellcheck: 'false', name: 'feature_flag_key' },
    () => api(project('feature_flags/'), { quiet: true }).then((r) => r.results.filter((f) => !f.deleted).map((f) => ({ name: f.key }))));
  const variants = [{ key: 'control', rollout_percentage: 50 }, { key: 'test', rollout_percentage: 50 }];
  const variantsBox = h('div', { id: 'experiment-variants' });
  const drawVariants = () => {
    const total = variants.reduce((a, v) => a + (Number(v.rollout_percentage) || 0), 0);
    clear(variantsBox, variants.map((v, i) => {
      const k = h('input', { type: 'text', value: v.key, 'aria-label': `Variant ${i + 1} key`, readonly: i === 0, class: 'variant-key' });
      const p = h('input', { type: 'number', min: 0, max: 100, step: 'any', value: v.rollout_percentage, 'aria-label': `Variant ${i + 1} percentage`, class: 'variant-pct', style: 'width:90px' });
      k.addEventListener('change', () => { v.key = k.value.trim(); });
      p.addEventListener('change', () => { v.rollout_percentage = Number(p.value); drawVariants(); });
      return h('div', { class: 'row' }, k, p, '%', i > 1 ? h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': `Remove variant ${i + 1}`, onclick: () => { variants.splice(i, 1); drawVariants(); } }, '×') : null);
    }), h('div', { class: 'row' },
      h('button', { type: 'button', class: 'btn btn-small', onclick: () => {
        variants.push({ key: `test-${variants.length}`, rollout_percentage: 0 });
        const even = Math.floor(100 / variants.length);
        variants.forEach((v, i) => { v.rollout_percentage = i === 0 ? 100 - even * (variants.length - 1) : even; });
        drawVariants();
      } }, '+ Variant'),
      h('span', { class: Math.abs(total - 100) < 1e-9 ? 'sum-ok' : 'sum-bad', 'aria-live': 'polite' }, `Split: ${+total.toFixed(4)}%`)));
  };
  drawVariants();
  const goal = metricEditor('Goal metric', { event: 'purchase' });
  const secondary = h('div', {});
  const addSecondary = h('button', { type: 'button', class: 'btn btn-small', onclick: () => {
    secondary.append(metricEditor(`Secondary metric ${secondary.children.length + 1}`, { metric_type: 'count' }, () => {}));
  } }, '+ Secondary metric');
  const launch = h('input', { type: 'checkbox' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'create-experiment' }, 'Create experiment');
  const form = h('form', { class: 'stack', id: 'experiment-form', 'aria-label': 'New experiment', novalidate: true },
    error,
    h('section', { class: 'card' }, field('Name', name), field('Hypothesis', hypothesis),
      acField('Feature flag key', flagKey, { hint: 'A new key creates the flag (inactive until launch); an existing multivariate flag is reused.' })),
    h('section', { class: 'card', 'aria-labelledby': 'xv-h' }, h('h2', { id: 'xv-h' }, 'Variants'),
      h('p', { class: 'muted small' }, 'The first is the control every other variant is compared with.'), variantsBox),
    h('section', { class: 'card', 'aria-labelledby': 'xm-h' }, h('h2', { id: 'xm-h' }, 'Metrics'), goal, secondary, addSecondary),
    h('div', { class: 'row' }, submit, h('label', { class: 'check' }, launch, 'Launch now'), h('a', { class: 'btn', href: '/experiments' }, 'Cancel')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    let body;
    try {
      if (!name.value.trim()) throw new Error('The experiment needs a name.');
      if (!flagKey.input.value.trim()) throw new Error('The experiment needs a feature flag key.');
      body = { name: name.value.trim(), hypothesis: hypothesis.value.trim() || null, feature_flag_key: flagKey.input.value.trim(),
        parameters: { feature_flag_variants: variants.map((v) => ({ key: v.key, rollout_percentage: Number(v.rollout_percentage) })) },
        metrics: [goal.value()], metrics_secondary: [...secondary.children].map((el) => el.value()) };
    } catch (err) { error.textContent = err.message; return; }
    submit.disabled = true;
    try {
      let exp = await api(project('experiments/'), { method: 'POST', body, quiet: true });
      if (launch.checked) exp = await api(project(`experiments/${exp.id}/launch/`), { method: 'POST', body: {}, quiet: true });
      toast(`Created ${exp.name}.`);
      ctx.navigate(`/experiments/${exp.id}`);
    } catch (err) {
      error.textContent = err instanceof ApiError && err.body?.attr ? `${err.message} (${err.body.attr})` : err.message;
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h('p', {}, h('a', { href: '/experiments', class: 'btn btn-ghost btn-small' }, '← Experiments')), pageHeader('New experiment'), form);
  name.focus();
}

// -- one experiment ---------------------------------------------------------------------------
async function detail(main, ctx, id) {
  let exp;
  try {
    exp = await api(project(`experiments/${encodeURIComponent(id)}/`), { quiet: true });
  } catch (err) {
    main.append(h('div', { class: 'empty' }, h('h1', {}, 'Experiment not found'), h('p', {}, err.message), h('a', { href: '/experiments' }, 'All experiments')));
    return;
  }
  ctx.setTitle(exp.name);
  const path = (p = '') => project(`experiments/${exp.id}/${p}`);
  const act = async (what, body = {}) => {
    await api(path(`${what}/`), { method: 'POST', body });
    toast({ launch: 'Launched.', stop: 'Stopped.', ship: 'Shipped.' }[what]);
    ctx.navigate(location.pathname, { replace: true });
  };
  const variants = exp.parameters.feature_flag_variants;
  const shipSelect = select(variants.map((v) => [v.key, v.key]), variants.find((v) => v.key !== 'control')?.key, { 'aria-label': 'Variant to ship', id: 'ship-variant' });
  const actions = [];
  if (exp.status === 'draft') actions.push(h('button', { class: 'btn btn-primary', type: 'button', id: 'launch-experiment', onclick: () => act('launch') }, 'Launch'));
  if (exp.status === 'running') actions.push(h('button', { class: 'btn', type: 'button', id: 'stop-experiment', onclick: () => act('stop') }, 'Stop'));
  if (exp.status !== 'draft' && !exp.shipped_variant) {
    actions.push(shipSelect, h('button', { class: 'btn btn-primary', type: 'button', id: 'ship-experiment', onclick: () => {
      if (confirm(`Ship ${shipSelect.value}? The flag ${exp.feature_flag_key} will give everyone ${shipSelect.value}.`)) act('ship', { variant: shipSelect.value });
    } }, 'Ship variant'));
  }
  actions.push(h('button', { class: 'btn', type: 'button', id: 'edit-experiment', onclick: () => { editForm.hidden = false; editName.focus(); } }, 'Edit'));
  const editName = h('input', { type: 'text', value: exp.name, maxlength: 400, required: true });
  const editHyp = h('textarea', { rows: 2, style: 'min-height:54px;font-family:var(--font)' });
  editHyp.value = exp.hypothesis || '';
  const editError = h('div', { class: 'inline-error', role: 'alert' });
  const editForm = h('form', { class: 'card', hidden: true, id: 'experiment-edit', 'aria-label': 'Edit experiment', style: 'margin-bottom:14px' },
    editError, field('Name', editName), field('Hypothesis', editHyp),
    h('p', { class: 'muted small' }, exp.status === 'draft' ? '' : 'The flag and the variants are fixed once an experiment has launched.'),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save'),
      h('button', { type: 'button', class: 'btn', onclick: () => { editForm.hidden = true; } }, 'Cancel')));
  editForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    editError.textContent = '';
    try {
      await api(path(), { method: 'PATCH', quiet: true,
        body: { name: editName.value.trim(), hypothesis: editHyp.value.trim() || null, version: exp.version } });
      toast('Saved.');
      ctx.navigate(location.pathname, { replace: true });
    } catch (err) {
      editError.textContent = err.message;
    }
  });
  const metricsList = [...exp.metrics.map((m) => ['Goal', m]), ...exp.metrics_secondary.map((m) => ['Secondary', m]), ...(exp.metrics_guardrails || []).map((m) => ['Guardrail', m])];
  const results = h('div', { id: 'experiment-results', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Calculating results…'));
  main.append(h('p', {}, h('a', { href: '/experiments', class: 'btn btn-ghost btn-small' }, '← Experiments')),
    pageHeader(exp.name, statusBadge(exp.status), ...actions), editForm,
    h('section', { class: 'card', 'aria-label': 'About this experiment', style: 'margin-bottom:14px' },
      exp.hypothesis ? h('p', { style: 'margin-top:0' }, h('strong', {}, 'Hypothesis: '), exp.hypothesis) : null,
      h('dl', { class: 'kv' },
        h('dt', {}, 'Feature flag'), h('dd', {}, exp.feature_flag?.id ? h('a', { href: `/feature_flags/${exp.feature_flag.id}`, class: 'mono' }, exp.feature_flag_key) : exp.feature_flag_key),
        h('dt', {}, 'Variants'), h('dd', {}, variants.map((v) => `${v.key} ${v.rollout_percentage}%`).join(' / ')),
        h('dt', {}, 'Running'), h('dd', {}, exp.start_date ? `${new Date(exp.start_date).toLocaleDateString()} → ${exp.end_date ? new Date(exp.end_date).toLocaleDateString() : 'now'}` : 'not launched yet'),
        h('dt', {}, 'Metrics'), h('dd', {}, metricsList.map(([role, m]) => h('div', {}, h('span', { class: 'badge' }, role), ' ', m.name))),
        h('dt', {}, 'Statistics'), h('dd', {}, `${exp.stats_config.method}, ${Math.round(exp.stats_config.confidence_level * 100)}% intervals`
          + (exp.shipped_variant ? ` · shipped ${exp.shipped_variant}` : '')))),
    results);
  if (exp.status === 'draft') {
    clear(results, h('div', { class: 'banner banner-info' }, h('p', {}, 'Launch the experiment to switch its flag on and start collecting exposures.')));
    return;
  }
  // the tables first (faster without the day-by-day series), then the cumulative chart
  let res;
  try {
    res = await api(path('results/') + '?cumulative=false', { quiet: true });
  } catch (err) {
    clear(results, h('p', { class: 'error', role: 'alert' }, `Results failed: ${err.message}`));
    return;
  }
  if (!ctx.isCurrent()) return;
  const cumulative = drawResults(results, exp, res);
  api(path('results/'), { quiet: true }).then((r) => { if (ctx.isCurrent()) cumulative(r.cumulative); },
    (err) => cumulative(null, err));
}

function verdict(metric, row) {
  const better = metric.goal === 'increase' ? row.lift > 0 : row.lift < 0;
  const word = metric.metric_type === 'funnel' ? (row.lift > 0 ? 'converts better' : 'converts worse') : (row.lift > 0 ? 'is higher' : 'is lower');
  const how = row.significant ? 'significantly' : 'not significantly';
  const evidence = row.chance_to_win !== null && row.chance_to_win !== undefined ? `chance to win ${(row.chance_to_win * 100).toFixed(0)}%`
    : `p = ${row.p_value_adjusted ?? row.p_value ?? '–'}`;
  return `${row.key} ${word} than control (${signedPct(row.lift)}, ${how}${better && row.significant ? ' — a win' : ''}; ${evidence}).`;
}

function drawResults(el, exp, res) {
  const bayes = res.stats_config.method === 'bayesian';
  const level = Math.round(res.stats_config.confidence_level * 100);
  const rec = res.recommendation;
  const parts = [];
  if (res.srm.mismatch) {
    parts.push(h('div', { class: 'banner banner-warn', role: 'alert', id: 'srm-warning' }, h('h2', {}, '⚠ Sample ratio mismatch'),
      h('p', {}, res.srm.warning), h('p', { class: 'small' }, 'Exposures: ' + Object.entries(res.exposures).map(([k, n]) => `${k} ${fmt(n)} (expected ${fmt(Math.round(res.srm.expected[k]))})`).join(', '))));
  } else {
    parts.push(h('p', { class: 'muted small', id: 'srm-ok', dataset: { srmP: res.srm.p_value } },
      `Sample ratio check passed (p = ${res.srm.p_value === null ? '–' : res.srm.p_value.toPrecision(2)}): exposures match the split. `
      + Object.entries(res.exposures).map(([k, n]) => `${k} ${fmt(n)}`).join(' · ')));
  }
  const recClass = rec.action === 'ship' ? 'banner-ok' : rec.action === 'roll_back' ? 'banner-danger' : 'banner-info';
  parts.push(h('div', { class: `banner ${recClass}`, id: 'recommendation', dataset: { action: rec.action } },
    h('h2', {}, 'Recommendation: ', h('span', { class: 'rec-action' }, ACTIONS[rec.action] || rec.action), rec.variant && rec.action === 'ship' ? ` ${rec.variant}` : ''),
    h('p', { class: 'rec-reason' }, rec.reason)));
  const goal = res.metrics.find((m) => m.role === 'goal');
  if (goal) {
    parts.push(h('p', { id: 'goal-verdict', style: 'font-size:15px' }, h('strong', {}, `${goal.name}: `),
      goal.variants.filter((r) => r.key !== 'control').map((r) => verdict(goal, r)).join(' ')));
  }
  const liftChart = h('div', { class: 'chart', id: 'lift-chart' });
  const cumChart = h('div', { class: 'chart', id: 'cumulative-chart' });
  const cumSelect = select([], 0, { 'aria-label': 'Metric of the cumulative chart', hidden: true });
  const charts = h('div', { class: 'results-charts' },
    h('section', { 'aria-labelledby': 'lift-h' }, h('h2', { id: 'lift-h' }, `Lift vs control (${level}% intervals)`), liftChart),
    h('section', { 'aria-labelledby': 'cum-h' }, h('h2', { id: 'cum-h' }, 'Cumulative lift over time ', cumSelect), cumChart));
  const roles = [['goal', 'Goal metrics'], ['secondary', 'Secondary metrics'], ['guardrail', 'Guardrails']];
  roles.forEach(([role, title], i) => {
    const ms = res.metrics.filter((m) => m.role === role);
    if (ms.length) {
      parts.push(h('h2', { style: 'margin-top:16px' }, title));
      for (const m of ms) parts.push(metricTable(m, bayes, level));
    }
    if (i === 0) parts.push(charts);
  });
  parts.push(h('p', { class: 'muted small' }, `Computed ${relTime(res.computed_at)}. ${bayes ? 'Bayesian: chance to win is the probability the variant beats control.' : 'Frequentist: p-values are adjusted for multiple comparisons.'}`));
  clear(el, parts);
  drawLiftChart(liftChart, res, level);
  let series = null;
  const cum = () => drawCumulative(cumChart, series?.[Number(cumSelect.value) || 0], level);
  cumSelect.addEventListener('change', cum);
  clear(cumChart, h('p', { class: 'muted' }, 'Loading the daily series…'));
  /** Draw the cumulative chart from the full results' ``cumulative`` (or say why not). */
  return (cumulative, err) => {
    if (err) { clear(cumChart, h('p', { class: 'error' }, `The daily series failed: ${err.message}`)); return; }
    series = cumulative || [];
    clear(cumSelect, series.map((c, i) => h('option', { value: i }, c.name)));
    cumSelect.hidden = series.length < 2;
    cum();
  };
}

function metricTable(m, bayes, level) {
  const head = ['Variant', 'Exposures', m.metric_type === 'funnel' ? 'Conversion' : 'Value', 'Lift', `${level}% interval`, bayes ? 'Chance to win' : 'p-value', 'Significant'];
  return h('div', { class: 'metric-block', dataset: { metric: m.uuid } },
    h('h3', {}, m.name, ' ', h('span', { class: 'badge' }, m.goal === 'increase' ? 'higher is better' : 'lower is better')),
    h('div', { class: 'table-wrap' }, h('table', { class: 'table variant-table', dataset: { metricName: m.name } },
      h('caption', { class: 'visually-hidden' }, `${m.name} by variant`),
      h('thead', {}, h('tr', {}, head.map((c, i) => h('th', { scope: 'col', class: i > 0 && i < 6 ? 'num' : '' }, c)))),
      h('tbody', {}, m.variants.map((r) => {
        const control = r.key === 'control';
        const good = r.lift !== undefined && (m.goal === 'increase' ? r.lift > 0 : r.lift < 0);
        return h('tr', { dataset: { variant: r.key } },
          h('th', { scope: 'row' }, r.key),
          h('td', { class: 'num', dataset: { field: 'exposures', value: r.exposures } }, fmt(r.exposures)),
          h('td', { class: 'num', dataset: { field: 'value', value: r.value ?? '' } }, metricValue(m, r.value)),
          h('td', { class: 'num ' + (control || !r.lift ? '' : good ? 'lift-pos' : 'lift-neg'), dataset: { field: 'lift', value: r.lift ?? '' } }, control ? 'baseline' : signedPct(r.lift)),
          h('td', { class: 'num', dataset: { field: 'interval', value: r.lift_interval ? r.lift_interval.join(',') : '' } },
            control || !r.lift_interval ? '–' : `${signedPct(r.lift_interval[0])} to ${signedPct(r.lift_interval[1])}`),
          h('td', { class: 'num', dataset: { field: bayes ? 'chance_to_win' : 'p_value', value: (bayes ? r.chance_to_win : (r.p_value_adjusted ?? r.p_value)) ?? '' } },
            control ? '–' : bayes ? (r.chance_to_win === null || r.chance_to_win === undefined ? '–' : `${(r.chance_to_win * 100).toFixed(1)}%`)
              : (r.p_value_adjusted ?? r.p_value) === null ? '–' : (r.p_value_adjusted ?? r.p_value).toPrecision(3)),
          h('td', { class: r.significant ? 'sig-yes' : 'sig-no', dataset: { field: 'significant', value: String(!!r.significant) } },
            control ? '–' : r.error ? `– (${r.error.replace(/_/g, ' ')})` : r.significant ? 'Yes' : 'No'));
      })))));
}

const chartConfig = { displaylogo: false, responsive: true, displayModeBar: false };
const layoutBase = { margin: { l: 12, r: 16, t: 8, b: 40 }, paper_bgcolor: '#fff', plot_bgcolor: '#fff',
  font: { family: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif', size: 12, color: '#1d2329' }, showlegend: false };

async function drawLiftChart(el, res, level) {
  const rows = [];
  for (const m of res.metrics) for (const r of m.variants) if (r.key !== 'control' && r.lift_interval) rows.push({ m, r });
  if (!rows.length) { clear(el, h('p', { class: 'muted' }, 'No lifts yet.')); return; }
  const Plotly = await loadPlotly();
  const labels = rows.map(({ m, r }) => `${m.name} · ${r.key}`);
  const x = rows.map(({ r }) => r.lift * 100);
  const data = [{ type: 'scatter', mode: 'markers', y: labels, x, orientation: 'h',
    marker: { size: 10, color: rows.map(({ m, r }) => (r.significant ? ((m.goal === 'increase') === (r.lift > 0) ? '#0f7b3f' : '#b42318') : '#56606b')) },
    error_x: { type: 'data', symmetric: false, array: rows.map(({ r }) => (r.lift_interval[1] - r.lift) * 100),
      arrayminus: rows.map(({ r }) => (r.lift - r.lift_interval[0]) * 100), thickness: 2, width: 6, color: '#1d4aff' },
    hovertemplate: '%{y}: %{x:.1f}%<extra></extra>' }];
  const div = h('div', { class: 'plot', role: 'img', 'aria-label': `Lift of each variant with ${level}% intervals: ` + rows.map(({ m, r }) => `${m.name} ${r.key} ${signedPct(r.lift)} (${signedPct(r.lift_interval[0])} to ${signedPct(r.lift_interval[1])})`).join('; ') });
  el.replaceChildren(div);
  await Plotly.newPlot(div, data, { ...layoutBase, height: Math.max(220, 60 * rows.length + 80),
    xaxis: { ticksuffix: '%', zeroline: false, gridcolor: '#eef0f3', title: { text: 'Lift vs control' } },
    yaxis: { automargin: true, autorange: 'reversed' },
    shapes: [{ type: 'line', x0: 0, x1: 0, yref: 'paper', y0: 0, y1: 1, line: { color: '#1d2329', width: 1.5, dash: 'dot' } }] }, chartConfig);
  el.dataset.ready = 'true';
}

async function drawCumulative(el, cum, level) {
  if (!cum || !cum.days?.length) { clear(el, h('p', { class: 'muted' }, 'No daily results yet.')); return; }
  const Plotly = await loadPlotly();
  const keys = Object.keys(cum.days[cum.days.length - 1].variants).filter((k) => k !== 'control');
  const data = [];
  keys.forEach((k, i) => {
    const color = COLORS[(i + 1) % COLORS.length];
    const days = cum.days.filter((d) => d.variants[k] && d.variants.control?.exposures && d.variants[k].exposures);
    const dates = days.map((d) => d.date);
    const lo = days.map((d) => (d.variants[k].lift_interval?.[0] ?? null) * 100);
    const hi = days.map((d) => (d.variants[k].lift_interval?.[1] ?? null) * 100);
    data.push({ type: 'scatter', mode: 'lines', x: dates, y: hi, line: { width: 0 }, hoverinfo: 'skip', showlegend: false });
    data.push({ type: 'scatter', mode: 'lines', x: dates, y: lo, line: { width: 0 }, fill: 'tonexty', fillcolor: 'rgba(205,15,116,0.12)', hoverinfo: 'skip', showlegend: false });
    data.push({ type: 'scatter', mode: 'lines', name: k, x: dates, y: days.map((d) => d.variants[k].lift * 100), line: { color, width: 2 },
      hovertemplate: `${k}: %{y:.1f}%<extra>%{x}</extra>` });
  });
  const div = h('div', { class: 'plot', role: 'img', 'aria-label': `Cumulative lift of ${cum.name} by day, with ${level}% intervals` });
  el.replaceChildren(div);
  await Plotly.newPlot(div, data, { ...layoutBase, margin: { l: 48, r: 16, t: 8, b: 40 }, height: 300, showlegend: keys.length > 1,
    xaxis: { type: 'date', gridcolor: '#eef0f3' }, yaxis: { ticksuffix: '%', gridcolor: '#eef0f3', zeroline: true, zerolinecolor: '#1d2329', zerolinewidth: 1.5 } }, chartConfig);
  el.dataset.ready = 'true';
}

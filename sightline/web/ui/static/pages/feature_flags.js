// Feature flags: the list (with an active switch), the create/edit form (rollout, variants,
// property conditions, payloads), the flag's change history and its SDK snippets.
import { api, ApiError, project } from '../api.js';
import { clear, empty, field, h, pageHeader, relTime, toast } from '../ui.js';
import { OPERATORS, propertyFilterRow } from './events.js';
import { currentProject, flagSnippets, snippetTabs } from './settings_snippets.js';

export async function render(main, ctx) {
  if (ctx.params.id) return editor(main, ctx, ctx.params.id === 'new' ? null : ctx.params.id);
  return list(main, ctx);
}

/** "50% of everyone", "control 50% · test 50%", "2 conditions"… */
export function rolloutSummary(flag) {
  const f = flag.filters || {};
  const groups = f.groups || [];
  const variants = f.multivariate?.variants || [];
  const who = groups.length === 0 ? 'nobody'
    : groups.length === 1 && !(groups[0].properties || []).length ? `${groups[0].rollout_percentage ?? 100}% of everyone`
      : `${groups.length} condition set${groups.length === 1 ? '' : 's'}`;
  return variants.length ? `${who} · ${variants.map((v) => `${v.key} ${v.rollout_percentage}%`).join(' / ')}` : who;
}

async function list(main, ctx) {
  ctx.setTitle('Feature flags');
  const { results } = await api(project('feature_flags/'));
  const flags = results.filter((f) => !f.deleted);
  const tbody = h('tbody', {}, flags.map((f) => {
    const toggle = h('input', { type: 'checkbox', role: 'switch', checked: f.active, 'aria-label': `${f.key} active`,
      class: 'flag-active', dataset: { key: f.key } });
    toggle.addEventListener('change', async () => {
      toggle.disabled = true;
      try {
        const updated = await api(project(`feature_flags/${f.id}/`), { method: 'PATCH', body: { active: toggle.checked } });
        Object.assign(f, updated);
        toast(`${f.key} is ${f.active ? 'on' : 'off'}.`);
      } catch {
        toggle.checked = f.active;
      } finally {
        toggle.disabled = false;
      }
    });
    return h('tr', { class: 'flag-row', dataset: { key: f.key } },
      h('th', { scope: 'row' }, h('a', { href: `/feature_flags/${f.id}`, class: 'mono' }, f.key)),
      h('td', {}, f.name || ''),
      h('td', { class: 'rollout' }, rolloutSummary(f)),
      h('td', { title: f.updated_at }, relTime(f.updated_at)),
      h('td', {}, h('label', { class: 'switch' }, toggle, h('span', { class: 'visually-hidden' }, 'Active'))));
  }));
  main.append(pageHeader('Feature flags', h('a', { class: 'btn btn-primary', href: '/feature_flags/new', id: 'new-flag' }, 'New feature flag')),
    flags.length ? h('div', { class: 'table-wrap', style: 'max-height:none' }, h('table', { class: 'table', id: 'flags-table' },
      h('caption', { class: 'visually-hidden' }, 'Feature flags'),
      h('thead', {}, h('tr', {}, ['Key', 'Name', 'Release', 'Updated', 'Active'].map((c) => h('th', { scope: 'col' }, c)))), tbody))
      : empty('No feature flags yet.', h('a', { class: 'btn btn-primary', href: '/feature_flags/new' }, 'Create the first one')));
}

// -- the form -----------------------------------------------------------------------------------
function formState(flag) {
  const f = flag?.filters || {};
  return {
    key: flag?.key || '', name: flag?.name || '', active: flag ? flag.active : true,
    groups: (f.groups && f.groups.length ? f.groups : [{ properties: [], rollout_percentage: 100 }])
      .map((g) => ({ properties: (g.properties || []).map((p) => ({ ...p })), rollout_percentage: g.rollout_percentage ?? 100, variant: g.variant ?? null })),
    variants: (f.multivariate?.variants || []).map((v) => ({ ...v })),
    payloads: { ...(f.payloads || {}) },
    ensure_experience_continuity: !!flag?.ensure_experience_continuity,
  };
}

const EDITABLE_OPERATORS = new Set(OPERATORS.map(([op]) => op));
/** Person-property conditions are edited in the form; cohort and flag conditions are kept as they are. */
const editable = (p) => (p.type || 'person') === 'person' && EDITABLE_OPERATORS.has(p.operator || 'exact');

function numberInput(value, label, attrs = {}) {
  return h('input', { type: 'number', min: 0, max: 100, step: 'any', value, 'aria-label': label, ...attrs });
}

async function editor(main, ctx, id) {
  let flag = null;
  if (id) {
    try {
      flag = await api(project(`feature_flags/${encodeURIComponent(id)}/`), { quiet: true });
    } catch (err) {
      main.append(h('div', { class: 'empty' }, h('h1', {}, 'Feature flag not found'), h('p', {}, err.message), h('a', { href: '/feature_flags' }, 'All flags')));
      return;
    }
  }
  ctx.setTitle(flag ? flag.key : 'New feature flag');
  const s = formState(flag);
  const error = h('div', { class: 'inline-error', role: 'alert', id: 'flag-error' });
  const key = h('input', { type: 'text', required: true, value: s.key, pattern: '[A-Za-z0-9_\\-]+', maxlength: 400, placeholder: 'e.g. new-onboarding', spellcheck: 'false', name: 'key' });
  const name = h('input', { type: 'text', value: s.name, placeholder: 'What it does', name: 'name' });
  const active = h('input', { type: 'checkbox', role: 'switch', checked: s.active, name: 'active' });
  const continuity = h('input', { type: 'checkbox', checked: s.ensure_experience_continuity });
  const groupsBox = h('div', { id: 'flag-groups' });
  const variantsBox = h('div', { id: 'flag-variants' });
  const payloadsBox = h('div', { id: 'flag-payloads' });
  const saveBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'save-flag' }, flag ? 'Save' : 'Create flag');

  function drawGroups() {
    clear(groupsBox, s.groups.map((g, gi) => {
      const props = h('div', {});
      const drawProps = () => clear(props, g.properties.map((p, pi) => (editable(p)
        ? propertyFilterRow(p, () => {}, () => { g.properties.splice(pi, 1); drawProps(); }, { type: 'person', index: pi })
        : h('div', { class: 'row' }, h('span', { class: 'chip' }, `${p.type} ${p.key} ${p.operator || ''} ${JSON.stringify(p.value ?? '')}`),
          h('span', { class: 'muted small' }, '(edit over the API)'),
          h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': `Remove condition ${pi + 1}`,
            onclick: () => { g.properties.splice(pi, 1); drawProps(); } }, '×')))));
      drawProps();
      const rollout = numberInput(g.rollout_percentage, `Condition set ${gi + 1} rollout percentage`, { class: 'group-rollout' });
      rollout.addEventListener('input', () => { g.rollout_percentage = rollout.value === '' ? null : Number(rollout.value); });
      return h('fieldset', { class: 'sub group' }, h('legend', {}, `Condition set ${gi + 1}`),
        h('p', { class: 'muted small' }, g.properties.length ? 'Persons matching all of:' : 'Everyone (add a property condition to target some persons).'),
        props,
        h('div', { class: 'row' },
          h('button', { type: 'button', class: 'btn btn-small', onclick: () => { g.properties.push({ key: '', operator: 'exact', value: '', type: 'person' }); drawGroups(); } }, '+ Property condition'),
          h('label', { class: 'check' }, 'Roll out to ', rollout, ' %'),
          s.groups.length > 1 ? h('button', { type: 'button', class: 'btn btn-small btn-danger', onclick: () => { s.groups.splice(gi, 1); drawGroups(); } }, 'Remove set') : null));
    }), h('button', { type: 'button', class: 'btn btn-small', onclick: () => { s.groups.push({ properties: [], rollout_percentage: 100, variant: null }); drawGroups(); } }, '+ Condition set'));
  }

  function drawVariants() {
    const total = s.variants.reduce((a, v) => a + (Number(v.rollout_percentage) || 0), 0);
    const sum = h('span', { id: 'variant-sum', class: Math.abs(total - 100) < 1e-9 ? 'sum-ok' : 'sum-bad', 'aria-live': 'polite' },
      s.variants.length ? `Split: ${+total.toFixed(4)}% ${Math.abs(total - 100) < 1e-9 ? '✓' : '(must add up to 100%)'}` : '');
    clear(variantsBox,
      h('p', { class: 'muted small' }, s.variants.length ? 'Each person gets one variant; the split must add up to 100%.'
        : 'A boolean flag (on/off). Add variants for a multivariate flag (A/B tests).'),
      s.variants.map((v, vi) => {
        const vk = h('input', { type: 'text', value: v.key, 'aria-label': `Variant ${vi + 1} key`, class: 'variant-key', spellcheck: 'false' });
        const vp = numberInput(v.rollout_percentage, `Variant ${vi + 1} percentage`, { class: 'variant-pct' });
        vk.addEventListener('change', () => { const old = v.key; v.key = vk.value.trim(); if (old in s.payloads) { s.payloads[v.key] = s.payloads[old]; delete s.payloads[old]; } drawPayloads(); });
        vp.addEventListener('input', () => { v.rollout_percentage = vp.value === '' ? 0 : Number(vp.value); updateSum(); });
        return h('div', { class: 'row variant' }, vk, vp, '%',
          h('button', { type: 'button', class: 'btn btn-ghost btn-icon', 'aria-label': `Remove variant ${vi + 1}`, onclick: () => { s.variants.splice(vi, 1); drawVariants(); drawPayloads(); } }, '×'));
      }),
      h('div', { class: 'row' },
        h('button', { type: 'button', class: 'btn btn-small', id: 'add-variant', onclick: () => {
          const n = s.variants.length;
          s.variants.push({ key: n === 0 ? 'control' : n === 1 ? 'test' : `variant-${n + 1}`, rollout_percentage: 0 });
          const even = Math.floor(100 / s.variants.length);
          s.variants.forEach((v, i) => { v.rollout_percentage = i === 0 ? 100 - even * (s.variants.length - 1) : even; });
          drawVariants(); drawPayloads();
        } }, '+ Variant'), sum));
    function updateSum() {
      const t = s.variants.reduce((a, v) => a + (Number(v.rollout_percentage) || 0), 0);
      sum.className = Math.abs(t - 100) < 1e-9 ? 'sum-ok' : 'sum-bad';
      sum.textContent = `Split: ${+t.toFixed(4)}% ${Math.abs(t - 100) < 1e-9 ? '✓' : '(must add up to 100%)'}`;
    }
  }

  function drawPayloads() {
    const keys = s.variants.length ? s.variants.map((v) => v.key) : ['true'];
    clear(payloadsBox, h('p', { class: 'muted small' }, 'Optional JSON sent with the flag (getFeatureFlagPayload).'),
      keys.map((k) => {
        const ta = h('textarea', { rows: 3, class: 'payload', dataset: { variant: k }, placeholder: '{"color": "blue"}', style: 'min-height:60px' });
        ta.value = s.payloads[k] ?? '';
        ta.addEventListener('input', () => { if (ta.value.trim()) s.payloads[k] = ta.value; else delete s.payloads[k]; });
        return field(keys.length === 1 ? 'Payload when enabled' : `Payload for ${k}`, ta);
      }));
  }

  function body() {
    const payloads = {};
    const keys = new Set(s.variants.length ? s.variants.map((v) => v.key) : ['true']);
    for (const [k, v] of Object.entries(s.payloads)) {
      if (!keys.has(k) || !String(v).trim()) continue;
      try { JSON.parse(v); } catch { throw new Error(`The payload for ${k} is not valid JSON.`); }
      payloads[k] = v;
    }
    if (s.variants.length) {
      const total = s.variants.reduce((a, v) => a + (Number(v.rollout_percentage) || 0), 0);
      if (Math.abs(total - 100) > 1e-9) throw new Error(`The variants' split adds up to ${+total.toFixed(4)}%, not 100%.`);
    }
    return {
      key: key.value.trim(), name: name.value.trim(), active: active.checked,
      ensure_experience_continuity: continuity.checked,
      filters: {
        ...(flag?.filters || {}),  // keeps what the form does not edit (group type, holdout…)
        groups: s.groups.map((g) => ({ properties: g.properties.filter((p) => p.key).map((p) => (editable(p)
          ? { key: p.key, operator: p.operator || 'exact', value: p.value, type: p.type || 'person' } : p)),
          rollout_percentage: g.rollout_percentage, variant: g.variant || null })),
        multivariate: s.variants.length ? { variants: s.variants.map((v) => ({ key: v.key, name: v.name || undefined, rollout_percentage: Number(v.rollout_percentage) })) } : null,
        payloads,
      },
      ...(flag ? { version: flag.version } : {}),
    };
  }

  const form = h('form', { class: 'stack', id: 'flag-form', 'aria-label': flag ? `Edit ${flag.key}` : 'New feature flag', novalidate: true },
    error,
    h('section', { class: 'card' }, h('div', { class: 'form-grid' },
      field('Key', key, { hint: 'What your code asks for. Letters, digits, - and _.' }), field('Name / description', name)),
    h('div', { class: 'row' }, h('label', { class: 'switch' }, active, 'Active'),
      h('label', { class: 'check', style: 'margin-left:16px' }, continuity, 'Keep the same value when an anonymous user logs in'))),
    h('section', { class: 'card', 'aria-labelledby': 'rel-h' }, h('h2', { id: 'rel-h' }, 'Release conditions'), groupsBox),
    h('section', { class: 'card', 'aria-labelledby': 'var-h' }, h('h2', { id: 'var-h' }, 'Variants'), variantsBox),
    h('section', { class: 'card', 'aria-labelledby': 'pay-h' }, h('h2', { id: 'pay-h' }, 'Payloads'), payloadsBox),
    h('div', { class: 'row' }, saveBtn, h('a', { class: 'btn', href: '/feature_flags' }, 'Cancel'),
      flag ? h('button', { type: 'button', class: 'btn btn-danger', style: 'margin-left:auto', onclick: remove }, 'Delete flag') : null));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    let payload;
    try { payload = body(); } catch (err) { error.textContent = err.message; error.focus?.(); return; }
    if (!payload.key) { error.textContent = 'The flag needs a key.'; key.focus(); return; }
    saveBtn.disabled = true;
    try {
      const saved = flag
        ? await api(project(`feature_flags/${flag.id}/`), { method: 'PATCH', body: payload, quiet: true })
        : await api(project('feature_flags/'), { method: 'POST', body: payload, quiet: true });
      toast(flag ? `Saved ${saved.key}.` : `Created ${saved.key}.`);
      if (flag) ctx.navigate(`/feature_flags/${saved.id}`, { replace: true });
      else ctx.navigate(`/feature_flags/${saved.id}`);
    } catch (err) {
      error.textContent = err instanceof ApiError && err.body?.attr ? `${err.message} (${err.body.attr})` : err.message;
      error.scrollIntoView?.({ block: 'center' });
    } finally {
      saveBtn.disabled = false;
    }
  });

  async function remove() {
    if (!confirm(`Delete the flag ${flag.key}? SDKs will get false for it.`)) return;
    await api(project(`feature_flags/${flag.id}/`), { method: 'DELETE' });
    toast(`Deleted ${flag.key}.`);
    ctx.navigate('/feature_flags');
  }

  drawGroups(); drawVariants(); drawPayloads();
  main.append(h('p', {}, h('a', { href: '/feature_flags', class: 'btn btn-ghost btn-small' }, '← Feature flags')),
    pageHeader(flag ? flag.key : 'New feature flag', flag ? h('span', { class: `status status-${flag.active ? 'active' : 'inactive'}` }, flag.active ? 'Active' : 'Inactive') : null));
  if (!flag) { main.append(form); key.focus(); return; }

  const side = h('div', { class: 'stack' });
  main.append(h('div', { class: 'two-col flag-layout', style: 'grid-template-columns: 1fr minmax(320px, 460px)' }, form, side));
  const proj = await currentProject().catch(() => null);
  side.append(h('section', { class: 'card', 'aria-labelledby': 'sdk-h', id: 'flag-sdk' }, h('h2', { id: 'sdk-h' }, 'Use this flag'),
    h('p', { class: 'muted small' }, `Summary: ${rolloutSummary(flag)}.`),
    snippetTabs(flagSnippets(flag, proj?.api_token || '<project token>'), { label: 'Flag SDK snippets' })));
  const history = h('ul', { class: 'activity', id: 'flag-activity' });
  side.append(h('section', { class: 'card', 'aria-labelledby': 'hist-h' }, h('h2', { id: 'hist-h' }, 'History'), history));
  api(project(`feature_flags/${flag.id}/activity/`), { quiet: true }).then((r) => {
    clear(history, r.results.length ? r.results.map((a) => h('li', {},
      h('strong', {}, a.activity), ` v${a.version} by ${a.user?.label || 'unknown'} `,
      h('span', { class: 'muted small', title: a.created_at }, relTime(a.created_at)),
      a.detail?.changes?.length ? h('div', { class: 'muted small' }, 'Changed: ' + a.detail.changes.map((c) => c.field).join(', ')) : null))
      : h('li', { class: 'muted' }, 'No changes recorded.'));
  }).catch(() => clear(history, h('li', { class: 'muted' }, 'History unavailable.')));
}

// Small DOM helpers shared by every page.

/** h('button', {class: 'btn', onclick}, 'Save') → an element. Attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else if (k === 'checked' || k === 'selected' || k === 'disabled') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

let uid = 0;
export const nextId = (prefix = 'f') => `${prefix}-${++uid}`;

/** A labelled control: the label is tied to the control by id (screen readers, clicks). */
export function field(label, control, { hint, className = '' } = {}) {
  if (!control.id) control.id = nextId('field');
  return h('div', { class: 'field ' + className },
    h('label', { for: control.id }, label), control, hint ? h('small', { class: 'hint' }, hint) : null);
}

/** A labelled autocomplete() input. */
export function acField(label, ac, { hint } = {}) {
  if (!ac.input.id) ac.input.id = nextId('field');
  return h('div', { class: 'field' }, h('label', { for: ac.input.id }, label), ac,
    hint ? h('small', { class: 'hint' }, hint) : null);
}

/** A <select> from [[value, label], ...]. */
export function select(options, value, attrs = {}) {
  return h('select', attrs, options.map(([v, l]) => h('option', { value: v, selected: String(v) === String(value) }, l)));
}

/** An <input> with a <datalist> filled (once, lazily) by ``load()`` → [{name, ...}]. */
export function autocomplete(attrs, load, { describe } = {}) {
  const listId = nextId('list');
  const list = h('datalist', { id: listId });
  const input = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', ...attrs, list: listId });
  let loaded = null;
  const fill = () => {
    if (!loaded) {
      loaded = Promise.resolve(load()).then((items) => {
        list.replaceChildren(...items.slice(0, 500).map((i) => h('option', { value: String(i.name) },
          describe ? describe(i) : null)));
      }).catch(() => { loaded = null; });
    }
    return loaded;
  };
  input.addEventListener('focus', fill);
  input.addEventListener('input', fill);
  input.reload = () => { loaded = null; return fill(); };
  const wrap = h('span', { class: 'autocomplete' }, input, list);
  wrap.input = input;
  return wrap;
}

export function toast(message, kind = 'info') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const t = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message,
    h('button', { class: 'toast-close', 'aria-label': 'Dismiss', onclick: () => t.remove() }, '×'));
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

export function debounce(fn, ms = 250) {
  let t;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

const nf = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
export const fmt = (n) => (n === null || n === undefined || Number.isNaN(n) ? '–' : nf.format(n));
export const pct = (x) => (x === null || x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(1)}%`);

export function pageHeader(title, ...actions) {
  return h('header', { class: 'page-header' }, h('h1', { id: 'page-title', tabindex: '-1' }, title),
    h('div', { class: 'page-actions' }, actions));
}

export function empty(message, ...extra) {
  return h('div', { class: 'empty' }, h('p', {}, message), extra);
}

export function icon(path, size = 18) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', size);
  svg.setAttribute('height', size);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const p = document.createElementNS(ns, 'path');
  p.setAttribute('d', path);
  p.setAttribute('fill', 'none');
  p.setAttribute('stroke', 'currentColor');
  p.setAttribute('stroke-width', '1.8');
  p.setAttribute('stroke-linecap', 'round');
  p.setAttribute('stroke-linejoin', 'round');
  svg.append(p);
  return svg;
}

export const relTime = (iso) => {
  if (!iso) return '';
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
};

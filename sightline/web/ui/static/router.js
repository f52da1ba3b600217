// A tiny history-API router: match a path against routes.js, load the page module, render it.
import { routes } from './routes.js';

const compiled = routes.map((r) => {
  const names = [];
  const pattern = r.path.replace(/:([a-z_]+)/g, (_, n) => { names.push(n); return '([^/]+)'; });
  return { ...r, re: new RegExp('^' + pattern + '/?$'), names };
});

export function match(pathname) {
  for (const r of compiled) {
    const m = r.re.exec(pathname);
    if (m) {
      const params = {};
      r.names.forEach((n, i) => { params[n] = decodeURIComponent(m[i + 1]); });
      return { route: r, params };
    }
  }
  return null;
}

let onChange = () => {};

export function navigate(url, { replace = false } = {}) {
  const target = new URL(url, location.href);
  if (target.href === location.href && !replace) return onChange();
  history[replace ? 'replaceState' : 'pushState']({}, '', target.pathname + target.search + target.hash);
  return onChange();
}

/** Change the URL's query without re-rendering the page (e.g. the insight explorer's ?q=). */
export function setQuery(params) {
  const url = new URL(location.href);
  url.search = new URLSearchParams(params).toString();
  history.replaceState({}, '', url.pathname + url.search);
}

export function start(handler) {
  onChange = handler;
  window.addEventListener('popstate', () => onChange());
  document.addEventListener('click', (e) => {
    const a = e.target.closest && e.target.closest('a[href]');
    if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    if (a.target || a.hasAttribute('download') || a.dataset.external !== undefined) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith('/api/') || url.pathname.startsWith('/static/')) return;
    e.preventDefault();
    navigate(url.href);
  });
  return onChange();
}

// The shell: who is signed in, the sidebar layout, and handing each URL to its page module.
import { api, setCsrf, setUnauthorizedHandler } from './api.js';
import { match, navigate, start } from './router.js';
import { nav } from './routes.js';
import { clear, h, icon } from './ui.js';

const root = document.getElementById('app');
export const session = { user: null, csrf: null, needsSetup: false, setupNeedsCode: false };
let cleanup = null;
let renderSeq = 0;

async function loadSession() {
  const me = await api('/api/auth/me', { quiet: true });
  session.user = me.user;
  session.needsSetup = me.needs_setup;
  session.setupNeedsCode = me.setup_needs_code;
  setCsrf(me.csrf_token);
}

/** Pages call this after signing in (or the first-run setup) with the API's answer. */
export function signedIn(answer) {
  session.user = answer.user;
  session.needsSetup = false;
  setCsrf(answer.csrf_token);
}

async function logout() {
  try { await api('/api/auth/logout', { method: 'POST' }); } finally {
    session.user = null;
    setCsrf(null);
    navigate('/login');
  }
}

function layout(active) {
  const main = h('main', { id: 'main', class: 'main', tabindex: '-1' });
  const links = nav.map((item) => h('li', {},
    h('a', { href: item.href, class: 'nav-link' + (item.id === active ? ' active' : ''),
      'aria-current': item.id === active ? 'page' : null }, icon(item.icon), h('span', {}, item.label))));
  const shell = h('div', { class: 'shell' },
    h('a', { class: 'skip-link', href: '#main', onclick: (e) => { e.preventDefault(); main.focus(); } }, 'Skip to content'),
    h('aside', { class: 'sidebar' },
      h('a', { href: '/', class: 'brand', 'aria-label': 'Sightline home' },
        h('img', { src: '/static/favicon.svg', alt: '', width: 24, height: 24 }), h('span', {}, 'Sightline')),
      h('nav', { 'aria-label': 'Main' }, h('ul', { class: 'nav' }, links)),
      h('div', { class: 'sidebar-foot' },
        h('span', { class: 'user-email', title: session.user?.email }, session.user?.email || ''),
        h('button', { class: 'btn btn-ghost btn-small', type: 'button', onclick: logout }, 'Log out'))),
    main);
  return { shell, main };
}

async function render() {
  const seq = ++renderSeq;
  if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; }
  const found = match(location.pathname);
  if (!found) {
    const { shell, main } = layout(null);
    clear(root, shell);
    main.append(h('div', { class: 'empty' }, h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '/' }, 'Back to the dashboards'))));
    return;
  }
  const { route, params } = found;
  if (session.needsSetup && route.page !== 'setup') return navigate('/setup', { replace: true });
  if (!session.user && !route.public) {
    const next = location.pathname + location.search;
    return navigate('/login' + (next !== '/' ? '?next=' + encodeURIComponent(next) : ''), { replace: true });
  }
  let main;
  if (route.bare) {
    main = h('main', { id: 'main', class: 'bare', tabindex: '-1' });
    clear(root, main);
  } else {
    const built = layout(route.nav);
    clear(root, built.shell);
    main = built.main;
  }
  root.removeAttribute('aria-busy');
  let mod;
  try {
    mod = await import(`./pages/${route.page}.js`);
  } catch (err) {
    main.append(h('p', { class: 'error' }, `Could not load this page: ${err.message}`));
    return;
  }
  if (seq !== renderSeq) return;
  const ctx = { params, query: new URLSearchParams(location.search), route, session, navigate,
    isCurrent: () => seq === renderSeq,
    setTitle: (t) => { document.title = t ? `${t} · Sightline` : 'Sightline'; } };
  ctx.setTitle('');
  try {
    cleanup = (await mod.render(main, ctx)) || null;
  } catch (err) {
    console.error(err);
    main.append(h('p', { class: 'error', role: 'alert' }, `Something went wrong: ${err.message}`));
  }
}

async function boot() {
  setUnauthorizedHandler(() => {
    session.user = null;
    if (location.pathname !== '/login') navigate('/login?next=' + encodeURIComponent(location.pathname + location.search));
  });
  try {
    await loadSession();
  } catch (err) {
    clear(root, h('p', { class: 'error', role: 'alert' }, `Sightline is not answering (${err.message}). Reload to retry.`));
    return;
  }
  // Start fetching the charting library now; pages that draw charts wait for it.
  import('./charts.js').then((c) => c.loadPlotly()).catch(() => {});
  start(render);
}

boot();

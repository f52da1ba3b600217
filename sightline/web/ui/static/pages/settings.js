// Set-up: the project token and this server's address, copy-paste snippets for the PostHog SDKs,
// and a check that polls until the first new event arrives.
import { api, project } from '../api.js';
import { h, pageHeader } from '../ui.js';
import { codeBlock, currentProject, installSnippets, snippetTabs } from './settings_snippets.js';

const POLL_MS = 2000;

export async function render(main, ctx) {
  ctx.setTitle('Set-up');
  const proj = await currentProject();
  const host = location.origin;
  const status = h('div', { class: 'first-event waiting', id: 'first-event-status', role: 'status', 'aria-live': 'polite',
    dataset: { state: 'waiting' } }, h('span', { class: 'pulse', 'aria-hidden': 'true' }),
  h('span', {}, 'Waiting for the first event… send one with any snippet below; this updates by itself.'));

  main.append(pageHeader('Set-up'), h('div', { class: 'stack' },
    h('section', { class: 'card setup-keys', 'aria-labelledby': 'setup-keys-h' },
      h('h2', { id: 'setup-keys-h' }, 'Your project'),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Project token'), h('dd', {}, h('code', { id: 'project-token' }, proj.api_token),
          h('span', { class: 'muted small' }, ' public: safe to ship in web pages and apps; it can only send events')),
        h('dt', {}, 'API host'), h('dd', {}, h('code', { id: 'api-host' }, host)),
        h('dt', {}, 'Project'), h('dd', {}, `${proj.name} (id ${proj.id}, time zone ${proj.timezone})`)),
      h('p', { class: 'muted small' }, 'Reading data over the HTTP API needs a secret key (phx_…): create one with ',
        h('code', {}, 'sightline keys create'), '.')),
    h('section', { class: 'card', 'aria-labelledby': 'setup-check-h' },
      h('h2', { id: 'setup-check-h' }, 'Is data arriving?'), status),
    h('section', { class: 'card', 'aria-labelledby': 'setup-sdk-h' },
      h('h2', { id: 'setup-sdk-h' }, 'Send events with a PostHog SDK'),
      h('p', { class: 'muted' }, 'Sightline speaks PostHog\'s protocol: point the unmodified SDK at this server.'),
      snippetTabs(installSnippets(proj.api_token, host), { label: 'SDK snippets' }),
      h('p', { class: 'muted small' }, 'Or try it from a terminal:'),
      codeBlock(`curl -X POST ${host}/batch/ -H 'Content-Type: application/json' \\\n  -d '{"api_key": "${proj.api_token}", "batch": [{"event": "my_first_event", "distinct_id": "user-42"}]}'`,
        { label: 'curl command', id: 'code-curl' }))));

  // the baseline: everything stored so far; then poll for anything stored after it
  let since = null;
  let baseline = false;  // true once we know what was stored before (possibly nothing)
  let timer = null;
  let stopped = false;
  const path = () => project('live_events/') + '?' + new URLSearchParams({ limit: '1', ...(since ? { since } : {}) });
  try {
    since = (await api(path(), { quiet: true })).latest;
    baseline = true;
  } catch { /* polled below */ }
  const poll = async () => {
    if (stopped || !ctx.isCurrent()) return;
    try {
      const r = await api(path(), { quiet: true });
      if (r.results.length && baseline) {
        const e = r.results[0];
        status.className = 'first-event received';
        status.dataset.state = 'received';
        status.replaceChildren(h('span', { class: 'ok-mark', 'aria-hidden': 'true' }, '✓'),
          h('span', {}, 'Event received: ', h('strong', {}, e.event), ` from ${e.distinct_id} at ${new Date(e.timestamp).toLocaleString()}. `,
            h('a', { href: '/events' }, 'See it in Live events →')));
        return;
      }
      if (!baseline) { since = r.latest; baseline = true; }
    } catch { /* keep polling */ }
    timer = setTimeout(poll, POLL_MS);
  };
  timer = setTimeout(poll, POLL_MS);
  return () => { stopped = true; clearTimeout(timer); };
}

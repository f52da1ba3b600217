// SDK snippets (posthog-js, posthog-python, posthog-node) with this server's origin and the
// project token filled in; used by the Set-up page and by each feature flag's page.
import { api, project } from '../api.js';
import { h, toast } from '../ui.js';

let projectPromise = null;
/** The current project (its `api_token`), fetched once per page load. */
export function currentProject() {
  if (!projectPromise) projectPromise = api(project(''), { quiet: true }).catch((e) => { projectPromise = null; throw e; });
  return projectPromise;
}

const q = (s) => `'${String(s).replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/** The install snippets: [{id, label, lang, code}] for the Set-up page. */
export function installSnippets(token, host = location.origin) {
  return [
    { id: 'js-npm', label: 'posthog-js (npm)', lang: 'js', install: 'npm install posthog-js', code:
`import posthog from 'posthog-js'

posthog.init(${q(token)}, {
  api_host: ${q(host)},
  person_profiles: 'identified_only',
})

posthog.capture('my_first_event', { source: 'set-up page' })` },
    { id: 'js-script', label: 'posthog-js (script tag)', lang: 'html', install: null, code:
`<!-- serve array.full.js from your own site: it is node_modules/posthog-js/dist/array.full.js -->
<script src="/assets/posthog/array.full.js"></script>
<script>
  posthog.init(${q(token)}, { api_host: ${q(host)} })
</script>` },
    { id: 'python', label: 'posthog-python', lang: 'python', install: 'pip install posthog', code:
`from posthog import Posthog

posthog = Posthog(${q(token)}, host=${q(host)})

posthog.capture('my_first_event', distinct_id='user-42', properties={'source': 'set-up page'})
posthog.shutdown()  # flush before the script exits` },
    { id: 'node', label: 'posthog-node', lang: 'js', install: 'npm install posthog-node', code:
`import { PostHog } from 'posthog-node'

const client = new PostHog(${q(token)}, { host: ${q(host)} })

client.capture({ distinctId: 'user-42', event: 'my_first_event', properties: { source: 'set-up page' } })
await client.shutdown() // flush before exiting` },
  ];
}

/** How to read one flag in each SDK. */
export function flagSnippets(flag, token, host = location.origin) {
  const key = flag.key;
  const multi = (flag.filters?.multivariate?.variants || []).length > 0;
  const first = multi ? flag.filters.multivariate.variants.find((v) => v.key !== 'control')?.key || 'test' : null;
  const hasPayload = Object.keys(flag.filters?.payloads || {}).length > 0;
  const jsCheck = multi
    ? `posthog.onFeatureFlags(() => {
  if (posthog.getFeatureFlag(${q(key)}) === ${q(first)}) {
    // show the ${first} variant
  }${hasPayload ? `\n  const payload = posthog.getFeatureFlagPayload(${q(key)})` : ''}
})`
    : `posthog.onFeatureFlags(() => {
  if (posthog.isFeatureEnabled(${q(key)})) {
    // the new behaviour
  }${hasPayload ? `\n  const payload = posthog.getFeatureFlagPayload(${q(key)})` : ''}
})`;
  return [
    { id: 'flag-js', label: 'posthog-js', lang: 'js', code:
`import posthog from 'posthog-js'

posthog.init(${q(token)}, { api_host: ${q(host)} })

${jsCheck}` },
    { id: 'flag-python', label: 'posthog-python', lang: 'python', code:
`from posthog import Posthog

posthog = Posthog(${q(token)}, host=${q(host)})

${multi ? `variant = posthog.get_feature_flag(${q(key)}, 'user-42')
if variant == ${q(first)}:
    ...` : `if posthog.feature_enabled(${q(key)}, 'user-42'):
    ...`}${hasPayload ? `\npayload = posthog.get_feature_flag_payload(${q(key)}, 'user-42')` : ''}` },
    { id: 'flag-node', label: 'posthog-node', lang: 'js', code:
`import { PostHog } from 'posthog-node'

const client = new PostHog(${q(token)}, { host: ${q(host)} })

${multi ? `const variant = await client.getFeatureFlag(${q(key)}, 'user-42')
if (variant === ${q(first)}) {
  // ...
}` : `if (await client.isFeatureEnabled(${q(key)}, 'user-42')) {
  // ...
}`}${hasPayload ? `\nconst payload = await client.getFeatureFlagPayload(${q(key)}, 'user-42')` : ''}` },
  ];
}

/** A <pre><code> block with a "Copy" button. */
export function codeBlock(code, { label = 'code', id } = {}) {
  const pre = h('pre', { class: 'code', id, tabindex: '0', 'aria-label': label }, h('code', {}, code));
  const copy = h('button', { class: 'btn btn-small copy-btn', type: 'button', 'aria-label': `Copy ${label}`,
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(code);
        toast('Copied to the clipboard.');
      } catch {
        const range = document.createRange();
        range.selectNodeContents(pre);
        const sel = getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        toast('Press Ctrl+C (⌘C) to copy the selected code.');
      }
    } }, 'Copy');
  return h('div', { class: 'code-wrap' }, copy, pre);
}

/** Tabs (one per snippet) over code blocks; arrow keys move between tabs. */
export function snippetTabs(snippets, { label = 'SDK' } = {}) {
  const tabs = h('div', { class: 'kind-tabs snippet-tabs', role: 'tablist', 'aria-label': label });
  const panels = h('div', {});
  const select = (i, focus = false) => {
    [...tabs.children].forEach((t, j) => {
      t.setAttribute('aria-selected', String(i === j));
      t.tabIndex = i === j ? 0 : -1;
      panels.children[j].hidden = i !== j;
    });
    if (focus) tabs.children[i].focus();
  };
  snippets.forEach((s, i) => {
    tabs.append(h('button', { type: 'button', role: 'tab', id: `tab-${s.id}`, 'aria-controls': `panel-${s.id}`,
      onclick: () => select(i),
      onkeydown: (e) => {
        const n = snippets.length;
        const j = e.key === 'ArrowRight' ? (i + 1) % n : e.key === 'ArrowLeft' ? (i + n - 1) % n : -1;
        if (j >= 0) { e.preventDefault(); select(j, true); }
      } }, s.label));
    panels.append(h('div', { role: 'tabpanel', id: `panel-${s.id}`, 'aria-labelledby': `tab-${s.id}`, class: 'snippet' },
      s.install ? codeBlock(s.install, { label: `${s.label} install command` }) : null,
      codeBlock(s.code, { label: `${s.label} code`, id: `code-${s.id}` })));
  });
  select(0);
  return h('div', { class: 'snippets' }, tabs, panels);
}

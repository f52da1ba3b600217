// Placeholder: the "Set-up" page is built by another module of the web app (replace this file).
import { empty, h, pageHeader } from '../ui.js';

export async function render(main, ctx) {
  ctx.setTitle('Set-up');
  main.append(pageHeader('Set-up'), empty('Install snippets for the SDKs, the project token and API keys.', h('p', { class: 'muted' }, 'Coming soon.')));
}

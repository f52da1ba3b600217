// Placeholder: the "Feature flags" page is built by another module of the web app (replace this file).
import { empty, h, pageHeader } from '../ui.js';

export async function render(main, ctx) {
  ctx.setTitle('Feature flags');
  main.append(pageHeader('Feature flags'), empty('Create, target and roll out flags.', h('p', { class: 'muted' }, 'Coming soon.')));
}

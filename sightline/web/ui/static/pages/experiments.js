// Placeholder: the "Experiments" page is built by another module of the web app (replace this file).
import { empty, h, pageHeader } from '../ui.js';

export async function render(main, ctx) {
  ctx.setTitle('Experiments');
  main.append(pageHeader('Experiments'), empty('A/B tests on feature flags with their results.', h('p', { class: 'muted' }, 'Coming soon.')));
}

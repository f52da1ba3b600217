// Placeholder: the "Live events" page is built by another module of the web app (replace this file).
import { empty, h, pageHeader } from '../ui.js';

export async function render(main, ctx) {
  ctx.setTitle('Live events');
  main.append(pageHeader('Live events'), empty('The newest events as they arrive, with their properties.', h('p', { class: 'muted' }, 'Coming soon.')));
}

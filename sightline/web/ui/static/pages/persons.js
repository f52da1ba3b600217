// Placeholder: the "Persons" page is built by another module of the web app (replace this file).
import { empty, h, pageHeader } from '../ui.js';

export async function render(main, ctx) {
  ctx.setTitle('Persons');
  main.append(pageHeader('Persons'), empty('Everyone who sent events: search, properties and their event history.', h('p', { class: 'muted' }, 'Coming soon.')));
}

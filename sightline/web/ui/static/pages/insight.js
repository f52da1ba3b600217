import { empty, pageHeader } from '../ui.js';

export async function render(main, ctx) {
  main.append(pageHeader('insight'), empty('Coming in a moment.'));
}

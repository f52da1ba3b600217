import { empty, pageHeader } from '../ui.js';

export async function render(main, ctx) {
  main.append(pageHeader('dashboard'), empty('Coming in a moment.'));
}

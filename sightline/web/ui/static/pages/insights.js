import { empty, pageHeader } from '../ui.js';

export async function render(main, ctx) {
  main.append(pageHeader('insights'), empty('Coming in a moment.'));
}

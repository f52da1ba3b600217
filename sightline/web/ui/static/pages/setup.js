import { api } from '../api.js';
import { signedIn } from '../app.js';
import { field, h } from '../ui.js';

export async function render(main, ctx) {
  ctx.setTitle('Welcome');
  if (!ctx.session.needsSetup) return ctx.navigate(ctx.session.user ? '/' : '/login', { replace: true });
  const email = h('input', { type: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
  const code = h('input', { type: 'text', autocomplete: 'one-time-code', spellcheck: 'false' });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const submit = h('button', { class: 'btn btn-primary btn-wide', type: 'submit' }, 'Create account');
  const form = h('form', { class: 'auth-card', 'aria-labelledby': 'setup-title' },
    h('div', { class: 'auth-brand' }, h('img', { src: '/static/favicon.svg', alt: '', width: 32, height: 32 }), 'Sightline'),
    h('h1', { id: 'setup-title' }, 'Create the owner account'),
    h('p', { class: 'muted' }, 'This is the first start of this Sightline. The account you create now owns it.'),
    field('Email', email), field('Password', password, { hint: 'At least 8 characters.' }),
    ctx.session.setupNeedsCode ? field('Setup code', code, { hint: 'Printed by `sightline serve` when it started (needed when you are not on the server itself).' }) : null,
    error, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      const answer = await api('/api/auth/setup', { method: 'POST', quiet: true,
        body: { email: email.value.trim(), password: password.value, ...(code.value ? { setup_code: code.value.trim() } : {}) } });
      signedIn(answer);
      ctx.navigate('/', { replace: true });
    } catch (err) {
      error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h('div', { class: 'auth-page' }, form));
  email.focus();
}

import { api } from '../api.js';
import { signedIn } from '../app.js';
import { field, h } from '../ui.js';

export async function render(main, ctx) {
  ctx.setTitle('Sign in');
  if (ctx.session.user) return ctx.navigate(safeNext(ctx.query.get('next')), { replace: true });
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true, autofocus: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const submit = h('button', { class: 'btn btn-primary btn-wide', type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'auth-card', 'aria-labelledby': 'login-title' },
    h('div', { class: 'auth-brand' }, h('img', { src: '/static/favicon.svg', alt: '', width: 32, height: 32 }), 'Sightline'),
    h('h1', { id: 'login-title' }, 'Sign in'),
    field('Email', email), field('Password', password), error, submit,
    h('p', { class: 'muted small' }, 'No account? Ask an owner, or run ', h('code', {}, 'sightline users create'), '.'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      const answer = await api('/api/auth/login', { method: 'POST', quiet: true,
        body: { email: email.value.trim(), password: password.value } });
      signedIn(answer);
      ctx.navigate(safeNext(ctx.query.get('next')), { replace: true });
    } catch (err) {
      error.textContent = err.message;
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  main.append(h('div', { class: 'auth-page' }, form));
  email.focus();
}

export function safeNext(next) {
  return next && next.startsWith('/') && !next.startsWith('//') ? next : '/';
}

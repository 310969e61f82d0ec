// Sign in with a user name and password, or with an API token (POST /login).
import { html, useState } from '../vendor/htm-preact-standalone.module.js';
import { api } from '../api.js';
import { Field, FormError, useFormState } from '../components/form.js';

export function LoginView({ onSignedIn, user }) {
  const [withToken, setWithToken] = useState(false);
  const form = useFormState(withToken ? ['token'] : ['user', 'password']);

  const submit = (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    const body = withToken
      ? { token: String(data.get('token') || '').trim() }
      : { user: String(data.get('user') || '').trim(), password: String(data.get('password') || '') };
    form.submit(async () => {
      await api.post('/login', body, { quiet401: true });
      onSignedIn(await api.get('/whoami', { quiet401: true }));
    });
  };

  return html`<section class="view login" data-view="login" data-ready="1">
    <form class="card login-card" data-form="login" onSubmit=${submit}>
      <h1>Ferryman</h1>
      <p class="muted">Sign in to the backup console.</p>
      ${user ? html`<p class="muted">Signed in as <b>${user.name}</b> (${user.role}).
        <a href="#/dashboard">Continue</a></p>` : null}
      <${FormError} error=${form.formError} />
      ${withToken
        ? html`<${Field} label="API token" name="token" error=${form.errors.token}>
            <input name="token" type="password" autocomplete="off" placeholder="fma_…" required autofocus />
          <//>`
        : html`<${Field} label="User" name="user" error=${form.errors.user}>
              <input name="user" autocomplete="username" required autofocus />
            <//>
            <${Field} label="Password" name="password" error=${form.errors.password}>
              <input name="password" type="password" autocomplete="current-password" required />
            <//>`}
      <button class="btn primary" type="submit" data-action="login" disabled=${form.busy}>
        ${form.busy ? 'Signing in…' : 'Sign in'}
      </button>
      <button type="button" class="link" data-action="login-mode" onClick=${() => setWithToken(!withToken)}>
        ${withToken ? 'Sign in with a user name and password' : 'Sign in with an API token'}
      </button>
    </form>
  </section>`;
}

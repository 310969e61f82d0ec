// The console's entry point: who is signed in (GET /whoami), the hash router
// and the page frame (navigation, live badge, notices).
import { html, render, useEffect, useState } from './vendor/htm-preact-standalone.module.js';
import { api, setUnauthorizedHandler } from './api.js';
import { stopLive, useLiveMode } from './live.js';
import { useNotice } from './notice.js';
import { can } from './roles.js';
import { navigate, parseHash } from './router.js';
import { LoginView } from './views/login.js';
import { DashboardView } from './views/dashboard.js';
import { ProxiesView } from './views/proxies.js';
import { RepositoriesView } from './views/repositories.js';
import { SharesView } from './views/shares.js';
import { JobsView } from './views/jobs.js';
import { SessionsView } from './views/sessions.js';
import { SessionView } from './views/session.js';
import { RestoreView } from './views/restore.js';
import { UsersView } from './views/users.js';

const NAV = [
  ['dashboard', 'Dashboard'],
  ['sessions', 'Sessions'],
  ['jobs', 'Jobs'],
  ['shares', 'Shares'],
  ['repositories', 'Repositories'],
  ['proxies', 'Proxies'],
  ['restore', 'Restore'],
  ['users', 'Users', 'admin'], // shown only to those who may use it
];

const VIEWS = {
  dashboard: DashboardView,
  proxies: ProxiesView,
  repositories: RepositoriesView,
  shares: SharesView,
  jobs: JobsView,
  sessions: SessionsView,
  session: SessionView,
  restore: RestoreView,
  users: UsersView,
};

function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const changed = () => setRoute(parseHash());
    window.addEventListener('hashchange', changed);
    return () => window.removeEventListener('hashchange', changed);
  }, []);
  return route;
}

function LiveBadge() {
  const mode = useLiveMode();
  if (mode === 'live') return html`<span class="live live-on" data-live="on" title="live updates">● live</span>`;
  if (mode === 'polling') {
    return html`<span class="live live-off" data-live="off">live updates off — refreshing every 5 s</span>`;
  }
  return null;
}

function Notice() {
  const notice = useNotice();
  if (!notice) return null;
  return html`<div class=${`notice notice-${notice.kind}`} data-notice=${notice.kind} role="status">${notice.text}</div>`;
}

function Frame({ user, route, onLogout, children }) {
  const active = route.name === 'session' ? 'sessions' : route.name;
  return html`<div class="frame">
    <header class="top">
      <a class="brand" href="#/dashboard">Ferryman</a>
      <nav>
        ${NAV.filter(([, , needs]) => !needs || can(user, needs)).map(
          ([name, title]) => html`<a href=${`#/${name}`} class=${active === name ? 'active' : ''}
            data-nav=${name}>${title}</a>`,
        )}
      </nav>
      <div class="top-right">
        <${LiveBadge} />
        <span class="who" data-user=${user.name} data-role=${user.role}>
          ${user.name} <span class="role">${user.role}</span>
        </span>
        <button type="button" class="btn small" data-action="logout" onClick=${onLogout}>Sign out</button>
      </div>
    </header>
    <${Notice} />
    <main>${children}</main>
  </div>`;
}

function App() {
  const route = useRoute();
  const [user, setUser] = useState(undefined); // undefined: asking; null: signed out
  const [returnTo, setReturnTo] = useState('#/dashboard');
  const [bootError, setBootError] = useState(null);

  const signedOut = () => {
    stopLive();
    setUser(null);
    if (parseHash().name !== 'login') {
      setReturnTo(location.hash && location.hash !== '#/login' ? location.hash : '#/dashboard');
      navigate('#/login');
    }
  };

  useEffect(() => {
    setUnauthorizedHandler(signedOut);
    api
      .get('/whoami', { quiet401: true })
      .then(setUser)
      .catch((error) => (error.status === 401 ? signedOut() : setBootError(error)));
  }, []);

  if (bootError) {
    return html`<section class="view booting" data-view="unavailable" data-ready="1">
      <div class="load-error" role="alert">${bootError.detail}</div>
      <button type="button" class="btn" onClick=${() => location.reload()}>Try again</button>
    </section>`;
  }
  if (user === undefined) return html`<p class="booting">Loading Ferryman…</p>`;

  if (!user || route.name === 'login') {
    const signedIn = (who) => {
      setUser(who);
      navigate(returnTo === '#/login' ? '#/dashboard' : returnTo);
    };
    return html`<${LoginView} onSignedIn=${signedIn} user=${user} />`;
  }

  const logout = async () => {
    try {
      await api.post('/logout');
    } catch {
      // Signed out on this side anyway.
    }
    stopLive();
    setUser(null);
    setReturnTo('#/dashboard'); // the next person starts at the dashboard
    navigate('#/login');
  };

  const View = VIEWS[route.name];
  return html`<${Frame} user=${user} route=${route} onLogout=${logout}>
    ${View
      ? html`<${View} key=${`${route.name}/${route.id ?? ''}`} user=${user} id=${route.id} query=${route.query} />`
      : html`<section class="view" data-view="not-found" data-ready="1"><h1>Not found</h1>
          <p>No page at ${location.hash}. <a href="#/dashboard">Go to the dashboard</a>.</p></section>`}
  <//>`;
}

render(html`<${App} />`, document.getElementById('app'));

// Dashboard: the last 24 h at a glance (GET /dashboard + GET /proxies), kept live.
import { html } from '../vendor/htm-preact-standalone.module.js';
import { api } from '../api.js';
import { useData } from '../components/data.js';
import { SlotBar } from '../components/progress.js';
import { SessionProgress, sessionTitle } from '../components/sessions.js';
import { StatusBadge } from '../components/status.js';
import { Table } from '../components/table.js';
import { ViewRoot } from '../components/view.js';
import * as fmt from '../format.js';
import { useLive } from '../live.js';
import { sessionHref } from '../router.js';

const STATUSES = ['running', 'success', 'warning', 'failed', 'stopped'];
async function loadDashboard() {
  const [dashboard, proxies, jobs] = await Promise.all([
    api.get('/dashboard'),
    api.get('/proxies'),
    api.get('/jobs'),
  ]);
  return { dashboard, proxies, jobs };
}

function Counts({ counts }) {
  return html`<div class="counts">
    ${STATUSES.map(
      (status) => html`<a class=${`count count-${status}`} href=${`#/sessions?status=${status}`} data-count=${status}>
        <span class="count-n">${counts[status] ?? 0}</span>
        <span class="count-label">${status}</span>
      </a>`,
    )}
  </div>`;
}

function Running({ sessions }) {
  if (!sessions.length) return html`<p class="empty">No session is running.</p>`;
  return html`<div class="running-list">
    ${sessions.map(
      (s) => html`<a class="running" href=${sessionHref(s.id)} data-session=${s.id}>
        <div class="running-head">
          <b>${sessionTitle(s)}</b> <span class="muted">#${s.id}</span>
          <span class="muted small">started ${fmt.ago(s.started || s.created)}</span>
        </div>
        <${SessionProgress} session=${s} />
      </a>`,
    )}
  </div>`;
}

function Proxies({ proxies }) {
  return html`<${Table}
    rows=${proxies}
    empty="No proxy yet."
    rowProps=${(p) => ({ 'data-proxy': p.name })}
    columns=${[
      { title: 'Proxy', render: (p) => html`<a href="#/proxies">${p.name}</a>` },
      { title: 'State', render: (p) => html`<${StatusBadge} status=${p.state} />` },
      { title: 'Slots', className: 'w-bar', render: (p) => html`<${SlotBar} used=${p.busy_slots} total=${p.slots} />` },
    ]}
  />`;
}

function Repositories({ repositories }) {
  return html`<${Table}
    rows=${repositories}
    empty="No repository yet."
    columns=${[
      { title: 'Repository', render: (r) => html`<a href="#/repositories">${r.name}</a>` },
      // bytes_stored is null until a task has reported the repository's size
      { title: 'Stored', className: 'num', render: (r) => fmt.bytes(r.bytes_stored) },
      { title: 'Points', className: 'num', render: (r) => fmt.count(r.points) },
      { title: 'Last backup', render: (r) => (r.last_backup ? fmt.ago(r.last_backup) : 'never') },
    ]}
  />`;
}

function Jobs({ jobs }) {
  return html`<${Table}
    rows=${jobs}
    empty="No job yet."
    rowProps=${(j) => ({ 'data-job-row': j.name })}
    columns=${[
      { title: 'Job', render: (j) => html`<a href="#/jobs">${j.name}</a>` },
      {
        title: 'Last session',
        render: (j) =>
          j.last_session
            ? html`<a href=${sessionHref(j.last_session.id)}><${StatusBadge} status=${j.last_session.status} /></a>
                <span class="muted small"> ${fmt.ago(j.last_session.created)}</span>`
            : html`<span class="muted">never run</span>`,
      },
      { title: 'Next run', render: (j) => (j.enabled ? (j.next_run ? fmt.time(j.next_run) : 'by hand') : 'disabled') },
    ]}
  />`;
}

function Attention({ items }) {
  return html`<${Table}
    rows=${items}
    empty="Nothing needs attention in the last 24 hours."
    rowProps=${(a) => ({ 'data-attention': a.session, key: a.session })}
    columns=${[
      { title: 'Session', render: (a) => html`<a href=${sessionHref(a.session)}>#${a.session}</a>` },
      { title: 'Job', render: (a) => a.job || '–' },
      { title: 'Status', render: (a) => html`<${StatusBadge} status=${a.status} />` },
      { title: 'Ended', render: (a) => fmt.ago(a.ended) },
      { title: 'Warnings', className: 'num', render: (a) => fmt.count(a.warnings) },
      { title: 'Reason', className: 'wrap', render: (a) => a.reason || '' },
    ]}
  />`;
}

export function DashboardView() {
  const { data, error, ready, reload, setData } = useData(loadDashboard);
  // Progress of the running sessions comes with the events; a session that
  // started or ended (or a proxy change) reads the whole dashboard again.
  useLive(['sessions', 'proxies'], reload, {
    onEvent: (topic, summaries) => {
      if (topic !== 'sessions' || !Array.isArray(summaries) || !data) return false;
      const running = summaries.filter((x) => x.status === 'running');
      const ids = (list) => list.map((x) => x.id).sort().join();
      if (ids(running) !== ids(data.dashboard.running || [])) return false;
      setData({ ...data, dashboard: { ...data.dashboard, running } });
      return true;
    },
  });
  const d = data && data.dashboard;
  const proxies = (data && data.proxies) || [];
  const summary = d && d.proxies;
  return html`<${ViewRoot} name="dashboard" ready=${ready} title="Dashboard" error=${error}>
    ${d
      ? html`
          <h2>Sessions, last 24 hours</h2>
          <${Counts} counts=${d.sessions_24h || {}} />
          <div class="grid-2">
            <div class="column">
            <div class="card">
              <h2>Running now</h2>
              <${Running} sessions=${d.running || []} />
            </div>
            <div class="card">
              <h2>Jobs</h2>
              <${Jobs} jobs=${(data && data.jobs) || []} />
            </div>
            </div>
            <div class="column">
            <div class="card">
              <h2>Proxies
                ${summary ? html`<span class="muted small">
                  ${summary.online} online · ${summary.slots_used}/${summary.slots_total} slots busy
                  ${summary.offline ? ` · ${summary.offline} offline` : ''}
                  ${summary.draining ? ` · ${summary.draining} draining` : ''}
                  ${summary.disabled ? ` · ${summary.disabled} disabled` : ''}</span>` : null}
              </h2>
              <${Proxies} proxies=${proxies} />
            </div>
            <div class="card">
              <h2>Repositories</h2>
              <${Repositories} repositories=${d.repositories || []} />
            </div>
            </div>
          </div>
          <div class="card">
            <h2>Needs attention <span class="muted small">failed or with warnings, last 24 hours</span></h2>
            <${Attention} items=${d.attention || []} />
          </div>`
      : null}
  <//>`;
}

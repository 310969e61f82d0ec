// Sessions: newest first, filtered by kind/job/status, kept live.
import { html, useState } from '../vendor/htm-preact-standalone.module.js';
import { api, query, ref } from '../api.js';
import { useData } from '../components/data.js';
import { SessionProgress, sessionDuration, summarize } from '../components/sessions.js';
import { StatusBadge } from '../components/status.js';
import { Table } from '../components/table.js';
import { ViewRoot } from '../components/view.js';
import * as fmt from '../format.js';
import { useLive } from '../live.js';
import { attempt } from '../notice.js';
import { can } from '../roles.js';
import { sessionHref } from '../router.js';

const KINDS = ['backup', 'restore', 'check', 'maintenance'];
const STATUSES = ['running', 'success', 'warning', 'failed', 'stopped'];
const LIMIT = 200;

export function SessionsView({ user, query: q }) {
  const [kind, setKind] = useState(q.kind || '');
  const [job, setJob] = useState(q.job || '');
  const [status, setStatus] = useState(q.status || '');
  const jobs = useData(() => api.get('/jobs'));
  const list = useData(() => api.get(`/sessions${query({ kind, job, limit: LIMIT })}`), [kind, job]);
  // The events carry summaries of recent sessions: they update the rows in place;
  // a session the list does not hold yet makes it read the list again.
  useLive(['sessions'], list.reload, {
    onEvent: (topic, summaries) => {
      if (!Array.isArray(summaries) || !list.data) return false;
      const known = new Set(list.data.map((x) => x.id));
      const wanted = summaries.filter((x) => (!kind || x.kind === kind) && (!job || x.job === job));
      if (wanted.some((x) => !known.has(x.id))) return false;
      const fresh = new Map(summaries.map((x) => [x.id, x]));
      list.setData(list.data.map((x) => (fresh.has(x.id) ? { ...x, ...fresh.get(x.id) } : x)));
      return true;
    },
  });
  const rows = (list.data || [])
    .filter((s) => !status || s.status === status)
    .reverse()
    .map(summarize);

  const select = (name, value, set, options, all) => html`<select name=${name} value=${value}
      onChange=${(e) => set(e.target.value)}>
    <option value="">${all}</option>
    ${options.map((o) => html`<option value=${o}>${o}</option>`)}
  </select>`;

  const columns = [
    { title: 'Session', render: (s) => html`<a href=${sessionHref(s.id)}>#${s.id}</a>` },
    { title: 'Kind', render: (s) => s.kind },
    { title: 'Job', render: (s) => s.job || '–' },
    { title: 'Trigger', render: (s) => s.trigger || '–' },
    { title: 'Status', render: (s) => html`<${StatusBadge} status=${s.status} />` },
    { title: 'Started', render: (s) => html`${fmt.time(s.started || s.created)}<div class="muted small">${fmt.ago(s.started || s.created)}</div>` },
    { title: 'Duration', className: 'num', render: sessionDuration },
    { title: 'Tasks', className: 'num', render: (s) => (s.tasks ? s.tasks.length : '–') },
    {
      title: 'Progress / reason',
      className: 'wrap w-wide',
      render: (s) => (s.status === 'running' ? html`<${SessionProgress} session=${s} />` : html`<span class="muted small">${s.reason || ''}</span>`),
    },
  ];
  const mayStop = (s) => s.status === 'running' && (s.kind === 'restore' ? can(user, 'restore') : can(user, 'run'));
  if (rows.some(mayStop)) {
    columns.push({
      title: '',
      className: 'actions',
      render: (s) =>
        mayStop(s)
          ? html`<button type="button" class="btn small danger" data-action="stop"
              onClick=${() => attempt(() => api.post(`/sessions/${ref(s.id)}/stop`), `session ${s.id} stopping`).then(list.reload)}>Stop</button>`
          : null,
    });
  }
  return html`<${ViewRoot} name="sessions" ready=${list.ready} title="Sessions" error=${list.error}
      actions=${html`<div class="row filters">
        ${select('kind', kind, setKind, KINDS, 'all kinds')}
        ${select('job', job, setJob, (jobs.data || []).map((j) => j.name), 'all jobs')}
        ${select('status', status, setStatus, STATUSES, 'any status')}
      </div>`}>
    <div class="card table-card">
      <${Table} rows=${rows} columns=${columns}
        empty=${kind || job || status ? 'No session matches.' : 'No session yet: run a job from the Jobs page.'}
        rowProps=${(s) => ({ 'data-session': s.id })} />
    </div>
    ${list.data && list.data.length >= LIMIT ? html`<p class="muted small">The newest ${LIMIT} sessions are shown.</p>` : null}
  <//>`;
}

// One session, live: header facts, per-task table (where each task ran and why),
// throughput chart, bottleneck, warnings (searchable), final report.
import { html, useRef, useState } from '../vendor/htm-preact-standalone.module.js';
import { api, ref } from '../api.js';
import { useData } from '../components/data.js';
import { ProgressBar } from '../components/progress.js';
import { fractionDone, isEnded, sessionDuration, sessionTitle } from '../components/sessions.js';
import { StatusBadge } from '../components/status.js';
import { Table } from '../components/table.js';
import { ThroughputChart } from '../components/throughput.js';
import { ViewRoot } from '../components/view.js';
import * as fmt from '../format.js';
import { useLive } from '../live.js';
import { attempt } from '../notice.js';
import { can } from '../roles.js';
import { Bottleneck, Fact, SessionReport } from './session-report.js';

function partitionText(task) {
  const p = task.partition;
  if (!p) return null;
  return html`<div class="muted small" title=${(p.paths || []).join('\n')}>part ${p.index + 1}/${p.count}</div>`;
}

function figures(task) {
  const ended = isEnded(task.state);
  const s = task.stats || {};
  const p = task.progress || {};
  if (ended && task.kind === 'restore') {
    return { files: s.files_restored, read: s.bytes_restored, sent: null, rate: s.duration ? (s.bytes_restored || 0) / s.duration : null };
  }
  return ended
    ? { files: s.files_read ?? s.files, read: s.bytes_read, sent: s.bytes_transferred, rate: s.duration ? (s.bytes_read || 0) / s.duration : null }
    : { files: p.files_read, scanned: p.files_scanned, read: p.bytes_read, sent: p.bytes_transferred, rate: p.rate };
}

function TaskTable({ tasks }) {
  const columns = [
    { title: 'Task', className: 'nowrap', render: (t) => html`#${t.id} <span class="muted">${t.kind}</span>` },
    {
      title: 'Share',
      className: 'w-share',
      render: (t) => html`${t.share || '–'}${partitionText(t)}
        ${t.state === 'running' && t.progress?.current_path
          ? html`<div class="muted small mono current-path" title=${t.progress.current_path}>${t.progress.current_path}</div>`
          : null}`,
    },
    {
      title: 'Proxy · why',
      className: 'wrap',
      render: (t) => html`<b>${t.proxy || '–'}</b>
        <div class="muted small">${t.reason || ''}${t.attempts > 1 ? ` (attempt ${t.attempts})` : ''}</div>
        ${t.passed_over && t.passed_over.length
          ? html`<details><summary>passed over ${t.passed_over.length}</summary>
              ${t.passed_over.map((o) => html`<div class="small"><b>${o.proxy}</b>: ${o.reason}</div>`)}
            </details>`
          : null}
        ${t.error ? html`<div class="field-error">${t.error}</div>` : null}`,
    },
    { title: 'State', render: (t) => html`<${StatusBadge} status=${t.state} />` },
    {
      title: 'Files',
      className: 'num',
      render: (t) => {
        const f = figures(t);
        return html`${fmt.count(f.files)}${f.scanned ? html`<div class="muted small">of ${fmt.count(f.scanned)} scanned</div>` : null}`;
      },
    },
    {
      title: 'Read · sent',
      className: 'num',
      render: (t) => {
        const f = figures(t);
        return html`${fmt.bytes(f.read)}${f.sent != null ? html`<div class="muted small">${fmt.bytes(f.sent)} sent</div>` : null}`;
      },
    },
    { title: 'Rate', className: 'num', render: (t) => fmt.rate(figures(t).rate) },
    {
      title: 'Time',
      className: 'w-bar',
      render: (t) => {
        if (t.state === 'running') {
          const eta = t.progress && t.progress.eta_seconds;
          return html`<${ProgressBar} value=${fractionDone(t.started, eta)}
            label=${eta != null ? `ETA ${fmt.duration(eta)}` : fmt.duration(fmt.secondsBetween(t.started))} />`;
        }
        if (isEnded(t.state)) return html`${fmt.duration(t.stats?.duration ?? fmt.secondsBetween(t.started, t.ended))}`;
        return html`<span class="muted">–</span>`;
      },
    },
    { title: 'Bottleneck', render: (t) => html`<${Bottleneck} stats=${t.stats} compact=${true} />` },
  ];
  return html`<${Table} rows=${tasks} columns=${columns} empty="No task yet."
    rowProps=${(t) => ({ 'data-task': t.id, 'data-task-state': t.state })} />`;
}

const WARNINGS_SHOWN = 500;
const CHART_EVERY_MS = 2000;

function Warnings({ tasks }) {
  const [search, setSearch] = useState('');
  const all = tasks.flatMap((t) => (t.warnings || []).map((w) => ({ ...w, task: t.id })));
  if (!all.length) return html`<p class="empty">No warnings.</p>`;
  const needle = search.trim().toLowerCase();
  const shown = needle
    ? all.filter((w) => `${w.path} ${w.reason}`.toLowerCase().includes(needle))
    : all;
  const listed = shown.slice(0, WARNINGS_SHOWN);
  return html`<div>
    <div class="row">
      <input name="warning-search" type="search" placeholder="Search paths and reasons…" value=${search}
        onInput=${(e) => setSearch(e.target.value)} />
      <span class="muted small">${shown.length} of ${all.length}
        ${shown.length > listed.length ? ` (the first ${listed.length} listed: search to narrow)` : ''}</span>
    </div>
    <table class="table">
      <thead><tr><th>Task</th><th>Path</th><th>Reason</th></tr></thead>
      <tbody>
        ${listed.map(
          (w, i) => html`<tr key=${i} data-warning=${w.path}>
            <td>#${w.task}</td><td class="mono wrap">${w.path}</td><td class="wrap">${w.reason}</td>
          </tr>`,
        )}
      </tbody>
    </table>
  </div>`;
}

export function SessionView({ id, user }) {
  const session = useData(() => api.get(`/sessions/${ref(id)}`), [id]);
  const throughput = useData(() => api.get(`/sessions/${ref(id)}/throughput`), [id]);
  const chartRead = useRef(0);
  const s = session.data;
  const running = s && s.status === 'running';

  const missing = session.error && session.error.status === 404;
  useLive(
    missing ? [] : ['session'],
    () => {
      session.reload();
      throughput.reload();
    },
    {
      session: missing ? null : id,
      onEvent: (topic, data) => {
        if (!data || String(data.id) !== String(id)) return false;
        session.setData(data);
        // The chart follows at most every 2 s, and once more when the session ends.
        if (isEnded(data.status) || Date.now() - chartRead.current >= CHART_EVERY_MS) {
          chartRead.current = Date.now();
          throughput.reload();
        }
        return true;
      },
    },
  );

  const mayStop = s && running && (s.kind === 'restore' ? can(user, 'restore') : can(user, 'run'));
  const stop = () => attempt(() => api.post(`/sessions/${ref(id)}/stop`), `session ${id} stopping`).then(session.reload);
  const error = missing ? { detail: `session ${id} not found` } : session.error;

  return html`<${ViewRoot} name="session" ready=${session.ready} error=${error}
      title=${html`Session #${id} ${s ? html`<span class="muted">${sessionTitle(s)}</span>` : null}
        ${s ? html`<${StatusBadge} status=${s.status} data-session-status=${s.status} />` : null}`}
      actions=${mayStop ? html`<button type="button" class="btn danger" data-action="stop" onClick=${stop}>Stop</button>` : null}>
    ${s
      ? html`
          <div class="card facts" data-report=${isEnded(s.status) ? s.status : ''}>
            <${Fact} label="Kind">${s.kind}<//>
            <${Fact} label="Job">${s.job || '–'}<//>
            <${Fact} label="Trigger">${s.trigger || '–'}<//>
            <${Fact} label="Started">${fmt.time(s.started || s.created)}<//>
            <${Fact} label="Ended">${s.ended ? fmt.time(s.ended) : running ? 'running' : '–'}<//>
            <${Fact} label="Duration">${sessionDuration(s)}<//>
            <${Fact} label="Tasks">${(s.tasks || []).filter((t) => isEnded(t.state)).length}/${(s.tasks || []).length} done<//>
            ${s.kind === 'restore'
              ? html`<div class="fact field-wide"><span>Restoring</span><b>
                  ${`point #${s.point ?? '–'} → ${s.target || '–'}${s.in_place ? ' (in place)' : ''} · `}
                  ${s.paths && s.paths.length ? s.paths.join(', ') : 'everything'}${` · existing files: ${s.overwrite || 'replace'}`}</b></div>`
              : null}
            ${isEnded(s.status) ? html`<${SessionReport} session=${s} />` : null}
            ${s.reason ? html`<div class="fact field-wide"><span>Reason</span><b>${s.reason}</b></div>` : null}
          </div>
          <div class="card table-card">
            <${TaskTable} tasks=${s.tasks || []} />
          </div>
          <div class="card">
            <h2>Throughput <span class="muted small">MB/s read, total and per proxy</span></h2>
            <${ThroughputChart} samples=${(throughput.data && throughput.data.samples) || []} ended=${isEnded(s.status)} />
          </div>
          <div class="card">
            <h2>Warnings</h2>
            <${Warnings} tasks=${s.tasks || []} />
          </div>`
      : null}
  <//>`;
}

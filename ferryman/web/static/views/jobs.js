// Jobs: list, create, edit (PATCH), remove; run now, enable/disable.
import { html } from '../vendor/htm-preact-standalone.module.js';
import { api, ref } from '../api.js';
import { EditRemove, FormCard, text, useEditor } from '../components/crud.js';
import { useData } from '../components/data.js';
import { Field, intOrNull, useFormState } from '../components/form.js';
import { StatusBadge } from '../components/status.js';
import { Table } from '../components/table.js';
import { ViewRoot } from '../components/view.js';
import * as fmt from '../format.js';
import { useLive } from '../live.js';
import { attempt } from '../notice.js';
import { can } from '../roles.js';
import { navigate, sessionHref } from '../router.js';

const KEEPS = ['keep_last', 'keep_daily', 'keep_weekly', 'keep_monthly'];
const FIELDS = ['name', 'shares', 'repository', 'schedule', ...KEEPS, 'proxies', 'priority', 'enabled'];

async function loadJobs() {
  const [jobs, shares, repositories] = await Promise.all([
    api.get('/jobs'),
    api.get('/shares'),
    api.get('/repositories'),
  ]);
  return { jobs, shares, repositories };
}

function keepText(job) {
  const parts = KEEPS.filter((k) => job[k]).map((k) => `${job[k]} ${k.replace('keep_', '')}`);
  return parts.length ? parts.join(', ') : 'keep all';
}

function JobForm({ editing, shares, repositories, onDone, onCancel }) {
  const form = useFormState(FIELDS);
  const job = editing.item || {};
  const isEdit = editing.mode === 'edit';
  const onSubmit = (data) =>
    form.submit(async () => {
      const body = { schedule: text(data, 'schedule') || null, priority: intOrNull(text(data, 'priority')) ?? 50 };
      for (const k of KEEPS) body[k] = intOrNull(text(data, k));
      if (isEdit) {
        await api.patch(`/jobs/${ref(job.name)}`, body);
      } else {
        const proxies = text(data, 'proxies');
        Object.assign(body, {
          name: text(data, 'name'),
          shares: data.getAll('shares').map(String),
          repository: text(data, 'repository'),
          proxies: !proxies || proxies === 'auto' ? 'auto' : proxies.split(',').map((s) => s.trim()).filter(Boolean),
          enabled: data.get('enabled') === 'on',
        });
        await api.post('/jobs', body);
      }
      onDone(isEdit ? `job '${job.name}' saved` : `job '${body.name}' created`);
    });
  return html`<${FormCard} kind="job" mode=${editing.mode} form=${form} onSubmit=${onSubmit} onCancel=${onCancel}
      title=${isEdit ? `Edit job ${job.name}` : 'New job'}>
    ${isEdit
      ? null
      : html`<${Field} label="Name" name="name" error=${form.errors.name}>
            <input name="name" required autocomplete="off" />
          <//>
          <${Field} label="Shares" name="shares" error=${form.errors.shares} hint="Ctrl-click for several">
            <select name="shares" multiple size=${Math.min(4, Math.max(2, shares.length))}>
              ${shares.map((s) => html`<option value=${s.name}>${s.name}</option>`)}
            </select>
          <//>
          <${Field} label="Repository" name="repository" error=${form.errors.repository}>
            <select name="repository">
              ${repositories.map((r, i) => html`<option value=${r.name} selected=${i === 0}>${r.name}</option>`)}
            </select>
          <//>`}
    <${Field} label="Schedule (cron)" name="schedule" error=${form.errors.schedule} hint="e.g. 0 2 * * * — empty: run by hand only">
      <input name="schedule" defaultValue=${job.schedule || ''} autocomplete="off" class="mono" />
    <//>
    ${KEEPS.map(
      (k) => html`<${Field} label=${k.replace('_', ' ')} name=${k} error=${form.errors[k]}>
        <input name=${k} type="number" min="1" defaultValue=${job[k] ?? ''} />
      <//>`,
    )}
    <${Field} label="Priority (0–100)" name="priority" error=${form.errors.priority}>
      <input name="priority" type="number" min="0" max="100" defaultValue=${job.priority ?? 50} />
    <//>
    ${isEdit
      ? null
      : html`<${Field} label="Proxies" name="proxies" error=${form.errors.proxies} hint="auto, or names separated by commas">
            <input name="proxies" defaultValue="auto" />
          <//>
          <label class="check"><input type="checkbox" name="enabled" defaultChecked=${true} /> enabled</label>`}
  <//>`;
}

export function JobsView({ user }) {
  const { data, error, ready, reload } = useData(loadJobs);
  const editor = useEditor(reload);
  useLive(['sessions'], reload);
  const jobs = (data && data.jobs) || [];
  const admin = can(user, 'admin');
  const operator = can(user, 'run');

  const run = async (job) => {
    const session = await attempt(() => api.post(`/jobs/${ref(job.name)}/run`));
    if (session) navigate(sessionHref(session.id));
  };
  const toggle = (job) =>
    attempt(
      () => api.post(`/jobs/${ref(job.name)}/${job.enabled ? 'disable' : 'enable'}`),
      `job '${job.name}' ${job.enabled ? 'disabled' : 'enabled'}`,
    ).then(reload);
  const remove = (job) => attempt(() => api.del(`/jobs/${ref(job.name)}`), `job '${job.name}' removed`).then(reload);

  const columns = [
    { title: 'Name', render: (j) => html`<b>${j.name}</b><div class="small"><a href=${`#/sessions?job=${encodeURIComponent(j.name)}`}>sessions</a></div>` },
    { title: 'Shares', className: 'wrap', render: (j) => j.shares.join(', ') },
    { title: 'Repository', render: (j) => j.repository },
    {
      title: 'Schedule',
      render: (j) => html`<span class="mono">${j.schedule || 'manual'}</span>
        ${j.next_run ? html`<div class="muted small">next ${fmt.time(j.next_run)}</div>` : null}`,
    },
    { title: 'Retention', render: keepText },
    { title: 'Proxies', render: (j) => (Array.isArray(j.proxies) ? j.proxies.join(', ') : j.proxies) },
    { title: 'Prio', className: 'num', render: (j) => j.priority },
    { title: 'State', render: (j) => html`<${StatusBadge} status=${j.enabled ? 'enabled' : 'disabled'} />` },
    {
      title: 'Last session',
      render: (j) =>
        j.last_session
          ? html`<a href=${sessionHref(j.last_session.id)}>#${j.last_session.id}</a>
              <${StatusBadge} status=${j.last_session.status} />
              <div class="muted small">${fmt.ago(j.last_session.created)}</div>`
          : html`<span class="muted">never</span>`,
    },
  ];
  if (operator) {
    columns.push({
      title: '',
      className: 'actions',
      render: (j) => html`
        <button type="button" class="btn small primary" data-action="run-job" data-job=${j.name}
          disabled=${!j.enabled} onClick=${() => run(j)}>Run now</button>
        <button type="button" class="btn small" data-action=${j.enabled ? 'disable' : 'enable'} data-job=${j.name}
          onClick=${() => toggle(j)}>${j.enabled ? 'Disable' : 'Enable'}</button>
        ${admin
          ? html`<${EditRemove} attrs=${{ 'data-job': j.name }} question=${`Remove job ${j.name}?`}
              onEdit=${() => editor.edit(j)} onRemove=${() => remove(j)} />`
          : null}`,
    });
  }

  return html`<${ViewRoot} name="jobs" ready=${ready} title="Jobs" error=${error}
      actions=${admin ? html`<button type="button" class="btn primary" data-action="create"
        onClick=${editor.create}>New job</button>` : null}>
    ${editor.editing && data
      ? html`<${JobForm} key=${editor.key} editing=${editor.editing}
          shares=${data.shares} repositories=${data.repositories} onDone=${editor.done} onCancel=${editor.close} />`
      : null}
    <div class="card table-card">
      <${Table} rows=${jobs} columns=${columns} empty="No job yet." rowProps=${(j) => ({ 'data-row': j.name })} />
    </div>
  <//>`;
}

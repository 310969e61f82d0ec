// Repositories: list with usage, create, edit (PATCH), remove; check (operator).
import { html } from '../vendor/htm-preact-standalone.module.js';
import { api, ref } from '../api.js';
import { EditRemove, FormCard, text, useEditor } from '../components/crud.js';
import { useData } from '../components/data.js';
import { Field, intOrNull, useFormState } from '../components/form.js';
import { Table } from '../components/table.js';
import { ViewRoot } from '../components/view.js';
import * as fmt from '../format.js';
import { attempt } from '../notice.js';
import { can } from '../roles.js';
import { navigate, sessionHref } from '../router.js';

const FIELDS = ['name', 'url', 'passphrase', 'access_key', 'secret_key', 'max_tasks'];

async function loadRepositories() {
  const [repositories, usage] = await Promise.all([
    api.get('/repositories'),
    api
      .get('/dashboard')
      .then((d) => d.repositories || [])
      .catch(() => []),
  ]);
  const byName = Object.fromEntries(usage.map((u) => [u.name, u]));
  return repositories.map((r) => ({ ...byName[r.name], ...r }));
}

function RepositoryForm({ editing, onDone, onCancel }) {
  const form = useFormState(FIELDS);
  const repo = editing.item || {};
  const isEdit = editing.mode === 'edit';
  const onSubmit = (data) =>
    form.submit(async () => {
      const body = { max_tasks: intOrNull(text(data, 'max_tasks')) ?? 8 };
      for (const secret of ['access_key', 'secret_key']) {
        if (text(data, secret)) body[secret] = text(data, secret);
      }
      if (isEdit) {
        await api.patch(`/repositories/${ref(repo.name)}`, body);
        onDone(`repository '${repo.name}' saved`);
      } else {
        Object.assign(body, { name: text(data, 'name'), url: text(data, 'url'), passphrase: String(data.get('passphrase') || '') });
        await api.post('/repositories', body);
        onDone(`repository '${body.name}' added`);
      }
    });
  return html`<${FormCard} kind="repository" mode=${editing.mode} form=${form} onSubmit=${onSubmit}
      onCancel=${onCancel} title=${isEdit ? `Edit repository ${repo.name}` : 'New repository'}>
    ${isEdit
      ? null
      : html`<${Field} label="Name" name="name" error=${form.errors.name}>
            <input name="name" required autocomplete="off" />
          <//>
          <${Field} label="Location" name="url" error=${form.errors.url} wide=${true}
            hint="an absolute path, or s3://bucket/prefix?endpoint=http://host:9000&region=…">
            <input name="url" required class="mono" autocomplete="off" />
          <//>
          <${Field} label="Passphrase" name="passphrase" error=${form.errors.passphrase}>
            <input name="passphrase" type="password" required autocomplete="new-password" />
          <//>`}
    <${Field} label="S3 access key" name="access_key" error=${form.errors.access_key}
      hint=${isEdit ? 'empty: unchanged' : 'S3 only; empty: the proxy\u2019s AWS environment'}>
      <input name="access_key" autocomplete="off" />
    <//>
    <${Field} label="S3 secret key" name="secret_key" error=${form.errors.secret_key}>
      <input name="secret_key" type="password" autocomplete="new-password" />
    <//>
    <${Field} label="Max tasks at once" name="max_tasks" error=${form.errors.max_tasks}>
      <input name="max_tasks" type="number" min="1" defaultValue=${repo.max_tasks ?? 8} />
    <//>
  <//>`;
}

export function RepositoriesView({ user }) {
  const { data, error, ready, reload } = useData(loadRepositories);
  const editor = useEditor(reload);
  const admin = can(user, 'admin');
  const operator = can(user, 'run');
  // check: verify the repository; gc: free what no restore point uses. Both are sessions to follow.
  const start = async (repo, what) => {
    const body = what === 'check' ? { read_data: false } : {};
    const session = await attempt(() => api.post(`/repositories/${ref(repo.name)}/${what}`, body));
    if (session) navigate(sessionHref(session.id));
  };
  const remove = (repo) =>
    attempt(() => api.del(`/repositories/${ref(repo.name)}`), `repository '${repo.name}' removed (its data stays)`).then(reload);

  const columns = [
    { title: 'Name', render: (r) => html`<b>${r.name}</b>` },
    { title: 'Location', className: 'wrap', render: (r) => html`<span class="mono">${r.url}</span>` },
    { title: 'Max tasks', className: 'num', render: (r) => r.max_tasks },
    { title: 'Keys', render: (r) => (r.has_credentials ? 'stored' : '–') },
    { title: 'Stored', className: 'num', render: (r) => fmt.bytes(r.bytes_stored) },
    { title: 'Points', className: 'num', render: (r) => fmt.count(r.points) },
    { title: 'Last backup', render: (r) => (r.last_backup ? fmt.ago(r.last_backup) : 'never') },
    { title: 'Created', render: (r) => fmt.time(r.created) },
  ];
  if (operator) {
    columns.push({
      title: '',
      className: 'actions',
      render: (r) => html`
        <button type="button" class="btn small" data-action="check" data-repository=${r.name}
          onClick=${() => start(r, 'check')}>Check</button>
        <button type="button" class="btn small" data-action="gc" data-repository=${r.name}
          title="garbage collection: free the space no restore point uses" onClick=${() => start(r, 'gc')}>GC</button>
        ${admin
          ? html`<${EditRemove} attrs=${{ 'data-repository': r.name }} question=${`Remove ${r.name}? (data stays)`}
              onEdit=${() => editor.edit(r)} onRemove=${() => remove(r)} />`
          : null}`,
    });
  }
  return html`<${ViewRoot} name="repositories" ready=${ready} title="Repositories" error=${error}
      actions=${admin ? html`<button type="button" class="btn primary" data-action="create"
        onClick=${editor.create}>New repository</button>` : null}>
    ${editor.editing
      ? html`<${RepositoryForm} key=${editor.key}
          editing=${editor.editing} onDone=${editor.done} onCancel=${editor.close} />`
      : null}
    <div class="card table-card">
      <${Table} rows=${data || []} columns=${columns} empty="No repository yet."
        rowProps=${(r) => ({ 'data-row': r.name })} />
    </div>
  <//>`;
}

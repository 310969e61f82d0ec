// Shares: list, create, edit (PATCH), remove.
import { html } from '../vendor/htm-preact-standalone.module.js';
import { api, ref } from '../api.js';
import { EditRemove, FormCard, text, useEditor } from '../components/crud.js';
import { useData } from '../components/data.js';
import { Field, lines, useFormState } from '../components/form.js';
import { Table } from '../components/table.js';
import { ViewRoot } from '../components/view.js';
import { attempt } from '../notice.js';
import { can } from '../roles.js';

const IO = ['lower', 'below-normal', 'normal', 'above-normal', 'faster', 'adaptive'];
const SECRETS = ['password', 'access_key', 'secret_key'];
const SNAPSHOT = ['snapshot', 'snapshot_create', 'snapshot_delete'];
const PROBE_SECONDS = 15;
const FIELDS = ['name', 'url', 'site', 'include', 'exclude', 'io_control', ...SECRETS, ...SNAPSHOT];

/** The snapshot setting as typed in the form (the API answers it parsed). */
function snapshotText(snapshot) {
  if (!snapshot) return '';
  if (snapshot.provider === 'btrfs') return snapshot.dir ? `btrfs:${snapshot.dir}` : 'btrfs';
  if (snapshot.provider === 'nas-dir') return `nas-dir:${snapshot.glob}`;
  return snapshot.provider;
}

function ShareForm({ editing, onDone, onCancel }) {
  const form = useFormState(FIELDS);
  const share = editing.item || {};
  const isEdit = editing.mode === 'edit';
  const onSubmit = (data) =>
    form.submit(async () => {
      const body = {
        site: text(data, 'site') || null,
        include: lines(data.get('include')),
        exclude: lines(data.get('exclude')),
        io_control: text(data, 'io_control') || 'normal',
      };
      for (const name of SECRETS) {
        const value = name === 'password' ? String(data.get(name) || '') : text(data, name);
        if (value) body[name] = value; // empty: unchanged (secrets are never shown)
      }
      const snapshot = { snapshot: text(data, 'snapshot'), create: text(data, 'snapshot_create'), del: text(data, 'snapshot_delete') };
      const was = share.snapshot || {};
      const changed =
        snapshot.snapshot !== snapshotText(share.snapshot) ||
        snapshot.create !== (was.create || '') ||
        snapshot.del !== (was.delete || '');
      if (!isEdit || changed) {
        if (snapshot.snapshot) {
          body.snapshot = snapshot.snapshot;
          if (snapshot.create) body.snapshot_create = snapshot.create;
          if (snapshot.del) body.snapshot_delete = snapshot.del;
        } else if (isEdit) {
          body.snapshot = null; // cleared: the share reads its location directly again
        }
      }
      if (isEdit) {
        await api.patch(`/shares/${ref(share.name)}`, body);
        onDone(`share '${share.name}' saved`);
      } else {
        Object.assign(body, { name: text(data, 'name'), url: text(data, 'url') });
        // probe: the server keeps the share only if a proxy can reach it (else 422, field "url").
        await api.post(`/shares?probe=${PROBE_SECONDS}`, body);
        onDone(`share '${body.name}' added`);
      }
    });
  return html`<${FormCard} kind="share" mode=${editing.mode} form=${form} onSubmit=${onSubmit}
      onCancel=${onCancel} title=${isEdit ? `Edit share ${share.name}` : 'New share'}>
    ${isEdit
      ? null
      : html`<${Field} label="Name" name="name" error=${form.errors.name}>
            <input name="name" required autocomplete="off" />
          <//>
          <${Field} label="Location" name="url" error=${form.errors.url} wide=${true}
            hint="a folder as the proxies see it (/srv/data), smb://user@host/share, or s3://bucket/prefix?endpoint=…">
            <input name="url" required class="mono" autocomplete="off" />
          <//>`}
    <${Field} label="Site" name="site" error=${form.errors.site} hint="optional: proxies of the same site are preferred">
      <input name="site" defaultValue=${share.site || ''} autocomplete="off" />
    <//>
    <${Field} label="I/O control" name="io_control" error=${form.errors.io_control}>
      <select name="io_control">
        ${IO.map((io) => html`<option value=${io} selected=${io === (share.io_control || 'normal')}>${io}</option>`)}
      </select>
    <//>
    <${Field} label="Include (one glob a line)" name="include" error=${form.errors.include}>
      <textarea name="include" class="mono" defaultValue=${(share.include || []).join('\n')}></textarea>
    <//>
    <${Field} label="Exclude (one glob a line)" name="exclude" error=${form.errors.exclude}>
      <textarea name="exclude" class="mono" defaultValue=${(share.exclude || []).join('\n')}></textarea>
    <//>
    <${Field} label="SMB password" name="password" error=${form.errors.password}
      hint=${isEdit ? 'empty: unchanged' : 'smb:// shares only'}>
      <input name="password" type="password" autocomplete="new-password" />
    <//>
    <${Field} label="S3 access key" name="access_key" error=${form.errors.access_key} hint="s3:// shares only">
      <input name="access_key" autocomplete="off" />
    <//>
    <${Field} label="S3 secret key" name="secret_key" error=${form.errors.secret_key}>
      <input name="secret_key" type="password" autocomplete="new-password" />
    <//>
    <${Field} label="Snapshot" name="snapshot" error=${form.errors.snapshot}
      hint="local shares: btrfs[:DIR], nas-dir:GLOB or command">
      <input name="snapshot" defaultValue=${snapshotText(share.snapshot)} autocomplete="off" class="mono" />
    <//>
    <${Field} label="Snapshot create command" name="snapshot_create" error=${form.errors.snapshot_create}>
      <input name="snapshot_create" defaultValue=${share.snapshot?.create || ''} class="mono" />
    <//>
    <${Field} label="Snapshot delete command" name="snapshot_delete" error=${form.errors.snapshot_delete}>
      <input name="snapshot_delete" defaultValue=${share.snapshot?.delete || ''} class="mono" />
    <//>
  <//>`;
}

export function SharesView({ user }) {
  const { data, error, ready, reload } = useData(() => api.get('/shares'));
  const editor = useEditor(reload);
  const admin = can(user, 'admin');
  const remove = (share) => attempt(() => api.del(`/shares/${ref(share.name)}`), `share '${share.name}' removed`).then(reload);
  const columns = [
    { title: 'Name', render: (s) => html`<b>${s.name}</b>` },
    { title: 'Location', className: 'wrap', render: (s) => html`<span class="mono">${s.url}</span>` },
    { title: 'Site', render: (s) => s.site || '–' },
    {
      title: 'Filters',
      className: 'wrap',
      render: (s) => [
        ...(s.include || []).map((g) => html`<span class="tag">+ ${g}</span>`),
        ...(s.exclude || []).map((g) => html`<span class="tag">− ${g}</span>`),
      ],
    },
    { title: 'I/O control', render: (s) => html`${s.io_control} <span class="muted small">(${s.max_proxies ?? '∞'} proxies)</span>` },
    { title: 'Snapshot', render: (s) => snapshotText(s.snapshot) || '–' },
    {
      title: '',
      className: 'actions',
      render: (s) => html`<a class="btn small" href=${`#/restore?share=${encodeURIComponent(s.name)}`}>Restore points</a>`,
    },
  ];
  if (admin) {
    columns.push({
      title: '',
      className: 'actions',
      render: (s) => html`<${EditRemove} attrs=${{ 'data-share': s.name }} question=${`Remove share ${s.name}?`}
        onEdit=${() => editor.edit(s)} onRemove=${() => remove(s)} />`,
    });
  }
  return html`<${ViewRoot} name="shares" ready=${ready} title="Shares" error=${error}
      actions=${admin ? html`<button type="button" class="btn primary" data-action="create"
        onClick=${editor.create}>New share</button>` : null}>
    ${editor.editing
      ? html`<${ShareForm} key=${editor.key}
          editing=${editor.editing} onDone=${editor.done} onCancel=${editor.close} />`
      : null}
    <div class="card table-card">
      <${Table} rows=${data || []} columns=${columns} empty="No share yet."
        rowProps=${(s) => ({ 'data-row': s.name })} />
    </div>
  <//>`;
}

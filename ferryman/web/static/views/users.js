// Console users (administrators only): list, add, set a password, remove.
// A new password or a removal ends that user's console sessions at once.
import { html } from '../vendor/htm-preact-standalone.module.js';
import { api, ref } from '../api.js';
import { ConfirmButton } from '../components/confirm.js';
import { FormCard, text, useEditor } from '../components/crud.js';
import { useData } from '../components/data.js';
import { Field, useFormState } from '../components/form.js';
import { Table } from '../components/table.js';
import { ViewRoot } from '../components/view.js';
import * as fmt from '../format.js';
import { attempt } from '../notice.js';
import { can } from '../roles.js';

const FIELDS = ['name', 'role', 'password'];
const ROLES = ['viewer', 'restore-operator', 'operator', 'administrator'];
const PASSWORD_HINT = '8 to 1024 characters';

function UserForm({ editing, onDone, onCancel }) {
  const form = useFormState(FIELDS);
  const isEdit = editing.mode === 'edit';
  const user = editing.item || {};
  const onSubmit = (data) =>
    form.submit(async () => {
      const password = String(data.get('password') || '');
      if (isEdit) {
        await api.post(`/users/${ref(user.name)}/password`, { password });
        onDone(`password of '${user.name}' changed; their console sessions ended`);
      } else {
        const body = { name: text(data, 'name'), role: text(data, 'role'), password };
        await api.post('/users', body);
        onDone(`user '${body.name}' added`);
      }
    });
  return html`<${FormCard} kind="user" mode=${editing.mode} form=${form} onSubmit=${onSubmit}
      onCancel=${onCancel} title=${isEdit ? `New password for ${user.name}` : 'New user'}
      submitLabel=${isEdit ? 'Set password' : null}>
    ${isEdit
      ? null
      : html`<${Field} label="Name" name="name" error=${form.errors.name}>
            <input name="name" required autocomplete="off" />
          <//>
          <${Field} label="Role" name="role" error=${form.errors.role}>
            <select name="role">
              ${ROLES.map((r) => html`<option value=${r} selected=${r === 'viewer'}>${r}</option>`)}
            </select>
          <//>`}
    <${Field} label="Password" name="password" error=${form.errors.password} hint=${PASSWORD_HINT}>
      <input name="password" type="password" required autocomplete="new-password" />
    <//>
  <//>`;
}

export function UsersView({ user }) {
  const admin = can(user, 'admin');
  const { data, error, ready, reload } = useData(() => (admin ? api.get('/users') : Promise.resolve([])));
  const editor = useEditor(reload);
  if (!admin) {
    return html`<${ViewRoot} name="users" ready=${true} title="Users">
      <p class="muted">Only administrators manage console users.</p>
    <//>`;
  }
  const remove = (u) => attempt(() => api.del(`/users/${ref(u.name)}`), `user '${u.name}' removed`).then(reload);
  const columns = [
    { title: 'Name', render: (u) => html`<b>${u.name}</b>${u.name === user.name ? ' (you)' : ''}` },
    { title: 'Role', render: (u) => u.role },
    { title: 'Last sign-in', render: (u) => (u.last_login ? fmt.ago(u.last_login) : 'never') },
    { title: 'Created', render: (u) => fmt.time(u.created) },
    {
      title: '',
      className: 'actions',
      render: (u) => html`<button type="button" class="btn small" data-action="password" data-user=${u.name}
          onClick=${() => editor.edit(u)}>Set password</button>
        <${ConfirmButton} action="delete" label="Remove" attrs=${{ 'data-user': u.name }}
          question=${u.name === user.name ? 'Remove yourself? You will be signed out.' : `Remove ${u.name}?`}
          onConfirm=${() => remove(u)} />`,
    },
  ];
  return html`<${ViewRoot} name="users" ready=${ready} title="Users" error=${error}
      actions=${html`<button type="button" class="btn primary" data-action="create"
        onClick=${editor.create}>New user</button>`}>
    ${editor.editing
      ? html`<${UserForm} key=${editor.key}
          editing=${editor.editing} onDone=${editor.done} onCancel=${editor.close} />`
      : null}
    <p class="muted">People who sign in to this console with a name and a password. Scripts use API
      tokens (<span class="mono">POST /api/v1/tokens</span>), which sign in here too.</p>
    <div class="card table-card">
      <${Table} rows=${data || []} columns=${columns} empty="No user yet: sign-in is by API token only."
        rowProps=${(u) => ({ 'data-row': u.name })} />
    </div>
  <//>`;
}

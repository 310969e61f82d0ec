// The create/edit form card shared by the repositories, shares and jobs pages.
import { html, useState } from '../vendor/htm-preact-standalone.module.js';
import { notify } from '../notice.js';
import { ConfirmButton } from './confirm.js';
import { FormError } from './form.js';

/**
 * Which form is open: null, {mode: 'create'} or {mode: 'edit', item}; `key`
 * remounts the form for another item. `done(message)` closes the form after a
 * save, tells the message and calls `onSaved` (the view's reload).
 */
export function useEditor(onSaved) {
  const [editing, setEditing] = useState(null);
  return {
    editing,
    key: editing ? editing.mode + (editing.item?.id ?? '') : '',
    create: () => setEditing({ mode: 'create', item: null }),
    edit: (item) => setEditing({ mode: 'edit', item }),
    close: () => setEditing(null),
    done: (message) => {
      setEditing(null);
      notify(message);
      onSaved();
    },
  };
}

/**
 * <form data-form=kind data-mode=create|edit>: the fields, the form-level error
 * and the buttons. `onSubmit(formData)` returns a promise (errors via `form`).
 */
export function FormCard({ kind, mode, title, form, onSubmit, onCancel, children, submitLabel }) {
  const submit = (event) => {
    event.preventDefault();
    onSubmit(new FormData(event.target));
  };
  return html`<form class="card" data-form=${kind} data-mode=${mode} onSubmit=${submit} novalidate>
    <div class="form-title"><h2>${title}</h2></div>
    <${FormError} error=${form.formError} />
    <div class="form-grid">${children}</div>
    <div class="form-actions">
      <button class="btn primary" type="submit" disabled=${form.busy}>
        ${form.busy ? 'Saving…' : submitLabel || (mode === 'edit' ? 'Save' : 'Create')}
      </button>
      <button class="btn" type="button" data-action="cancel" onClick=${onCancel}>Cancel</button>
    </div>
  </form>`;
}

/**
 * A list row's Edit button and Remove button (asks in place); `attrs` name the
 * row's item on both, e.g. {'data-job': name}.
 */
export function EditRemove({ attrs, question, onEdit, onRemove }) {
  return html`<button type="button" class="btn small" data-action="edit" ...${attrs} onClick=${onEdit}>Edit</button>
    <${ConfirmButton} action="delete" label="Remove" question=${question} attrs=${attrs} onConfirm=${onRemove} />`;
}

/** FormData text, trimmed; '' for a missing field. */
export const text = (data, name) => String(data.get(name) ?? '').trim();

// Form helpers: each input is named after its API field; a refused request's
// detail shows next to the field the server names (`field` in the 4xx answer,
// else a leading "field: " in the detail), otherwise at the top of the form.
import { html, useState } from '../vendor/htm-preact-standalone.module.js';

export function Field({ label, name, error, hint, children, wide = false }) {
  return html`<label class=${`field ${wide ? 'field-wide' : ''} ${error ? 'has-error' : ''}`}>
    <span class="field-label">${label}</span>
    ${children}
    ${hint && !error ? html`<span class="field-hint">${hint}</span>` : null}
    ${error ? html`<span class="field-error" data-error-for=${name}>${error}</span>` : null}
  </label>`;
}

export function FormError({ error }) {
  return error ? html`<div class="form-error" data-error="form" role="alert">${error}</div>` : null;
}

/** Which field a refused request blames, among the form's `fields`. */
export function blamedField(error, fields) {
  if (error && error.field && fields.includes(error.field)) return error.field;
  const match = /^([a-z_]+)(?:\.\d+)?: /.exec((error && error.detail) || '');
  if (match && fields.includes(match[1])) return match[1];
  // A taken name (409) is the name field's fault even when the server names no field.
  if (error && error.status === 409 && /already exists|name .*taken/i.test(error.detail) && fields.includes('name')) {
    return 'name';
  }
  return null;
}

/** State of a form's errors and pending submit. */
export function useFormState(fields) {
  const [errors, setErrors] = useState({});
  const [formError, setFormError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (action) => {
    setErrors({});
    setFormError(null);
    setBusy(true);
    try {
      return await action();
    } catch (error) {
      const field = blamedField(error, fields);
      const detail = (error && error.detail) || String(error);
      if (field) setErrors({ [field]: detail.replace(new RegExp(`^${field}: `), '') });
      else setFormError(detail);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { errors, formError, busy, submit, setFormError };
}

/** Lines of a textarea as a list (empty lines dropped). */
export const lines = (text) =>
  String(text || '')
    .split('\n')
    .map((s) => s.trim())
    .filter(Boolean);

/** An <input type=number> value as an integer, '' as null. */
export const intOrNull = (text) => (String(text).trim() === '' ? null : Number(text));

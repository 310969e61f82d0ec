import { html } from '../vendor/htm-preact-standalone.module.js';

/** The root element of every view: data-view, and data-ready="1" once its data is in. */
export function ViewRoot({ name, ready, title, actions = null, error = null, children }) {
  return html`<section class="view" data-view=${name} data-ready=${ready ? '1' : '0'}>
    <header class="view-head">
      <h1>${title}</h1>
      <div class="view-actions">${actions}</div>
    </header>
    ${error ? html`<div class="load-error" role="alert">${error.detail || String(error)}</div>` : null}
    ${children}
  </section>`;
}

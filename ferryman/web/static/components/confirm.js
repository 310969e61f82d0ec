import { html, useState } from '../vendor/htm-preact-standalone.module.js';

/**
 * A button that asks in place before acting: the first click shows
 * "Sure? [Yes] [Cancel]" (the yes button is `[data-action="confirm"]`).
 */
export function ConfirmButton({ action, label, question, onConfirm, className = 'danger', attrs = {} }) {
  const [asking, setAsking] = useState(false);
  if (!asking) {
    return html`<button type="button" class=${`btn small ${className}`} data-action=${action} ...${attrs}
      onClick=${() => setAsking(true)}>${label}</button>`;
  }
  return html`<span class="confirm">
    <span>${question}</span>
    <button type="button" class="btn small danger" data-action="confirm"
      onClick=${() => { setAsking(false); onConfirm(); }}>Yes</button>
    <button type="button" class="btn small" data-action="cancel" onClick=${() => setAsking(false)}>Cancel</button>
  </span>`;
}

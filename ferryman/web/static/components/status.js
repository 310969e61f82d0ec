import { html } from '../vendor/htm-preact-standalone.module.js';

/** A coloured status word: running, success, warning, failed, stopped, online, …
 * Other props (e.g. `data-session-status`) pass through to the element. */
export function StatusBadge({ status, ...attrs }) {
  const text = status || 'unknown';
  return html`<span class=${`badge badge-${text}`} data-status=${text} ...${attrs}>${text}</span>`;
}

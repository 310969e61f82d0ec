import { html } from '../vendor/htm-preact-standalone.module.js';

/** A coloured status word: running, success, warning, failed, stopped, online, … */
export function StatusBadge({ status }) {
  const text = status || 'unknown';
  return html`<span class=${`badge badge-${text}`} data-status=${text}>${text}</span>`;
}

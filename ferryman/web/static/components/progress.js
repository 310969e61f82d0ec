import { html } from '../vendor/htm-preact-standalone.module.js';

/** A bar from 0 to 1; `value` null draws a moving bar (progress of unknown length). */
export function ProgressBar({ value, label, tone = '' }) {
  const known = value !== null && value !== undefined && Number.isFinite(value);
  const width = known ? `${Math.max(0, Math.min(1, value)) * 100}%` : '100%';
  return html`<div class=${`bar ${known ? '' : 'bar-unknown'} ${tone}`} title=${label || ''}>
    <div class="bar-fill" style=${{ width }}></div>
    ${label ? html`<span class="bar-label">${label}</span>` : null}
  </div>`;
}

/** Busy slots out of slots, e.g. a proxy's load. */
export function SlotBar({ used, total }) {
  const u = Number(used) || 0;
  const t = Number(total) || 0;
  const tone = t && u >= t ? 'bar-full' : '';
  return html`<${ProgressBar} value=${t ? u / t : 0} label=${`${u}/${t} slots`} tone=${tone} />`;
}

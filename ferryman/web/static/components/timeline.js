// Restore points of a share on a horizontal time axis; a click picks one.
import { html } from '../vendor/htm-preact-standalone.module.js';
import * as fmt from '../format.js';

const LABEL_GAP = 9; // percent of the width between two labels

export function Timeline({ points, selected, onSelect }) {
  if (!points.length) return html`<p class="empty">No restore point for this share yet: run a job that backs it up.</p>`;
  const times = points.map((p) => fmt.toDate(p.time).getTime());
  const lo = Math.min(...times);
  const hi = Math.max(...times);
  const at = (t) => (hi === lo ? 50 : 3 + ((t - lo) / (hi - lo)) * 94);
  // Label points left to right when they are far enough from the last label.
  let lastLabel = -Infinity;
  const labelled = points.map((p, i) => {
    const pos = at(times[i]);
    if (pos - lastLabel < LABEL_GAP) return false;
    lastLabel = pos;
    return true;
  });
  return html`<div class="timeline" role="group" aria-label="restore points">
    <div class="timeline-axis"></div>
    ${points.map((p, i) => {
      const left = `${at(times[i])}%`;
      const isSelected = String(p.id) === String(selected);
      const label = labelled[i] || isSelected;
      return html`<button type="button" key=${p.id} class=${`timeline-point ${isSelected ? 'selected' : ''}`}
          style=${{ left }} data-point=${p.id} aria-pressed=${isSelected ? 'true' : 'false'}
          title=${`#${p.id} · ${fmt.time(p.time)} · ${fmt.count(p.files)} files · ${fmt.bytes(p.bytes)}`}
          aria-label=${`restore point #${p.id}, ${fmt.time(p.time)}`}
          onClick=${() => onSelect(p)}></button>
        ${label ? html`<span class=${`timeline-label ${isSelected ? 'selected' : ''}`} style=${{ left }}>${fmt.time(p.time).slice(5, 16)}</span>` : null}`;
    })}
  </div>`;
}

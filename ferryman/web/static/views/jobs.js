import { html } from '../vendor/htm-preact-standalone.module.js';
import { ViewRoot } from '../components/view.js';

export function JobsView() {
  return html`<${ViewRoot} name="jobs" ready=${true} title="Jobs"><p class="empty">Coming soon.</p><//>`;
}

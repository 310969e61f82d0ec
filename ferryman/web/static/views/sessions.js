import { html } from '../vendor/htm-preact-standalone.module.js';
import { ViewRoot } from '../components/view.js';

export function SessionsView() {
  return html`<${ViewRoot} name="sessions" ready=${true} title="Sessions"><p class="empty">Coming soon.</p><//>`;
}

import { html } from '../vendor/htm-preact-standalone.module.js';
import { ViewRoot } from '../components/view.js';

export function SessionView() {
  return html`<${ViewRoot} name="session" ready=${true} title="Session"><p class="empty">Coming soon.</p><//>`;
}

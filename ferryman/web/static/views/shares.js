import { html } from '../vendor/htm-preact-standalone.module.js';
import { ViewRoot } from '../components/view.js';

export function SharesView() {
  return html`<${ViewRoot} name="shares" ready=${true} title="Shares"><p class="empty">Coming soon.</p><//>`;
}

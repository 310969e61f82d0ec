import { html } from '../vendor/htm-preact-standalone.module.js';
import { ViewRoot } from '../components/view.js';

export function RestoreView() {
  return html`<${ViewRoot} name="restore" ready=${true} title="Restore"><p class="empty">Coming soon.</p><//>`;
}

import { html } from '../vendor/htm-preact-standalone.module.js';
import { ViewRoot } from '../components/view.js';

export function ProxiesView() {
  return html`<${ViewRoot} name="proxies" ready=${true} title="Proxies"><p class="empty">Coming soon.</p><//>`;
}

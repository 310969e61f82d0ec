import { html } from '../vendor/htm-preact-standalone.module.js';
import { ViewRoot } from '../components/view.js';

export function RepositoriesView() {
  return html`<${ViewRoot} name="repositories" ready=${true} title="Repositories"><p class="empty">Coming soon.</p><//>`;
}

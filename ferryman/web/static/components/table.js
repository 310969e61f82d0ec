import { html } from '../vendor/htm-preact-standalone.module.js';

/**
 * A data table. columns: [{title, render(row), className?}]; rowProps(row)
 * gives each <tr> its attributes (data-*, key). `empty` is shown without rows.
 */
export function Table({ columns, rows, rowProps = () => ({}), empty = 'Nothing yet.', className = '' }) {
  if (!rows || !rows.length) return html`<p class="empty">${empty}</p>`;
  return html`<table class=${`table ${className}`}>
    <thead>
      <tr>${columns.map((c) => html`<th class=${c.className || ''}>${c.title}</th>`)}</tr>
    </thead>
    <tbody>
      ${rows.map(
        (row, index) => html`<tr key=${row.id ?? index} ...${rowProps(row)}>
          ${columns.map((c) => html`<td class=${c.className || ''}>${c.render(row)}</td>`)}
        </tr>`,
      )}
    </tbody>
  </table>`;
}

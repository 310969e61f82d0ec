// A lazily loaded folder tree of a restore point (GET /points/{id}/ls), with
// checkboxes to pick what to restore; a click on a file's row lists its versions.
import { html } from '../vendor/htm-preact-standalone.module.js';
import * as fmt from '../format.js';

/** True when `path` or one of its parent folders is in `selected`. */
export function coveredBy(selected, path) {
  for (const chosen of selected) {
    if (chosen === path || path.startsWith(chosen.endsWith('/') ? chosen : `${chosen}/`)) return chosen;
  }
  return null;
}

function Row({ entry, depth, tree, selectable }) {
  const isDir = entry.type === 'dir';
  const open = tree.open.has(entry.path);
  const covering = coveredBy(tree.selected, entry.path);
  const inherited = covering && covering !== entry.path;
  const isFile = entry.type === 'file';
  // A file's row is its versions button (one element holds data-path, so a
  // locator for the path finds one thing); the checkbox keeps its own click.
  const showVersions = (event) => {
    if (event.target.tagName !== 'INPUT') tree.showVersions(entry.path);
  };
  // ... and a keyboard one: focusable, Enter or Space on the row itself.
  const keyVersions = (event) => {
    if (event.target !== event.currentTarget || (event.key !== 'Enter' && event.key !== ' ')) return;
    event.preventDefault();
    tree.showVersions(entry.path);
  };
  const fileProps = isFile
    ? { 'data-action': 'versions', role: 'button', tabIndex: 0, title: 'show the versions of this file',
        onClick: showVersions, onKeyDown: keyVersions }
    : {};
  return html`<div class=${`tree-row ${isFile ? 'tree-file' : ''}`} data-path=${entry.path} data-type=${entry.type}
      ...${fileProps} style=${{ paddingLeft: `${4 + depth * 18}px` }}>
      ${isDir
        ? html`<button type="button" class="tree-open" data-open=${entry.path} aria-expanded=${open ? 'true' : 'false'}
            onClick=${() => tree.toggle(entry.path)}>${open ? '▾' : '▸'}</button>`
        : html`<span class="tree-open"></span>`}
      ${selectable
        ? html`<input type="checkbox" data-select=${entry.path} checked=${Boolean(covering)} disabled=${Boolean(inherited)}
            onChange=${(e) => tree.select(entry.path, e.target.checked)} />`
        : null}
      <span class="tree-name mono" onClick=${isDir ? () => tree.toggle(entry.path) : null}
        style=${isDir ? { cursor: 'pointer' } : null}>
        ${isDir ? html`<b>${entry.name}/</b>` : entry.name}
        ${entry.link_target ? html`<span class="muted"> → ${entry.link_target}</span>` : null}
      </span>
      <span class="tree-meta">${isDir ? '' : fmt.bytes(entry.size)}</span>
      <span class="tree-meta">${fmt.time(entry.mtime)}</span>
      <span class="tree-meta mono">${entry.mode}</span>
      <span class="tree-versions">${isFile ? 'versions ›' : ''}</span>
    </div>
    ${isDir && open ? html`<${Children} path=${entry.path} depth=${depth + 1} tree=${tree} selectable=${selectable} />` : null}`;
}

/** A one-line row in place of a folder's entries (loading, error, empty). */
function Note({ depth, kind, text }) {
  return html`<div class=${`tree-row ${kind}`} style=${{ paddingLeft: `${22 + depth * 18}px` }}>${text}</div>`;
}

export function Children({ path, depth, tree, selectable }) {
  const listing = tree.listings[path];
  if (!listing || listing.loading) return html`<${Note} depth=${depth} kind="muted small" text="loading…" />`;
  if (listing.error) return html`<${Note} depth=${depth} kind="field-error" text=${listing.error} />`;
  if (!listing.entries.length) return html`<${Note} depth=${depth} kind="muted small" text="empty folder" />`;
  return listing.entries.map(
    (entry) => html`<${Row} key=${entry.path} entry=${entry} depth=${depth} tree=${tree} selectable=${selectable} />`,
  );
}

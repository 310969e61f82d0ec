// Restore: pick a share and a point on its timeline, browse the point's tree,
// see a file's versions, tick folders/files, choose target and overwrite policy,
// start, and follow the restore session.
import { html, useEffect, useState } from '../vendor/htm-preact-standalone.module.js';
import { ApiError, api, query, ref } from '../api.js';
import { Field, FormError, useFormState } from '../components/form.js';
import { useData } from '../components/data.js';
import { Table } from '../components/table.js';
import { Timeline } from '../components/timeline.js';
import { Children, coveredBy } from '../components/tree.js';
import { ViewRoot } from '../components/view.js';
import * as fmt from '../format.js';
import { can } from '../roles.js';
import { navigate, sessionHref } from '../router.js';

const OVERWRITE = [
  ['replace', 'replace existing files'],
  ['skip', 'skip existing files'],
  ['keep-both', 'keep both (restored copy renamed)'],
  ['if-newer', 'replace if the backup is newer'],
];

function useTree(point) {
  const [listings, setListings] = useState({});
  const [open, setOpen] = useState(new Set());
  const [selected, setSelected] = useState(new Set());
  const [versionsPanel, setVersions] = useState(null);

  const load = async (path) => {
    setListings((old) => ({ ...old, [path]: { loading: true } }));
    try {
      const entries = await api.get(`/points/${ref(point.id)}/ls${query({ path })}`);
      setListings((old) => ({ ...old, [path]: { entries } }));
    } catch (error) {
      const detail = error.status === 403 ? 'Browsing a restore point needs the restore-operator role.' : error.detail;
      setListings((old) => ({ ...old, [path]: { error: detail } }));
    }
  };

  useEffect(() => {
    setListings({});
    setOpen(new Set());
    setSelected(new Set());
    setVersions(null);
    if (point) load('/');
  }, [point && point.id]);

  return {
    listings,
    open,
    selected,
    versionsPanel,
    toggle(path) {
      const next = new Set(open);
      if (next.has(path)) next.delete(path);
      else {
        next.add(path);
        if (!listings[path] || listings[path].error) load(path);
      }
      setOpen(next);
    },
    select(path, on) {
      const next = new Set([...selected].filter((p) => !(on && coveredBy(new Set([path]), p))));
      if (on) next.add(path);
      else next.delete(path);
      setSelected(next);
    },
    async showVersions(path) {
      setVersions({ path, loading: true });
      try {
        const list = await api.get(`/versions${query({ share: point.share, path })}`);
        setVersions({ path, list });
      } catch (error) {
        setVersions({ path, error: error.detail });
      }
    },
    closeVersions: () => setVersions(null),
  };
}

function Versions({ state, onPick, onClose }) {
  return html`<div class="card" data-versions=${state.path}>
    <div class="form-title"><h2>Versions of <span class="mono">${state.path}</span></h2>
      <button type="button" class="btn small" onClick=${onClose}>Close</button></div>
    ${state.loading ? html`<p class="muted">loading…</p>` : null}
    ${state.error ? html`<div class="form-error">${state.error}</div>` : null}
    ${state.list
      ? html`<${Table} rows=${state.list.slice().reverse()} empty="No version."
          rowProps=${(v) => ({ 'data-version': v.point, key: v.point })}
          columns=${[
            { title: 'Point', render: (v) => html`<button type="button" class="link" onClick=${() => onPick(v.point)}>#${v.point}</button>` },
            { title: 'Backed up', render: (v) => fmt.time(v.time) },
            { title: 'Size', className: 'num', render: (v) => (v.type === 'file' ? fmt.bytes(v.size) : v.type) },
            { title: 'Modified', render: (v) => fmt.time(v.mtime) },
            { title: '', render: (v) => (v.changed ? html`<span class="tag">changed</span>` : '') },
          ]} />`
      : null}
  </div>`;
}

function RestoreForm({ point, tree }) {
  const form = useFormState(['to', 'overwrite', 'paths', 'in_place', 'point']);
  const [inPlace, setInPlace] = useState(false);
  const paths = [...tree.selected].filter((p) => coveredBy(tree.selected, p) === p);
  const submit = (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    const body = { point: point.id, paths, overwrite: String(data.get('overwrite') || 'replace') };
    if (inPlace) body.in_place = true;
    else body.to = String(data.get('to') || '').trim();
    form.submit(async () => {
      if (!inPlace && !body.to) throw new ApiError(0, 'give a target folder, or restore in place', 'to');
      const session = await api.post('/restores', body);
      navigate(sessionHref(session.id));
    });
  };
  return html`<form class="card" data-form="restore" onSubmit=${submit} novalidate>
    <div class="form-title"><h2>Restore</h2></div>
    <p class="small">${paths.length
      ? html`${paths.length} selected: <span class="mono">${paths.join(', ')}</span>`
      : html`Nothing ticked: the <b>whole share</b> is restored.`}</p>
    <${FormError} error=${form.formError} />
    <div class="form-grid">
      <${Field} label="Restore to (folder)" name="to" error=${form.errors.to} wide=${true}
        hint="an absolute path as the proxy sees it, or an s3:// / smb:// target">
        <input name="to" class="mono" disabled=${inPlace} autocomplete="off" placeholder="/srv/restore" />
      <//>
      <label class="check"><input type="checkbox" name="in_place" checked=${inPlace}
        onChange=${(e) => setInPlace(e.target.checked)} /> in place (back to the share's location)</label>
      <${Field} label="Existing files" name="overwrite" error=${form.errors.overwrite}>
        <select name="overwrite">
          ${OVERWRITE.map(([value, label]) => html`<option value=${value}>${label}</option>`)}
        </select>
      <//>
    </div>
    <div class="form-actions">
      <button type="submit" class="btn primary" data-action="restore-start" disabled=${form.busy}>
        ${form.busy ? 'Starting…' : 'Start restore'}
      </button>
    </div>
  </form>`;
}

export function RestoreView({ user, query: q }) {
  const shares = useData(() => api.get('/shares'));
  const [share, setShare] = useState(q.share || '');
  const [pointId, setPointId] = useState(q.point || null);
  const points = useData(() => (share ? api.get(`/points${query({ share })}`) : Promise.resolve([])), [share]);
  const mayRestore = can(user, 'restore');

  // #/restore?point=ID (from a session report): find its share.
  useEffect(() => {
    if (share || !pointId) return;
    api.get(`/points/${ref(pointId)}`).then((p) => setShare(p.share)).catch(() => setPointId(null));
  }, []);

  const list = points.data || [];
  const point = list.find((p) => String(p.id) === String(pointId)) || null;
  // The newest point is picked when the share changes and none is asked for.
  useEffect(() => {
    if (list.length && !point) setPointId(list[list.length - 1].id);
  }, [points.data]);
  useEffect(() => {
    const hash = `#/restore${query({ share, point: point ? point.id : '' })}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }, [share, point && point.id]);

  const tree = useTree(point);
  const ready = shares.ready && (!share || points.ready);

  return html`<${ViewRoot} name="restore" ready=${ready} title="Restore" error=${shares.error || points.error}>
    <div class="card">
      <div class="row">
        <label class="check">Share
          <select name="share" value=${share} onChange=${(e) => { setPointId(null); setShare(e.target.value); }}>
            <option value="">choose a share…</option>
            ${(shares.data || []).map((s) => html`<option value=${s.name}>${s.name}</option>`)}
          </select>
        </label>
        ${point
          ? html`<span class="muted small" data-selected-point=${point.id}>
              ${`Point #${point.id} · ${fmt.time(point.time)} · ${fmt.count(point.files)} files · ${fmt.bytes(point.bytes)} · job ${point.job || '–'}`}
              ${point.session ? html` · <a href=${sessionHref(point.session)}>session #${point.session}</a>` : ' · session pruned'}</span>`
          : null}
      </div>
      ${share ? html`<${Timeline} points=${list} selected=${point && point.id} onSelect=${(p) => setPointId(p.id)} />` : null}
      ${!shares.data || shares.data.length ? null : html`<p class="empty">No share yet.</p>`}
    </div>
    ${point
      ? html`<div class="split">
          <div class="card tree">
            <h2>Contents of point #${point.id}</h2>
            <${Children} path="/" depth=${0} tree=${tree} selectable=${mayRestore} />
          </div>
          <div>
            ${mayRestore ? html`<${RestoreForm} point=${point} tree=${tree} />` : null}
            ${tree.versionsPanel
              ? html`<${Versions} state=${tree.versionsPanel} onClose=${tree.closeVersions}
                  onPick=${(id) => setPointId(id)} />`
              : null}
          </div>
        </div>`
      : null}
  <//>`;
}

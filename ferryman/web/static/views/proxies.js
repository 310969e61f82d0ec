// Proxies: inventory, state, load, running tasks, connectivity probes; enable,
// disable, drain, remove; deploy a new one over SSH.
import { html, useState } from '../vendor/htm-preact-standalone.module.js';
import { api, ref } from '../api.js';
import { ConfirmButton } from '../components/confirm.js';
import { useData } from '../components/data.js';
import { SlotBar } from '../components/progress.js';
import { StatusBadge } from '../components/status.js';
import { Table } from '../components/table.js';
import { ViewRoot } from '../components/view.js';
import * as fmt from '../format.js';
import { useLive } from '../live.js';
import { attempt, notify } from '../notice.js';
import { can } from '../roles.js';
import { sessionHref } from '../router.js';
import { DeployForm } from './deploy.js';

async function loadProxies() {
  const [proxies, deployments] = await Promise.all([
    api.get('/proxies'),
    api.get('/deployments').catch(() => ({ deployments: [] })),
  ]);
  return { proxies, deployments: deployments.deployments || [], serverVersion: deployments.server_version };
}

function probeAge(probe) {
  if (probe.age_seconds != null) return fmt.agoSeconds(probe.age_seconds);
  return fmt.ago(probe.checked);
}

const PROBES_SHOWN = 5;

function Probe({ probe: p }) {
  return html`<div class="probe small" data-probe=${`${p.kind}:${p.target}`} data-ok=${p.ok ? '1' : '0'}
      title=${p.error || ''}>
    <span class=${`dot ${p.ok ? 'dot-ok' : 'dot-bad'}`}></span>
    <span class="muted">${p.kind}</span> <b>${p.target}</b>
    ${p.ok
      ? ` ${p.rtt_ms != null ? `${Number(p.rtt_ms).toFixed(1)} ms` : ''}${p.throughput ? ` · ${fmt.rate(p.throughput)}` : ''}`
      : html` <span class="field-error">${p.error || 'unreachable'}</span>`}
    <span class="muted"> · ${probeAge(p)}</span>
  </div>`;
}

/** Failing probes first; past a few, the rest fold away. */
function Probes({ probes }) {
  if (!probes || !probes.length) return html`<span class="muted">–</span>`;
  const sorted = [...probes].sort((a, b) => Number(a.ok) - Number(b.ok));
  const first = sorted.slice(0, PROBES_SHOWN);
  const rest = sorted.slice(PROBES_SHOWN);
  return html`<div class="probes">
    ${first.map((p) => html`<${Probe} probe=${p} />`)}
    ${rest.length
      ? html`<details><summary>${rest.length} more</summary>${rest.map((p) => html`<${Probe} probe=${p} />`)}</details>`
      : null}
  </div>`;
}

function RunningTasks({ tasks }) {
  if (!tasks || !tasks.length) return html`<span class="muted">–</span>`;
  return tasks.map((t) =>
    typeof t === 'object'
      ? html`<div class="small"><a href=${sessionHref(t.session)}>#${t.session}</a> task ${t.task}${t.share ? ` · ${t.share}` : ''}</div>`
      : html`<div class="small">task ${t}</div>`,
  );
}

export function ProxiesView({ user }) {
  const { data, error, ready, reload, setData } = useData(loadProxies);
  const [deploying, setDeploying] = useState(false);
  useLive(['proxies'], reload, {
    onEvent: (topic, proxies) => {
      if (!Array.isArray(proxies) || !data) return false;
      setData({ ...data, proxies });
      return true;
    },
  });
  const admin = can(user, 'admin');
  const deployedBy = Object.fromEntries(((data && data.deployments) || []).map((d) => [d.name, d]));

  const act = (proxy, action) =>
    attempt(() => api.post(`/proxies/${ref(proxy.name)}/${action}`), `proxy '${proxy.name}': ${action} done`).then(reload);
  const remove = (proxy) =>
    attempt(() => api.del(`/proxies/${ref(proxy.name)}`), `proxy '${proxy.name}' removed`).then(reload);

  const columns = [
    {
      title: 'Proxy',
      render: (p) => html`<b>${p.name}</b>${p.embedded ? html`<span class="tag">embedded</span>` : null}
        ${deployedBy[p.name] ? html`<span class="tag" title=${deployedBy[p.name].target}>deployed</span>` : null}
        <div class="muted small">${(p.addresses || []).join(', ')}</div>`,
    },
    { title: 'State', render: (p) => html`<${StatusBadge} status=${p.state} />` },
    { title: 'Site', render: (p) => p.site || '–' },
    {
      title: 'Version',
      render: (p) => html`${p.version || '–'}${deployedBy[p.name]?.outdated ? html`<span class="tag">outdated</span>` : null}`,
    },
    { title: 'Load', className: 'w-bar', render: (p) => html`<${SlotBar} used=${p.busy_slots} total=${p.slots} />` },
    { title: 'Running tasks', render: (p) => html`<${RunningTasks} tasks=${p.running_tasks} />` },
    { title: 'Heartbeat', render: (p) => html`<span class="small">${fmt.ago(p.last_heartbeat)}</span>` },
    { title: 'Probes', className: 'wrap', render: (p) => html`<${Probes} probes=${p.probes} />` },
  ];
  if (admin) {
    columns.push({
      title: '',
      className: 'actions',
      render: (p) => {
        const attrs = { 'data-proxy': p.name };
        return html`
          ${p.enabled === false
            ? html`<button type="button" class="btn small" data-action="enable" ...${attrs} onClick=${() => act(p, 'enable')}>Enable</button>`
            : html`<button type="button" class="btn small" data-action="drain" ...${attrs} title="no new tasks; running ones finish"
                  onClick=${() => act(p, 'drain')}>Drain</button>
                <button type="button" class="btn small" data-action="disable" ...${attrs} onClick=${() => act(p, 'disable')}>Disable</button>`}
          ${p.embedded
            ? null
            : html`<${ConfirmButton} action="delete" label="Remove" question=${`Remove ${p.name}? (certificate revoked)`}
                attrs=${attrs} onConfirm=${() => remove(p)} />`}`;
      },
    });
  }
  return html`<${ViewRoot} name="proxies" ready=${ready} title="Proxies" error=${error}
      actions=${admin ? html`<button type="button" class="btn primary" data-action="deploy"
        onClick=${() => setDeploying(true)}>Deploy a proxy</button>` : null}>
    ${deploying
      ? html`<${DeployForm} onCancel=${() => setDeploying(false)} onDone=${(message) => { notify(message); reload(); }} />`
      : null}
    <div class="card table-card">
      <${Table} rows=${(data && data.proxies) || []} columns=${columns} empty="No proxy."
        rowProps=${(p) => ({ 'data-row': p.name, 'data-proxy-state': p.state })} />
    </div>
  <//>`;
}

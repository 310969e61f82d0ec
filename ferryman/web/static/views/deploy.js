// The SSH deploy form of the proxies page: POST /proxies/deploy answers NDJSON
// step lines, shown as they arrive.
import { html, useState } from '../vendor/htm-preact-standalone.module.js';
import { request } from '../api.js';
import { FormCard, text } from '../components/crud.js';
import { Field, intOrNull, useFormState } from '../components/form.js';

const FIELDS = ['target', 'private_key', 'passphrase', 'password', 'name', 'site', 'slots', 'install_dir', 'server_url'];

export function stepLine(event) {
  const seconds = event.seconds != null ? `${Number(event.seconds).toFixed(2)}s` : '';
  if (event.event === 'step') {
    const head = `${String(event.step).padEnd(14)} ${seconds.padStart(7)}  ${event.detail || ''}`;
    return [head, ...(event.lines || [])].join('\n');
  }
  if (event.event === 'done') return `proxy ${event.proxy} deployed: version ${event.version}, ${event.service}, ${seconds}`;
  if (event.event === 'error') return `error: ${event.message}`;
  return JSON.stringify(event);
}

/** The JSON objects of an NDJSON answer, as their lines arrive (a line may span chunks). */
export async function* ndjson(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline).trim();
      buffer = buffer.slice(newline + 1);
      if (line) yield JSON.parse(line);
    }
    if (done) break;
  }
  if (buffer.trim()) yield JSON.parse(buffer);
}

export function DeployForm({ onDone, onCancel }) {
  const form = useFormState(FIELDS);
  const [withPassword, setWithPassword] = useState(false);
  const [log, setLog] = useState([]);
  const [outcome, setOutcome] = useState(null);

  const onSubmit = (data) =>
    form.submit(async () => {
      setLog([]);
      setOutcome(null);
      const body = {
        target: text(data, 'target'),
        trust_host_key: data.get('trust_host_key') === 'on',
        sudo: data.get('sudo') === 'on',
        force: data.get('force') === 'on',
        name: text(data, 'name') || null,
        site: text(data, 'site') || null,
        slots: intOrNull(text(data, 'slots')),
        install_dir: text(data, 'install_dir') || null,
        server_url: text(data, 'server_url') || null,
      };
      if (withPassword) body.password = String(data.get('password') || '');
      else {
        body.private_key = String(data.get('private_key') || '');
        body.passphrase = String(data.get('passphrase') || '') || null;
      }
      const response = await request('POST', '/proxies/deploy', body, { raw: true });
      const lines = [];
      for await (const event of ndjson(response)) {
        lines.push(stepLine(event));
        setLog([...lines]);
        if (event.event === 'done') {
          setOutcome('done');
          onDone(`proxy ${event.proxy} deployed`);
        }
        if (event.event === 'error') {
          setOutcome('error');
          form.setFormError(event.message);
        }
      }
    });

  return html`<${FormCard} kind="deploy" mode="create" form=${form} onSubmit=${onSubmit} onCancel=${onCancel}
      title="Deploy a proxy over SSH" submitLabel=${form.busy ? 'Deploying…' : 'Deploy'}>
    <${Field} label="Host" name="target" error=${form.errors.target} hint="ssh://user@host[:port]">
      <input name="target" required class="mono" placeholder="ssh://root@10.0.0.7" autocomplete="off" />
    <//>
    <${Field} label="Login" name="login">
      <select name="login" onChange=${(e) => setWithPassword(e.target.value === 'password')}>
        <option value="key">private key</option>
        <option value="password">password</option>
      </select>
    <//>
    ${withPassword
      ? html`<${Field} label="Password" name="password" error=${form.errors.password}>
          <input name="password" type="password" autocomplete="off" />
        <//>`
      : html`<${Field} label="Private key" name="private_key" error=${form.errors.private_key} wide=${true}
            hint="used for this deployment only, never stored">
            <textarea name="private_key" class="mono" placeholder="-----BEGIN OPENSSH PRIVATE KEY-----"></textarea>
          <//>
          <${Field} label="Key passphrase" name="passphrase" error=${form.errors.passphrase}>
            <input name="passphrase" type="password" autocomplete="off" />
          <//>`}
    <${Field} label="Proxy name" name="name" error=${form.errors.name} hint="default: the host name">
      <input name="name" autocomplete="off" />
    <//>
    <${Field} label="Site" name="site" error=${form.errors.site}><input name="site" autocomplete="off" /><//>
    <${Field} label="Task slots" name="slots" error=${form.errors.slots} hint="default: from the host's CPUs and memory">
      <input name="slots" type="number" min="1" />
    <//>
    <${Field} label="Install folder" name="install_dir" error=${form.errors.install_dir}>
      <input name="install_dir" class="mono" placeholder="/var/lib/ferryman-proxy" />
    <//>
    <${Field} label="Server URL seen from the host" name="server_url" error=${form.errors.server_url}>
      <input name="server_url" class="mono" placeholder="default: this server's address" />
    <//>
    <label class="check"><input type="checkbox" name="trust_host_key" /> trust a new host key</label>
    <label class="check"><input type="checkbox" name="sudo" /> use sudo</label>
    <label class="check"><input type="checkbox" name="force" /> override soft requirements</label>
    ${log.length
      ? html`<pre class=${`log field-wide ${outcome ? `log-${outcome}` : ''}`} data-deploy-log=${outcome || 'running'}>${log.join('\n')}</pre>`
      : null}
  <//>`;
}

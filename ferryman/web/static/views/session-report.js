// The final report of an ended session (totals, ratios, bottleneck) and the
// bottleneck bar of a task, from the engine's stage times in task stats.
import { html } from '../vendor/htm-preact-standalone.module.js';
import * as fmt from '../format.js';

const STAGES = [
  ['source', 'seconds_source_read', 'source read'],
  ['processing', 'seconds_processing', 'processing'],
  ['repository', 'seconds_repository_write', 'repository write'],
];

/** Time spent per stage, and which stage held the work back. */
export function Bottleneck({ stats, compact = false }) {
  if (!stats) return html`<span class="muted">–</span>`;
  const seconds = STAGES.map(([, key]) => Number(stats[key]) || 0);
  // Under a tenth of a second in all, the split says nothing: the word alone.
  const total = seconds.reduce((a, b) => a + b, 0);
  const sum = total >= 0.1 ? total : 0;
  if (!sum && !stats.bottleneck) return html`<span class="muted">–</span>`;
  const title = STAGES.map(([, , label], i) => `${label}: ${fmt.duration(seconds[i])}`).join('\n');
  return html`<div class="bottleneck" title=${title} data-bottleneck=${stats.bottleneck || ''}>
    <b>${stats.bottleneck || '–'}</b>
    ${sum
      ? html`<div class="stages">
          ${STAGES.map(([name], i) => html`<span class=${`stage-${name}`} style=${{ width: `${(seconds[i] / sum) * 100}%` }}></span>`)}
        </div>`
      : null}
    ${compact || !sum
      ? null
      : html`<div class="legend">
          ${STAGES.map(([name, , label], i) => html`<span><i class=${`stage-${name}`}></i>${label} ${fmt.duration(seconds[i])}</span>`)}
        </div>`}
  </div>`;
}

function sum(tasks, key) {
  return tasks.reduce((total, t) => total + (Number((t.stats || {})[key]) || 0), 0);
}

/** One labelled figure of a session's header card. */
export function Fact({ label, children }) {
  return html`<div class="fact"><span>${label}</span><b>${children}</b></div>`;
}

function BackupFacts({ tasks }) {
  const data = tasks.filter((t) => t.kind === 'backup');
  const read = sum(data, 'bytes_read');
  const fresh = sum(data, 'bytes_new');
  const sent = sum(data, 'bytes_transferred');
  const total = Object.fromEntries(STAGES.map(([, key]) => [key, sum(data, key)]));
  const slowest = STAGES.reduce((best, stage) => (total[stage[1]] > total[best[1]] ? stage : best), STAGES[0]);
  const stageTotal = STAGES.reduce((n, [, key]) => n + total[key], 0);
  return html`
    <${Fact} label="Files">${fmt.count(sum(data, 'files'))} <span class="muted small">(${fmt.count(sum(data, 'files_read'))} read)</span><//>
    <${Fact} label="Scanned">${fmt.bytes(sum(data, 'bytes_scanned') || sum(data, 'bytes'))}<//>
    <${Fact} label="Read">${fmt.bytes(read)}<//>
    <${Fact} label="New">${fmt.bytes(fresh)}<//>
    <${Fact} label="Transferred">${fmt.bytes(sent)}<//>
    <${Fact} label="Dedup ratio">${fresh ? fmt.ratio(read / fresh) : '–'}<//>
    <${Fact} label="Compression ratio">${sent ? fmt.ratio(fresh / sent) : '–'}<//>
    <div class="fact fact-3" data-report="bottleneck"><span>Bottleneck</span>
      <${Bottleneck} stats=${stageTotal ? { ...total, bottleneck: slowest[0] } : null} /></div>`;
}

function RestoreFacts({ tasks }) {
  return html`
    <${Fact} label="Files restored">${fmt.count(sum(tasks, 'files_restored'))}<//>
    <${Fact} label="Folders">${fmt.count(sum(tasks, 'dirs_restored'))}<//>
    <${Fact} label="Links">${fmt.count(sum(tasks, 'links_restored'))}<//>
    <${Fact} label="Bytes restored">${fmt.bytes(sum(tasks, 'bytes_restored'))}<//>
    <${Fact} label="Skipped">${fmt.count(sum(tasks, 'files_skipped'))}<//>`;
}

function CheckFacts({ tasks }) {
  const problems = tasks.flatMap((t) => [...((t.stats || {}).errors || []), ...((t.stats || {}).damaged || [])]);
  return html`
    <${Fact} label="Points checked">${fmt.count(sum(tasks, 'points_checked'))}<//>
    <${Fact} label="Packs checked">${fmt.count(sum(tasks, 'packs_checked'))}<//>
    <${Fact} label="Packs read">${fmt.count(sum(tasks, 'packs_read'))}<//>
    <${Fact} label="Blobs read">${fmt.count(sum(tasks, 'blobs_read'))}<//>
    <${Fact} label="Problems">${fmt.count(problems.length)}<//>
    ${problems.length
      ? html`<div class="fact field-wide"><span>Found</span>
          ${problems.slice(0, 20).map((p) => html`<div class="small mono">${typeof p === 'string' ? p : JSON.stringify(p)}</div>`)}
          ${problems.length > 20 ? html`<div class="small muted">… and ${problems.length - 20} more</div>` : null}</div>`
      : null}`;
}

function MaintenanceFacts({ tasks }) {
  const m = tasks.filter((t) => t.kind === 'maintenance');
  if (!m.length) return null;
  return html`
    <${Fact} label="Points removed">${fmt.count(sum(m, 'points_removed'))}<//>
    <${Fact} label="Packs deleted">${fmt.count(sum(m, 'packs_deleted'))}<//>
    <${Fact} label="Reclaimed">${fmt.bytes(sum(m, 'bytes_reclaimed'))}<//>`;
}

/** The figures of an ended session, as facts to add to the session's header card. */
export function SessionReport({ session }) {
  const tasks = session.tasks || [];
  return html`
    ${session.kind === 'restore' ? html`<${RestoreFacts} tasks=${tasks} />` : null}
    ${session.kind === 'backup' ? html`<${BackupFacts} tasks=${tasks} />` : null}
    ${session.kind === 'check' ? html`<${CheckFacts} tasks=${tasks} />` : null}
    <${MaintenanceFacts} tasks=${tasks} />
    ${session.restore_points && session.restore_points.length
      ? html`<${Fact} label="Restore points">${session.restore_points.map(
          (p) => html`<a href=${`#/restore?point=${p}`}>#${p}</a> `,
        )}<//>`
      : null}`;
}

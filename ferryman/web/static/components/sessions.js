// Pieces shared by the dashboard, the session list and the session page.
import { html } from '../vendor/htm-preact-standalone.module.js';
import * as fmt from '../format.js';
import { ProgressBar } from './progress.js';

const ENDED = ['success', 'warning', 'failed', 'stopped'];

export const isEnded = (state) => ENDED.includes(state);

/** A full session reduced to the summary the events stream sends (progress summed over running tasks). */
export function summarize(session) {
  if (session.progress) return session; // a summary already (events, /dashboard)
  const progress = { files_read: 0, bytes_read: 0, bytes_transferred: 0, rate: 0, eta_seconds: null };
  for (const task of session.tasks || []) {
    if (task.state !== 'running' || !task.progress) continue;
    const p = task.progress;
    progress.files_read += p.files_read || 0;
    progress.bytes_read += p.bytes_read || 0;
    progress.bytes_transferred += p.bytes_transferred || 0;
    progress.rate += p.rate || 0;
    if (p.eta_seconds !== null && p.eta_seconds !== undefined) {
      progress.eta_seconds = Math.max(progress.eta_seconds ?? 0, p.eta_seconds);
    }
  }
  return { ...session, progress };
}

/** 0..1 from the time spent and the estimated time left, or null when unknown. */
export function fractionDone(started, etaSeconds) {
  if (etaSeconds === null || etaSeconds === undefined) return null;
  const spent = fmt.secondsBetween(started) ?? 0;
  return spent + etaSeconds > 0 ? spent / (spent + etaSeconds) : null;
}

export function SessionProgress({ session }) {
  const p = session.progress || {};
  const parts = [`${fmt.bytes(p.bytes_read || 0)} read`, `${fmt.bytes(p.bytes_transferred || 0)} sent`];
  if (p.rate) parts.push(fmt.rate(p.rate));
  if (p.eta_seconds !== null && p.eta_seconds !== undefined) parts.push(`ETA ${fmt.duration(p.eta_seconds)}`);
  return html`<div class="session-progress" data-progress=${session.id}>
    <${ProgressBar} value=${fractionDone(session.started || session.created, p.eta_seconds)} />
    <span class="muted small">${parts.join(' · ')}</span>
  </div>`;
}

export function sessionTitle(session) {
  if (session.kind === 'backup') return session.job ? `backup ${session.job}` : 'backup';
  if (session.kind === 'restore') return session.job ? `restore (${session.job})` : 'restore';
  return session.job ? `${session.kind} ${session.job}` : session.kind;
}

export function sessionDuration(session) {
  return fmt.duration(fmt.secondsBetween(session.started || session.created, session.ended));
}

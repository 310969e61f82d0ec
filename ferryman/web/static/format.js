// How numbers, sizes, rates and times read in the console (same units as the CLI).

export function bytes(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '–';
  let size = Number(value);
  for (const unit of ['B', 'KiB', 'MiB', 'GiB', 'TiB']) {
    if (Math.abs(size) < 1024 || unit === 'TiB') {
      return unit === 'B' ? `${Math.round(size)} B` : `${size.toFixed(1)} ${unit}`;
    }
    size /= 1024;
  }
  return '–';
}

export const rate = (bytesPerSecond) =>
  bytesPerSecond === null || bytesPerSecond === undefined ? '–' : `${bytes(bytesPerSecond)}/s`;

export function count(value) {
  if (value === null || value === undefined || Number.isNaN(Number(value))) return '–';
  return Math.round(Number(value)).toLocaleString('en-US');
}

/** 75.2 → '1m15s', 3725 → '1h02m05s' (as the CLI). */
export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return '–';
  const total = Number(seconds);
  if (total < 10) return `${total.toFixed(1)}s`;
  const whole = Math.round(total);
  const h = Math.floor(whole / 3600);
  const m = Math.floor((whole % 3600) / 60);
  const s = whole % 60;
  const pad = (n) => String(n).padStart(2, '0');
  if (h) return `${h}h${pad(m)}m${pad(s)}s`;
  if (m) return `${m}m${pad(s)}s`;
  return `${s}s`;
}

export function toDate(value) {
  if (value === null || value === undefined || value === '') return null;
  const date = typeof value === 'number' ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Local time to the second: '2026-11-30 01:52:07'. */
export function time(value) {
  const date = toDate(value);
  if (!date) return '–';
  const pad = (n) => String(n).padStart(2, '0');
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

/** '12s ago', '5m ago', '3h ago', '2d ago'. */
export function ago(value, now = Date.now()) {
  const date = toDate(value);
  if (!date) return '–';
  return agoSeconds((now - date.getTime()) / 1000);
}

export function agoSeconds(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  const s = Math.max(0, seconds);
  if (s < 60) return `${Math.round(s)}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** Seconds between two times (the second defaults to now). */
export function secondsBetween(start, end) {
  const a = toDate(start);
  if (!a) return null;
  const b = toDate(end) || new Date();
  return (b.getTime() - a.getTime()) / 1000;
}

export const ratio = (value) =>
  value === null || value === undefined || Number.isNaN(Number(value))
    ? '–'
    : `${Number(value).toFixed(2)}x`;

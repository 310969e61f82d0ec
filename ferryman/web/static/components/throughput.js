// The throughput chart of a session: MB/s read over time, the session total and
// one line per proxy, from cumulative per-task samples (GET /sessions/{id}/throughput).
import { html, useEffect, useRef } from '../vendor/htm-preact-standalone.module.js';
import uPlot from '../vendor/uPlot.esm.js';

const COLORS = ['#1f4e79', '#e07b39', '#3a9b5c', '#8e5cc4', '#c44e52', '#2aa1b3', '#b3a12a', '#7f7f7f'];
const MB = 1e6;
// Whole seconds and minutes between time ticks (uPlot would also pick fractions of a second).
const TICKS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

/**
 * Buckets cumulative samples into rates: {times, total, perProxy: {name: [..]}}.
 * Each interval between two samples of a task spreads its bytes evenly over the
 * buckets it covers, so uneven sample times still give a faithful curve.
 */
export function ratesFromSamples(samples, field = 'bytes_read') {
  const byTask = new Map();
  for (const s of samples) {
    if (!byTask.has(s.task)) byTask.set(s.task, []);
    byTask.get(s.task).push(s);
  }
  if (!samples.length) return { times: [], total: [], perProxy: {} };
  const t0 = Math.min(...samples.map((s) => s.t));
  const t1 = Math.max(...samples.map((s) => s.t));
  const step = Math.max(1, Math.ceil((t1 - t0) / 200));
  const count = Math.max(1, Math.ceil((t1 - t0) / step));
  const times = Array.from({ length: count }, (_, i) => t0 + (i + 1) * step);
  const perProxy = {};
  const total = new Array(count).fill(0);
  for (const list of byTask.values()) {
    list.sort((a, b) => a.t - b.t);
    for (let i = 1; i < list.length; i++) {
      const a = list[i - 1];
      const b = list[i];
      const span = b.t - a.t;
      const moved = (b[field] || 0) - (a[field] || 0);
      if (span <= 0 || moved <= 0) continue;
      const proxy = b.proxy || '?';
      if (!perProxy[proxy]) perProxy[proxy] = new Array(count).fill(0);
      const first = Math.floor((a.t - t0) / step);
      const last = Math.min(count - 1, Math.floor((b.t - t0 - 1e-9) / step));
      for (let k = first; k <= last; k++) {
        const lo = Math.max(a.t, t0 + k * step);
        const hi = Math.min(b.t, t0 + (k + 1) * step);
        if (hi <= lo) continue;
        const width = Math.min(step, t1 - (t0 + k * step)); // the last bucket may be cut short
        const rate = (moved * ((hi - lo) / span)) / width / MB;
        perProxy[proxy][k] += rate;
        total[k] += rate;
      }
    }
  }
  return { times, total, perProxy };
}

const pad = (n) => String(n).padStart(2, '0');
const clock = (t) => {
  const d = new Date(t * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
};

function options(width, proxies) {
  return {
    width,
    height: 240,
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [{ values: (u, ticks) => ticks.map(clock), incrs: TICKS, space: 70 }, { label: 'MB/s', size: 60, values: (u, ticks) => ticks.map((v) => v.toFixed(v < 10 ? 1 : 0)) }],
    series: [
      { label: 'time', value: (u, t) => (t == null ? '–' : clock(t)) },
      { label: 'total', stroke: COLORS[0], width: 2, points: { show: false }, fill: 'rgba(31,78,121,0.08)', value: (u, v) => (v == null ? '–' : `${v.toFixed(1)} MB/s`) },
      ...proxies.map((name, i) => ({
        label: name,
        stroke: COLORS[(i + 1) % COLORS.length],
        width: 1.5,
        points: { show: false },
        value: (u, v) => (v == null ? '–' : `${v.toFixed(1)} MB/s`),
      })),
    ],
  };
}

export function ThroughputChart({ samples, ended = false }) {
  const box = useRef(null);
  const plot = useRef(null);
  const shape = useRef('');
  const { times, total, perProxy } = ratesFromSamples(samples || []);
  const proxies = Object.keys(perProxy).sort();
  const enough = times.length >= 2;

  useEffect(() => {
    if (!box.current) return;
    if (!enough) {
      if (plot.current) plot.current.destroy();
      plot.current = null;
      shape.current = '';
      return;
    }
    const data = [times, total, ...proxies.map((p) => perProxy[p])];
    const key = proxies.join('|');
    if (plot.current && shape.current === key) {
      plot.current.setData(data);
    } else {
      if (plot.current) plot.current.destroy();
      plot.current = new uPlot(options(box.current.clientWidth || 800, proxies), data, box.current);
      shape.current = key;
    }
  });

  useEffect(() => {
    if (!box.current || typeof ResizeObserver === 'undefined') return undefined;
    const observer = new ResizeObserver(() => {
      if (plot.current && box.current) plot.current.setSize({ width: box.current.clientWidth, height: 240 });
    });
    observer.observe(box.current);
    return () => {
      observer.disconnect();
      if (plot.current) plot.current.destroy();
      plot.current = null;
    };
  }, []);

  return html`<div class="chart" data-chart="throughput">
    <div ref=${box}></div>
    ${enough
      ? null
      : html`<p class="empty">${ended ? 'No throughput figures: the session read too little data to chart.' : 'No throughput figures yet: they appear while tasks read data.'}</p>`}
  </div>`;
}

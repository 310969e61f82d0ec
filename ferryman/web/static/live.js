// Live updates: one EventSource on /api/v1/events (with ?session=ID while a
// session page is open). When the stream cannot be opened or drops, every view
// that listens refreshes itself from the plain GET endpoints every 5 s, and the
// header shows a badge saying so; the stream is tried again every 30 s.
import { useEffect, useRef, useState } from './vendor/htm-preact-standalone.module.js';

const POLL_MS = 5000;
const RETRY_MS = 30000;
const THROTTLE_MS = 1500;
const TOPICS = ['sessions', 'proxies', 'session'];

const listeners = new Set();
const modeListeners = new Set();
let mode = 'off'; // 'off' (signed out) | 'connecting' | 'live' | 'polling'
let source = null;
let sourceUrl = null;
let triedUrl = null; // the stream last asked for, open or not
let pollTimer = null;
let retryTimer = null;

function setMode(next) {
  if (mode === next) return;
  mode = next;
  for (const notify of modeListeners) notify(mode);
}

function wantedUrl() {
  let session = null;
  for (const listener of listeners) if (listener.session) session = listener.session;
  return session ? `/api/v1/events?session=${encodeURIComponent(session)}` : '/api/v1/events';
}

function dispatch(topic, data) {
  for (const listener of listeners) {
    if (!listener.topics.includes(topic)) continue;
    if (topic === 'session' && data && String(data.id) !== String(listener.session)) continue;
    listener.event(topic, data);
  }
}

function startPolling() {
  if (pollTimer) return;
  pollTimer = setInterval(() => {
    for (const listener of listeners) listener.refresh();
  }, POLL_MS);
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = null;
}

function closeSource() {
  if (source) source.close();
  source = null;
  sourceUrl = null;
}

function connect() {
  closeSource();
  clearTimeout(retryTimer);
  retryTimer = null;
  if (!listeners.size || typeof EventSource === 'undefined') {
    if (listeners.size) fallBack();
    return;
  }
  sourceUrl = wantedUrl();
  triedUrl = sourceUrl;
  setMode(mode === 'polling' ? 'polling' : 'connecting');
  const opened = new EventSource(sourceUrl, { withCredentials: true });
  source = opened;
  opened.onopen = () => {
    if (source !== opened) return;
    setMode('live');
    stopPolling();
    // Catch up on what changed while the stream was down.
    for (const listener of listeners) listener.refresh();
  };
  opened.onerror = () => {
    if (source !== opened) return;
    fallBack();
  };
  for (const topic of TOPICS) {
    opened.addEventListener(topic, (message) => {
      if (source !== opened) return;
      let data = null;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      dispatch(topic, data);
    });
  }
}

function fallBack() {
  closeSource();
  setMode('polling');
  startPolling();
  if (!retryTimer) retryTimer = setTimeout(connect, RETRY_MS);
}

function reconcile() {
  if (!listeners.size) {
    closeSource();
    stopPolling();
    clearTimeout(retryTimer);
    retryTimer = null;
    return;
  }
  if (mode === 'polling') {
    startPolling();
    // A page that wants another stream (a session's) asks for it at once.
    if (triedUrl !== wantedUrl()) connect();
    return;
  }
  if (!source || sourceUrl !== wantedUrl()) connect();
}

/** Stops everything (signing out). */
export function stopLive() {
  listeners.clear();
  triedUrl = null;
  reconcile();
  setMode('off');
}

/**
 * Keeps a view fresh: `refresh()` runs on each event of `topics` (throttled) and
 * every 5 s while the stream is down. `onEvent(topic, data)`, when given, takes
 * the event's data: it returns true when it used it, else a refresh follows.
 */
export function useLive(topics, refresh, { onEvent = null, session = null } = {}) {
  const latest = useRef({ refresh, onEvent });
  latest.current = { refresh, onEvent };
  const key = `${topics.join(',')}|${session ?? ''}`;
  useEffect(() => {
    let last = 0;
    let pending = null;
    const throttled = () => {
      const wait = last + THROTTLE_MS - Date.now();
      if (wait <= 0) {
        last = Date.now();
        latest.current.refresh();
      } else if (!pending) {
        pending = setTimeout(() => {
          pending = null;
          last = Date.now();
          latest.current.refresh();
        }, wait);
      }
    };
    const listener = {
      topics,
      session,
      refresh: () => latest.current.refresh(),
      event: (topic, data) => {
        const handled = latest.current.onEvent ? latest.current.onEvent(topic, data) : false;
        if (handled === false || handled === undefined) throttled();
      },
    };
    listeners.add(listener);
    reconcile();
    return () => {
      clearTimeout(pending);
      listeners.delete(listener);
      reconcile();
    };
  }, [key]);
}

export function useLiveMode() {
  const [current, setCurrent] = useState(mode);
  useEffect(() => {
    modeListeners.add(setCurrent);
    setCurrent(mode);
    return () => modeListeners.delete(setCurrent);
  }, []);
  return current;
}

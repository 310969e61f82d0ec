// One line of feedback under the header ("job 'nightly' started", a refused action…).
import { useEffect, useState } from './vendor/htm-preact-standalone.module.js';

let current = null;
const subscribers = new Set();
let timer = null;

export function notify(text, kind = 'info') {
  current = { text, kind, at: Date.now() };
  for (const s of subscribers) s(current);
  clearTimeout(timer);
  timer = setTimeout(() => {
    current = null;
    for (const s of subscribers) s(current);
  }, kind === 'error' ? 12000 : 6000);
}

/** Runs an action of a button; a refusal becomes an error notice instead of a throw. */
export async function attempt(action, success) {
  try {
    const result = await action();
    if (success) notify(typeof success === 'function' ? success(result) : success);
    return result;
  } catch (error) {
    notify(error.detail || String(error), 'error');
    return undefined;
  }
}

export function useNotice() {
  const [value, setValue] = useState(current);
  useEffect(() => {
    subscribers.add(setValue);
    return () => subscribers.delete(setValue);
  }, []);
  return value;
}

// Hash routing: #/dashboard, #/sessions/7, #/restore?share=docs&point=3, #/login.

/** `#/sessions/7?x=1` → {name: 'session', id: '7', query: {x: '1'}}. */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean);
  const query = Object.fromEntries(new URLSearchParams(qs || ''));
  let name = parts[0] || 'dashboard';
  const id = parts[1] ? decodeURIComponent(parts[1]) : null;
  if (name === 'sessions' && id) name = 'session';
  return { name, id, query };
}

export function navigate(hash) {
  if (location.hash !== hash) location.hash = hash;
}

export const sessionHref = (id) => `#/sessions/${encodeURIComponent(id)}`;

// The one HTTP client of the console: JSON in and out, the session cookie goes
// along by itself; non-GET requests carry the CSRF header the server demands.

export class ApiError extends Error {
  constructor(status, detail, field) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.field = field || null;
  }
}

let onUnauthorized = () => {};

/** Called with no argument when the server answers 401 (session expired, signed out). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const detail =
    body && typeof body.detail === 'string'
      ? body.detail
      : `${response.status} ${response.statusText || 'error'}`;
  if (response.status === 403 && !/role|may not|not allowed|forbidden|header/i.test(detail)) {
    return new ApiError(403, `not allowed for your role: ${detail}`, body && body.field);
  }
  return new ApiError(response.status, detail, body && body.field);
}

/** Sends one request; resolves to the parsed JSON (null for 204), rejects with ApiError. */
export async function request(method, path, body, { raw = false, quiet401 = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-Ferryman-Web'] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'cannot reach the backup server');
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && !quiet401) onUnauthorized();
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const api = {
  get: (path, options) => request('GET', path, undefined, options),
  post: (path, body = {}, options) => request('POST', path, body, options),
  patch: (path, body, options) => request('PATCH', path, body, options),
  del: (path, options) => request('DELETE', path, undefined, options),
};

/** `?a=1&b=x` from an object, leaving out null/undefined/'' values. */
export function query(params) {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

export const ref = (nameOrId) => encodeURIComponent(String(nameOrId));

// Same-origin JSON API helpers shared by every page.

/** An HTTP answer other than 2xx, with its parsed JSON body when there was one. */
export class ApiError extends Error {
  constructor(status, body, retryAfter = null) {
    super((body && typeof body.error === 'string' && body.error) || `HTTP ${status}`);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }

  get fields() {
    const fields = this.body && this.body.fields;
    return fields && typeof fields === 'object' ? fields : {};
  }
}

/** The request never got an answer (offline, connection reset, gateway unreachable). */
export class NetworkError extends Error {
  constructor(cause) {
    super('network error');
    this.name = 'NetworkError';
    this.cause = cause;
  }
}

async function readJson(res) {
  const type = res.headers.get('content-type') || '';
  if (!type.includes('json')) return null;
  try {
    return await res.json();
  } catch {
    return null;
  }
}

function retryAfterSeconds(res) {
  const raw = res.headers.get('retry-after');
  if (!raw) return null;
  const secs = Number.parseInt(raw, 10);
  if (Number.isFinite(secs)) return Math.max(0, secs);
  const when = Date.parse(raw);
  return Number.isFinite(when) ? Math.max(0, Math.round((when - Date.now()) / 1000)) : null;
}

async function request(path, init = {}) {
  let res;
  try {
    res = await fetch(path, {
      credentials: 'same-origin',
      ...init,
      headers: { Accept: 'application/json', ...(init.headers || {}) },
    });
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new NetworkError(err);
  }
  const body = await readJson(res);
  if (!res.ok) throw new ApiError(res.status, body, retryAfterSeconds(res));
  return { status: res.status, body };
}

/** GET a JSON document; resolves to the parsed body. */
export async function getJson(path, { signal } = {}) {
  const { body } = await request(path, { method: 'GET', signal });
  return body;
}

/** POST `data` as JSON; resolves to { status, body }. */
export function postJson(path, data, { signal } = {}) {
  return request(path, {
    method: 'POST',
    signal,
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(data),
  });
}

/**
 * Builds a query string with encodeURIComponent (spaces as %20, "á" as %C3%A1), leaving out
 * empty values. Returns "" or "?a=1&b=2".
 */
export function query(params) {
  const parts = [];
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/** GET /api/dresses with the catalog's filters. */
export function listDresses({ collection = '', q = '', page = 1, perPage = 12 } = {}, options = {}) {
  return getJson(`/api/dresses${query({ collection, q, page, per_page: perPage })}`, options);
}

/** GET /api/dresses/{id}. */
export function getDress(id, options = {}) {
  return getJson(`/api/dresses/${encodeURIComponent(id)}`, options);
}

/** A short, friendly sentence for an error thrown by the helpers above. */
export function describeError(err, what = 'this page') {
  if (err instanceof NetworkError) {
    return 'We could not reach the atelier. Please check your connection and try again.';
  }
  if (err instanceof ApiError) {
    if (err.status === 429) {
      const wait = err.retryAfter ? ` (about ${err.retryAfter} s)` : '';
      return `Too many attempts in a short time. Please wait a moment${wait} and try again.`;
    }
    if (err.status >= 500) {
      return `Something went wrong on our side while loading ${what}. Please try again in a moment.`;
    }
  }
  return `We could not load ${what}. Please try again.`;
}

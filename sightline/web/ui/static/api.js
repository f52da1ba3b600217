// fetch() for the JSON API: same-origin cookie, the CSRF header on writes, errors shown as toasts.
import { toast } from './ui.js';

let csrfToken = null;
let onUnauthorized = () => {};

export function setCsrf(token) { csrfToken = token; }
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(path, { method = 'GET', body, signal, quiet = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let res;
  try {
    res = await fetch(path, { method, headers, credentials: 'same-origin', signal,
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    if (!quiet) toast('Sightline is not answering: ' + err.message, 'error');
    throw err;
  }
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) {
    const error = new ApiError(res.status, data);
    if (res.status === 401 && !path.startsWith('/api/auth/')) onUnauthorized();
    else if (!quiet) toast(error.message, 'error');
    throw error;
  }
  return data;
}

/** A path of the current project's API: project('insights/') → /api/projects/@current/insights/ */
export const project = (p) => `/api/projects/@current/${p}`;

// Query results, remembered for a short while so going back and forth is instant.
const cache = new Map();
const CACHE_MS = 30_000;

export async function runQuery(query, { signal, refresh = false } = {}) {
  const key = JSON.stringify(query);
  const hit = cache.get(key);
  if (!refresh && hit && Date.now() - hit.at < CACHE_MS) return hit.promise;
  const promise = api(project('query/'), { method: 'POST', body: { query }, signal, quiet: true });
  cache.set(key, { at: Date.now(), promise });
  promise.catch(() => cache.delete(key));
  if (cache.size > 200) cache.delete(cache.keys().next().value);
  return promise;
}

// Autocomplete sources (the server caches too).
const lists = new Map();
function cachedList(url) {
  if (!lists.has(url)) {
    const p = api(url, { quiet: true }).catch((e) => { lists.delete(url); throw e; });
    lists.set(url, p);
    setTimeout(() => lists.delete(url), CACHE_MS);
  }
  return lists.get(url);
}
export const eventNames = () => cachedList(project('event_definitions/')).then((r) => r.results);
export const propertyNames = (type = 'event', events = []) => cachedList(project('property_definitions/')
  + '?' + new URLSearchParams({ type, event_names: events.filter(Boolean).join(',') })).then((r) => r.results);
export const propertyValues = (key, type = 'event', event = '') => cachedList(project('property_values/')
  + '?' + new URLSearchParams({ key, type, ...(event ? { event_name: event } : {}) }));

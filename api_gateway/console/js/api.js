// The gateway's REST API with the signed-in user's token: the console's only source of data.
//
// The session (access and refresh token) lives in localStorage so that every tab of the
// console shares it. An access token that has expired is refreshed once and the request
// retried, so the page keeps its state; refresh tokens are single-use, so one refresh runs
// at a time across tabs (Web Locks where the browser has them) and a tab first looks
// whether another one has refreshed already.

const KEY = "jobmesh.session";
const listeners = new Set();
let session = load();

function load() {
  try {
    const value = JSON.parse(localStorage.getItem(KEY) || "null");
    return value && value.accessToken ? value : null;
  } catch {
    return null;
  }
}

function notify() {
  for (const listener of listeners) listener(session);
}

window.addEventListener("storage", (event) => {
  if (event.key === KEY) {
    session = load();
    notify();
  }
});

export function getSession() {
  return session;
}

export function onSessionChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function store(next) {
  session = next;
  if (next) localStorage.setItem(KEY, JSON.stringify(next));
  else localStorage.removeItem(KEY);
  notify();
}

/** A session from a SignUp / Login / Refresh answer. */
export function startSession(body) {
  sessionEnded.reason = "";
  store({
    accessToken: body.accessToken || body.token,
    refreshToken: body.refreshToken,
    userId: body.userId,
    email: body.email,
    username: body.username,
    role: body.role,
    expiresAt: Date.now() + Number(body.expiresIn || 0) * 1000,
  });
}

export function signOut() {
  store(null);
}

/** The session ended on the server (expired refresh token, disabled account, new password). */
export const sessionEnded = { reason: "" };

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.status || "";
    this.body = body;
    this.violations = [];
    for (const detail of error.details || []) {
      for (const v of detail.fieldViolations || []) this.violations.push(v);
    }
  }
}

let refreshing = null;

function refresh(staleToken) {
  if (!refreshing) {
    refreshing = runRefresh(staleToken).finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function runRefresh(staleToken) {
  const attempt = async () => {
    const current = load();
    if (current && current.accessToken !== staleToken) {
      session = current; // another tab refreshed first
      notify();
      return true;
    }
    if (!current || !current.refreshToken) return false;
    const res = await fetch("/api/auth/refresh", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ refreshToken: current.refreshToken }),
    });
    if (!res.ok) return false;
    startSession(await res.json());
    return true;
  };
  if (navigator.locks && navigator.locks.request) {
    return navigator.locks.request("jobmesh.refresh", attempt);
  }
  return attempt();
}

async function authorizedFetch(method, path, init) {
  for (let attempt = 0; ; attempt += 1) {
    const token = session && session.accessToken;
    const headers = { Accept: "application/json", ...(init.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(path, { ...init, method, headers });
    if (res.status !== 401 || !token) return res;
    if (attempt === 0 && (await refresh(token))) continue;
    sessionEnded.reason = "Your session has ended. Sign in again to continue.";
    store(null);
    return res;
  }
}

async function decode(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: { code: res.status, status: "UNKNOWN", message: text.slice(0, 300) } };
  }
}

export async function request(method, path, body, { signal } = {}) {
  const init = { signal };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { "Content-Type": "application/json" };
  }
  const res = await authorizedFetch(method, path, init);
  const data = await decode(res);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const api = {
  get: (path, options) => request("GET", path, undefined, options),
  post: (path, body, options) => request("POST", path, body === undefined ? {} : body, options),
  put: (path, body, options) => request("PUT", path, body, options),
  patch: (path, options) => request("PATCH", path, {}, options),
  del: (path, options) => request("DELETE", path, undefined, options),
};

/** Public calls (sign-in, sign-up): no token, no refresh. */
export async function publicPost(path, body) {
  const res = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
  });
  const data = await decode(res);
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** The mesh's health: answered with 503 and the same body while NOT_SERVING. */
export async function health({ signal } = {}) {
  const res = await fetch("/api/health", { headers: { Accept: "application/json" }, signal });
  const data = await decode(res);
  if (data && data.status) return data;
  throw new ApiError(res.status, data);
}

/**
 * Follow a run's output: `…/logs?follow=true` as Server-Sent Events, read with fetch
 * (EventSource cannot send the Authorization header). Calls onEvent(kind, data) for
 * each `run`, `chunk` and `error` event; resolves when the stream ends.
 */
export async function follow(path, onEvent, { signal } = {}) {
  const res = await authorizedFetch("GET", path, { signal, headers: { Accept: "text/event-stream" } });
  if (!res.ok) throw new ApiError(res.status, await decode(res));
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}

// The console's only way to the service: the public API, with the signed-in person's session.
//
// The session is an HttpOnly cookie the page cannot read; writes carry the session's CSRF token
// (from GET /api/me) in X-CSRF-Token. No token is ever typed or pasted into a page.

let csrfToken = null;

export function setCsrfToken(token) {
  csrfToken = token;
}

// Leases and ages are the database's clock. The browser's clock may be wrong, so the offset to
// the server is learnt from each answer's Date header; the header has whole seconds only, so a
// skew under two seconds is ignored rather than making the countdown jitter.
let clockOffsetMs = 0;

export function serverNow() {
  return Date.now() + clockOffsetMs;
}

function learnClock(response, sentAt) {
  const header = response.headers.get("Date");
  const server = header ? Date.parse(header) : NaN;
  if (Number.isNaN(server)) return;
  const midpoint = (sentAt + Date.now()) / 2;
  const offset = server + 500 - midpoint;
  if (Math.abs(offset) <= 2000) clockOffsetMs = 0;
  else if (Math.abs(offset - clockOffsetMs) > 1000) clockOffsetMs = offset;
}

function retryAfterSeconds(response) {
  const value = response.headers.get("Retry-After");
  if (value === null) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, Math.round((when - Date.now()) / 1000));
}

// Every call answers an object, never throws: {status, ok, body, error, detail, fields,
// retryAfter}. A network failure is status 0 with error "NetworkError". A write refused for its
// CSRF token (the session was replaced, in another tab) learns the current one and is sent once
// more.
export async function api(path, options = {}) {
  const answer = await send(path, options);
  if (answer.status === 403 && answer.error === "CsrfRejected" && options.method) {
    const me = await send("/api/me", {});
    if (me.ok) {
      setCsrfToken(me.body.csrf_token);
      return send(path, options);
    }
  }
  return answer;
}

async function send(path, { method = "GET", body, query } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
    }
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  const sentAt = Date.now();
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      redirect: "error",
    });
  } catch {
    return {
      status: 0,
      ok: false,
      body: null,
      error: "NetworkError",
      detail: "the service could not be reached",
      fields: null,
      retryAfter: null,
    };
  }
  learnClock(response, sentAt);
  let data = null;
  try {
    const text = await response.text();
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const isError = !response.ok && data && typeof data === "object";
  return {
    status: response.status,
    ok: response.ok,
    body: data,
    error: isError ? (data.error ?? null) : null,
    detail: isError ? (data.detail ?? null) : null,
    fields: isError ? (data.fields ?? null) : null,
    retryAfter: retryAfterSeconds(response),
  };
}

// "409 Conflict: the assignment is no longer active", for messages that show the API's answer.
export function describeAnswer(result) {
  if (result.status === 0) return "the service could not be reached";
  const code = result.error ? ` ${result.error}` : "";
  const detail = result.detail ? `: ${result.detail}` : "";
  return `${result.status}${code}${detail}`;
}

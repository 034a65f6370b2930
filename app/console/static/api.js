// The console's only way to the service: the public API, with the signed-in agent's token.
//
// The token lives in this tab's sessionStorage: never in a URL (it would land in logs and
// history) and never in localStorage (it would outlive the tab and be shared between tabs).

const TOKEN_KEY = "callqueue.token";
const NOTICE_KEY = "callqueue.notice";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
  // A message to show after the page reloads (signing out reloads, to stop every timer at once).
  leaveNotice(text) {
    sessionStorage.setItem(NOTICE_KEY, text);
  },
  takeNotice() {
    const text = sessionStorage.getItem(NOTICE_KEY);
    sessionStorage.removeItem(NOTICE_KEY);
    return text;
  },
};

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
// retryAfter}. A network failure is status 0 with error "NetworkError".
export async function api(path, { method = "GET", body, query } = {}) {
  const headers = { Accept: "application/json" };
  const token = session.token;
  if (token) headers.Authorization = `Bearer ${token}`;
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
      credentials: "omit",
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

// Small DOM helpers shared by the views: building nodes without innerHTML, announcing state
// changes to screen readers, confirmation dialogs, time formatting and the session.

import { api, describeAnswer, setCsrfToken } from "./api.js";

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// The polite live region: cleared first so the same sentence twice is announced twice.
export function announce(text) {
  const region = $("announcer");
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = text;
  }, 50);
}

export function showAlert(text) {
  const alert = $("alert");
  alert.textContent = text;
  alert.hidden = false;
}

export function clearAlert() {
  const alert = $("alert");
  alert.textContent = "";
  alert.hidden = true;
}

// A modal question with Cancel focused first, so a stray Enter never confirms. Resolves true
// only when the confirm button was pressed.
export function confirmDialog({ title, body, confirmLabel = "Confirm", danger = false }) {
  const dialog = $("confirm");
  const previous = document.activeElement;
  $("confirm-title").textContent = title;
  const container = $("confirm-body");
  container.replaceChildren(...(Array.isArray(body) ? body : [el("p", { text: body })]));
  const ok = $("confirm-ok");
  ok.textContent = confirmLabel;
  ok.classList.toggle("danger", danger);
  ok.classList.toggle("primary", !danger);
  dialog.returnValue = "cancel";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (previous instanceof HTMLElement && previous.isConnected) previous.focus();
        resolve(dialog.returnValue === "ok");
      },
      { once: true },
    );
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

// -- time --------------------------------------------------------------------------------------

const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const DAY_TIME = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  hour: "2-digit",
  minute: "2-digit",
});
const DATE = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });

export function formatTime(iso) {
  return iso ? TIME.format(new Date(iso)) : "–";
}

export function formatWhen(iso) {
  return iso ? DAY_TIME.format(new Date(iso)) : "–";
}

export function formatDate(iso) {
  return iso ? DATE.format(new Date(iso)) : "–";
}

// 125 s -> "2 min 05 s"; 4000 s -> "1 h 06 min"; 200000 s -> "2 days 7 h".
export function formatDuration(ms) {
  const total = Math.max(0, Math.round(ms / 1000));
  const days = Math.floor(total / 86400);
  const hours = Math.floor((total % 86400) / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = total % 60;
  if (days) return `${days} day${days === 1 ? "" : "s"} ${hours} h`;
  if (hours) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
  if (minutes) return `${minutes} min ${String(seconds).padStart(2, "0")} s`;
  return `${seconds} s`;
}

// A countdown: "14:05" (minutes:seconds), or "1:02:03" past an hour.
export function formatClock(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

// The value a datetime-local input takes for a moment, in the browser's time zone.
export function toLocalInputValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
    `T${pad(date.getHours())}:${pad(date.getMinutes())}`
  );
}

// -- the session -------------------------------------------------------------------------------

// The page is served only to a signed-in person; GET /api/me gives the session's CSRF token and
// who they are. start(me) then runs the view; when it has, <body data-ready="yes">.
export async function startSession(start) {
  $("sign-out").addEventListener("click", signOut);
  const me = await api("/api/me");
  if (me.status === 401) {
    sessionEnded();
    return;
  }
  if (!me.ok) {
    showAlert(`The console could not start: the service answered ${describeAnswer(me)}. Reload to try again.`);
    return;
  }
  setCsrfToken(me.body.csrf_token);
  $("workspace").hidden = false;
  await start(me.body);
  // The view has read what it shows first and listens to its keys: ready for work.
  document.body.dataset.ready = "yes";
}

// The session ended under the page (idle or absolute timeout, signed out elsewhere, deactivated):
// to the sign-in page, which brings the person back here afterwards. What the view keeps in the
// tab (the agent's typed notes) is still there when they return.
export function sessionEnded() {
  const next = encodeURIComponent(window.location.pathname);
  window.location.assign(`/auth/login?ended=1&next=${next}`);
}

export async function signOut() {
  await api("/auth/logout", { method: "POST" });
  window.location.assign("/auth/login");
}

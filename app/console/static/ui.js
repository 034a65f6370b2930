// Small DOM helpers shared by both views: building nodes without innerHTML, announcing state
// changes to screen readers, confirmation dialogs, time formatting and the sign-in form.

import { session } from "./api.js";

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

// -- signing in --------------------------------------------------------------------------------

// verify() asks the API whether the token works for this view and answers
// {ok: true, label} or {ok: false, message}. A stored token is checked again on every load.
export function setUpSignIn({ verify, start }) {
  const form = $("sign-in-form");
  const input = $("token");
  const error = $("token-error");

  const fail = (message) => {
    session.clear();
    $("sign-in").hidden = false;
    $("workspace").hidden = true;
    $("session").hidden = true;
    error.textContent = message;
    error.hidden = !message;
    input.setAttribute("aria-invalid", message ? "true" : "false");
    input.focus();
  };

  const enter = async (token) => {
    session.set(token);
    const result = await verify();
    if (!result.ok) {
      fail(result.message);
      return;
    }
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    $("sign-in").hidden = true;
    $("workspace").hidden = false;
    $("session").hidden = false;
    $("session-text").textContent = result.label;
    start(result);
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    input.value = "";
    if (!token) {
      fail("Paste your token first.");
      return;
    }
    enter(token);
  });

  $("sign-out").addEventListener("click", () => signOut("You are signed out."));

  const notice = session.takeNotice();
  if (session.token) {
    enter(session.token);
  } else {
    fail(notice ?? "");
  }
}

// Forget the token and start again from a fresh page: every timer and every piece of personal
// data on screen goes with it.
export function signOut(message) {
  session.clear();
  session.leaveNotice(message);
  window.location.reload();
}

// The people page's personal-data panel, for admins: a person's copy of what we hold (downloaded
// as one JSON file) and their erasure, confirmed by naming the user id. Both through the public
// API (/api/admin/users/{id}/export and /erase), which records who asked and when.

import { api, describeAnswer } from "./api.js";
import { $, announce, clearAlert, confirmDialog, el, sessionEnded, showAlert } from "./ui.js";

// The claims platform's ids: positive, at most 2^63 - 1 (the API answers 422 beyond).
const USER_ID = /^[1-9][0-9]{0,18}$/;

// Words for the export's sections and the erasure's counts, as an admin would say them.
const SECTIONS = {
  queue_entries: "queue entries",
  callbacks: "callbacks",
  ledger: "calls in the ledger",
  transitions: "queue moves",
  invalidations: "refused hand-outs",
  requests: "data requests",
};
const REMOVED = {
  user_call_scores: "score row",
  unsigned_users_queue: "unsigned users queue",
  outstanding_requests_queue: "outstanding requests queue",
  callbacks: "callbacks",
  callback_changes: "changes to callbacks",
  assignments_released: "live call ended",
  assignments_cleared: "calls in the ledger cleared",
  queue_transitions_cleared: "queue moves cleared",
  entry_invalidations_cleared: "refused hand-outs cleared",
};

let downloadUrl = null;

function userId() {
  const value = $("d-user").value.trim();
  const error = $("d-user-error");
  if (!USER_ID.test(value)) {
    error.textContent = "Enter the person's user id (digits only, as the claims platform shows it).";
    error.hidden = false;
    $("d-user").setAttribute("aria-invalid", "true");
    $("d-user").focus();
    return null;
  }
  error.hidden = true;
  $("d-user").removeAttribute("aria-invalid");
  return value;
}

function refused(answer, what) {
  if (answer.status === 401) return sessionEnded();
  showAlert(`Could not ${what}: the service answered ${describeAnswer(answer)}.`);
}

function showResult(summary, { counts = null, download = null } = {}) {
  $("data-summary").textContent = summary;
  const table = $("data-counts");
  table.hidden = counts === null;
  table.tBodies[0].replaceChildren(
    ...Object.entries(counts ?? {}).map(([key, n]) =>
      el("tr", {}, el("th", { scope: "row", text: REMOVED[key] ?? key }), el("td", { text: n })),
    ),
  );
  const link = $("data-download");
  link.hidden = download === null;
  link.replaceChildren(download ?? "");
  const box = $("data-result");
  box.hidden = false;
  box.focus();
  announce(summary);
}

function forget() {
  if (downloadUrl) URL.revokeObjectURL(downloadUrl);
  downloadUrl = null;
  $("data-result").hidden = true;
}

async function exportPerson(event) {
  event.preventDefault();
  clearAlert();
  forget();
  const id = userId();
  if (id === null) return;
  const answer = await api(`/api/admin/users/${id}/export`);
  if (!answer.ok) return refused(answer, `export user ${id}`);
  const doc = answer.body;
  if (doc.erased) {
    const when = new Date(doc.erased_at).toLocaleString();
    showResult(`User ${id} was erased on ${when}: nothing else is held.`);
    return;
  }
  const held = Object.entries(SECTIONS)
    .map(([key, words]) => [doc[key]?.length ?? 0, words])
    .filter(([n]) => n > 0)
    .map(([n, words]) => `${n} ${words}`);
  if (doc.score) held.unshift("a score row");
  const file = new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" });
  downloadUrl = URL.createObjectURL(file);
  const name = `callqueue-user-${id}.json`;
  showResult(
    held.length
      ? `User ${id}: ${held.join(", ")}.`
      : `Nothing is held about user ${id} but this request.`,
    { download: el("a", { href: downloadUrl, download: name, text: `Download ${name}` }) },
  );
}

async function erasePerson() {
  clearAlert();
  forget();
  const id = userId();
  if (id === null) return;
  const ok = await confirmDialog({
    title: `Erase user ${id}?`,
    body: [
      el("p", {
        text:
          `Everything held about user ${id} is deleted now: their score, queue entries, ` +
          "callbacks and the notes of their calls. A call in progress with them ends.",
      }),
      el("p", {
        text:
          "It cannot be undone, and they are never added again. The compliance record keeps " +
          "counts only; a number on the do-not-call list stays on it.",
      }),
    ],
    confirmLabel: `Erase user ${id}`,
    danger: true,
  });
  if (!ok) return;
  const answer = await api(`/api/admin/users/${id}/erase`, { method: "POST" });
  if (!answer.ok) return refused(answer, `erase user ${id}`);
  const removed = answer.body.removed;
  const total = Object.values(removed).reduce((a, b) => a + b, 0);
  showResult(
    total
      ? `User ${id} is erased.`
      : `User ${id} is erased; nothing was left to remove (erased before, or never held).`,
    { counts: Object.fromEntries(Object.entries(removed).filter(([, n]) => n > 0)) },
  );
}

export function startPersonalData() {
  $("data-form").addEventListener("submit", exportPerson);
  $("erase-button").addEventListener("click", erasePerson);
}

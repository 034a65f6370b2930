// The people page's webhooks panel, for admins (SPEC 8.4): the endpoints other systems receive
// events at, each with its state; adding one (its secret shown once), testing, rotating the
// secret, disabling/enabling, removing; and an endpoint's delivery log with redelivery. All
// through the public API (/api/admin/webhooks), which audits every change.

import { api, describeAnswer } from "./api.js";
import {
  $,
  announce,
  clearAlert,
  confirmDialog,
  el,
  formatWhen,
  sessionEnded,
  showAlert,
} from "./ui.js";

let endpoints = [];
let shownLog = null; // the endpoint whose delivery log is open

function refused(answer, what) {
  if (answer.status === 401) return sessionEnded();
  showAlert(`Could not ${what}: the service answered ${describeAnswer(answer)}.`);
}

// A secret is shown once, here, and nowhere else.
function showSecret(intro, secret) {
  $("w-secret-intro").textContent = intro;
  $("w-secret-value").textContent = secret;
  const box = $("w-secret");
  box.hidden = false;
  box.focus();
  announce(intro);
}

function stateOf(endpoint) {
  return endpoint.enabled ? "enabled" : `disabled: ${endpoint.disabled_reason}`;
}

async function load() {
  const answer = await api("/api/admin/webhooks");
  if (!answer.ok) return refused(answer, "list the webhook endpoints");
  endpoints = answer.body.items;
  render();
}

function button(text, onClick, { danger = false } = {}) {
  const b = el("button", { type: "button", text, class: danger ? "danger" : "" });
  b.addEventListener("click", onClick);
  return b;
}

function render() {
  const body = $("webhooks-table").tBodies[0];
  body.replaceChildren(
    ...endpoints.map((e) =>
      el(
        "tr",
        { "data-id": e.id },
        el("td", {}, el("span", { class: "url", text: e.url }), e.description ? el("br") : "",
          e.description ? el("span", { class: "help", text: e.description }) : ""),
        el("td", { text: e.event_types.join(", ") }),
        el("td", { text: stateOf(e) }),
        el(
          "td",
          { class: "actions" },
          button("Send a test", () => sendTest(e)),
          button("Deliveries", () => showLog(e)),
          button(e.enabled ? "Disable" : "Enable", () => setEnabled(e, !e.enabled)),
          button("Rotate secret…", () => rotate(e)),
          button("Remove…", () => remove(e), { danger: true }),
        ),
      ),
    ),
  );
  $("webhooks-empty").hidden = endpoints.length > 0;
}

async function add(event) {
  event.preventDefault();
  clearAlert();
  const url = $("w-url").value.trim();
  const types = [...document.querySelectorAll("input[name=w-type]:checked")].map((i) => i.value);
  const error = $("w-error");
  if (!url || types.length === 0) {
    error.textContent = !url ? "Enter the receiver's URL." : "Choose at least one event type.";
    error.hidden = false;
    return;
  }
  const answer = await api("/api/admin/webhooks", {
    method: "POST",
    body: { url, event_types: types, description: $("w-description").value.trim() },
  });
  if (answer.status === 422) {
    error.textContent = answer.body?.detail ?? "The service refused this endpoint.";
    error.hidden = false;
    return;
  }
  error.hidden = true;
  if (!answer.ok) return refused(answer, "add the endpoint");
  $("webhook-form").reset();
  showSecret(
    `Endpoint added. Its signing secret (give it to the receiver's team; shown once):`,
    answer.body.secret,
  );
  await load();
}

async function sendTest(endpoint) {
  clearAlert();
  const answer = await api(`/api/admin/webhooks/${endpoint.id}/test`, { method: "POST" });
  if (!answer.ok) return refused(answer, "send a test event");
  const r = answer.body;
  announce(
    r.delivered
      ? `Test event delivered: the receiver answered ${r.status_code} in ${r.duration_ms} ms.`
      : `Test event not delivered: ${r.error}. It will be tried again.`,
  );
  showAlert(
    r.delivered
      ? `Test event delivered (${r.status_code}, ${r.duration_ms} ms).`
      : `Test event not delivered: ${r.error}.`,
  );
  if (shownLog?.id === endpoint.id) await showLog(endpoint);
}

async function setEnabled(endpoint, enabled) {
  clearAlert();
  const answer = await api(`/api/admin/webhooks/${endpoint.id}`, {
    method: "PATCH",
    body: { enabled },
  });
  if (!answer.ok) return refused(answer, enabled ? "enable the endpoint" : "disable it");
  announce(enabled ? "Endpoint enabled." : "Endpoint disabled.");
  await load();
}

async function rotate(endpoint) {
  clearAlert();
  const ok = await confirmDialog({
    title: "Rotate the signing secret?",
    body: [
      el("p", {
        text:
          `A new secret for ${endpoint.url}. For 24 hours every event is signed with both, ` +
          "so the receiver can switch without losing one; then only the new one signs.",
      }),
    ],
    confirmLabel: "Rotate",
  });
  if (!ok) return;
  const answer = await api(`/api/admin/webhooks/${endpoint.id}/rotate-secret`, { method: "POST" });
  if (!answer.ok) return refused(answer, "rotate the secret");
  showSecret("The new signing secret (shown once; the old one signs too for 24 hours):",
    answer.body.secret);
}

async function remove(endpoint) {
  clearAlert();
  const ok = await confirmDialog({
    title: "Remove this endpoint?",
    body: [el("p", { text: `${endpoint.url} receives nothing more; its delivery log goes.` })],
    confirmLabel: "Remove",
    danger: true,
  });
  if (!ok) return;
  const answer = await api(`/api/admin/webhooks/${endpoint.id}`, { method: "DELETE" });
  if (!answer.ok) return refused(answer, "remove the endpoint");
  if (shownLog?.id === endpoint.id) $("webhook-log").hidden = true;
  announce("Endpoint removed.");
  await load();
}

async function showLog(endpoint) {
  const answer = await api(`/api/admin/webhooks/${endpoint.id}/deliveries?limit=50`);
  if (!answer.ok) return refused(answer, "read the delivery log");
  shownLog = endpoint;
  $("webhook-log-title").textContent = `Deliveries to ${endpoint.url}`;
  $("webhook-log-table").tBodies[0].replaceChildren(
    ...answer.body.items.map((a) =>
      el(
        "tr",
        {},
        el("td", { text: formatWhen(a.attempted_at) }),
        el("td", { text: a.event_type }),
        el("td", { text: `#${a.seq}, attempt ${a.attempt}` }),
        el("td", { text: a.status_code ?? "no answer" }),
        el("td", { text: a.error ?? "delivered" }),
        el("td", {}, button("Redeliver", () => redeliver(a))),
      ),
    ),
  );
  $("webhook-log-empty").hidden = answer.body.items.length > 0;
  const box = $("webhook-log");
  box.hidden = false;
  box.focus();
}

async function redeliver(attempt) {
  clearAlert();
  const answer = await api(`/api/admin/webhooks/deliveries/${attempt.id}/redeliver`, {
    method: "POST",
  });
  if (!answer.ok) return refused(answer, "redeliver the event");
  announce(`Event #${attempt.seq} will be sent again within seconds.`);
  showAlert(`Event #${attempt.seq} will be sent again within seconds.`);
}

export async function startWebhooks() {
  $("webhook-form").addEventListener("submit", add);
  await load();
}

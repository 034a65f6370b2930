// The people page: who can sign in, with which role and queues; adding people (with their
// one-time set-password link), changing, deactivating, resetting and signing them out; and, for
// admins, API tokens, personal-data requests (personal-data.js) and webhooks (webhooks.js).
// Everything through the public API (/api/admin/people, /api/admin/tokens, /api/admin/users,
// /api/admin/webhooks).

import { api, describeAnswer } from "./api.js";
import { startPersonalData } from "./personal-data.js";
import { startWebhooks } from "./webhooks.js";
import {
  $,
  announce,
  clearAlert,
  confirmDialog,
  el,
  formatDate,
  sessionEnded,
  showAlert,
  startSession,
} from "./ui.js";

const config = JSON.parse($("people-config").textContent);
const QUEUE_NAMES = Object.fromEntries(config.queues);
const MANAGEABLE = new Set(config.roles);

const state = { me: null, people: [] };

function refused(answer, what) {
  if (answer.status === 401) {
    sessionEnded();
    return true;
  }
  showAlert(`Could not ${what}: the service answered ${describeAnswer(answer)}.`);
  return true;
}

// A secret (a set-password link, a token) is shown once, here, and nowhere else.
function showSecret(intro, value) {
  $("link-intro").textContent = intro;
  $("link-value").textContent = value;
  const box = $("link-box");
  box.hidden = false;
  box.focus();
  announce(intro);
}

function hideSecret() {
  $("link-box").hidden = true;
  $("link-value").textContent = "";
}

// -- people ------------------------------------------------------------------------------------

async function loadPeople() {
  const answer = await api("/api/admin/people");
  if (!answer.ok) return refused(answer, "list people");
  state.people = answer.body.items;
  renderPeople();
  if (config.manages_tokens) renderOwners();
  return true;
}

function queuesOf(person) {
  return person.allowed_queues.map((q) => QUEUE_NAMES[q] ?? q).join(", ");
}

function signsInWith(person) {
  const ways = [];
  if (person.has_password) ways.push("password");
  if (person.has_identity_provider) ways.push("company sign-in");
  return ways.join(", ") || "nothing yet";
}

function renderPeople() {
  const rows = state.people.map((person) => {
    const mine = person.id === state.me.id;
    const manageable = MANAGEABLE.has(person.role) && !mine;
    const actions = manageable
      ? [
          el("button", { type: "button", text: "Change", onclick: () => editPerson(person) }),
          person.is_active
            ? el("button", {
                type: "button",
                class: "danger",
                text: "Deactivate",
                onclick: () => setActive(person, false),
              })
            : el("button", {
                type: "button",
                text: "Reactivate",
                onclick: () => setActive(person, true),
              }),
          el("button", {
            type: "button",
            text: "New password link",
            onclick: () => resetPassword(person),
          }),
          el("button", { type: "button", text: "Sign out", onclick: () => signOutPerson(person) }),
        ]
      : [el("span", { class: "help", text: mine ? "you" : "" })];
    return el(
      "tr",
      { class: person.is_active ? null : "inactive", "data-person": person.id },
      el("th", { scope: "row", text: person.display_name }),
      el("td", { text: person.email ?? "–" }),
      el("td", { text: person.role }),
      el("td", { text: queuesOf(person) }),
      el("td", { text: signsInWith(person) }),
      el("td", {
        text: person.is_active ? "active" : `deactivated ${formatDate(person.deactivated_at)}`,
      }),
      el("td", { class: "people-edit" }, actions),
    );
  });
  $("people-table").tBodies[0].replaceChildren(...rows);
}

async function addPerson(event) {
  event.preventDefault();
  clearAlert();
  hideSecret();
  const email = $("p-email").value.trim();
  const error = $("p-email-error");
  if (!email.includes("@")) {
    error.textContent = "Enter the person's email address.";
    error.hidden = false;
    $("p-email").setAttribute("aria-invalid", "true");
    $("p-email").focus();
    return;
  }
  error.hidden = true;
  $("p-email").removeAttribute("aria-invalid");
  const queues = [...document.querySelectorAll('input[name="p-queue"]:checked')].map(
    (input) => input.value,
  );
  if (!queues.length) {
    showAlert("Choose at least one queue the person may work.");
    return;
  }
  const answer = await api("/api/admin/people", {
    method: "POST",
    body: {
      email,
      display_name: $("p-name").value.trim() || null,
      role: $("p-role").value,
      allowed_queues: queues,
    },
  });
  if (!answer.ok) return refused(answer, "add the person");
  $("person-form").reset();
  const person = answer.body.person;
  if (answer.body.set_password_link) {
    showSecret(
      `${person.display_name} was added. Give them this link to choose their password:`,
      answer.body.set_password_link,
    );
  } else {
    announce(`${person.display_name} was added; they sign in with the company's sign-in.`);
  }
  return loadPeople();
}

function roleSelect(person) {
  return el(
    "select",
    { "aria-label": `Role of ${person.display_name}`, name: "role" },
    config.roles.map((role) =>
      el("option", { value: role, selected: role === person.role, text: role }),
    ),
  );
}

async function editPerson(person) {
  const role = roleSelect(person);
  const boxes = config.queues.map(([value, label]) =>
    el(
      "label",
      { class: "check" },
      el("input", {
        type: "checkbox",
        value,
        checked: person.allowed_queues.includes(value),
      }),
      ` ${label}`,
    ),
  );
  const name = el("input", {
    type: "text",
    id: "edit-name",
    value: person.display_name,
    maxlength: 200,
  });
  role.id = "edit-role";
  const ok = await confirmDialog({
    title: `Change ${person.display_name}`,
    body: [
      el("p", { class: "field" }, el("label", { for: "edit-name", text: "Name" }), name),
      el("p", { class: "field" }, el("label", { for: "edit-role", text: "Role" }), role),
      el("fieldset", {}, el("legend", { text: "Queues they may work" }), boxes),
      el("p", {
        class: "help",
        text: "A change of role or queues signs them out everywhere: they sign in again.",
      }),
    ],
    confirmLabel: "Save",
  });
  if (!ok) return;
  const queues = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked);
  const answer = await api(`/api/admin/people/${person.id}`, {
    method: "PATCH",
    body: {
      display_name: name.value.trim() || person.display_name,
      role: role.value,
      allowed_queues: queues.map((i) => i.value),
    },
  });
  if (!answer.ok) return refused(answer, `change ${person.display_name}`);
  announce(`${person.display_name} was changed.`);
  return loadPeople();
}

async function setActive(person, active) {
  const ok = await confirmDialog({
    title: active ? `Reactivate ${person.display_name}?` : `Deactivate ${person.display_name}?`,
    body: active
      ? "They can sign in again (with their password or the company's sign-in)."
      : "They are signed out at once and cannot sign in; their tokens stop working. Their history stays.",
    confirmLabel: active ? "Reactivate" : "Deactivate",
    danger: !active,
  });
  if (!ok) return;
  const answer = await api(`/api/admin/people/${person.id}`, {
    method: "PATCH",
    body: { is_active: active },
  });
  if (!answer.ok) return refused(answer, `change ${person.display_name}`);
  announce(`${person.display_name} is ${active ? "active again" : "deactivated"}.`);
  return loadPeople();
}

async function resetPassword(person) {
  const ok = await confirmDialog({
    title: `New password link for ${person.display_name}?`,
    body: "Their password stops working and they are signed out at once, until they use the new link.",
    confirmLabel: "Make a link",
    danger: true,
  });
  if (!ok) return;
  const answer = await api(`/api/admin/people/${person.id}/reset-password`, { method: "POST" });
  if (!answer.ok) return refused(answer, "make a link");
  showSecret(
    `Give ${person.display_name} this link to choose a new password:`,
    answer.body.set_password_link,
  );
  return loadPeople();
}

async function signOutPerson(person) {
  const answer = await api(`/api/admin/people/${person.id}/sign-out`, { method: "POST" });
  if (!answer.ok) return refused(answer, `sign ${person.display_name} out`);
  const n = answer.body.sessions_ended;
  announce(`${person.display_name}: ${n} session${n === 1 ? "" : "s"} ended.`);
  showAlert(`${person.display_name} is signed out (${n} session${n === 1 ? "" : "s"} ended).`);
}

// -- API tokens (admins) -----------------------------------------------------------------------

function renderOwners() {
  const select = $("t-owner");
  const chosen = select.value;
  select.replaceChildren(
    ...state.people
      .filter((p) => p.is_active)
      .map((p) =>
        el("option", {
          value: p.id,
          selected: String(p.id) === chosen,
          text: `${p.display_name} (${p.role})`,
        }),
      ),
  );
}

async function loadTokens() {
  const answer = await api("/api/admin/tokens");
  if (!answer.ok) return refused(answer, "list the tokens");
  const rows = answer.body.items.map((token) => {
    const live = !token.revoked_at;
    return el(
      "tr",
      { class: live ? null : "inactive", "data-token": token.id },
      el("th", { scope: "row", text: token.name }),
      el("td", { text: token.owner }),
      el("td", { text: formatDate(token.created_at) }),
      el("td", { text: token.expires_at ? formatDate(token.expires_at) : "never" }),
      el("td", { text: live ? "live" : `revoked ${formatDate(token.revoked_at)}` }),
      el(
        "td",
        {},
        live
          ? el("button", {
              type: "button",
              class: "danger",
              text: "Revoke",
              onclick: () => revokeToken(token),
            })
          : "",
      ),
    );
  });
  $("tokens-table").tBodies[0].replaceChildren(...rows);
  return true;
}

async function addToken(event) {
  event.preventDefault();
  clearAlert();
  hideSecret();
  const name = $("t-name").value.trim();
  if (!name) {
    showAlert("Name the token after what uses it (for example: the scorer).");
    return;
  }
  const day = $("t-expires").value;
  const answer = await api("/api/admin/tokens", {
    method: "POST",
    body: {
      name,
      agent_id: Number($("t-owner").value),
      expires_at: day ? new Date(`${day}T23:59:59`).toISOString() : null,
    },
  });
  if (!answer.ok) return refused(answer, "create the token");
  $("token-form").reset();
  showSecret(`The token “${name}”: copy it into what uses it now.`, answer.body.token);
  return loadTokens();
}

async function revokeToken(token) {
  const ok = await confirmDialog({
    title: `Revoke “${token.name}”?`,
    body: "Whatever uses it is refused from its next request.",
    confirmLabel: "Revoke",
    danger: true,
  });
  if (!ok) return;
  const answer = await api(`/api/admin/tokens/${token.id}`, { method: "DELETE" });
  if (!answer.ok) return refused(answer, "revoke the token");
  announce(`“${token.name}” is revoked.`);
  return loadTokens();
}

// -- start -------------------------------------------------------------------------------------

async function start(me) {
  state.me = me;
  $("person-form").addEventListener("submit", addPerson);
  $("link-copy").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("link-value").textContent);
      announce("Copied.");
    } catch {
      announce("Select the text and copy it.");
    }
  });
  await loadPeople();
  if (config.handles_personal_data) startPersonalData();
  if (config.manages_webhooks) await startWebhooks();
  if (config.manages_tokens) {
    $("token-form").addEventListener("submit", addToken);
    await loadTokens();
  }
}

startSession(start);

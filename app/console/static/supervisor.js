// The supervisor's screen: queue depths and populations, live assignments and forced release,
// callbacks due and overdue (cancel, reassign), flags, calling rules, the compliance report and
// the 24-hour chart. Only the public API, with a supervisor's token.

import { api, describeAnswer, serverNow } from "./api.js";
import { activityChart, legend } from "./chart.js";
import { RulesError, parseHours } from "./calling-hours.js";
import {
  $,
  announce,
  clearAlert,
  confirmDialog,
  el,
  formatDate,
  formatDuration,
  formatTime,
  formatWhen,
  sessionEnded,
  showAlert,
  startSession,
} from "./ui.js";

const QUEUE_NAMES = {
  unsigned_users: "Unsigned users",
  outstanding_requests: "Outstanding requests",
};
const FLAG_NAMES = [
  "USE_SEPARATED_QUEUES",
  "USE_NEW_QUEUE_SERVICES",
  "MIGRATION_MODE",
  "ENABLE_QUEUE_VALIDATION",
];
const SERVING = {
  queues: "from the queues",
  dual: "from the queues, then direct mode",
  direct: "direct mode (straight from the scored list)",
};
const REFRESH_MS = 10000;
const ACTIVITY_MS = 60000;
const workspace = $("workspace");
const CALLBACK_GRACE_MS = Number(workspace.dataset.callbackGraceMinutes) * 60000;
const CALLBACK_PERSONAL_MS = Number(workspace.dataset.callbackPersonalMinutes) * 60000;

const state = {
  flags: null,
  rules: null,
  agents: new Map(), // agent id -> name, learnt from the ledger (the API has no agent listing)
  timers: [],
};

function visible() {
  return document.visibilityState === "visible";
}

function signedOut() {
  sessionEnded();
}

// Common handling of an answer the panel could not use: 401 signs out, the rest is said.
function trouble(answer, what) {
  if (answer.status === 401) {
    signedOut();
    return true;
  }
  if (!answer.ok) {
    showAlert(`Could not load ${what}: the service answered ${describeAnswer(answer)}.`);
    return true;
  }
  return false;
}

// Run times: tenths of a second below ten seconds (most populations take well under one).
const took = (ms) => (ms < 10000 ? `${(ms / 1000).toFixed(1)} s` : formatDuration(ms));

const cell = (text, attrs = {}) => el("td", { text: String(text ?? "–"), ...attrs });

// -- queues and populations ----------------------------------------------------------------------

async function refreshQueues() {
  const answer = await api("/api/queues/stats", { query: { window_minutes: 60 } });
  if (trouble(answer, "the queue figures")) return;
  for (const [queue, q] of Object.entries(answer.body.queues)) {
    const row = document.querySelector(`#queues-table tr[data-queue="${queue}"]`);
    if (!row) continue;
    const set = (col, text) => {
      row.querySelector(`[data-col="${col}"]`).textContent = text;
    };
    set("pending", q.pending);
    set("assigned", q.assigned);
    set(
      "oldest",
      q.oldest_pending_age_seconds === null ? "–" : formatDuration(q.oldest_pending_age_seconds * 1000),
    );
    set(
      "longest",
      q.longest_assignment_seconds === null ? "–" : formatDuration(q.longest_assignment_seconds * 1000),
    );
    set("claims", q.window.claims);
    const last = q.last_population;
    set(
      "last",
      last ? `${last.status} at ${formatTime(last.finished_at)}, ${last.populated} queued` : "never",
    );
  }
  showCallbackSummary(answer.body.queues);
}

function queueFigures(q) {
  if (!q) return "–";
  if (q.status === "skipped") return "skipped";
  const base = `${q.status}: ${q.populated} queued, ${q.invalid} moved out`;
  return q.error ? `${base} (${q.error})` : base;
}

async function refreshRuns() {
  const answer = await api("/api/population-runs", { query: { limit: 8 } });
  if (trouble(answer, "the population runs")) return;
  const rows = answer.body.items.map((run) =>
    el(
      "tr",
      {},
      cell(formatWhen(run.started_at)),
      cell(run.dry_run ? `${run.trigger} (dry run)` : run.trigger),
      cell(run.status, { class: `status-${run.status}` }),
      cell(queueFigures(run.queues.unsigned_users)),
      cell(queueFigures(run.queues.outstanding_requests)),
      cell(run.duration_ms === null ? "running" : took(run.duration_ms)),
    ),
  );
  $("runs-table").querySelector("tbody").replaceChildren(...rows);
  $("runs-table").hidden = rows.length === 0;
  $("runs-empty").hidden = rows.length > 0;
}

function reportView(report) {
  const rows = Object.entries(report.queues).map(([queue, q]) =>
    el(
      "tr",
      {},
      el("th", { scope: "row", text: QUEUE_NAMES[queue] ?? queue }),
      cell(q.status, { class: `status-${q.status}` }),
      cell(q.eligible, { class: "num" }),
      cell(q.invalid, { class: "num" }),
      cell(q.populated, { class: "num" }),
      cell(q.removed, { class: "num" }),
      cell(q.kept_assigned, { class: "num" }),
      cell(took(q.duration_ms)),
      cell(q.error ?? ""),
    ),
  );
  const heads = ["Queue", "Status", "Eligible", "Moved out", "Queued", "Removed", "Kept (live)", "Took", "Error"];
  return el(
    "div",
    { class: "report" },
    el(
      "p",
      {},
      el("strong", {
        text: report.success ? "The population succeeded." : "The population failed for a queue.",
      }),
      ` Run ${report.run_id}, ${took(report.duration_ms)}; next scheduled about ${formatTime(report.next_run_at)}.`,
    ),
    el(
      "table",
      {},
      el("caption", { class: "visually-hidden", text: "The population's report per queue" }),
      el("thead", {}, el("tr", {}, heads.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows),
    ),
  );
}

async function populate(event) {
  event.preventDefault();
  const button = $("populate");
  const box = $("populate-result");
  const dryRun = $("populate-dry").checked;
  button.disabled = true;
  box.hidden = false;
  box.classList.remove("is-error");
  box.replaceChildren(el("p", { text: dryRun ? "Dry run in progress…" : "Population in progress…" }));
  announce("Population started.");
  const answer = await api("/api/admin/populate", {
    method: "POST",
    query: { queue: $("populate-queue").value, dry_run: dryRun ? "true" : null },
  });
  button.disabled = false;
  if (answer.status === 401) return signedOut();
  if (answer.body && "queues" in (answer.body ?? {}) && (answer.status === 200 || answer.status === 500)) {
    box.replaceChildren(reportView(answer.body));
    box.classList.toggle("is-error", !answer.body.success);
    announce(answer.body.success ? "The population succeeded." : "The population failed.");
  } else if (answer.status === 409) {
    box.classList.add("is-error");
    box.replaceChildren(
      el("p", { text: "A population is already running (the scheduler's, perhaps). Try again when it ends." }),
    );
    announce("A population is already running.");
  } else {
    box.classList.add("is-error");
    box.replaceChildren(el("p", { text: `Not run: the service answered ${describeAnswer(answer)}.` }));
  }
  box.focus();
  refreshRuns();
  refreshQueues();
}

// -- live assignments and forced release ---------------------------------------------------------

async function refreshLive() {
  const answer = await api("/api/assignments", { query: { status: "active", limit: 200 } });
  if (trouble(answer, "the live assignments")) return;
  const items = [...answer.body.items].sort(
    (a, b) => Date.parse(a.assigned_at) - Date.parse(b.assigned_at),
  );
  for (const a of items) state.agents.set(a.agent_id, a.agent_name);
  const rows = items.map((a) => {
    const who = `user ${a.user_id} from ${a.agent_name}`;
    return el(
      "tr",
      { "data-assignment": a.assignment_id },
      cell(a.agent_name),
      cell(QUEUE_NAMES[a.queue_type] ?? a.queue_type),
      cell(a.user_id),
      cell(a.source),
      el("td", { "data-since": a.assigned_at }),
      el("td", { "data-until": a.lease_expires_at }),
      el(
        "td",
        {},
        el("button", {
          type: "button",
          class: "danger",
          text: "Release…",
          "aria-label": `Release ${who}`,
          onclick: () => forceRelease(a),
        }),
      ),
    );
  });
  $("live-table").querySelector("tbody").replaceChildren(...rows);
  $("live-table").hidden = rows.length === 0;
  $("live-empty").hidden = rows.length > 0;
  tickAges();
}

function tickAges() {
  const now = serverNow();
  for (const node of document.querySelectorAll("[data-since]")) {
    node.textContent = formatDuration(now - Date.parse(node.dataset.since));
  }
  for (const node of document.querySelectorAll("[data-until]")) {
    const left = Date.parse(node.dataset.until) - now;
    node.textContent = left > 0 ? formatDuration(left) : "lapsed";
    node.classList.toggle("lapsed", left <= 0);
  }
}

async function forceRelease(a) {
  const ok = await confirmDialog({
    title: `Take user ${a.user_id} back from ${a.agent_name}?`,
    body: [
      el("p", {
        text: `${a.agent_name} may be on the phone with them right now. The person goes back to the queue for the next agent, and ${a.agent_name}'s screen says they were taken back.`,
      }),
    ],
    confirmLabel: "Release",
    danger: true,
  });
  if (!ok) return;
  const answer = await api(`/api/admin/assignments/${a.assignment_id}/release`, {
    method: "POST",
    body: { reason: null },
  });
  if (answer.status === 401) return signedOut();
  if (answer.ok) {
    announce(`User ${a.user_id} was taken back from ${a.agent_name} and re-queued.`);
  } else {
    showAlert(`Not released: the service answered ${describeAnswer(answer)}.`);
  }
  refreshLive();
  refreshQueues();
}

// -- flags ---------------------------------------------------------------------------------------

function showFlags(flags) {
  state.flags = flags;
  const form = $("flags-form");
  for (const name of FLAG_NAMES) {
    const input = form.elements[name];
    if (input.type === "checkbox") input.checked = Boolean(flags[name]);
    else input.value = flags[name];
  }
  $("serving-mode").textContent = SERVING[flags.serving_mode] ?? flags.serving_mode;
}

function flagChanges() {
  const form = $("flags-form");
  const changes = {};
  for (const name of FLAG_NAMES) {
    const input = form.elements[name];
    const value = input.type === "checkbox" ? input.checked : input.value;
    if (value !== state.flags[name]) changes[name] = value;
  }
  return changes;
}

async function applyFlags(event) {
  event.preventDefault();
  const changes = flagChanges();
  const names = Object.keys(changes);
  if (!names.length) {
    announce("Nothing to apply: no flag was changed.");
    return;
  }
  const ok = await confirmDialog({
    title: `Change ${names.length === 1 ? "this flag" : `these ${names.length} flags`}?`,
    body: [
      el(
        "ul",
        {},
        names.map((n) => el("li", {}, el("code", { text: n }), `: ${state.flags[n]} → ${changes[n]}`)),
      ),
      el("p", { text: "Every agent's next request follows the change, on every server." }),
    ],
    confirmLabel: "Apply",
  });
  if (!ok) {
    announce("No flag was changed.");
    return;
  }
  const answer = await api("/api/admin/flags", { method: "PUT", body: changes });
  if (answer.status === 401) return signedOut();
  if (!answer.ok) {
    showAlert(`Flags not changed: the service answered ${describeAnswer(answer)}.`);
    return;
  }
  showFlags(answer.body);
  announce(`Flags changed. Agents are now served ${SERVING[answer.body.serving_mode]}.`);
}

// -- the chart -----------------------------------------------------------------------------------

async function refreshActivity() {
  const answer = await api("/api/reports/activity", { query: { hours: 24 } });
  if (trouble(answer, "the activity chart")) return;
  const buckets = answer.body.buckets;
  $("chart").replaceChildren(activityChart(buckets), legend());
  const rows = buckets.map((b) =>
    el(
      "tr",
      {},
      el("th", { scope: "row", text: formatTime(b.hour_start) }),
      cell(b.handed_out, { class: "num" }),
      cell(
        Object.entries(b.outcomes)
          .sort(([ka, a], [kb, c]) => c - a || ka.localeCompare(kb))
          .map(([k, v]) => `${k.replaceAll("_", " ")} ${v}`)
          .join(", ") || "0",
      ),
      cell(b.released, { class: "num" }),
      cell(b.expired, { class: "num" }),
    ),
  );
  $("activity-table").querySelector("tbody").replaceChildren(...rows);
}

// -- callbacks due and overdue (SPEC 7.2) -------------------------------------------------------

// Per queue, from the statistics: due (and overdue), booked for later, being called, kept late.
function showCallbackSummary(queues) {
  const lines = Object.entries(queues)
    .filter(([, q]) => q.callbacks)
    .map(([queue, q]) => {
      const c = q.callbacks;
      return el(
        "li",
        { "data-queue": queue },
        el("strong", { text: `${QUEUE_NAMES[queue] ?? queue}: ` }),
        `${c.due} due (${c.overdue} overdue), ${c.scheduled - c.due} booked for later, ` +
          `${c.assigned} being called, ${c.late} kept late in the last hour.`,
      );
    });
  $("callbacks-summary").replaceChildren(...lines);
}

// Owners are agent ids; the ledger knows their names (an owner booked the callback through an
// assignment). Unknown ids are looked up once each.
async function agentNames(ids) {
  const unknown = [...new Set(ids)].filter((id) => !state.agents.has(id));
  await Promise.all(
    unknown.map(async (id) => {
      const answer = await api("/api/assignments", { query: { agent_id: id, limit: 1 } });
      const row = answer.ok ? answer.body.items[0] : null;
      if (row) state.agents.set(id, row.agent_name);
    }),
  );
}

const agentLabel = (id) => (state.agents.has(id) ? state.agents.get(id) : `agent ${id}`);

// Due callbacks are kept for their owner for CALLBACK_PERSONAL_MINUTES, then anyone may take
// them; one still waiting CALLBACK_GRACE_MINUTES after its time is overdue (a promise broken).
function callbackStatus(c, now) {
  const waited = now - Date.parse(c.due_at);
  const anyone = waited >= CALLBACK_PERSONAL_MS ? "; any agent may take it" : "";
  if (waited > CALLBACK_GRACE_MS) {
    return { text: `overdue by ${formatDuration(waited)}${anyone}`, overdue: true };
  }
  return { text: `due ${formatDuration(waited)} ago${anyone}`, overdue: false };
}

async function refreshCallbacks() {
  const now = serverNow();
  const answer = await api("/api/callbacks", {
    query: { status: "scheduled", due_before: new Date(now).toISOString(), limit: 200 },
  });
  if (trouble(answer, "the callbacks")) return;
  const items = [...answer.body.items].sort((a, b) => Date.parse(a.due_at) - Date.parse(b.due_at));
  await agentNames(items.map((c) => c.agent_id));
  const rows = items.map((c) => {
    const status = callbackStatus(c, now);
    return el(
      "tr",
      { "data-callback": c.id, "data-user": c.user_id },
      cell(formatWhen(c.due_at)),
      cell(agentLabel(c.agent_id)),
      cell(QUEUE_NAMES[c.queue_type] ?? c.queue_type),
      cell(c.user_id),
      cell(status.text, { class: status.overdue ? "status-overdue" : "status-due" }),
      el(
        "td",
        { class: "actions" },
        el("button", {
          type: "button",
          text: "Reassign…",
          "aria-label": `Reassign the callback of user ${c.user_id}`,
          onclick: () => reassignCallback(c),
        }),
        " ",
        el("button", {
          type: "button",
          class: "danger",
          text: "Cancel…",
          "aria-label": `Cancel the callback of user ${c.user_id}`,
          onclick: () => cancelCallback(c),
        }),
      ),
    );
  });
  $("callbacks-table").querySelector("tbody").replaceChildren(...rows);
  $("callbacks-table").hidden = rows.length === 0;
  $("callbacks-empty").hidden = rows.length > 0;
  const more = answer.body.total - items.length;
  $("callbacks-more").hidden = more <= 0;
  $("callbacks-more").textContent = `${more} more due are not listed (the oldest are shown).`;
}

function reasonField(id) {
  return [
    el("label", { for: id, text: "Reason (optional, kept in the audit only)" }),
    el("input", { id, type: "text", maxlength: "500", autocomplete: "off" }),
  ];
}

async function callbackAnswer(answer, c, done, verb) {
  if (answer.status === 401) return signedOut();
  if (answer.ok) announce(done);
  else if (answer.status === 409 || answer.status === 404) {
    showAlert(
      `The callback of user ${c.user_id} was not ${verb}: it is no longer open (it was just ` +
        `served, completed or cancelled). The service answered ${describeAnswer(answer)}.`,
    );
  } else {
    showAlert(
      `The callback of user ${c.user_id} was not ${verb}: the service answered ` +
        `${describeAnswer(answer)}.`,
    );
  }
  await refreshCallbacks();
  refreshQueues();
}

async function cancelCallback(c) {
  const ok = await confirmDialog({
    title: `Cancel the callback of user ${c.user_id}?`,
    body: [
      el("p", {
        text:
          `It was promised for ${formatWhen(c.due_at)} by ${agentLabel(c.agent_id)}. Nobody will ` +
          "be asked to keep it, and the person goes back to being called by their score.",
      }),
      ...reasonField("cancel-reason"),
    ],
    confirmLabel: "Cancel the callback",
    danger: true,
  });
  if (!ok) {
    announce("The callback was kept.");
    return;
  }
  const reason = $("cancel-reason").value.trim();
  const answer = await api(`/api/admin/callbacks/${c.id}/cancel`, {
    method: "POST",
    body: reason ? { reason } : undefined,
  });
  await callbackAnswer(answer, c, `The callback of user ${c.user_id} was cancelled.`, "cancelled");
}

async function reassignCallback(c) {
  const options = [...state.agents]
    .filter(([id]) => id !== c.agent_id)
    .map(([id, name]) => el("option", { value: String(id), label: `${name} (id ${id})` }));
  const ok = await confirmDialog({
    title: `Reassign the callback of user ${c.user_id}?`,
    body: [
      el("p", {
        text:
          `Promised for ${formatWhen(c.due_at)}, now ${agentLabel(c.agent_id)}'s. The agent you ` +
          "name gets it first on their next claim.",
      }),
      el("label", { for: "reassign-agent", text: "The id of the agent who should keep it" }),
      el("input", {
        id: "reassign-agent",
        type: "text",
        inputmode: "numeric",
        autocomplete: "off",
        list: "reassign-agents",
        "aria-describedby": "reassign-help",
      }),
      el("datalist", { id: "reassign-agents" }, options),
      el("p", {
        id: "reassign-help",
        class: "help",
        text: options.length
          ? `Agents seen lately: ${options.map((o) => o.label).join(", ")}.`
          : "An agent's id, as `callqueue agents list` shows it.",
      }),
      ...reasonField("reassign-reason"),
    ],
    confirmLabel: "Reassign",
  });
  if (!ok) {
    announce("The callback was not reassigned.");
    return;
  }
  const text = $("reassign-agent").value.trim();
  const agentId = Number(text);
  if (!/^\d+$/.test(text) || agentId < 1) {
    showAlert(`Not reassigned: “${text}” is not an agent's id (a whole number).`);
    return;
  }
  const reason = $("reassign-reason").value.trim();
  const answer = await api(`/api/admin/callbacks/${c.id}/reassign`, {
    method: "POST",
    body: reason ? { agent_id: agentId, reason } : { agent_id: agentId },
  });
  if (answer.status === 422) {
    showAlert(
      `Not reassigned: agent ${agentId} cannot take callbacks (unknown or deactivated). ` +
        `The service answered ${describeAnswer(answer)}.`,
    );
    return;
  }
  await callbackAnswer(
    answer,
    c,
    `The callback of user ${c.user_id} now belongs to ${agentLabel(agentId)}.`,
    "reassigned",
  );
}

// -- calling rules (SPEC 7.3) ---------------------------------------------------------------------

function showRules(rules) {
  state.rules = rules;
  $("rules-timezone").value = rules.timezone;
  $("rules-hours").value = rules.hours;
  $("rules-holidays").value = (rules.holidays ?? []).join(", ");
  let now;
  if (rules.open_now) now = "Calling is open now.";
  else if (rules.opens_at) {
    now =
      `Calling is closed now; it opens ${formatWhen(rules.opens_at)} ` +
      `(in ${formatDuration(Date.parse(rules.opens_at) - serverNow())}).`;
  } else now = "Calling is closed, and these rules never open: nobody can be called.";
  $("rules-now").textContent = now;
  $("rules-now").classList.toggle("status-overdue", !rules.open_now);
}

async function loadRules() {
  const answer = await api("/api/admin/calling-rules");
  if (trouble(answer, "the calling rules")) return;
  showRules(answer.body);
}

async function applyRules(event) {
  event.preventDefault();
  const error = $("rules-error");
  error.hidden = true;
  const proposed = {
    timezone: $("rules-timezone").value.trim(),
    hours: $("rules-hours").value.trim(),
    holidays: $("rules-holidays")
      .value.split(",")
      .map((d) => d.trim())
      .filter(Boolean),
  };
  try {
    parseHours(proposed.hours);
  } catch (problem) {
    if (!(problem instanceof RulesError)) throw problem;
    error.textContent = `The hours cannot be read: ${problem.message}.`;
    error.hidden = false;
    $("rules-hours").focus();
    return;
  }
  const changes = {};
  if (proposed.timezone !== state.rules.timezone) changes.timezone = proposed.timezone;
  if (proposed.hours !== state.rules.hours) changes.hours = proposed.hours;
  if (proposed.holidays.join(",") !== (state.rules.holidays ?? []).join(",")) {
    changes.holidays = proposed.holidays;
  }
  const names = Object.keys(changes);
  if (!names.length) {
    announce("Nothing to apply: the calling rules are unchanged.");
    return;
  }
  const show = (v) => (Array.isArray(v) ? v.join(", ") || "none" : v);
  const ok = await confirmDialog({
    title: "Change the calling rules?",
    body: [
      el("ul", {}, names.map((n) => el("li", {}, `${n}: ${show(state.rules[n])} → ${show(changes[n])}`))),
      el("p", { text: "Agents can be handed people only inside these hours, from their next request on." }),
    ],
    confirmLabel: "Apply",
  });
  if (!ok) return;
  const answer = await api("/api/admin/calling-rules", { method: "PUT", body: changes });
  if (answer.status === 401) return signedOut();
  if (!answer.ok) {
    error.textContent = `Not changed: the service answered ${describeAnswer(answer)}.`;
    error.hidden = false;
    return;
  }
  showRules(answer.body);
  announce("The calling rules were changed.");
}

// -- the compliance report (SPEC 7.3) ------------------------------------------------------------

// Today in the browser's calendar, as the date inputs take it.
function today() {
  const d = new Date(serverNow());
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

// Columns that must stay at zero: a non-zero count there is a rule broken, shown as such.
const MUST_BE_ZERO = /^(outside_hours|over_)/;

// The API names and describes its columns: days are rows, columns its columns (each header
// carries the API's description), then the totals row.
function complianceView(report) {
  const columns = report.columns ?? [];
  const flag = (name, value) =>
    MUST_BE_ZERO.test(name) && Number(value) > 0
      ? { class: "num status-overdue" }
      : { class: "num" };
  const head = el(
    "tr",
    {},
    el("th", { scope: "col", text: "Day" }),
    columns.map((c) =>
      el("th", {
        scope: "col",
        class: "num",
        title: c.description,
        text: c.name.replaceAll("_", " "),
      }),
    ),
  );
  const rows = report.days.map((d) =>
    el(
      "tr",
      {},
      el("th", { scope: "row", text: formatDate(`${d.date}T12:00:00`) }),
      columns.map((c) => cell(d[c.name], flag(c.name, d[c.name]))),
    ),
  );
  const totals = el(
    "tr",
    { class: "totals" },
    el("th", { scope: "row", text: "Total" }),
    columns.map((c) => cell(report.totals[c.name], flag(c.name, report.totals[c.name]))),
  );
  const caps = report.caps
    ? ` Attempt caps: ${report.caps.per_day} a day, ${report.caps.per_week} a week.`
    : "";
  return [
    el("p", {
      text:
        `From ${formatDate(`${report.from}T12:00:00`)} ` +
        `to ${formatDate(`${report.to}T12:00:00`)}, ` +
        `days in ${report.timezone} time; generated ${formatWhen(report.generated_at)}.${caps}`,
    }),
    el(
      "table",
      { id: "compliance-table" },
      el("caption", {
        class: "visually-hidden",
        text: "The compliance report per day, then the totals",
      }),
      el("thead", {}, head),
      el("tbody", {}, rows, totals),
    ),
    el(
      "details",
      {},
      el("summary", { text: "What each column counts" }),
      el(
        "dl",
        { class: "columns" },
        columns.flatMap((c) => [
          el("dt", { text: c.name.replaceAll("_", " ") }),
          el("dd", { text: c.description }),
        ]),
      ),
    ),
  ];
}

async function showCompliance(event) {
  event.preventDefault();
  const error = $("compliance-error");
  error.hidden = true;
  const answer = await api("/api/reports/compliance", {
    query: { from: $("compliance-from").value, to: $("compliance-to").value },
  });
  if (answer.status === 401) return signedOut();
  if (!answer.ok) {
    error.textContent = `No report: the service answered ${describeAnswer(answer)}.`;
    error.hidden = false;
    return;
  }
  $("compliance-result").replaceChildren(...complianceView(answer.body));
  $("compliance-result").focus();
}

// -- start ---------------------------------------------------------------------------------------

function refreshAll() {
  if (!visible()) return;
  refreshQueues();
  refreshRuns();
  refreshLive().then(refreshCallbacks);
}

async function start() {
  const flags = await api("/api/admin/flags");
  if (flags.status === 401) return signedOut();
  clearAlert();
  if (flags.ok) showFlags(flags.body);
  else showAlert(`Could not load the flags: the service answered ${describeAnswer(flags)}.`);
  $("populate-form").addEventListener("submit", populate);
  $("flags-form").addEventListener("submit", applyFlags);
  $("flags-form").addEventListener("reset", (event) => {
    event.preventDefault();
    if (state.flags) showFlags(state.flags);
  });
  $("rules-form").addEventListener("submit", applyRules);
  $("compliance-form").addEventListener("submit", showCompliance);
  document.addEventListener("visibilitychange", () => {
    if (visible()) {
      refreshAll();
      refreshActivity();
    }
  });
  $("compliance-from").value = today();
  $("compliance-to").value = today();
  refreshAll();
  refreshActivity();
  loadRules();
  state.timers.push(window.setInterval(refreshAll, REFRESH_MS));
  state.timers.push(window.setInterval(() => visible() && refreshActivity(), ACTIVITY_MS));
  state.timers.push(window.setInterval(tickAges, 1000));
  $("main").focus();
}

startSession(start);

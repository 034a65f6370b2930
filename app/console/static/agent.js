// The agent's screen: queue picker, Next user, the contact card with its lease, outcomes,
// release and skip, the agent's callbacks. Everything goes through the public API (api.js).

import { api, describeAnswer, serverNow } from "./api.js";
import { describeRules, isWithinCallingHours, RulesError } from "./calling-hours.js";
import {
  $,
  announce,
  clearAlert,
  confirmDialog,
  el,
  formatClock,
  formatDate,
  formatDuration,
  formatTime,
  formatWhen,
  sessionEnded,
  showAlert,
  startSession,
  toLocalInputValue,
} from "./ui.js";

const QUEUE_NAMES = {
  unsigned_users: "Unsigned users",
  outstanding_requests: "Outstanding requests",
};
const SOURCE_NAMES = {
  queue: "the queue",
  direct: "direct mode (straight from the scored list)",
  callback: "a callback",
};
const DETAIL_LABELS = {
  signature_missing_since: "Signature missing since",
  signature_type: "Signature type",
  requirement_types: "Documents still owed",
  pending_requirements: "Pending documents",
  completed_requirements: "Documents received",
  total_requirements: "Documents in all",
  oldest_requirement_date: "Oldest pending since",
};
const POLL_MS = 15000;
const HEARTBEAT_MAX_MS = 60000;
const HEARTBEAT_MIN_MS = 3000;
const WARN_MAX_MS = 120000;
const BASE_TITLE = document.title;

const workspace = $("workspace");
const CALLBACK_MAX_DAYS = Number(workspace.dataset.callbackMaxDays);
const CALLBACK_GRACE_MS = Number(workspace.dataset.callbackGraceMinutes) * 60000;
const CALLBACK_PERSONAL_MS = Number(workspace.dataset.callbackPersonalMinutes) * 60000;

const state = {
  assignment: null, // the Assignment held, as the API last gave it
  leaseMs: null, // the lease's length, learnt from claim and extend answers
  expired: false,
  warned: false,
  working: false, // a request about the held assignment is in flight
  heartbeat: null,
  ticker: null,
  poller: null,
  retry: null, // the automatic retry of a busy next-user
  dueMine: {}, // per queue: this agent's own callbacks due now (GET /api/callbacks/mine)
  dueAll: {}, // per queue: every callback due now (GET /api/queues/stats)
  rules: null, // the calling hours in force (GET /api/calling-hours), once read
};

// -- helpers -----------------------------------------------------------------------------------

function selectedQueue() {
  return document.querySelector('input[name="queue"]:checked').value;
}

function fullName(assignment) {
  const user = assignment.user;
  const name = user ? [user.first_name, user.last_name].filter(Boolean).join(" ") : "";
  return name || `user ${assignment.user_id}`;
}

function leaseLeftMs() {
  return Date.parse(state.assignment.lease_expires_at) - serverNow();
}

function visible() {
  return document.visibilityState === "visible";
}

function showState(kind, title, text, { retry = false, focus = true } = {}) {
  const box = $("state");
  box.className = `state ${kind}`;
  $("state-title").textContent = title;
  $("state-text").textContent = text;
  $("state-retry").hidden = !retry;
  box.hidden = false;
  announce(`${title}. ${text}`);
  if (focus) box.focus();
}

function hideState() {
  $("state").hidden = true;
}

function showResult(text, { error = false } = {}) {
  const box = $("last-result");
  box.textContent = text;
  box.classList.toggle("is-error", error);
  box.hidden = false;
  announce(text);
}

function cancelRetry() {
  if (state.retry) window.clearInterval(state.retry);
  state.retry = null;
}

function signedOut() {
  sessionEnded();
}

// Typed notes stay in this tab until they are sent: a session that ends mid-call (and the
// sign-in page it leads to) loses none of them. sessionStorage: this tab only, gone with it.
const NOTES_KEY = "callqueue.notes";

function keepNotes() {
  if (!state.assignment) return;
  const text = $("notes").value;
  if (text) {
    sessionStorage.setItem(
      NOTES_KEY,
      JSON.stringify({ assignment_id: state.assignment.assignment_id, text }),
    );
  } else sessionStorage.removeItem(NOTES_KEY);
}

function restoreNotes(assignmentId) {
  let kept = null;
  try {
    kept = JSON.parse(sessionStorage.getItem(NOTES_KEY));
  } catch {
    kept = null;
  }
  if (kept?.assignment_id === assignmentId && typeof kept.text === "string") {
    $("notes").value = kept.text;
    updateNotesCount();
    announce("Your notes for this call are back.");
  }
}

function forgetNotes() {
  sessionStorage.removeItem(NOTES_KEY);
}

// -- the queue picker and Next user --------------------------------------------------------------

async function nextUser() {
  if (state.assignment && !state.expired) {
    announce("Finish or give back the person you are calling first.");
    $("call-title").focus();
    return;
  }
  if (state.assignment) closeCard(); // a lapsed lease left unrecorded
  cancelRetry();
  clearAlert();
  const queue = selectedQueue();
  const button = $("next");
  button.disabled = true;
  $("last-result").hidden = true;
  $("last-result").textContent = "";
  const answer = await api(`/api/queues/${queue}/next-user`, { method: "POST" });
  button.disabled = false;
  await handleClaim(answer, queue);
}

async function handleClaim(answer, queue) {
  const name = QUEUE_NAMES[queue];
  if (answer.status === 200) {
    hideState();
    showAssignment(answer.body, { fresh: true });
    refreshCounts();
    loadRules();
    if (answer.body.source === "callback") refreshCallbacks();
    return;
  }
  if (answer.status === 204) {
    showState(
      "is-empty",
      "Nobody to call",
      `Nobody is waiting in ${name} right now. The queue is refilled automatically; ` +
        "try again in a minute, or switch queue (Q).",
    );
    return;
  }
  if (answer.status === 401) return signedOut();
  if (answer.status === 409 && answer.error === "OutsideCallingHours") {
    const opens = answer.body?.opens_at;
    const when = opens
      ? `Calling opens ${formatWhen(opens)} (in ${formatDuration(Date.parse(opens) - serverNow())}).`
      : "The calling rules do not open again; ask your supervisor.";
    showState("is-hours", "Outside calling hours", `Nobody may be called now. ${when}`);
    return;
  }
  if (answer.status === 409) {
    // This agent already holds someone in the other queue: show them.
    const current = await api("/api/assignments/current");
    if (current.status === 200) {
      showAssignment(current.body, { fresh: false });
      const other = QUEUE_NAMES[current.body.queue_type] ?? current.body.queue_type;
      announce(`You still hold a person from ${other}: finish or give them back first.`);
      return;
    }
    showState("is-error", "Not handed out", `The service answered ${describeAnswer(answer)}.`, {
      retry: true,
    });
    return;
  }
  if (answer.status === 503 && answer.error === "ReplicaUnavailable") {
    showState(
      "is-error",
      "Claims platform unreachable",
      "The claims platform's database (the replica) is not answering, so nobody can be " +
        "checked and handed out. Nothing was assigned to you. Try again in a moment; " +
        "if it lasts, tell your supervisor.",
      { retry: true },
    );
    return;
  }
  if (answer.status === 503 || answer.status === 429) {
    busy(answer, queue);
    return;
  }
  if (answer.status === 0) {
    showState(
      "is-error",
      "Service unreachable",
      "This page cannot reach the callqueue service (the network or the server is down). " +
        "Nothing was assigned to you.",
      { retry: true },
    );
    return;
  }
  showState("is-error", "Not handed out", `The service answered ${describeAnswer(answer)}.`, {
    retry: true,
  });
}

// A 503 with Retry-After: the service asks to be asked again; the page does it by itself.
function busy(answer, queue) {
  const why =
    answer.error === "ValidationAttemptsExhausted"
      ? "Many people at the front of the queue turned out not to be callable; still looking."
      : answer.error === "DatabaseUnavailable"
        ? "The service's database is not answering."
        : "The service is busy.";
  let left = Math.max(1, answer.retryAfter ?? 3);
  const render = (focus) =>
    showState("is-busy", "Busy: retrying by itself", `${why} Trying again in ${left} s.`, {
      focus,
    });
  render(true);
  state.retry = window.setInterval(() => {
    left -= 1;
    if (left > 0) {
      $("state-text").textContent = `${why} Trying again in ${left} s.`;
      return;
    }
    cancelRetry();
    if (!state.assignment && selectedQueue() === queue) nextUser();
  }, 1000);
}

async function refreshCounts() {
  const answer = await api("/api/queues/stats", { query: { window_minutes: 15 } });
  if (answer.status === 401) return signedOut();
  for (const node of document.querySelectorAll("[data-count-for]")) {
    const queue = node.dataset.countFor;
    const figures = answer.ok ? answer.body.queues[queue] : null;
    node.textContent = figures ? `${figures.pending} waiting` : "count unavailable";
    if (figures?.callbacks) state.dueAll[queue] = figures.callbacks.due;
  }
  showDue();
}

// The picker's callback line per queue: due callbacks are served before anyone in the queue.
function showDue() {
  for (const node of document.querySelectorAll("[data-due-for]")) {
    const queue = node.dataset.dueFor;
    const mine = state.dueMine[queue] ?? 0;
    const all = Math.max(state.dueAll[queue] ?? 0, mine);
    const plural = all === 1 ? "" : "s";
    let whose = "";
    if (mine && mine === all) whose = all === 1 ? " (yours)" : " (all yours)";
    else if (mine) whose = ` (${mine} yours)`;
    node.textContent = all ? `${all} callback${plural} due${whose}, served first` : "";
    node.hidden = all === 0;
  }
}

// -- the agent's callbacks (SPEC 7.2) ------------------------------------------------------------

// What a callback of this agent's is now, in words: booked for later, due (and until when it is
// kept for this agent alone), or being called.
function callbackState(item, now) {
  if (item.status === "assigned") return { text: "being called", className: "" };
  const due = Date.parse(item.due_at);
  if (due > now) return { text: `in ${formatDuration(due - now)}`, className: "" };
  if (now - due > CALLBACK_GRACE_MS) {
    return { text: `overdue by ${formatDuration(now - due)}`, className: "status-overdue" };
  }
  const personal = due + CALLBACK_PERSONAL_MS;
  const until = personal > now ? `; yours alone until ${formatTime(new Date(personal))}` : "";
  return { text: `due now${until}`, className: "status-due" };
}

async function refreshCallbacks() {
  const answer = await api("/api/callbacks/mine");
  if (answer.status === 401) return signedOut();
  if (!answer.ok) {
    $("callbacks-empty").textContent =
      `Your callbacks could not be loaded: the service answered ${describeAnswer(answer)}.`;
    $("callbacks-empty").hidden = false;
    return;
  }
  const items = [...answer.body.items].sort((a, b) => Date.parse(a.due_at) - Date.parse(b.due_at));
  const now = serverNow();
  const due = {};
  const rows = items.map((item) => {
    if (item.status === "scheduled" && Date.parse(item.due_at) <= now) {
      due[item.queue_type] = (due[item.queue_type] ?? 0) + 1;
    }
    const { text, className } = callbackState(item, now);
    return el(
      "tr",
      { "data-callback": item.id },
      el("td", { text: formatWhen(item.due_at) }),
      el("td", { text: QUEUE_NAMES[item.queue_type] ?? item.queue_type }),
      el("td", { text: String(item.user_id) }),
      el("td", { class: className, text }),
    );
  });
  $("callbacks-table").querySelector("tbody").replaceChildren(...rows);
  $("callbacks-table").hidden = rows.length === 0;
  $("callbacks-empty").textContent = "No callbacks booked.";
  $("callbacks-empty").hidden = rows.length > 0;
  state.dueMine = due;
  showDue();
}

// The calling hours are anyone's to read (SPEC 8.1): the callback picker offers and accepts
// only times inside them before sending; the API's 422 stays the authority. Read when the page
// starts, with every person handed out, and after the API refused a time (a supervisor may
// have changed the rules meanwhile); kept as they were when a read fails.
async function loadRules() {
  const answer = await api("/api/calling-hours");
  if (answer.status === 200) state.rules = answer.body;
}

function poll() {
  if (!visible()) return;
  refreshCounts();
  refreshCallbacks();
}

// -- the contact card ----------------------------------------------------------------------------

function setText(id, value) {
  $(id).textContent = value === null || value === undefined || value === "" ? "–" : String(value);
}

function detailValue(key, value) {
  if (value === null || value === undefined) return "–";
  if (Array.isArray(value)) return value.length ? value.join(", ").replaceAll("_", " ") : "none";
  if (key.endsWith("_since") || key.endsWith("_date")) {
    const days = Math.floor((serverNow() - Date.parse(value)) / 86400000);
    return `${formatDate(value)} (${days} day${days === 1 ? "" : "s"} ago)`;
  }
  return String(value);
}

function showAssignment(assignment, { fresh }) {
  clearAlert();
  const previous = state.assignment;
  const same = previous && previous.assignment_id === assignment.assignment_id;
  state.assignment = same ? mergeHeld(previous, assignment) : assignment;
  state.expired = false;
  state.warned = false;
  if (fresh) state.leaseMs = Date.parse(assignment.lease_expires_at) - serverNow();
  const a = state.assignment;
  const name = fullName(a);
  const phone = a.user?.phone_number?.trim() || "";

  setText("c-name", name);
  $("c-resumed").hidden = !a.resumed;
  $("c-tel").hidden = !phone;
  $("c-nophone").hidden = Boolean(phone);
  $("c-phone").textContent = phone;
  $("c-tel").setAttribute("href", phone ? `tel:${phone.replace(/[^\d+]/g, "")}` : "#");
  setText("c-reason", a.queue_reason);
  setText("c-queue", QUEUE_NAMES[a.queue_type] ?? a.queue_type);
  let source = SOURCE_NAMES[a.source] ?? a.source;
  if (a.source === "callback" && a.callback_due_at) {
    source += `, promised for ${formatWhen(a.callback_due_at)}`;
  }
  setText("c-source", source);
  $("c-source").dataset.source = a.source;
  showPromise(a);
  setText("c-email", a.user?.email_address);
  setText("c-user", a.user_id);
  setText("c-claim", a.claim_id);
  setText("c-score", a.priority_score);
  setText("c-assigned", formatTime(a.assigned_at));
  const details = Object.entries(a.details ?? {}).flatMap(([key, value]) => [
    el("dt", { text: DETAIL_LABELS[key] ?? key.replaceAll("_", " ") }),
    el("dd", { text: detailValue(key, value) }),
  ]);
  $("c-details").replaceChildren(...details);

  if (!same) {
    resetForm();
    restoreNotes(a.assignment_id);
  }
  setCardEnabled(true);
  $("call").hidden = false;
  $("call").dataset.assignmentId = a.assignment_id;
  startLease();
  $("call-title").focus();
  announce(`Now calling ${name}${phone ? `, ${phone}` : ""}. ${a.queue_reason ?? ""}`);
  // An assignment taken over (a reload, the other queue) was not extended by this claim: extend
  // it now, which also teaches the page the lease's length.
  if (!fresh) extend({ quiet: true });
}

// A callback is a promise made to the person: say so at the top of the card, and how late it is.
function showPromise(a) {
  const note = $("c-callback");
  if (a.source !== "callback" || !a.callback_due_at) {
    note.hidden = true;
    note.textContent = "";
    return;
  }
  const due = Date.parse(a.callback_due_at);
  const lateBy = Date.parse(a.assigned_at) - due;
  const late =
    lateBy > CALLBACK_GRACE_MS ? ` It is late by ${formatDuration(lateBy)}: apologise first.` : "";
  note.textContent =
    `A promised callback: they were told someone would call at ${formatWhen(a.callback_due_at)}. ` +
    `Due callbacks are served before the queue.${late}`;
  note.hidden = false;
}

// Extend answers carry no contact details when the replica is down: keep the ones on screen.
function mergeHeld(previous, next) {
  return { ...previous, ...next, user: next.user ?? previous.user };
}

function resetForm() {
  $("outcome-form").reset();
  $("callback-field").hidden = true;
  $("release-reason").value = "";
  for (const id of ["outcome-error", "callback-error"]) $(id).hidden = true;
  $("callback-at").removeAttribute("aria-invalid");
  updateNotesCount();
}

function setCardEnabled(active) {
  for (const id of ["extend", "release", "skip"]) $(id).disabled = !active;
}

// Contact details leave the screen with the assignment, and its notes the tab.
function closeCard() {
  forgetNotes();
  state.assignment = null;
  state.expired = false;
  window.clearTimeout(state.heartbeat);
  window.clearInterval(state.ticker);
  state.heartbeat = state.ticker = null;
  for (const id of ["c-name", "c-phone", "c-email", "c-reason", "c-user", "c-claim"]) {
    $(id).textContent = "";
  }
  $("c-details").replaceChildren();
  $("c-callback").hidden = true;
  $("c-callback").textContent = "";
  $("c-tel").setAttribute("href", "#");
  resetForm();
  $("call").hidden = true;
  delete $("call").dataset.assignmentId;
  document.title = BASE_TITLE;
}

// -- the lease -----------------------------------------------------------------------------------

function startLease() {
  const lease = $("lease");
  lease.classList.remove("is-warning", "is-expired");
  $("lease-state").textContent = "";
  window.clearInterval(state.ticker);
  state.ticker = window.setInterval(tick, 1000);
  tick();
  scheduleHeartbeat();
}

// While the page is visible the lease is extended well before it runs low (every third of it,
// at most a minute apart): each extend also tells the page at once if the person was taken back.
function scheduleHeartbeat() {
  window.clearTimeout(state.heartbeat);
  if (!state.assignment || state.expired || !visible() || !state.leaseMs) return;
  const every = Math.min(HEARTBEAT_MAX_MS, Math.max(HEARTBEAT_MIN_MS, state.leaseMs / 3));
  state.heartbeat = window.setTimeout(() => extend({ quiet: true }), every);
}

function tick() {
  if (!state.assignment) return;
  const left = leaseLeftMs();
  const lease = $("lease");
  if (left <= 0) {
    if (!state.expired) markExpired();
    return;
  }
  $("lease-left").textContent = `${formatClock(left)} left`;
  const warnAt = Math.min(WARN_MAX_MS, (state.leaseMs ?? 0) / 4);
  if (left <= warnAt) {
    lease.classList.add("is-warning");
    $("lease-state").textContent = "lapses soon";
    document.title = `Lease ${formatClock(left)} · ${BASE_TITLE}`;
    if (!state.warned) {
      state.warned = true;
      announce(`The lease lapses in ${formatDuration(left)}. Press E to extend it.`);
    }
  } else {
    lease.classList.remove("is-warning");
    $("lease-state").textContent = "";
    document.title = BASE_TITLE;
    state.warned = false;
  }
}

function markExpired() {
  state.expired = true;
  window.clearTimeout(state.heartbeat);
  const lease = $("lease");
  lease.classList.remove("is-warning");
  lease.classList.add("is-expired");
  $("lease-left").textContent = "expired";
  $("lease-state").textContent =
    `at ${formatTime(state.assignment.lease_expires_at)}. This person may now be handed to ` +
    "someone else. You can still record the outcome: the service accepts it only if nobody " +
    "has had them since, and says so.";
  document.title = `Lease expired · ${BASE_TITLE}`;
  setCardEnabled(false);
  showAlert(`The lease on ${fullName(state.assignment)} has expired.`);
}

async function extend({ quiet }) {
  const held = state.assignment;
  if (!held || state.expired) return;
  window.clearTimeout(state.heartbeat);
  const answer = await api(`/api/assignments/${held.assignment_id}/extend`, { method: "POST" });
  if (state.assignment?.assignment_id !== held.assignment_id) return; // finished meanwhile
  if (answer.ok) {
    state.leaseMs = Date.parse(answer.body.lease_expires_at) - serverNow();
    state.assignment = mergeHeld(state.assignment, answer.body);
    state.warned = false;
    tick();
    if (!quiet) announce(`Lease extended: ${formatDuration(leaseLeftMs())} left.`);
    scheduleHeartbeat();
    return;
  }
  if (answer.status === 401) return signedOut();
  if (answer.status === 409 || answer.status === 404) {
    takenBack(answer);
    return;
  }
  // Busy or unreachable: keep the card, say so, try again soon.
  $("lease-state").textContent = `Could not extend (${describeAnswer(answer)}); trying again.`;
  state.heartbeat = window.setTimeout(
    () => extend({ quiet: true }),
    Math.max(1, answer.retryAfter ?? 5) * 1000,
  );
}

// The assignment stopped being this agent's while the lease still ran: a supervisor's forced
// release (or the same agent finishing it in another tab). Nothing typed here was recorded.
function takenBack(answer) {
  if (leaseLeftMs() <= 0) {
    markExpired();
    return;
  }
  const name = fullName(state.assignment);
  closeCard();
  showState(
    "is-error",
    "This person was taken back",
    `${name} is no longer yours: a supervisor released them, or they were finished in ` +
      `another tab (the service answered ${describeAnswer(answer)}). Nothing you typed was ` +
      "recorded. Press N for the next person.",
  );
}

// -- outcome, release, skip ----------------------------------------------------------------------

function fieldError(id, text, focusId) {
  const node = $(id);
  node.textContent = text;
  node.hidden = !text;
  if (focusId) {
    $(focusId).setAttribute("aria-invalid", "true");
    $(focusId).focus();
  }
  if (text) announce(text);
}

function chosenOutcome() {
  return document.querySelector('input[name="outcome"]:checked');
}

function onOutcomeChange() {
  const choice = chosenOutcome();
  const wantsTime = choice?.dataset.callback === "yes";
  $("callback-field").hidden = !wantsTime;
  $("outcome-error").hidden = true;
  if (!wantsTime) return;
  const input = $("callback-at");
  const now = new Date(serverNow());
  // Closed now: nothing before the next opening can be booked.
  const opens = state.rules?.opens_at ? Date.parse(state.rules.opens_at) : 0;
  input.min = toLocalInputValue(new Date(Math.max(now.getTime() + 60000, opens)));
  input.max = toLocalInputValue(new Date(now.getTime() + CALLBACK_MAX_DAYS * 86400000 - 60000));
  const hours = $("callback-hours");
  hours.hidden = !state.rules;
  if (state.rules) hours.textContent = describeRules(state.rules);
}

// -> an ISO string, null (no time chosen) or undefined after showing why the time is refused.
function callbackTime(choice) {
  const input = $("callback-at");
  input.removeAttribute("aria-invalid");
  $("callback-error").hidden = true;
  if (choice.dataset.callback !== "yes" || !input.value) return null;
  const when = new Date(input.value); // a datetime-local value is the browser's local time
  const now = serverNow();
  if (Number.isNaN(when.getTime())) {
    fieldError("callback-error", "That is not a date and time.", "callback-at");
    return undefined;
  }
  if (when.getTime() <= now + 30000) {
    fieldError("callback-error", "The callback time must be in the future.", "callback-at");
    return undefined;
  }
  if (when.getTime() > now + CALLBACK_MAX_DAYS * 86400000) {
    fieldError(
      "callback-error",
      `The callback time must be within ${CALLBACK_MAX_DAYS} days.`,
      "callback-at",
    );
    return undefined;
  }
  if (state.rules) {
    try {
      if (!isWithinCallingHours(state.rules, when)) {
        fieldError(
          "callback-error",
          `That time is outside calling hours. ${describeRules(state.rules)}`,
          "callback-at",
        );
        return undefined;
      }
    } catch (error) {
      if (!(error instanceof RulesError)) throw error; // unreadable rules: the API decides
    }
  }
  return when.toISOString();
}

async function recordOutcome() {
  const held = state.assignment;
  if (!held || state.working) return;
  const choice = chosenOutcome();
  if (!choice) {
    fieldError("outcome-error", "Choose the outcome of the call first (keys 1 to 9).");
    document.querySelector('input[name="outcome"]').focus();
    return;
  }
  const callbackAt = callbackTime(choice);
  if (callbackAt === undefined) return;
  const label = choice.dataset.label;
  const name = fullName(held);
  if (choice.dataset.final === "yes") {
    const ok = await confirmDialog({
      title: `Record “${label}”?`,
      body: `${name} will never be called again. The console cannot undo this.`,
      confirmLabel: `Record ${label}`,
      danger: true,
    });
    if (!ok) return;
  }
  const notes = $("notes").value.trim() ? $("notes").value : null;
  const lapsed = state.expired;
  state.working = true;
  $("record").disabled = true;
  const answer = await api(`/api/assignments/${held.assignment_id}/complete`, {
    method: "POST",
    body: { outcome: choice.value, callback_at: callbackAt, notes },
  });
  state.working = false;
  $("record").disabled = false;
  if (state.assignment?.assignment_id !== held.assignment_id) return;
  if (answer.status === 200) {
    const score = answer.body.score;
    const booked = answer.body.callback;
    let next = "";
    if (score && !score.is_active) next = " They will not be called again.";
    else if (booked) {
      next =
        ` Callback booked for ${formatWhen(booked.due_at)}: it comes back to you first when it ` +
        "falls due (see My callbacks).";
    } else if (score?.next_call_after) {
      next = ` Next call after ${formatWhen(score.next_call_after)}.`;
    } else if (score) next = " They can be called again straight away.";
    const late = lapsed
      ? " The lease had lapsed, but nobody else had been given them, so the service accepted it."
      : "";
    closeCard();
    showResult(`Recorded “${label}” for ${name}.${next}${late}`);
    $("next").focus();
    refreshCallbacks();
    refreshCounts();
    return;
  }
  if (answer.status === 401) return signedOut();
  if (answer.status === 422) {
    const onCallback = (answer.fields ?? []).some((f) => f.loc?.includes("callback_at"));
    if (onCallback) {
      fieldError("callback-error", callbackRefusal(answer), "callback-at");
      loadRules();
    }
    else fieldError("outcome-error", `Not recorded: ${answer.detail}`);
    return;
  }
  if (answer.status === 409 || answer.status === 404) {
    closeCard();
    const why = lapsed
      ? " The lease had lapsed, and the service no longer takes an outcome for it."
      : " This person is no longer yours.";
    showResult(`Not recorded: the service answered ${describeAnswer(answer)}.${why}`, {
      error: true,
    });
    $("next").focus();
    return;
  }
  fieldError(
    "outcome-error",
    `Not recorded yet: the service answered ${describeAnswer(answer)}. ` +
      `Try again${answer.retryAfter ? ` in ${answer.retryAfter} s` : " in a moment"}.`,
  );
}

// The API's 422 on callback_at, in words (the API's own words follow, for the record).
function callbackRefusal(answer) {
  const said = [answer.detail, ...(answer.fields ?? []).map((f) => f.msg)].join(" ");
  const why = /calling hours/i.test(said)
    ? "That time is outside calling hours: nobody may be called then. Pick a time when " +
      "calling is open (ask your supervisor for the hours), or leave the time empty."
    : "The service refused that callback time.";
  return `Not recorded. ${why} (${describeAnswer(answer)})`;
}

async function giveBack(requeue) {
  const held = state.assignment;
  if (!held || state.expired || state.working) return;
  const reason = $("release-reason").value.trim() || null;
  const name = fullName(held);
  state.working = true;
  const answer = await api(`/api/assignments/${held.assignment_id}/release`, {
    method: "POST",
    body: { requeue, reason },
  });
  state.working = false;
  if (state.assignment?.assignment_id !== held.assignment_id) return;
  if (answer.ok) {
    closeCard();
    const minutes = $("skip").dataset.minutes;
    showResult(
      requeue
        ? `${name} went back to the queue for someone else.`
        : `Skipped ${name}: not called again for ${minutes} minutes.`,
    );
    $("next").focus();
    refreshCounts();
    return;
  }
  if (answer.status === 401) return signedOut();
  if (answer.status === 409 || answer.status === 404) {
    takenBack(answer);
    return;
  }
  showAlert(`Could not give ${name} back: the service answered ${describeAnswer(answer)}.`);
}

function updateNotesCount() {
  const notes = $("notes");
  $("notes-count").textContent = `${notes.value.length} of ${notes.maxLength} characters`;
}

// -- keyboard ------------------------------------------------------------------------------------

function isTyping(target) {
  return (
    target instanceof HTMLElement &&
    (target.isContentEditable ||
      target.matches("textarea, select, input:not([type=radio]):not([type=checkbox])"))
  );
}

function onKey(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (workspace.hidden || $("confirm").open) return;
  const target = event.target;
  if (isTyping(target)) {
    if (event.key === "Escape") {
      target.blur();
      (state.assignment ? $("call-title") : $("next")).focus();
    }
    return;
  }
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  const holding = Boolean(state.assignment);
  let handled = true;
  if (key === "n") nextUser();
  else if (/^[1-9]$/.test(key) && holding) {
    const radio = document.querySelector(`input[name="outcome"][aria-keyshortcuts="${key}"]`);
    radio.checked = true;
    radio.focus();
    onOutcomeChange();
  } else if (key === "Enter" && holding && target.matches?.('input[name="outcome"]')) {
    recordOutcome();
  } else if (key === "e" && holding) extend({ quiet: false });
  else if (key === "r" && holding) giveBack(true);
  else if (key === "s" && holding) giveBack(false);
  else if (key === "t" && holding) $("notes").focus();
  else if (key === "q") {
    const radios = [...document.querySelectorAll('input[name="queue"]')];
    const next = radios[(radios.findIndex((r) => r.checked) + 1) % radios.length];
    next.checked = true;
    next.focus();
    announce(`Queue: ${QUEUE_NAMES[next.value]}.`);
  } else handled = false;
  if (handled) event.preventDefault();
}

// -- start ---------------------------------------------------------------------------------------

function onVisibility() {
  if (visible()) {
    if (state.assignment) {
      tick();
      if (!state.expired) extend({ quiet: true });
    }
    poll();
  } else {
    window.clearTimeout(state.heartbeat);
  }
}

async function start() {
  $("next-form").addEventListener("submit", (event) => {
    event.preventDefault();
    nextUser();
  });
  $("state-retry").addEventListener("click", nextUser);
  $("outcome-form").addEventListener("submit", (event) => {
    event.preventDefault();
    recordOutcome();
  });
  $("outcome-form").addEventListener("change", onOutcomeChange);
  $("extend").addEventListener("click", () => extend({ quiet: false }));
  $("release").addEventListener("click", () => giveBack(true));
  $("skip").addEventListener("click", () => giveBack(false));
  $("notes").addEventListener("input", () => {
    updateNotesCount();
    keepNotes();
  });
  document.addEventListener("keydown", onKey);
  document.addEventListener("visibilitychange", onVisibility);
  document.querySelector('input[name="queue"]').form.addEventListener("change", () => {
    cancelRetry();
    hideState();
  });

  const current = await api("/api/assignments/current");
  if (current.status === 401) return signedOut();

  if (current.status === 200) {
    showAssignment(current.body, { fresh: false });
  } else {
    if (current.status !== 204) {
      showAlert(`The service answered ${describeAnswer(current)}; some figures may be missing.`);
    }
    $("next").focus();
  }
  loadRules();
  poll();
  state.poller = window.setInterval(poll, POLL_MS);
}

startSession(start);

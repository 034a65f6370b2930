// The calling-hours rule of SPEC 7.3, read the way the service reads it, so the callback picker
// can refuse a time outside the window before the API does (the API's 422 stays the authority).
//
// Grammar: "always", "never", or ";"-separated "DAYS HH:MM-HH:MM" where DAYS is a day (mon..sun),
// a range (mon-fri) or a comma list of either (sat,sun); local wall-clock times in the rules'
// time zone, start inclusive, end exclusive, 24:00 allowed as an end; unlisted days are closed.
// A window whose start falls in a daylight-saving gap opens at the first minute that exists
// after it: evaluating an instant's own wall-clock time against the window gives that for free.

export const DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

export class RulesError extends Error {}

function parseDays(text) {
  const days = new Set();
  for (const item of text.split(",")) {
    const part = item.trim();
    const range = part.split("-").map((d) => d.trim());
    if (range.length === 1 && DAYS.includes(range[0])) {
      days.add(DAYS.indexOf(range[0]));
    } else if (range.length === 2 && DAYS.includes(range[0]) && DAYS.includes(range[1])) {
      let day = DAYS.indexOf(range[0]);
      const last = DAYS.indexOf(range[1]);
      days.add(day);
      while (day !== last) {
        day = (day + 1) % 7;
        days.add(day);
      }
    } else {
      throw new RulesError("a day must be mon..sun, a range such as mon-fri, or a comma list");
    }
  }
  return days;
}

function minutes(hh, mm, isEnd) {
  const h = Number(hh);
  const m = Number(mm);
  if (m > 59 || h > 24 || (h === 24 && (m !== 0 || !isEnd))) {
    throw new RulesError("times are HH:MM, 00:00 to 23:59, and 24:00 only as an end");
  }
  return h * 60 + m;
}

// -> an array of 7 lists (Monday first) of [start, end) minute windows.
export function parseHours(text) {
  const source = String(text).trim().toLowerCase();
  if (source === "always") return DAYS.map(() => [[0, 1440]]);
  if (source === "never") return DAYS.map(() => []);
  const week = DAYS.map(() => []);
  for (const piece of source.split(";")) {
    const part = piece.trim();
    if (!part) continue;
    const match = /^([a-z, -]+?)\s+(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})$/.exec(part);
    if (!match) throw new RulesError("each part reads DAYS HH:MM-HH:MM");
    const start = minutes(match[2], match[3], false);
    const end = minutes(match[4], match[5], true);
    if (start >= end) throw new RulesError("a window must end after it starts");
    for (const day of parseDays(match[1])) week[day].push([start, end]);
  }
  return week;
}

// The wall-clock facts of an instant in a time zone: weekday (0 = Monday), ISO date, minute.
export function localParts(date, timeZone) {
  const format = new Intl.DateTimeFormat("en-GB", {
    timeZone,
    weekday: "short",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    hourCycle: "h23",
  });
  const parts = Object.fromEntries(format.formatToParts(date).map((p) => [p.type, p.value]));
  return {
    day: DAYS.indexOf(parts.weekday.slice(0, 3).toLowerCase()),
    date: `${parts.year}-${parts.month}-${parts.day}`,
    minute: Number(parts.hour) * 60 + Number(parts.minute),
  };
}

// rules: {timezone, hours, holidays: ["YYYY-MM-DD", ...]} as GET /api/calling-hours gives.
export function isWithinCallingHours(rules, date) {
  const week = parseHours(rules.hours);
  const local = localParts(date, rules.timezone);
  if ((rules.holidays ?? []).includes(local.date)) return false;
  return week[local.day].some(([start, end]) => local.minute >= start && local.minute < end);
}

export function describeRules(rules) {
  const holidays = rules.holidays?.length ? `; closed on ${rules.holidays.join(", ")}` : "";
  return `Calling hours: ${rules.hours} (${rules.timezone} time)${holidays}.`;
}

// The supervisors' 24-hour chart: inline SVG built here, no chart library, no other host.

const SVG = "http://www.w3.org/2000/svg";

function node(tag, attrs = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

// 0 -> 4, 7 -> 8, 13 -> 20, 180 -> 200: a round top for the axis, split in four.
function niceMax(value) {
  if (value <= 4) return 4;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    const top = step * power;
    if (top >= value && (top / 4) % 1 === 0) return top;
  }
  return Math.ceil(value / 4) * 4;
}

const HOUR = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

// buckets: GET /api/reports/activity's, oldest first. Two bars an hour: people handed out and
// outcomes recorded; each hour's figures are also in its tooltip and in the table beside it.
export function activityChart(buckets, { width = 960, height = 240 } = {}) {
  const margin = { top: 12, right: 8, bottom: 28, left: 40 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const top = niceMax(Math.max(0, ...buckets.map((b) => Math.max(b.handed_out, b.completed))));
  const y = (v) => margin.top + plotH - (v / top) * plotH;
  const total = (key) => buckets.reduce((sum, b) => sum + b[key], 0);

  const svg = node("svg", {
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-labelledby": "chart-title chart-desc",
    focusable: "false",
  });
  svg.append(
    node("title", { id: "chart-title" }, "Hand-outs and outcomes per hour, last 24 hours"),
    node(
      "desc",
      { id: "chart-desc" },
      `${total("handed_out")} people handed out and ${total("completed")} outcomes recorded ` +
        `over ${buckets.length} hours; the busiest hour had ${top === 4 ? "at most 4" : `up to ${top}`}.`,
    ),
  );
  for (let i = 0; i <= 4; i += 1) {
    const value = (top / 4) * i;
    const yy = y(value);
    svg.append(
      node("line", {
        class: i === 0 ? "axis" : "grid",
        x1: margin.left,
        x2: width - margin.right,
        y1: yy,
        y2: yy,
      }),
      node(
        "text",
        { class: "tick", x: margin.left - 6, y: yy + 4, "text-anchor": "end" },
        String(value),
      ),
    );
  }
  const slot = plotW / Math.max(1, buckets.length);
  const barW = Math.max(2, slot * 0.36);
  buckets.forEach((bucket, i) => {
    const x0 = margin.left + i * slot + slot * 0.12;
    const start = new Date(bucket.hour_start);
    const label = HOUR.format(start);
    const group = node("g", { "data-hour": bucket.hour_start });
    group.append(
      node(
        "title",
        {},
        `${label}: ${bucket.handed_out} handed out, ${bucket.completed} outcomes, ` +
          `${bucket.released} released, ${bucket.expired} lapsed`,
      ),
    );
    for (const [key, cls, dx] of [
      ["handed_out", "bar-handed", 0],
      ["completed", "bar-done", barW],
    ]) {
      const h = (bucket[key] / top) * plotH;
      group.append(
        node("rect", {
          class: cls,
          x: x0 + dx,
          y: margin.top + plotH - h,
          width: barW,
          height: h,
          "data-value": bucket[key],
        }),
      );
    }
    svg.append(group);
    if (i % 3 === 0 || i === buckets.length - 1) {
      svg.append(
        node(
          "text",
          { class: "tick", x: x0 + barW, y: height - 8, "text-anchor": "middle" },
          label,
        ),
      );
    }
  });
  return svg;
}

export function legend() {
  const list = document.createElement("ul");
  list.className = "legend";
  for (const [cls, text] of [
    ["swatch-handed", "handed out"],
    ["swatch-done", "outcomes recorded"],
  ]) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = `swatch ${cls}`;
    swatch.setAttribute("aria-hidden", "true");
    item.append(swatch, text);
    list.append(item);
  }
  return list;
}

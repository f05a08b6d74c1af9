// Recordings timeline: one camera, one day. Recorded spans, gaps (hatched, why in the tooltip), event markers
// (click → the event), alerts; operators export a time range as a signed evidence bundle.
// Styles go through the CSSOM (el.style), which the page's CSP (style-src 'self') allows, unlike style attributes.
import { api, can, qs } from "../api.js";
import { act, field, flash, fromEpoch, h, mount, toEpoch, when } from "../dom.js";

const DAY_S = 86400;
const GAP_COLOURS = { "not recorded": "#9aa0a6", evicted: "#d9822b", shredded: "#c23030" };
const THREAT_COLOURS = { high: "#c23030", medium: "#d9822b", low: "#2b7bd9", none: "#555" };

/** "YYYY-MM-DD" of a Date, local time. */
function isoDay(date) {
  const pad = (v) => String(v).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/** Local midnight of "YYYY-MM-DD" → [start, end) in epoch seconds (a DST day is 23 or 25 hours long). */
function dayRange(day) {
  const [y, m, d] = day.split("-").map(Number);
  return [new Date(y, m - 1, d).getTime() / 1000, new Date(y, m - 1, d + 1).getTime() / 1000];
}

function place(el, from, to, start, end) {
  const span = end - start;
  el.style.position = "absolute";
  el.style.left = `${(100 * (Math.max(from, start) - start)) / span}%`;
  el.style.width = `${Math.max(0.15, (100 * (Math.min(to, end) - Math.max(from, start))) / span)}%`;
  return el;
}

function bar(data, start, end) {
  const track = h("div", { id: "timeline-bar", role: "img",
    "aria-label": `Recordings of ${data.camera}: ${data.spans.length} recorded stretch(es), ${data.gaps.length} gap(s), `
      + `${data.events.length} event(s)` });
  Object.assign(track.style, { position: "relative", height: "3rem", background: "#eef0f2", borderRadius: "4px",
    overflow: "hidden", margin: "0.5rem 0" });
  const pieces = [];
  for (const span of data.spans) {
    const el = place(h("div", { class: "tl-span", title: `recorded ${when(span.start)} – ${when(span.end)}` }),
      span.start, span.end, start, end);
    Object.assign(el.style, { top: "0.75rem", height: "1.5rem", background: "#2e9d57" });
    pieces.push(el);
  }
  for (const gap of data.gaps) {
    const colour = GAP_COLOURS[gap.reason] || "#9aa0a6";
    const el = place(h("div", { class: `tl-gap tl-gap-${gap.reason.replace(" ", "-")}`, dataset: { reason: gap.reason },
      title: `${gap.reason}: ${when(gap.start)} – ${when(gap.end)}${gap.detail ? ` (${gap.detail})` : ""}` }),
    gap.start, gap.end, start, end);
    Object.assign(el.style, { top: "0.75rem", height: "1.5rem",
      backgroundImage: `repeating-linear-gradient(45deg, ${colour} 0 3px, transparent 3px 8px)` });
    pieces.push(el);
  }
  for (const ev of data.events) {
    const el = place(h("a", { class: "tl-event", href: `#/events/${encodeURIComponent(ev.id)}`,
      title: `${ev.label} (threat ${ev.threat}), ${when(ev.start)}`, "aria-label": `Event: ${ev.label} at ${when(ev.start)}` }),
    ev.start, ev.end, start, end);
    Object.assign(el.style, { top: "0", height: "0.75rem", minWidth: "4px",
      background: THREAT_COLOURS[ev.threat] || THREAT_COLOURS.none });
    pieces.push(el);
  }
  for (const alert of data.alerts) {
    const el = place(h("span", { class: "tl-alert", title: `${alert.kind} (${alert.severity}): ${alert.message}` }),
      alert.time, alert.time, start, end);
    Object.assign(el.style, { bottom: "0", height: "0.75rem", minWidth: "3px", background: "#7a3fd9" });
    pieces.push(el);
  }
  mount(track, pieces);
  return track;
}

function ticks(start, end) {
  const row = h("div", { class: "tl-ticks", "aria-hidden": "true" });
  Object.assign(row.style, { position: "relative", height: "1.2rem", fontSize: "0.75rem" });
  for (let t = start; t < end; t += 3 * 3600) {
    const label = place(h("span", {}, new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
      t, t, start, end);
    label.style.borderLeft = "1px solid #999";
    label.style.paddingLeft = "2px";
    row.append(label);
  }
  return row;
}

function legend() {
  const item = (text, css) => {
    const swatch = h("span", { "aria-hidden": "true" });
    Object.assign(swatch.style, { display: "inline-block", width: "1.2rem", height: "0.8rem", marginRight: "0.3rem",
      verticalAlign: "middle", ...css });
    return h("li", { class: "inline" }, swatch, text);
  };
  const hatch = (c) => ({ backgroundImage: `repeating-linear-gradient(45deg, ${c} 0 3px, transparent 3px 8px)` });
  const list = h("ul", { class: "tl-legend" }, item("recorded", { background: "#2e9d57" }),
    item("not recorded", hatch(GAP_COLOURS["not recorded"])), item("evicted (disk space)", hatch(GAP_COLOURS.evicted)),
    item("shredded (retention or by hand)", hatch(GAP_COLOURS.shredded)), item("event", { background: "#2b7bd9" }),
    item("alert", { background: "#7a3fd9" }));
  Object.assign(list.style, { display: "flex", gap: "1rem", flexWrap: "wrap", listStyle: "none", padding: "0" });
  return list;
}

function exportForm(camera, start, end) {
  const from = field("From", { type: "datetime-local", name: "start", required: true, value: fromEpoch(start) });
  const to = field("To", { type: "datetime-local", name: "end", required: true, value: fromEpoch(Math.min(end, start + 3600)) });
  const submit = h("button", { type: "submit", id: "export-range" }, "Export evidence");
  const out = h("p", { id: "export-range-result", class: "muted" });
  const form = h("form", { id: "export-range-form", class: "card" }, h("h2", {}, "Export a time range"),
    h("p", { class: "muted" }, "A signed evidence bundle of every recorded segment in the range (at most one day), "
      + "checkable with `trustcam evidence verify`."), from, to, submit, out);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const range = { start: toEpoch(from.input.value), end: toEpoch(to.input.value) };
    if (!range.start || !range.end) { flash("Choose both times first."); return; }
    act(submit, async () => {
      const res = await api("POST", `/api/cameras/${encodeURIComponent(camera)}/export${qs(range)}`, undefined,
        { raw: true });
      const blob = await res.blob();
      const disposition = res.headers.get("content-disposition") || "";
      const name = (/filename="?([^";]+)"?/.exec(disposition) || [])[1] || `trustcam-${camera}-range.zip`;
      const link = h("a", { href: URL.createObjectURL(blob), download: name },
        `Download ${name} (${Math.round(blob.size / 1024)} KiB)`);
      mount(out, link);
      link.click();
    }, "Evidence bundle ready; verify it with `trustcam evidence verify`.");
  });
  return form;
}

export async function render(main, args, query, { go }) {
  const cameras = await api("GET", "/api/cameras");
  if (!cameras.length) {
    mount(main, h("section", { class: "card" }, h("h1", {}, "Timeline"), h("p", {}, "No camera is granted to you.")));
    return undefined;
  }
  const names = cameras.map((c) => c.name);
  const camera = args[0] && names.includes(args[0]) ? args[0] : names[0];
  const day = /^\d{4}-\d{2}-\d{2}$/.test(query.day || "") ? query.day : isoDay(new Date());
  const target = (cam, d) => `#/timeline/${encodeURIComponent(cam)}?day=${d}`;
  if (args[0] !== camera || query.day !== day) { go(target(camera, day)); return undefined; }

  const [start, end] = dayRange(day);
  const data = await api("GET", `/api/cameras/${encodeURIComponent(camera)}/timeline${qs({ start, end })}`);
  const pick = field("Camera", { tag: "select", name: "camera", options: names });
  pick.input.value = camera;
  const date = field("Day", { type: "date", name: "day", value: day });
  pick.input.addEventListener("change", () => go(target(pick.input.value, day)));
  date.input.addEventListener("change", () => { if (date.input.value) go(target(camera, date.input.value)); });
  const shift = (days) => {
    const [y, m, d] = day.split("-").map(Number);
    return target(camera, isoDay(new Date(y, m - 1, d + days)));
  };
  const recorded = data.spans.reduce((sum, s) => sum + (s.end - s.start), 0);
  const list = data.events.length ? h("ul", { id: "timeline-events" }, data.events.map((ev) => h("li", {},
    h("a", { href: `#/events/${encodeURIComponent(ev.id)}` }, `${when(ev.start)} ${ev.label}`), ` (threat ${ev.threat})`)))
    : h("p", { class: "muted" }, "No event on this day.");

  mount(main, h("section", { id: "timeline", "aria-labelledby": "timeline-title" },
    h("h1", { id: "timeline-title" }, `Timeline – ${camera}`),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, pick, date,
      h("p", {}, h("a", { href: shift(-1) }, "← previous day"), " · ", h("a", { href: shift(1) }, "next day →"))),
    h("p", { class: "muted", id: "timeline-summary" },
      `${(recorded / 3600).toFixed(1)} h recorded of ${((Math.min(end, Date.now() / 1000) - start) / 3600).toFixed(1)} h`,
      `, ${data.events.length}${data.events_truncated ? "+" : ""} event(s), ${data.alerts.length} alert(s).`),
    bar(data, start, end), ticks(start, end), legend(),
    h("h2", {}, "Events"), list,
    h("p", {}, h("a", { href: `#/live/${encodeURIComponent(camera)}` }, `Live – ${camera}`), " · ",
      h("a", { href: `#/events?camera=${encodeURIComponent(camera)}` }, `All events of ${camera}`)),
    can("review") ? exportForm(camera, start, end) : null));
  return undefined;
}

// Recordings timeline: one camera, one day. Recorded spans, gaps (hatched, why in the tooltip), event markers
// (click → the event), alerts; a player (click the bar → play from that time; gaps are skipped to the next recorded
// stretch); operators export a time range as a signed evidence bundle.
// Styles go through the CSSOM (el.style), which the page's CSP (style-src 'self') allows, unlike style attributes.
import { api, can, qs } from "../api.js";
import { act, field, flash, fromEpoch, h, mount, toEpoch, when } from "../dom.js";

const DAY_S = 86400;
const GAP_COLOURS = { "not recorded": "#9aa0a6", evicted: "#d9822b", shredded: "#c23030" };
const THREAT_COLOURS = { high: "#c23030", medium: "#d9822b", low: "#2b7bd9", none: "#555" };
const WINDOW_S = 300; // footage loaded per request (the server allows 30 min): the next window loads at its end
const LEAD_S = 30; // a window starts this long before the time asked for, so a step back stays in it
const SPEEDS = [1, 2, 4, 8];
const DEFAULT_FPS = 25; // frame step when the server could not tell the clip's frame rate
const TOUCH = { minHeight: "44px", minWidth: "44px" }; // finger-sized controls on a phone

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

/** Wall-clock time with tenths of a second: frame steps must show. */
function clockText(seconds) {
  const d = new Date(seconds * 1000);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString([], { hour12: false })}.${Math.floor((seconds % 1) * 10)}`;
}

/** The player of one camera's day. seek(t) loads the footage around time t (or, when nothing was recorded then,
 * the start of the next recorded stretch) and positions it there; a window plays into the next one when it ends. */
function player(camera, data, start, end) {
  const video = h("video", { id: "timeline-video", playsinline: true, preload: "auto",
    "aria-label": `Recording of ${camera}` });
  Object.assign(video.style, { width: "100%", maxHeight: "60vh", background: "#000", display: "block" });
  const clock = h("output", { id: "tl-clock", "aria-live": "off" }, "–");
  Object.assign(clock.style, { fontVariantNumeric: "tabular-nums", fontWeight: "bold" });
  const status = h("p", { id: "tl-player-status", class: "muted", role: "status" },
    "Click or tap the bar above to play from that time.");
  const playBtn = h("button", { type: "button", id: "tl-play", disabled: true }, "Play");
  const stepBtn = h("button", { type: "button", id: "tl-step", class: "secondary", disabled: true,
    title: "Pause and show the next frame" }, "Next frame");
  const speeds = SPEEDS.map((rate) => h("button", { type: "button", class: "secondary tl-speed",
    dataset: { rate: String(rate) }, "aria-pressed": String(rate === 1), "aria-label": `Speed ${rate}×` }, `${rate}×`));
  for (const button of [playBtn, stepBtn, ...speeds]) Object.assign(button.style, TOUCH);
  const speedGroup = h("span", { role: "group", "aria-label": "Playback speed" }, speeds);
  Object.assign(speedGroup.style, { display: "inline-flex", gap: "0.25rem" });
  const controls = h("div", { class: "tl-controls" }, playBtn, speedGroup, stepBtn, clock);
  Object.assign(controls.style, { display: "flex", flexWrap: "wrap", gap: "0.5rem", alignItems: "center",
    margin: "0.5rem 0" });
  const playhead = h("div", { id: "tl-playhead", "aria-hidden": "true" });
  Object.assign(playhead.style, { position: "absolute", top: "0", bottom: "0", width: "2px", background: "#111",
    pointerEvents: "none", display: "none" });

  let clip = null; // {start, end, fps} of the loaded window, wall-clock seconds
  let rate = 1;
  let loading = 0; // a newer seek supersedes an older one still loading

  const now = () => (clip ? clip.start + video.currentTime : null);
  const show = () => {
    const t = now();
    if (t === null) return;
    clock.textContent = clockText(t);
    clock.dataset.time = t.toFixed(3);
    place(playhead, t, t, start, end);
    playhead.style.width = "2px";
    playhead.style.display = "block";
  };
  const setPlaying = () => { playBtn.textContent = video.paused ? "Play" : "Pause"; };

  /** The first recorded moment at or after t: t itself inside a stretch, else the start of the next one. */
  function recorded(t) {
    const span = data.spans.find((s) => s.end > t);
    if (!span) return null;
    return { t: Math.max(t, span.start), span };
  }

  async function load(from, to) {
    const url = `/api/cameras/${encodeURIComponent(camera)}/recording.mp4${qs({ start: from.toFixed(3), end: to.toFixed(3) })}`;
    const probe = await fetch(url, { headers: { Range: "bytes=0-0" }, credentials: "same-origin", cache: "no-store" });
    if (!probe.ok) {
      let detail = `the server answered ${probe.status}`;
      try { detail = (await probe.json()).detail; } catch { /* not JSON */ }
      throw new Error(detail);
    }
    const found = { start: Number(probe.headers.get("x-footage-start")), end: Number(probe.headers.get("x-footage-end")),
      fps: Number(probe.headers.get("x-footage-fps")) || DEFAULT_FPS };
    await new Promise((resolve, reject) => {
      const done = () => { video.removeEventListener("loadedmetadata", done); video.removeEventListener("error", fail); resolve(); };
      const fail = () => { video.removeEventListener("loadedmetadata", done); video.removeEventListener("error", fail);
        reject(new Error("this browser cannot play the recording; an operator can export it as evidence")); };
      video.addEventListener("loadedmetadata", done);
      video.addEventListener("error", fail);
      video.src = url;
    });
    return found;
  }

  async function seek(t, { play = false } = {}) {
    const ticket = ++loading;
    const found = recorded(t);
    if (!found) {
      status.textContent = `Nothing recorded after ${when(t)} on this day.`;
      return;
    }
    const skipped = found.t - t > 1;
    const wasPlaying = play || !video.paused;
    try {
      if (!clip || found.t < clip.start || found.t >= clip.end - 0.05) {
        video.pause();
        status.textContent = `Loading ${when(found.t)}…`;
        const from = Math.max(found.span.start, found.t - LEAD_S);
        const next = await load(from, Math.max(Math.min(found.span.end, from + WINDOW_S), found.t + 1));
        if (ticket !== loading) return;
        clip = next;
      }
      video.defaultPlaybackRate = rate;
      video.playbackRate = rate;
      video.currentTime = Math.max(0, found.t - clip.start);
      playBtn.disabled = false;
      stepBtn.disabled = false;
      status.textContent = skipped ? `Nothing recorded at ${when(t)}: skipped to ${when(found.t)}, the next recording.`
        : `Footage from ${when(clip.start)} to ${when(clip.end)} loaded.`;
      show();
      if (wasPlaying) await video.play();
    } catch (err) {
      if (ticket === loading) status.textContent = err.message || String(err);
    }
  }

  playBtn.addEventListener("click", () => {
    if (video.paused) video.play().catch((err) => { status.textContent = err.message; });
    else video.pause();
  });
  stepBtn.addEventListener("click", () => {
    if (!clip) return;
    video.pause();
    const next = video.currentTime + 1 / clip.fps;
    if (clip.start + next >= clip.end) seek(clip.end + 0.01);
    else video.currentTime = next;
  });
  for (const button of speeds) {
    button.addEventListener("click", () => {
      rate = Number(button.dataset.rate);
      video.defaultPlaybackRate = rate;
      video.playbackRate = rate;
      for (const other of speeds) other.setAttribute("aria-pressed", String(other === button));
    });
  }
  video.addEventListener("timeupdate", show);
  video.addEventListener("seeked", show);
  video.addEventListener("play", setPlaying);
  video.addEventListener("pause", setPlaying);
  video.addEventListener("ended", () => { if (clip) seek(clip.end + 0.01, { play: true }); });

  const box = h("div", { id: "timeline-player" }, video, controls, status);
  return {
    box, playhead, seek,
    stop() { loading += 1; video.pause(); video.removeAttribute("src"); video.load(); },
  };
}

/** Clicking (tapping) the bar plays from that time; event markers keep their link to the event. */
function clickToSeek(track, start, end, play) {
  track.style.cursor = "pointer";
  track.title = "Click or tap to play from this time";
  track.addEventListener("click", (e) => {
    if (e.target.closest("a")) return;
    const box = track.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
    play.seek(start + fraction * (end - start), { play: true });
  });
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
  const play = player(camera, data, start, end);
  const track = bar(data, start, end);
  track.append(play.playhead);
  clickToSeek(track, start, end, play);
  const playEvent = (ev) => {
    const button = h("button", { type: "button", class: "secondary tl-play-event", dataset: { start: String(ev.start) },
      "aria-label": `Play ${ev.label} at ${when(ev.start)}` }, "▶ Play");
    Object.assign(button.style, TOUCH, { marginLeft: "0.5rem" });
    button.addEventListener("click", () => {
      play.box.scrollIntoView({ block: "nearest" });
      play.seek(ev.start - 2, { play: true });
    });
    return button;
  };
  const list = data.events.length ? h("ul", { id: "timeline-events" }, data.events.map((ev) => h("li", {},
    h("a", { href: `#/events/${encodeURIComponent(ev.id)}` }, `${when(ev.start)} ${ev.label}`), ` (threat ${ev.threat})`,
    playEvent(ev)))) : h("p", { class: "muted" }, "No event on this day.");

  mount(main, h("section", { id: "timeline", "aria-labelledby": "timeline-title" },
    h("h1", { id: "timeline-title" }, `Timeline – ${camera}`),
    h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, pick, date,
      h("p", {}, h("a", { href: shift(-1) }, "← previous day"), " · ", h("a", { href: shift(1) }, "next day →"))),
    h("p", { class: "muted", id: "timeline-summary" },
      `${(recorded / 3600).toFixed(1)} h recorded of ${((Math.min(end, Date.now() / 1000) - start) / 3600).toFixed(1)} h`,
      `, ${data.events.length}${data.events_truncated ? "+" : ""} event(s), ${data.alerts.length} alert(s).`),
    track, ticks(start, end), legend(),
    h("h2", {}, "Playback"), play.box,
    h("h2", {}, "Events"), list,
    h("p", {}, h("a", { href: `#/live/${encodeURIComponent(camera)}` }, `Live – ${camera}`), " · ",
      h("a", { href: `#/events?camera=${encodeURIComponent(camera)}` }, `All events of ${camera}`)),
    can("review") ? exportForm(camera, start, end) : null));
  const at = Number(query.t); // #/timeline/cam?day=…&t=EPOCH: open the player at that time (paused)
  if (Number.isFinite(at) && at >= start && at < end) play.seek(at);
  return () => play.stop();
}

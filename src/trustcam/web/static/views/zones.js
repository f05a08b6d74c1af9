// Zones and masks (admin): draw polygons on the camera's current frame and save them through PATCH /api/config.
// Points are fractions of the frame (0..1), as the config schema expects; the server validates, audits and keeps
// a backup, and the change applies at the next restart. Pointer events: the same code serves mouse, pen and touch.
import { api } from "../api.js";
import { field, h, mount } from "../dom.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const HANDLE_PX = 9; // handle radius on screen, whatever the picture's size
const VIEW_W = 1000; // SVG user units across the frame; the height follows the picture's aspect ratio
const RETRY_MS = 1500; // the snapshot answers 503 while the camera connects

// kind → where it lives in a camera's config and how it is shown
const KINDS = {
  zone: { label: "Zone", path: ["zones"] },
  motion: { label: "Motion mask", path: ["motion", "mask"] },
  object: { label: "Object mask", path: ["objects", "mask"] },
  privacy: { label: "Privacy mask", path: ["privacy_masks"] },
};

const round = (v) => Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;
const dig = (obj, path) => path.reduce((node, key) => (node == null ? undefined : node[key]), obj);

function svg(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

/** A privacy mask may be a bare polygon or an object holding one; keep whatever else it carries. */
function maskPoints(mask) {
  return Array.isArray(mask) ? mask : (mask && (mask.coordinates || mask.polygon)) || [];
}

/** The camera's polygons, one editable list whatever their kind. */
function shapesOf(cam, kinds) {
  const shapes = [];
  for (const [name, zone] of Object.entries(cam.zones || {})) {
    const { coordinates, ...extra } = zone;
    shapes.push({ kind: "zone", name, points: coordinates.map((p) => [...p]), extra });
  }
  for (const kind of kinds.filter((k) => k !== "zone")) {
    (dig(cam, KINDS[kind].path) || []).forEach((mask, i) => {
      const extra = Array.isArray(mask) ? null : { ...mask };
      const points = maskPoints(mask).map((p) => [...p]);
      shapes.push({ kind, name: `${KINDS[kind].label.toLowerCase()} ${i + 1}`, points, extra });
    });
  }
  return shapes;
}

/** The config values the shapes stand for: {kind: value} with each value as the schema wants it. */
function valuesOf(shapes, kinds) {
  const out = {};
  for (const kind of kinds) out[kind] = kind === "zone" ? {} : [];
  for (const s of shapes) {
    const points = s.points.map(([x, y]) => [x, y]);
    if (s.kind === "zone") out.zone[s.name] = { ...(s.extra || {}), coordinates: points };
    else if (s.extra && !Array.isArray(s.extra)) {
      const key = "polygon" in s.extra ? "polygon" : "coordinates";
      out[s.kind].push({ ...s.extra, [key]: points });
    } else out[s.kind].push(points);
  }
  return out;
}

/** {cameras: {cam: {...only the changed kinds...}}} or null when nothing changed. */
function patchFor(camera, before, after, kinds) {
  const cam = {};
  for (const kind of kinds) {
    if (JSON.stringify(before[kind]) === JSON.stringify(after[kind])) continue;
    const [first, second] = KINDS[kind].path;
    if (second) cam[first] = { ...(cam[first] || {}), [second]: after[kind] };
    else cam[first] = after[kind];
  }
  return Object.keys(cam).length ? { cameras: { [camera]: cam } } : null;
}

function freeName(shapes) {
  for (let i = 1; ; i += 1) if (!shapes.some((s) => s.kind === "zone" && s.name === `zone-${i}`)) return `zone-${i}`;
}

export async function render(main, args, _query, { go }) {
  const answer = await api("GET", "/api/config");
  const cameras = Object.keys(answer.config.cameras);
  if (!cameras.length) {
    mount(main, h("section", { class: "card" }, h("h1", {}, "Zones and masks"),
      h("p", {}, "No camera is configured; cameras are added in the config file on the server.")));
    return undefined;
  }
  const camera = cameras.includes(args[0]) ? args[0] : cameras[0];
  if (args[0] && args[0] !== camera) { go(`#/zones/${encodeURIComponent(camera)}`); return undefined; }
  // start from what the file holds: after a save it is ahead of the running config until the restart
  const camCfg = (answer.saved && answer.saved.cameras && answer.saved.cameras[camera]) || answer.config.cameras[camera];
  // privacy masks only where this server's schema has them (the changeable list says so)
  const kinds = Object.keys(KINDS).filter((k) => k === "zone"
    || answer.changeable.includes(`cameras.<camera>.${KINDS[k].path.join(".")}`));

  let shapes = shapesOf(camCfg, kinds);
  let saved = valuesOf(shapes, kinds);
  let sel = shapes.length ? 0 : -1; // selected shape
  let selPoint = -1; // selected point of it
  let size = { w: 16, h: 9 }; // the picture's natural size, once known
  let dragging = false;
  let closed = false;

  const errorBox = h("div", { id: "zones-error", role: "alert" });
  const statusBox = h("div", { id: "zones-status", role: "status" },
    answer.restart_pending ? h("p", { class: "flash info", id: "zones-pending" },
      "Changes saved earlier are shown here and applied when trustcam restarts.") : null);
  const showError = (message) => mount(errorBox, message ? h("p", { class: "flash error" }, message) : null);

  const camSel = field("Camera", { tag: "select", id: "zones-camera", options: cameras.map((c) => [c, c]) });
  camSel.input.value = camera;
  camSel.input.addEventListener("change", () => go(`#/zones/${encodeURIComponent(camSel.input.value)}`));
  const kindSel = field("Kind", { tag: "select", id: "zones-kind", options: kinds.map((k) => [k, KINDS[k].label]) });
  const nameIn = field("Zone name", { id: "zones-name", autocomplete: "off",
    hint: "lower-case letters, digits, - and _; rules refer to a zone by this name" });
  const list = h("ul", { class: "zone-list", id: "zones-list" });

  const img = h("img", { id: "zones-img", class: "zone-img", alt: `Current picture of camera ${camera}` });
  const overlay = svg("svg", { id: "zones-svg", class: "zone-svg", role: "img",
    "aria-label": "Drawing area: click or tap to add a point, drag a point to move it" });
  const frame = h("div", { class: "zone-frame", id: "zones-frame" }, img, overlay);
  const frameNote = h("p", { class: "muted", id: "zones-frame-note" }, "Loading the camera's current picture…");

  const button = (text, id, onclick, cls = "secondary") => h("button", { type: "button", class: cls, id, onclick },
    text);
  const saveBtn = button("Save", "zones-save", () => save(), "");
  const tools = h("div", { class: "zone-tools" },
    button("New shape", "zones-new", () => newShape()),
    button("Delete point", "zones-del-point", () => deletePoint()),
    button("Delete shape", "zones-del-shape", () => deleteShape(), "secondary danger"),
    button("Refresh picture", "zones-refresh", () => loadPicture()),
    saveBtn);

  mount(main, h("section", { "aria-labelledby": "zones-title" },
    h("h1", { id: "zones-title" }, `Zones and masks – ${camera}`),
    h("p", { class: "muted" }, "Pick a shape in the list (or New shape), click or tap the picture to add points, "
      + "drag a point to move it. Zones are used by rules; motion masks hide motion; object masks drop objects "
      + "whose feet fall inside; privacy masks black out what users without the unmasked permission see. Saved "
      + "changes apply when trustcam restarts."),
    errorBox, statusBox,
    h("div", { class: "zone-layout" },
      h("div", {}, frame, frameNote),
      h("div", { class: "card zone-side" }, camSel, h("h2", {}, "Shapes"), list, kindSel, nameIn, tools))));

  // ------------------------------------------------------------------ drawing

  function unitsPerPx() {
    const width = overlay.getBoundingClientRect().width;
    return width > 0 ? VIEW_W / width : 1;
  }

  function draw() {
    const viewH = (VIEW_W * size.h) / size.w;
    overlay.setAttribute("viewBox", `0 0 ${VIEW_W} ${viewH}`);
    overlay.setAttribute("preserveAspectRatio", "none");
    overlay.replaceChildren();
    const r = HANDLE_PX * unitsPerPx();
    // polygons take no pointer events: a click inside another shape adds a point to the selected one (shapes
    // are picked in the list), so drawing over an existing zone works
    shapes.forEach((s, i) => {
      const pts = s.points.map(([x, y]) => `${x * VIEW_W},${y * viewH}`).join(" ");
      overlay.append(svg(s.points.length < 3 ? "polyline" : "polygon", { points: pts, "data-index": i,
        class: `shape kind-${s.kind}${i === sel ? " selected" : ""}`,
        "stroke-width": (i === sel ? 3 : 2) * unitsPerPx() }));
    });
    if (sel >= 0) {
      shapes[sel].points.forEach(([x, y], j) => {
        const handle = svg("circle", { cx: x * VIEW_W, cy: y * viewH, r, "data-point": j,
          class: `handle${j === selPoint ? " current" : ""}`, "stroke-width": 2 * unitsPerPx() });
        handle.addEventListener("pointerdown", (ev) => startDrag(ev, j));
        overlay.append(handle);
      });
    }
    drawList();
  }

  function drawList() {
    mount(list, shapes.length ? shapes.map((s, i) => h("li", { class: i === sel ? "current" : null },
      h("button", { type: "button", class: "link zone-pick", "aria-current": i === sel ? "true" : null,
        dataset: { index: i, kind: s.kind }, onclick: () => select(i) },
      `${KINDS[s.kind].label}: ${s.kind === "zone" ? s.name : `#${shapes.filter((o, k) => o.kind === s.kind && k <= i)
        .length}`}`),
      h("span", { class: "muted" }, ` ${s.points.length} points`)))
      : h("li", { class: "muted" }, "None yet: New shape, then click the picture."));
    const shape = shapes[sel];
    kindSel.input.disabled = false;
    if (shape) kindSel.input.value = shape.kind;
    nameIn.input.disabled = !shape || shape.kind !== "zone";
    nameIn.input.value = shape && shape.kind === "zone" ? shape.name : "";
  }

  function select(i) {
    sel = i;
    selPoint = -1;
    draw();
  }

  /** Pointer → fractions of the frame. */
  function toUnit(ev) {
    const box = overlay.getBoundingClientRect();
    return [round((ev.clientX - box.left) / box.width), round((ev.clientY - box.top) / box.height)];
  }

  function newShape() {
    const kind = kindSel.input.value;
    shapes.push({ kind, name: kind === "zone" ? freeName(shapes) : "", points: [], extra: null });
    select(shapes.length - 1);
    showError(null);
    if (kind === "zone") nameIn.input.focus();
  }

  overlay.addEventListener("pointerdown", (ev) => {
    if (ev.button !== 0) return;
    ev.preventDefault();
    if (sel < 0) newShape();
    shapes[sel].points.push(toUnit(ev));
    selPoint = shapes[sel].points.length - 1;
    draw();
  });

  function startDrag(ev, j) {
    ev.stopPropagation();
    ev.preventDefault();
    selPoint = j;
    const handle = ev.currentTarget;
    handle.setPointerCapture(ev.pointerId);
    const move = (e) => {
      shapes[sel].points[j] = toUnit(e);
      const viewH = (VIEW_W * size.h) / size.w;
      handle.setAttribute("cx", shapes[sel].points[j][0] * VIEW_W);
      handle.setAttribute("cy", shapes[sel].points[j][1] * viewH);
      const poly = overlay.querySelector(`[data-index="${sel}"]`);
      if (poly) poly.setAttribute("points", shapes[sel].points.map(([x, y]) => `${x * VIEW_W},${y * viewH}`).join(" "));
    };
    const end = () => {
      handle.removeEventListener("pointermove", move);
      handle.removeEventListener("pointerup", end);
      handle.removeEventListener("pointercancel", end);
      dragging = false;
      draw();
    };
    handle.addEventListener("pointermove", move);
    handle.addEventListener("pointerup", end);
    handle.addEventListener("pointercancel", end);
    dragging = true; // no redraw until the drag ends: it would replace the handle that holds the pointer capture
    overlay.querySelectorAll("circle.handle").forEach((c) => c.classList.toggle("current", c === handle));
  }

  function deletePoint() {
    if (sel < 0 || !shapes[sel].points.length) return;
    const j = selPoint >= 0 ? selPoint : shapes[sel].points.length - 1;
    shapes[sel].points.splice(j, 1);
    selPoint = -1;
    draw();
  }

  function deleteShape() {
    if (sel < 0) return;
    shapes.splice(sel, 1);
    sel = shapes.length ? Math.min(sel, shapes.length - 1) : -1;
    selPoint = -1;
    draw();
  }

  kindSel.input.addEventListener("change", () => {
    const shape = shapes[sel];
    if (!shape || shape.kind === kindSel.input.value) return;
    shape.kind = kindSel.input.value; // the same polygon, now of another kind
    shape.extra = null;
    if (shape.kind === "zone" && !shape.name) shape.name = freeName(shapes);
    draw();
  });
  nameIn.input.addEventListener("input", () => {
    if (sel >= 0 && shapes[sel].kind === "zone") { shapes[sel].name = nameIn.input.value.trim(); drawList(); }
  });
  document.addEventListener("keydown", onKey);
  function onKey(ev) {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    if (ev.key === "Delete" || ev.key === "Backspace") deletePoint();
  }

  // ------------------------------------------------------------------ saving

  async function save() {
    showError(null);
    mount(statusBox);
    const now = valuesOf(shapes, kinds);
    const names = shapes.filter((s) => s.kind === "zone").map((s) => s.name);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    if (twice !== undefined) { showError(`two zones are named '${twice}'; give each zone its own name`); return; }
    const patch = patchFor(camera, saved, now, kinds);
    if (!patch) { mount(statusBox, h("p", { class: "flash info" }, "Nothing changed.")); return; }
    saveBtn.disabled = true;
    try {
      const result = await api("PATCH", "/api/config", patch);
      saved = now;
      const restart = result.restart_required && !/restart/i.test(result.detail || "");
      mount(statusBox, h("p", { class: "flash ok", id: "zones-saved" },
        h("span", {}, `Saved ${result.changed.join(", ")}: ${result.detail}`),
        restart ? h("strong", {}, " Restart trustcam to apply the change.") : null));
    } catch (err) {
      showError(err.message || String(err)); // the server's words: they name the problem and the fix
    } finally {
      saveBtn.disabled = false;
    }
  }

  // ------------------------------------------------------------------ the picture

  let retry = null;
  function loadPicture() {
    clearTimeout(retry);
    img.src = `/api/cameras/${encodeURIComponent(camera)}/snapshot.jpg?t=${Date.now()}`;
  }
  img.addEventListener("load", () => {
    size = { w: img.naturalWidth, h: img.naturalHeight };
    frame.style.aspectRatio = `${size.w} / ${size.h}`;
    mount(frameNote);
    draw();
  });
  img.addEventListener("error", () => {
    mount(frameNote, "No picture yet (the camera is connecting, disabled or offline); retrying. You can draw "
      + "on the empty frame meanwhile.");
    if (!closed) retry = setTimeout(loadPicture, RETRY_MS);
  });
  const resize = new ResizeObserver(() => { if (!dragging) draw(); }); // handles keep their on-screen size
  resize.observe(overlay);
  loadPicture();
  draw();

  return () => {
    closed = true;
    clearTimeout(retry);
    resize.disconnect();
    document.removeEventListener("keydown", onKey);
    img.removeAttribute("src");
  };
}

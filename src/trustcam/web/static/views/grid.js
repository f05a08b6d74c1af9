// Camera grid: every granted camera at a glance, as tiles with health, AI coverage, canary and recording badges.
// Browsers open ~6 connections per server, so only a few tiles stream MJPEG; beyond that each tile shows the
// latest snapshot, refreshed every few seconds. A group (config `camera_groups`) narrows the grid.
import { api, qs } from "../api.js";
import { badge, h, mount } from "../dom.js";
import { cameraBadges } from "./health.js";

const MAX_STREAMS = 4; // leaves connections free for the API calls and a live view in another tab
const SNAPSHOT_EVERY_MS = 5000;
const BADGES_EVERY_MS = 5000;
const RETRY_STREAM_MS = 5000;

const path = (name, what) => `/api/cameras/${encodeURIComponent(name)}/${what}`;

/** "2nd opinion 12%": the share of analysed frames a second, different model checked against evasion attacks. */
function secondOpinionBadge(opinion) {
  if (!opinion || !opinion.enabled) {
    return h("span", { title: "No second model checks this camera: an attack that fools the primary model "
      + "(detector.second_opinion in the config) hides people from it" }, badge("2nd opinion off", "muted"));
  }
  if (opinion.checked_share === null) {
    return h("span", { title: "A second model will check this camera's frames once its analysis runs" },
      badge("2nd opinion on", "muted"));
  }
  const share = Math.round(opinion.checked_share * 100);
  const perHour = opinion.disagreements_per_hour === null ? "–" : opinion.disagreements_per_hour;
  return h("span", { title: `A second model checked ${share}% of the analysed frames; objects only it saw: `
    + `${perHour} per hour (each is an event, and an evasion_suspected alert when it lasts)` },
  badge(`2nd opinion ${share}%`, opinion.disagreements_per_hour ? "warn" : "ok"));
}

function tileBadges(cam) {
  return [cameraBadges(cam, { fps: false }),
    cam.canary ? null : h("span", { title: "The canary self-test has not run yet" }, badge("canary pending", "muted")),
    badge(cam.recording ? "recording" : "not recorded", cam.recording ? "ok" : "muted"),
    secondOpinionBadge(cam.second_opinion),
    cam.node ? h("span", { title: `Runs on cluster node ${cam.node}`, class: "tile-node" }, badge(`node ${cam.node}`, "muted"))
      : null];
}

/** One tile: a link to the camera's live view holding its picture, name and badges. */
function tile(cam, streaming) {
  const img = h("img", { class: "tile-img", alt: `Picture of camera ${cam.name}`, dataset: { camera: cam.name } });
  const badges = h("div", { class: "tile-badges" }, tileBadges(cam));
  const el = h("li", { class: "tile", dataset: { camera: cam.name } },
    h("a", { href: `#/live/${encodeURIComponent(cam.name)}`, class: "tile-link", title: `Live view of ${cam.name}` },
    h("div", { class: "tile-frame" }, img),
    h("div", { class: "tile-caption" }, h("span", { class: "camname" }, cam.name), badges)));
  el.img = img;
  el.badges = badges;
  el.load = () => {
    img.src = streaming ? path(cam.name, "live.mjpeg") : `${path(cam.name, "snapshot.jpg")}?t=${Date.now()}`;
  };
  return el;
}

function groupSelector(groups, current, go) {
  if (!groups.length) return null;
  const select = h("select", { id: "grid-group", onchange: () => go(`#/grid${qs({ group: select.value })}`) },
    h("option", { value: "" }, "All cameras"),
    groups.map((g) => h("option", { value: g.name, selected: g.name === current }, `${g.name} (${g.cameras.length})`)));
  return h("div", { class: "field grid-groups" }, h("label", { for: "grid-group" }, "Group"), select);
}

export async function render(main, _args, query, { go }) {
  const data = await api("GET", "/api/cameras/grid");
  const group = data.groups.find((g) => g.name === query.group) || null;
  if (query.group && !group) { go("#/grid"); return undefined; } // unknown or no longer granted
  const shown = group ? data.cameras.filter((c) => group.cameras.includes(c.name)) : data.cameras;
  if (!shown.length) {
    mount(main, h("section", { class: "card" }, h("h1", {}, "Cameras"), h("p", {}, "No camera is granted to you.")));
    return undefined;
  }
  const streaming = shown.length <= MAX_STREAMS;
  const tiles = shown.map((cam) => tile(cam, streaming));
  const timers = [];
  let closed = false;
  const reload = (t) => { if (!closed) t.load(); };
  for (const t of tiles) {
    t.load();
    if (streaming) { // a stream that ends (camera restart, network) is opened again after a pause
      t.img.addEventListener("error", () => timers.push(setTimeout(() => reload(t), RETRY_STREAM_MS)));
    }
  }
  mount(main, h("section", { "aria-labelledby": "grid-title" },
    h("div", { class: "grid-head" }, h("h1", { id: "grid-title" }, group ? `Cameras – ${group.name}` : "Cameras"),
      groupSelector(data.groups, group && group.name, go)),
    h("ul", { class: "camgrid", id: "camera-grid" }, tiles)));

  if (!streaming) timers.push(setInterval(() => tiles.forEach(reload), SNAPSHOT_EVERY_MS));
  timers.push(setInterval(async () => { // health badges refresh; pictures keep their own connections
    try {
      const fresh = await api("GET", "/api/cameras/grid");
      for (const t of tiles) {
        const cam = fresh.cameras.find((c) => c.name === t.dataset.camera);
        if (cam) mount(t.badges, tileBadges(cam));
      }
    } catch { /* a 401 already sends us to the login */ }
  }, BADGES_EVERY_MS));
  return () => {
    closed = true;
    timers.forEach((id) => { clearInterval(id); clearTimeout(id); });
    tiles.forEach((t) => t.img.removeAttribute("src")); // closes the MJPEG connections
  };
}

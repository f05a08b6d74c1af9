// Live view: one MJPEG stream at a time (browsers allow ~6 connections per server), camera list with health.
import { api } from "../api.js";
import { h, mount } from "../dom.js";
import { cameraBadges } from "./health.js";

export async function render(main, args, _query, { go }) {
  const cameras = await api("GET", "/api/cameras");
  if (!cameras.length) {
    mount(main, h("section", { class: "card" }, h("h1", {}, "Live"), h("p", {}, "No camera is granted to you.")));
    return undefined;
  }
  const names = cameras.map((c) => c.name);
  const current = args[0] && names.includes(args[0]) ? args[0] : names[0];
  if (args[0] && args[0] !== current) { go(`#/live/${encodeURIComponent(current)}`); return undefined; }
  const cam = cameras.find((c) => c.name === current);

  const list = h("ul", { class: "camlist", id: "camera-list" });
  const status = h("p", { class: "muted", id: "live-status" }, "Connecting…");
  const img = h("img", { id: "live-img", class: "live", alt: `Live video of camera ${current}`,
    src: `/api/cameras/${encodeURIComponent(current)}/live.mjpeg` });
  const badges = h("div", { id: "live-health" }, cameraBadges(cam));
  img.addEventListener("load", () => mount(status), { once: true });
  img.addEventListener("error", () => mount(status, "The stream stopped (camera offline or session ended). ",
    h("button", { type: "button", class: "secondary", onclick: () => go(`#/live/${encodeURIComponent(current)}`) },
      "Reconnect")));
  setTimeout(() => { if (img.naturalWidth > 0) mount(status); }, 1500);

  function drawList(cams) {
    mount(list, cams.map((c) => h("li", {},
      h("a", { href: `#/live/${encodeURIComponent(c.name)}`, "aria-current": c.name === current ? "page" : null },
        h("span", { class: "camname" }, c.name)), " ", cameraBadges(c))));
  }
  drawList(cameras);
  mount(main, h("div", { class: "live-layout" },
    h("aside", { "aria-label": "Cameras" }, h("h2", {}, "Cameras"), list),
    h("section", { "aria-labelledby": "live-title" },
      h("h1", { id: "live-title" }, `Live – ${current}`), badges,
      h("div", { class: "live-frame" }, img), status,
      h("p", {}, h("a", { href: `#/events?camera=${encodeURIComponent(current)}` }, `Events of ${current}`), " · ",
        h("a", { href: `#/timeline/${encodeURIComponent(current)}` }, `Recordings timeline of ${current}`)))));

  const timer = setInterval(async () => { // health badges refresh; the video keeps its own connection
    try {
      const fresh = await api("GET", "/api/cameras");
      drawList(fresh);
      const now = fresh.find((c) => c.name === current);
      if (now) mount(badges, cameraBadges(now));
    } catch { /* a 401 already sends us to the login */ }
  }, 5000);
  return () => {
    clearInterval(timer);
    img.removeAttribute("src"); // closes the MJPEG connection
  };
}

// Live view: the camera's own H.264 over a WebSocket into Media Source Extensions (low latency, no re-encoding on the
// server; boxes and zones drawn on a canvas over the video), or the MJPEG stream with boxes drawn in when the browser
// cannot play the codec, MSE in a worker is missing, the server says privacy masks apply, or ?mode=mjpeg.
import { api } from "../api.js";
import { h, mount } from "../dom.js";
import { cameraBadges } from "./health.js";

const LIVE_EDGE_LAG_S = 1.0; // further behind than this: jump to the live edge
const BOX_MAX_AGE_S = 1.0; // boxes older than this (media time) are not drawn
const RAW_VIDEO_DENIED = 4406;

/** Can this browser play MSE fed from a worker (handle on video.srcObject: no blob: URL for the CSP)? */
function mseInWorker() {
  return typeof MediaSource !== "undefined" && MediaSource.canConstructInDedicatedWorker === true
    && typeof Worker !== "undefined";
}

/** The MSE player: a <video> and a boxes canvas; calls fallback(reason) when MJPEG must take over. */
function msePlayer(camera, status, fallback) {
  const video = h("video", { id: "live-video", class: "live", muted: true, autoplay: true, playsinline: true,
    "aria-label": `Live video of camera ${camera}` });
  video.muted = true;
  const canvas = h("canvas", { id: "live-boxes", class: "live-boxes", "aria-hidden": "true" });
  canvas.style.position = "absolute"; canvas.style.left = "0"; canvas.style.top = "0";
  canvas.style.width = "100%"; canvas.style.height = "100%"; canvas.style.pointerEvents = "none";
  const box = h("div", { class: "live-stack" }, video, canvas);
  box.style.position = "relative";
  const stats = { frames: 0, latencies: [], codec: null, closed: null };
  window.trustcamLive = stats; // read by the tests and bench/live.py
  let zones = {};
  let objects = []; // [{t, wall, objects}], oldest first
  let clocks = []; // [{t, wall}]: media time ↔ server receive time
  let stopped = false;
  const worker = new Worker("/static/views/live_worker.js");
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  worker.postMessage({ url: `${scheme}//${location.host}/api/cameras/${encodeURIComponent(camera)}/live.ws`,
    protocols: ["trustcam.live"] });
  worker.onmessage = (event) => {
    const m = event.data;
    if (m.type === "source") {
      video.srcObject = m.handle;
      video.play().catch(() => {});
    } else if (m.type === "init") {
      zones = m.zones || {}; stats.codec = m.codec;
    } else if (m.type === "objects") {
      objects.push(m); if (objects.length > 200) objects = objects.slice(-100);
    } else if (m.type === "clock") {
      clocks.push(m); if (clocks.length > 100) clocks = clocks.slice(-50);
    } else if (m.type === "unsupported") {
      fallback(`this browser cannot play ${m.mime}`);
    } else if (m.type === "closed" && !stopped) {
      stats.closed = m.code;
      if (m.code === RAW_VIDEO_DENIED || (m.code === 1006 && !stats.frames)) fallback(m.reason || "no MSE stream");
      else mount(status, `The stream stopped (${m.reason || "connection closed"}). `, h("button",
        { type: "button", class: "secondary", onclick: () => location.reload() }, "Reconnect"));
    }
  };

  function draw(mediaTime) {
    const w = video.videoWidth, hgt = video.videoHeight;
    if (!w || !hgt) return;
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== hgt) canvas.height = hgt;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, w, hgt);
    g.lineWidth = Math.max(2, hgt / 360);
    g.font = `${Math.max(12, Math.round(hgt / 40))}px sans-serif`;
    g.strokeStyle = "rgb(255,200,0)"; g.fillStyle = "rgb(255,200,0)";
    for (const [name, points] of Object.entries(zones)) {
      g.beginPath();
      points.forEach(([x, y], i) => (i ? g.lineTo(x * w, y * hgt) : g.moveTo(x * w, y * hgt)));
      g.closePath(); g.stroke();
      g.fillText(name, points[0][0] * w + 3, points[0][1] * hgt + 14);
    }
    let shown = null; // the newest analysed frame at or before the one on screen
    for (const o of objects) if (o.t === null || o.t <= mediaTime + 0.001) shown = o;
    if (!shown || (shown.t !== null && mediaTime - shown.t > BOX_MAX_AGE_S)) return;
    g.strokeStyle = "rgb(255,0,0)";
    for (const o of shown.objects) {
      const [x1, y1, x2, y2] = o.box;
      g.strokeRect(x1 * w, y1 * hgt, (x2 - x1) * w, (y2 - y1) * hgt);
      const caption = `${o.label} #${o.id} ${o.score.toFixed(2)}`;
      g.fillStyle = "rgb(255,0,0)"; g.fillRect(x1 * w, y1 * hgt - 16, g.measureText(caption).width + 6, 16);
      g.fillStyle = "#fff"; g.fillText(caption, x1 * w + 3, y1 * hgt - 3);
    }
  }

  function onFrame(now, meta) {
    if (stopped) return;
    stats.frames += 1;
    if (stats.frames === 1) mount(status);
    const clock = clocks.filter((c) => c.t <= meta.mediaTime + 0.001).pop();
    if (clock) { // glass-to-glass from the server's receipt of the frame to its presentation here
      const shownAt = performance.timeOrigin + (meta.presentationTime || meta.expectedDisplayTime || now);
      stats.latencies.push(shownAt / 1000 - (clock.wall + (meta.mediaTime - clock.t)));
      if (stats.latencies.length > 2000) stats.latencies.splice(0, 1000);
    }
    objects = objects.filter((o) => o.t === null || meta.mediaTime - o.t < 5);
    draw(meta.mediaTime);
    video.requestVideoFrameCallback(onFrame);
  }
  video.requestVideoFrameCallback(onFrame);

  const edge = setInterval(() => { // stay at the live edge: a stall or a slow tab must not build up delay
    const b = video.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    if (end - video.currentTime > LIVE_EDGE_LAG_S) video.currentTime = Math.max(b.start(b.length - 1), end - 0.1);
    if (video.paused) video.play().catch(() => {});
  }, 250);

  return { element: box, stop() { stopped = true; clearInterval(edge); worker.terminate(); video.srcObject = null; } };
}

/** The MJPEG stream (boxes drawn by the server into each picture). */
function mjpegPlayer(camera, status, go) {
  const img = h("img", { id: "live-img", class: "live", alt: `Live video of camera ${camera}`,
    src: `/api/cameras/${encodeURIComponent(camera)}/live.mjpeg` });
  img.addEventListener("load", () => mount(status), { once: true });
  img.addEventListener("error", () => mount(status, "The stream stopped (camera offline or session ended). ",
    h("button", { type: "button", class: "secondary", onclick: () => go(`#/live/${encodeURIComponent(camera)}`) },
      "Reconnect")));
  setTimeout(() => { if (img.naturalWidth > 0) mount(status); }, 1500);
  return { element: img, stop() { img.removeAttribute("src"); } }; // removing src closes the MJPEG connection
}

export async function render(main, args, query, { go }) {
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
  const badges = h("div", { id: "live-health" }, cameraBadges(cam));
  const frame = h("div", { class: "live-frame" });
  let player = null;
  function useMjpeg(reason) {
    if (player) player.stop();
    player = mjpegPlayer(current, status, go);
    mount(frame, player.element);
    if (reason) frame.dataset.fallback = reason;
  }
  if ((query || {}).mode !== "mjpeg" && mseInWorker()) {
    player = msePlayer(current, status, useMjpeg);
    mount(frame, player.element);
  } else {
    useMjpeg((query || {}).mode === "mjpeg" ? "" : "this browser has no Media Source Extensions in workers");
  }

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
      frame, status,
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
    if (player) player.stop(); // closes the socket or the MJPEG connection
  };
}

// Alerts and camera health: every camera's state and AI coverage, then recent alerts (newest first).
import { api } from "../api.js";
import { badge, field, h, mount, when } from "../dom.js";
import { cameraBadges, coverageText, severityKind } from "./health.js";

const KINDS = {
  health: "camera offline / back online",
  tamper: "covered, defocused, moved, blinded, frozen or looped video",
  coverage: "share of frames the AI really analysed",
  motion_while_blind: "motion while no detector works (fail-open)",
  drift: "scene or detector drifted from its baseline",
  canary: "end-to-end self-test (a synthetic person must be detected and delivered)",
  rule: "a zone / loitering / line rule fired",
  storage: "recording storage",
};

export async function render(main) {
  const kind = field("Kind", { tag: "select", name: "kind",
    options: [["", "all kinds"], ...Object.keys(KINDS).map((k) => [k, k])] });
  const camTable = h("tbody");
  const alertTable = h("tbody");
  const activeTable = h("tbody");
  const body = h("section", {}, h("h1", {}, "Alerts & camera health"),
    h("h2", {}, "Cameras"),
    h("table", { class: "grid", id: "health-table" }, h("thead", {}, h("tr", {},
      ["Camera", "Health", "Frame rate", "AI coverage", "Zones"].map((t) => h("th", { scope: "col" }, t)))), camTable),
    h("h2", {}, "Active conditions"),
    h("table", { class: "grid", id: "condition-table" }, h("thead", {}, h("tr", {},
      ["Since", "Camera", "Kind", "What", "Message"].map((t) => h("th", { scope: "col" }, t)))), activeTable),
    h("h2", {}, "Recent alerts"), h("div", { class: "filters" }, kind),
    h("table", { class: "grid", id: "alert-table" }, h("thead", {}, h("tr", {},
      ["Time", "Severity", "Kind", "Camera", "Message"].map((t) => h("th", { scope: "col" }, t)))), alertTable),
    h("details", {}, h("summary", {}, "What the kinds mean"),
      h("dl", { class: "facts" }, Object.entries(KINDS).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))));
  mount(main, body);

  let alerts = [];
  function drawAlerts() {
    const shown = alerts.filter((a) => !kind.input.value || a.kind === kind.input.value);
    mount(alertTable, shown.length ? shown.map((a) => h("tr", { class: a.cleared ? "cleared" : "" },
      h("td", {}, when(a.time)),
      h("td", {}, badge(a.cleared ? "cleared" : a.severity, a.cleared ? "ok" : severityKind(a.severity))),
      h("td", {}, a.kind, a.test ? " (test)" : ""),
      h("td", {}, a.camera || "–"),
      h("td", {}, a.message))) : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No alert.")));
  }
  kind.input.addEventListener("change", drawAlerts);

  async function refresh() {
    const [cams, answer] = await Promise.all([api("GET", "/api/cameras"), api("GET", "/api/alerts")]);
    mount(camTable, cams.map((c) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/live/${encodeURIComponent(c.name)}` }, c.name)),
      h("td", {}, cameraBadges({ ...c, fps: null, coverage: null })),
      h("td", {}, c.fps !== undefined && c.fps !== null ? `${Number(c.fps).toFixed(1)} fps` : "–"),
      h("td", {}, coverageText(c.coverage)),
      h("td", {}, Array.isArray(c.zones) ? c.zones.map((z) => z.name || z).join(", ")
        : Object.keys(c.zones || {}).join(", ")))));
    const active = Array.isArray(answer) ? [] : answer.active || [];
    mount(activeTable, active.length ? active.map((c) => h("tr", {},
      h("td", {}, when(c.since)), h("td", {}, c.camera || "–"), h("td", {}, badge(c.kind, "bad")),
      h("td", {}, c.detail || ""), h("td", {}, c.message || "")))
      : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "None: every camera is healthy.")));
    alerts = (Array.isArray(answer) ? answer : answer.recent || answer.alerts || []).slice()
      .sort((a, b) => (b.time || 0) - (a.time || 0));
    drawAlerts();
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 10000);
  return () => clearInterval(timer);
}

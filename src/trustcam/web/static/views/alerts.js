// Alerts and camera health: every camera's state, AI coverage and canary, active conditions, recent alerts
// (newest first) and, for admins, the dead-letter queue with a Replay button.
import { api, can } from "../api.js";
import { act, badge, field, h, mount, when } from "../dom.js";
import { cameraBadges, canaryText, severityKind } from "./health.js";

const KINDS = {
  health: "camera offline / back online",
  tamper: "covered, defocused, moved, blinded, frozen or looped video",
  coverage: "share of frames the AI really analysed",
  motion_while_blind: "motion while no detector works (fail-open)",
  drift: "scene or detector drifted from its baseline",
  canary: "end-to-end self-test passed: a synthetic person was detected and this alert delivered (no action)",
  canary_failed: "the self-test failed: people may go unnoticed or alerts may not reach you",
  rule: "a zone / loitering / line rule fired",
  storage: "recording storage",
};

export async function render(main) {
  const kind = field("Kind", { tag: "select", name: "kind",
    options: [["", "all kinds"], ...Object.keys(KINDS).map((k) => [k, k])] });
  const camTable = h("tbody");
  const alertTable = h("tbody");
  const activeTable = h("tbody");
  const deadTable = h("tbody");
  const admin = can("admin");
  const body = h("section", {}, h("h1", {}, "Alerts & camera health"),
    h("h2", {}, "Cameras"),
    h("table", { class: "grid", id: "health-table" }, h("thead", {}, h("tr", {},
      ["Camera", "Health", "Frame rate", "Canary self-test", "Zones"].map((t) => h("th", { scope: "col" }, t)))), camTable),
    h("h2", {}, "Active conditions"),
    h("table", { class: "grid", id: "condition-table" }, h("thead", {}, h("tr", {},
      ["Since", "Camera", "Kind", "What", "Message"].map((t) => h("th", { scope: "col" }, t)))), activeTable),
    h("h2", {}, "Recent alerts"), h("div", { class: "filters" }, kind),
    h("table", { class: "grid", id: "alert-table" }, h("thead", {}, h("tr", {},
      ["Time", "Severity", "Kind", "Camera", "Message"].map((t) => h("th", { scope: "col" }, t)))), alertTable),
    h("details", {}, h("summary", {}, "What the kinds mean"),
      h("dl", { class: "facts" }, Object.entries(KINDS).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))),
    admin ? [h("h2", {}, "Undelivered alerts (dead letters)"),
      h("p", { class: "muted" }, "Alerts a sink gave up on after all its attempts. Fix the receiver or broker, "
        + "then replay them."),
      h("table", { class: "grid", id: "dead-letter-table" }, h("thead", {}, h("tr", {},
        ["Queued", "Sink", "Kind", "Camera", "Message", "Attempts", "Last error", ""]
          .map((t) => h("th", { scope: "col" }, t)))), deadTable)] : null);
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
    const [cams, { active, recent }] = await Promise.all([api("GET", "/api/cameras"), api("GET", "/api/alerts")]);
    mount(camTable, cams.map((c) => h("tr", { dataset: { camera: c.name } },
      h("th", { scope: "row" }, h("a", { href: `#/live/${encodeURIComponent(c.name)}` }, c.name)),
      h("td", {}, cameraBadges(c, { fps: false, canary: false })),
      h("td", {}, `${c.fps.toFixed(1)} fps`),
      h("td", { class: "canary-cell" }, canaryText(c.canary)),
      h("td", {}, Object.keys(c.zones).join(", ")))));
    mount(activeTable, active.length ? active.map((c) => h("tr", {},
      h("td", {}, when(c.since)), h("td", {}, c.camera || "–"), h("td", {}, badge(c.kind, "bad")),
      h("td", {}, c.detail), h("td", {}, c.message)))
      : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "None: every camera is healthy.")));
    alerts = recent;
    drawAlerts();
    if (admin) await drawDead();
  }

  async function drawDead() {
    const dead = await api("GET", "/api/alerts/dead-letters");
    mount(deadTable, dead.length ? dead.map((d) => {
      const replay = h("button", { type: "button", class: "secondary", "aria-label": `Replay dead letter ${d.id}` },
        "Replay");
      replay.addEventListener("click", () => act(replay, async () => {
        await api("POST", `/api/alerts/dead-letters/${d.id}/replay`, {});
        await drawDead();
      }, `Alert queued again for ${d.sink}.`));
      return h("tr", { dataset: { id: d.id } }, h("td", {}, when(d.created)), h("td", {}, d.sink),
        h("td", {}, d.alert.kind), h("td", {}, d.alert.camera || "–"), h("td", {}, d.alert.message),
        h("td", {}, String(d.attempts)), h("td", { class: "small" }, d.last_error || ""), h("td", {}, replay));
    }) : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "None: every alert was delivered.")));
  }
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 10000);
  return () => clearInterval(timer);
}

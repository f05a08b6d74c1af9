// How a camera's health reads at a glance: one badge for its state, AI coverage, canary, and its open conditions.
import { badge, h } from "../dom.js";

const GOOD = new Set(["ok", "online", "running", "connected", "healthy", "live", "full"]);
const WARN = new Set(["starting", "connecting", "learning", "degraded", "reconnecting"]);

export function stateKind(state) {
  const s = String(state || "").toLowerCase();
  return GOOD.has(s) ? "ok" : WARN.has(s) ? "warn" : "bad";
}

export function severityKind(severity) {
  return { info: "info", warning: "warn", high: "bad", critical: "bad" }[severity] || "info";
}

/** AI coverage as text: "full" / "degraded" / "blind", or a 0..1 fraction as percent. */
export function coverageText(value) {
  if (value === null || value === undefined || value === "") return "–";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return `${Math.round(n <= 1 ? n * 100 : n)}%`;
}

function coverageKind(value) {
  const n = Number(value);
  if (Number.isFinite(n)) return n >= 0.9 ? "ok" : n > 0 ? "warn" : "bad";
  return stateKind(value);
}

/** Badges for one camera object from /api/cameras: {name, state, fps, coverage, canary, alerts: [conditions]}. */
export function cameraBadges(cam, { compact = false } = {}) {
  const conditions = (cam.alerts || []).filter((a) => !(a && a.cleared));
  const canary = cam.canary;
  return h("span", { class: "badges" },
    badge(cam.state || "unknown", stateKind(cam.state)),
    !compact && cam.fps !== undefined && cam.fps !== null ? badge(`${Number(cam.fps).toFixed(1)} fps`, "info") : null,
    cam.coverage !== undefined && cam.coverage !== null
      ? badge(`AI ${coverageText(cam.coverage)}`, coverageKind(cam.coverage)) : null,
    canary && typeof canary === "object"
      ? h("span", { title: canary.message || "" }, badge(canary.ok ? "canary ok" : "canary missed", canary.ok ? "ok" : "bad"))
      : null,
    conditions.map((a) => typeof a === "string" ? badge(a, "warn")
      : h("span", { title: a.message || "" }, badge([a.kind, a.detail].filter(Boolean).join(": ") || "alert",
        a.severity ? severityKind(a.severity) : "bad"))));
}

// How a camera's health reads at a glance: one badge for its state, AI coverage, canary, and its open conditions.
import { badge, h, when } from "../dom.js";

// /api/cameras `state`: connected, connecting, stopped (a file camera reached its end), disconnected, not running
const STATE_KIND = { connected: "ok", connecting: "warn", stopped: "warn" };
// `coverage`: full (primary detector), degraded (on a backup detector), blind (no detector works)
const COVERAGE_KIND = { full: "ok", degraded: "warn", blind: "bad" };

export function stateKind(state) {
  return STATE_KIND[state] || "bad";
}

export function severityKind(severity) {
  return { info: "info", warning: "warn", high: "bad", critical: "bad" }[severity];
}

const ms = (s) => (s === null ? "–" : `${Math.round(s * 1000)} ms`);

/** The last canary self-test of a camera (`canary` of /api/cameras: null before the first probe). */
export function canaryBadge(canary) {
  if (!canary) return null;
  const title = `${when(canary.time)}: ${canary.message} (detection ${ms(canary.detection_latency_s)}, `
    + `delivery ${ms(canary.delivery_latency_s)})`;
  return h("span", { title, class: "canary", dataset: { outcome: canary.outcome } },
    badge(`canary ${canary.outcome.replace("_", " ")}`, canary.passed ? "ok" : "bad"));
}

/** Canary details for a table cell: outcome badge, when, latencies. */
export function canaryText(canary) {
  if (!canary) return "no probe yet";
  return [canaryBadge(canary), ` ${when(canary.time)}`,
    canary.passed ? ` · detection ${ms(canary.detection_latency_s)}, delivery ${ms(canary.delivery_latency_s)}` : ""];
}

/** Badges for one camera object from /api/cameras: {name, state, fps, coverage, canary, alerts: [conditions]}. */
export function cameraBadges(cam, { fps = true, canary = true } = {}) {
  return h("span", { class: "badges" },
    badge(cam.state, stateKind(cam.state)),
    fps ? badge(`${cam.fps.toFixed(1)} fps`, "info") : null,
    badge(`AI ${cam.coverage}`, COVERAGE_KIND[cam.coverage] || "bad"),
    canary ? canaryBadge(cam.canary) : null,
    cam.alerts.filter((a) => a.kind !== "canary" && a.kind !== "coverage").map((a) => h("span", { title: a.message },
      badge(`${a.kind}: ${a.detail}`, "bad"))));
}

// An event's review state as the API sends it: `acknowledged` and `review` are null or {user, time[, verdict, note]}.
import { badge } from "../dom.js";

export const VERDICTS = { true_positive: "true positive", false_positive: "false positive" };

export function reviewOf(ev) {
  const r = ev.review || {};
  return { verdict: r.verdict || null, note: r.note || "", by: r.user || "", at: r.time || null };
}

export function ackOf(ev) {
  const a = ev.acknowledged;
  return { done: Boolean(a), by: a ? a.user : "", at: a ? a.time : null };
}

export function reviewBadge(ev) {
  const { verdict } = reviewOf(ev);
  if (verdict) return badge(VERDICTS[verdict] || verdict, verdict === "false_positive" ? "warn" : "ok");
  if (ackOf(ev).done) return badge("acknowledged", "info");
  return badge("unreviewed", "muted");
}

export function threatKind(threat) {
  return { critical: "bad", high: "bad", medium: "warn", low: "info" }[threat] || "muted";
}

// Reading an event's review state, whatever shape the server nests it in.
import { badge } from "../dom.js";

export const VERDICTS = { true_positive: "true positive", false_positive: "false positive" };

export function reviewOf(ev) {
  const r = ev.review || {};
  return {
    verdict: r.verdict ?? ev.verdict ?? null,
    note: r.note ?? ev.review_note ?? ev.note ?? "",
    by: r.by ?? r.user ?? r.username ?? ev.reviewed_by ?? "",
    at: r.at ?? r.time ?? ev.reviewed_at ?? null,
  };
}

export function ackOf(ev) {
  const a = (ev.acknowledged && typeof ev.acknowledged === "object" ? ev.acknowledged : ev.ack) || {};
  const by = a.by ?? a.user ?? ev.acknowledged_by ?? ev.acked_by ?? "";
  const at = a.at ?? a.time ?? ev.acknowledged_at ?? ev.acked_at ?? null;
  const done = Boolean(ev.acknowledged || by || at);
  return { done, by, at };
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

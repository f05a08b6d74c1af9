// One event: its recorded clip, snapshot, what fired, which model saw it, and (operator/admin) acknowledge, verdict,
// export.
import { api, can } from "../api.js";
import { act, badge, field, flash, h, mount, when } from "../dom.js";
import { VERDICTS, ackOf, reviewBadge, reviewOf, threatKind } from "./review.js";

export async function render(main, args, _query, { go }) {
  const id = args[0];
  const path = `/api/events/${encodeURIComponent(id)}`;
  const ev = await api("GET", path);
  const review = reviewOf(ev);
  const ack = ackOf(ev);
  const facts = [
    ["Camera", h("a", { href: `#/live/${encodeURIComponent(ev.camera)}` }, ev.camera)],
    ["Object", `${ev.label} (track ${ev.track_id})`],
    ["When", `${when(ev.start)} – ${when(ev.end)}`],
    ["Best score", ev.best_score.toFixed(2)],
    ["Threat", badge(ev.threat, threatKind(ev.threat))],
    ["Zones", ev.zones.join(", ") || "–"],
    ["Rules", ev.rules.map((r) => `${r.name} (${r.threat})`).join(", ") || "–"],
    ["Model", ev.model.name ? h("span", {}, ev.model.name, " ", h("code", { title: ev.model.sha256 || "" },
      (ev.model.sha256 || "").slice(0, 12))) : "–"],
    ...(ev.seen_by ? [["Seen by", h("span", { id: "seen-by" }, ev.seen_by === "secondary"
      ? badge("second model only: the primary missed it (possible evasion)", "warn")
      : ev.seen_by === "both" ? "both models" : "primary model")]] : []),
    // null for users without the biometrics permission (the API hides identities from them)
    ...(ev.sub_label ? [["Face", h("span", { id: "sub-label" }, ev.sub_label,
      ev.face_distance != null ? h("span", { class: "muted" },
        ` (distance ${ev.face_distance.toFixed(2)}, margin ${ev.face_margin != null ? ev.face_margin.toFixed(2) : "–"})`)
        : null)]] : []),
    ["Review", h("span", { id: "review-state" }, reviewBadge(ev),
      review.note ? h("span", { id: "review-note" }, ` “${review.note}”`) : null,
      review.by ? h("span", { class: "muted" }, ` by ${review.by}${review.at ? `, ${when(review.at)}` : ""}`) : null)],
    ["Acknowledged", ack.done ? `${ack.by}, ${when(ack.at)}` : "no"],
  ];
  const history = ev.history.map((entry) => h("li", {}, `${when(entry.time)} ${entry.user}: `,
    entry.verdict ? `${VERDICTS[entry.verdict] || entry.verdict}${entry.note ? ` – “${entry.note}”` : ""}`
      : "acknowledged"));
  const details = h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const snap = h("img", { class: "snapshot", id: "event-snapshot", alt: `Snapshot of ${ev.label} on ${ev.camera}`,
    src: `${path}/snapshot.jpg` });
  snap.addEventListener("error", () => snap.replaceWith(h("p", { class: "muted" }, "No snapshot for this event.")));
  const player = clipPlayer(`${path}/clip.mp4`, ev);

  const at = new Date(ev.start * 1000); // the timeline of the event's (local) day, its player at the event
  const day = `${at.getFullYear()}-${String(at.getMonth() + 1).padStart(2, "0")}-${String(at.getDate()).padStart(2, "0")}`;
  const section = h("section", { id: "event-detail" },
    h("p", {}, h("a", { href: `#/events?camera=${encodeURIComponent(ev.camera)}` }, "← Events"), " · ",
      h("a", { id: "event-timeline", href: `#/timeline/${encodeURIComponent(ev.camera)}?day=${day}&t=${ev.start}` },
        "Open in the timeline")),
    h("h1", {}, `${ev.label} on ${ev.camera}`),
    h("div", { class: "event-layout" }, h("div", {}, player, snap), h("div", {}, details,
      history.length ? h("details", {}, h("summary", {}, `Review history (${history.length})`),
        h("ul", { id: "review-history" }, history)) : null,
      can("review") ? actions() : null)));
  mount(main, section);

  function actions() {
    const ackBtn = h("button", { type: "button", id: "ack", disabled: ack.done }, ack.done ? "Acknowledged" : "Acknowledge");
    ackBtn.addEventListener("click", () => act(ackBtn, async () => {
      await api("POST", `${path}/ack`, {});
      go(location.hash);
    }, "Event acknowledged."));

    const choices = Object.entries(VERDICTS).map(([value, text]) => h("label", { class: "inline" },
      h("input", { type: "radio", name: "verdict", value, checked: review.verdict === value }), ` ${text}`));
    const note = field("Note", { tag: "textarea", name: "note", rows: 2, value: review.note || "",
      hint: "Why: helps whoever tunes the zones or assesses the model later." });
    const save = h("button", { type: "submit", id: "save-verdict" }, "Save verdict");
    const form = h("form", { id: "review-form", class: "card" },
      h("fieldset", {}, h("legend", {}, "Verdict"), choices), note, save);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const chosen = form.querySelector("input[name=verdict]:checked");
      if (!chosen) { flash("Choose true positive or false positive first."); return; }
      act(save, async () => {
        const body = { verdict: chosen.value };
        if (note.input.value.trim()) body.note = note.input.value.trim();
        await api("POST", `${path}/review`, body);
        await render(main, args, _query, { go });
      }, "Verdict saved.");
    });

    const exportBtn = h("button", { type: "button", id: "export", class: "secondary" }, "Export evidence");
    const exportOut = h("p", { id: "export-result", class: "muted" });
    exportBtn.addEventListener("click", () => act(exportBtn, async () => {
      const res = await api("POST", `${path}/export`, {}, { raw: true }); // the signed ZIP
      const blob = await res.blob();
      const disposition = res.headers.get("content-disposition") || "";
      const name = (/filename="?([^";]+)"?/.exec(disposition) || [])[1] || `trustcam-evidence-${id}.zip`;
      const url = URL.createObjectURL(blob);
      const link = h("a", { href: url, download: name }, `Download ${name} (${Math.round(blob.size / 1024)} KiB)`);
      mount(exportOut, link);
      link.click();
    }, "Evidence bundle ready; verify it with `trustcam evidence verify`."));

    return h("div", { class: "actions-block" }, h("h2", {}, "Review"), h("p", {}, ackBtn), form,
      h("p", {}, exportBtn), exportOut);
  }
  return undefined;
}

/** The event's footage (pre/post capture included); the server's reason instead when there is none. The media
 * request carries the session cookie like the snapshot <img>, and seeks with range requests. */
function clipPlayer(url, ev) {
  const video = h("video", { id: "event-video", controls: true, playsinline: true, preload: "metadata", src: url,
    "aria-label": `Recording of ${ev.label} on ${ev.camera}` });
  video.style.width = "100%"; // CSSOM, not a style attribute: the CSP allows it
  const box = h("div", { id: "event-clip" }, video);
  video.addEventListener("error", async () => mount(box, h("p", { class: "muted", id: "clip-reason" },
    await clipProblem(url))));
  return box;
}

/** Why the clip did not play: the server's detail (no footage and why), or a codec the browser lacks. */
async function clipProblem(url) {
  try {
    const res = await fetch(url, { headers: { Range: "bytes=0-0" }, credentials: "same-origin", cache: "no-store" });
    if (res.ok) return "This browser cannot play the recording; an operator can export it as evidence.";
    return (await res.json()).detail || `the server answered ${res.status}`;
  } catch {
    return "The recording could not be loaded; check that trustcam is running.";
  }
}

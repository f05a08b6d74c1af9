// Events timeline: filters live in the URL (reload and links keep them), newest first, paged.
import { api, qs } from "../api.js";
import { badge, field, fromEpoch, h, mount, toEpoch, when } from "../dom.js";
import { reviewBadge, threatKind } from "./review.js";

const PAGE = 20;

export async function render(main, _args, query, { go }) {
  const offset = Math.max(0, Number(query.offset) || 0);
  const filters = { camera: query.camera || "", label: query.label || "", since: query.since || "",
    until: query.until || "", reviewed: query.reviewed || "" };
  const [cameras, page] = await Promise.all([
    api("GET", "/api/cameras"),
    api("GET", `/api/events${qs({ ...filters, limit: PAGE, offset })}`),
  ]);

  const camera = field("Camera", { tag: "select", name: "camera",
    options: [["", "all cameras"], ...cameras.map((c) => [c.name, c.name])] });
  camera.input.value = filters.camera;
  const label = field("Label", { name: "label", value: filters.label, list: "labels", placeholder: "any" });
  const since = field("From", { type: "datetime-local", name: "since", value: fromEpoch(filters.since) });
  const until = field("To", { type: "datetime-local", name: "until", value: fromEpoch(filters.until) });
  const reviewed = field("Review", { tag: "select", name: "reviewed",
    options: [["", "all"], ["false", "unreviewed"], ["true", "reviewed"]] });
  reviewed.input.value = filters.reviewed;
  const form = h("form", { class: "filters", id: "event-filters", "aria-label": "Filter events" },
    camera, label, since, until, reviewed,
    h("datalist", { id: "labels" }, ["person", "car", "truck", "bicycle", "motorcycle", "bus", "dog", "cat"]
      .map((l) => h("option", { value: l }))),
    h("div", { class: "field actions" }, h("button", { type: "submit" }, "Apply"),
      h("button", { type: "button", class: "secondary", onclick: () => go("#/events") }, "Clear")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(`#/events${qs({ camera: camera.input.value, label: label.input.value.trim(), since: toEpoch(since.input.value),
      until: toEpoch(until.input.value), reviewed: reviewed.input.value })}`);
  });

  const { events, total } = page;
  const rows = events.map((ev) => h("li", { class: "event-row", dataset: { id: ev.id } },
    h("a", { href: `#/events/${encodeURIComponent(ev.id)}`, class: "event-link" },
      !ev.has_snapshot ? h("span", { class: "thumb" })
        : h("img", { class: "thumb", loading: "lazy", alt: `Snapshot of ${ev.label} on ${ev.camera}`,
          src: `/api/events/${encodeURIComponent(ev.id)}/snapshot.jpg`,
          onerror: (e) => e.target.classList.add("missing") }),
      h("span", { class: "event-main" },
        h("strong", {}, ev.label), " on ", h("span", {}, ev.camera), " ",
        badge(ev.threat, threatKind(ev.threat)), " ", reviewBadge(ev),
        h("br"),
        h("span", { class: "muted" }, when(ev.start),
          ` · score ${ev.best_score.toFixed(2)}`,
          ev.rules.length ? ` · ${ev.rules.map((r) => r.name).join(", ")}` : "")))));

  const pageLink = (off, text) => h("button", { type: "button", class: "secondary",
    onclick: () => go(`#/events${qs({ ...filters, offset: off || "" })}`) }, text);
  const pager = h("nav", { class: "pager", "aria-label": "Pages" },
    offset > 0 ? pageLink(Math.max(0, offset - PAGE), "← Newer") : null,
    h("span", { class: "muted" }, total ? `${offset + 1}–${offset + events.length} of ${total}` : "no events"),
    offset + PAGE < total ? pageLink(offset + PAGE, "Older →") : null);

  mount(main, h("section", {}, h("h1", {}, "Events"), form,
    events.length ? h("ul", { class: "events", id: "event-list" }, rows)
      : h("p", { class: "muted", id: "no-events" }, "No event matches these filters yet."),
    pager));

  if (offset === 0) { // the newest page follows new events by itself
    const timer = setInterval(async () => {
      if (form.contains(document.activeElement)) return; // do not wipe filters being typed
      try {
        const fresh = await api("GET", `/api/events${qs({ ...filters, limit: PAGE, offset: 0 })}`);
        if (fresh.total !== total) go(location.hash || "#/events");
      } catch { /* 401 handled globally */ }
    }, 5000);
    return () => clearInterval(timer);
  }
  return undefined;
}

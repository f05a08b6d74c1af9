// Audit log (auditor, admin): who did what, when, from where; filters; verify the hash chain.
import { api, qs } from "../api.js";
import { act, badge, field, fromEpoch, h, mount, toEpoch, when } from "../dom.js";

const PAGE = 50;

export async function render(main, _args, query, { go }) {
  const offset = Math.max(0, Number(query.offset) || 0);
  const filters = { user: query.user || "", action: query.action || "", since: query.since || "",
    until: query.until || "" };
  const { entries, total } = await api("GET", `/api/audit${qs({ ...filters, limit: PAGE, offset })}`);

  const user = field("User", { name: "user", value: filters.user });
  const action = field("Action", { name: "action", value: filters.action, placeholder: "e.g. view_live" });
  const since = field("From", { type: "datetime-local", name: "since", value: fromEpoch(filters.since) });
  const until = field("To", { type: "datetime-local", name: "until", value: fromEpoch(filters.until) });
  const form = h("form", { class: "filters", id: "audit-filters", "aria-label": "Filter the audit log" },
    user, action, since, until, h("div", { class: "field actions" }, h("button", { type: "submit" }, "Apply"),
      h("button", { type: "button", class: "secondary", onclick: () => go("#/audit") }, "Clear")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    go(`#/audit${qs({ user: user.input.value.trim(), action: action.input.value.trim(),
      since: toEpoch(since.input.value), until: toEpoch(until.input.value) })}`);
  });

  const verify = h("button", { type: "button", id: "verify-chain" }, "Verify chain");
  const verdict = h("div", { id: "verify-result", "aria-live": "polite" });
  verify.addEventListener("click", () => act(verify, async () => {
    const r = await api("POST", "/api/audit/verify", {});
    const checked = `${r.entries} entries checked. `;
    const where = r.first_bad !== null ? `First bad entry: #${r.first_bad}. ` : "";
    mount(verdict, h("p", { class: `flash ${r.ok ? "ok" : "error"}` },
      r.ok ? `The audit chain is intact. ${checked}`
        : `The audit chain is BROKEN: entries were changed or removed. ${checked}${where}${r.problem || ""}`));
  }));

  const describe = (e) => (Object.keys(e.details).length ? JSON.stringify(e.details) : "");
  const rows = entries.map((e) => h("tr", {},
    h("td", {}, when(e.time)), h("td", {}, e.user || "–"), h("td", {}, e.action),
    h("td", {}, e.target), h("td", {}, badge(e.outcome, e.outcome === "ok" ? "ok" : "bad")),
    h("td", {}, e.client), h("td", { class: "small" }, describe(e))));
  const pageBtn = (off, text) => h("button", { type: "button", class: "secondary",
    onclick: () => go(`#/audit${qs({ ...filters, offset: off || "" })}`) }, text);

  mount(main, h("section", {}, h("h1", {}, "Audit log"),
    h("div", { class: "card" }, h("p", {}, "Each entry is chained to the previous one by its hash, so a changed or "
      + "deleted entry breaks the chain."), verify, verdict),
    form,
    h("table", { class: "grid", id: "audit-table" }, h("thead", {}, h("tr", {},
      ["Time", "User", "Action", "Target", "Outcome", "From", "Details"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No entry.")))),
    h("nav", { class: "pager", "aria-label": "Pages" },
      offset > 0 ? pageBtn(Math.max(0, offset - PAGE), "← Newer") : null,
      h("span", { class: "muted" }, entries.length ? `${offset + 1}–${offset + entries.length} of ${total}` : ""),
      offset + entries.length < total ? pageBtn(offset + PAGE, "Older →") : null)));
}

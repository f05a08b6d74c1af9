// API tokens: create your own (the secret is shown once), list and revoke; admins see and revoke everyone's.
import { ROLES, api, session } from "../api.js";
import { act, badge, field, h, mount, when } from "../dom.js";

/** Form creating a token for the signed-in user; `onCreated` re-draws the list. */
export function createTokenForm(onCreated) {
  const name = field("Token name", { name: "token_name", required: true, pattern: "[A-Za-z0-9_.-]+",
    placeholder: "e.g. home-assistant", hint: "Letters, digits, '.', '_' or '-'." });
  const days = field("Valid for (days)", { name: "days", type: "number", min: 1, max: 3650, value: 30, required: true });
  const role = field("Role (optional, at most yours)", { tag: "select", name: "token_role",
    options: [["", "same as mine"], ...ROLES.map((r) => [r, r])] });
  // a stolen session alone cannot mint a long-lived credential: the password again, and a code with MFA
  const password = field("Your password", { name: "token_password", type: "password", required: true,
    autocomplete: "current-password" });
  const withCode = Boolean(session.me && session.me.mfa_enrolled);
  const code = withCode ? field("Code from the app", { name: "token_code", required: true, inputmode: "numeric",
    autocomplete: "one-time-code", hint: "Or a recovery code." }) : null;
  const out = h("div", { id: "token-created", "aria-live": "polite" });
  const submit = h("button", { type: "submit", id: "create-token" }, "Create token");
  const form = h("form", { class: "card", id: "token-form" }, h("h2", {}, "New API token"),
    h("div", { class: "row" }, name, days, role), h("div", { class: "row" }, password, code), submit, out);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(submit, async () => {
      const body = { name: name.input.value.trim(), days: Number(days.input.value), password: password.input.value };
      if (role.input.value) body.role = role.input.value;
      if (code) body.code = code.input.value.trim();
      password.input.value = "";
      if (code) code.input.value = "";
      const answer = await api("POST", "/api/me/tokens", body);
      mount(out, h("div", { class: "once" },
        h("p", {}, h("strong", {}, "Copy this token now; it is shown only once: ")),
        h("code", { id: "new-token", class: "secret" }, answer.token),
        h("p", { class: "muted" }, "Use it as ", h("code", {}, "Authorization: Bearer <token>"), ".")));
      name.input.value = "";
      if (onCreated) await onCreated();
    });
  });
  return form;
}

/** Table of tokens from `path`; each row revoked with DELETE `${revokeBase}/{id}`. */
export function tokenTable(path, revokeBase, showOwner) {
  const tbody = h("tbody");
  const table = h("table", { class: "grid", id: "token-table" }, h("thead", {}, h("tr", {},
    [showOwner ? "User" : null, "Name", "Role", "Created", "Expires", "Last used", "State", ""]
      .filter((t) => t !== null).map((t) => h("th", { scope: "col" }, t)))), tbody);
  async function draw() {
    const tokens = await api("GET", path);
    mount(tbody, tokens.length ? tokens.map((t) => {
      const revoked = t.revoked !== null;
      const revoke = h("button", { type: "button", class: "secondary danger", disabled: revoked,
        "aria-label": `Revoke token ${t.name}` }, "Revoke");
      revoke.addEventListener("click", () => {
        if (!window.confirm(`Revoke token "${t.name}"? Scripts using it stop working at once.`)) return;
        act(revoke, async () => { await api("DELETE", `${revokeBase}/${encodeURIComponent(t.id)}`); await draw(); },
          "Token revoked.");
      });
      return h("tr", {}, showOwner ? h("td", {}, t.username) : null, h("td", {}, t.name),
        h("td", {}, t.role), h("td", {}, when(t.created)),
        h("td", {}, when(t.expires)), h("td", {}, when(t.last_used) || "never"),
        h("td", {}, revoked ? badge("revoked", "bad") : badge("active", "ok")), h("td", {}, revoke));
    }) : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No token.")));
  }
  return { table, draw };
}

export async function render(main) {
  const all = tokenTable("/api/tokens", "/api/tokens", true);
  mount(main, h("section", {}, h("h1", {}, "API tokens"),
    h("p", {}, "Tokens let scripts (Home Assistant, Prometheus, backups) call the API as ",
      h("strong", {}, session.me.username), " or with a narrower role."),
    createTokenForm(all.draw), h("h2", {}, "Every token"), all.table));
  await all.draw();
}

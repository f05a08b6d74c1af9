// My account: password, two-step verification state, my API tokens.
import { api, session } from "../api.js";
import { act, field, flash, h, mount } from "../dom.js";
import { createTokenForm, tokenTable } from "./tokens.js";

export async function render(main) {
  const me = session.me;
  const current = field("Current password", { type: "password", name: "current_password", required: true,
    autocomplete: "current-password" });
  const next = field("New password", { type: "password", name: "new_password", required: true, minlength: 12,
    autocomplete: "new-password" });
  const again = field("New password again", { type: "password", name: "new_password2", required: true,
    autocomplete: "new-password" });
  const save = h("button", { type: "submit" }, "Change password");
  const pwForm = h("form", { class: "card", id: "password-form" }, h("h2", {}, "Password"), current, next, again, save);
  pwForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (next.input.value !== again.input.value) { flash("The two new passwords differ."); return; }
    act(save, async () => {
      await api("POST", "/api/me/password", { current_password: current.input.value, new_password: next.input.value });
      pwForm.reset();
    }, "Password changed.");
  });
  const mine = tokenTable("/api/me/tokens", "/api/me/tokens", false);
  mount(main, h("section", {}, h("h1", {}, "My account"),
    h("p", {}, `Signed in as ${me.username}, role ${me.role}`,
      me.cameras === null ? "" : `, cameras: ${me.cameras.join(", ") || "none"}`, "."),
    h("p", {}, "Two-step verification: ", me.mfa_enrolled ? "active." : h("a", { href: "#/mfa" }, "set it up")),
    pwForm, createTokenForm(mine.draw), h("h2", {}, "My tokens"), mine.table));
  await mine.draw();
}

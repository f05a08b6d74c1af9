// Users (admin): create with a role and cameras, change role, disable, reset MFA, delete.
import { ROLES, api, session } from "../api.js";
import { act, badge, field, flash, h, mount, when } from "../dom.js";

function cameraChoices(cameras, granted, prefix) {
  return h("fieldset", { class: "cams" }, h("legend", {}, "Cameras (none ticked: all cameras)"),
    cameras.map((c) => h("label", { class: "inline" },
      h("input", { type: "checkbox", name: `${prefix}-camera`, value: c.name,
        checked: Array.isArray(granted) && granted.includes(c.name) }), ` ${c.name}`)));
}

const ticked = (root, prefix) => [...root.querySelectorAll(`input[name=${prefix}-camera]:checked`)].map((i) => i.value);

export async function render(main) {
  const cameras = await api("GET", "/api/cameras");
  const tbody = h("tbody");

  const username = field("Username", { name: "new_username", required: true, autocomplete: "off" });
  const password = field("Initial password", { name: "new_password", type: "password", required: true, minlength: 12,
    autocomplete: "new-password", hint: "Tell the person; they can change it under Account." });
  const role = field("Role", { tag: "select", name: "new_role", options: ROLES.map((r) => [r, r]) });
  const camBox = cameraChoices(cameras, [], "new");
  const create = h("button", { type: "submit", id: "create-user" }, "Create user");
  const form = h("form", { class: "card", id: "user-form" }, h("h2", {}, "New user"),
    h("div", { class: "row" }, username, password, role), camBox, create);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(create, async () => {
      const body = { username: username.input.value.trim(), password: password.input.value, role: role.input.value };
      const cams = ticked(camBox, "new");
      if (cams.length) body.cameras = cams;
      await api("POST", "/api/users", body);
      form.reset();
      await draw();
    }, `User ${username.input.value.trim()} created.`);
  });

  async function patch(name, change, message) {
    await api("PATCH", `/api/users/${encodeURIComponent(name)}`, change);
    await draw();
    flash(message, "ok");
  }

  async function draw() {
    const users = await api("GET", "/api/users");
    mount(tbody, users.map((u) => {
      const self = u.username === session.me.username;
      const roleSel = h("select", { "aria-label": `Role of ${u.username}`, disabled: self },
        ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)));
      const saveRole = h("button", { type: "button", class: "secondary", disabled: self }, "Set role");
      saveRole.addEventListener("click", () => act(saveRole,
        () => patch(u.username, { role: roleSel.value }, `${u.username} is now ${roleSel.value}.`)));
      const { disabled } = u;
      const toggle = h("button", { type: "button", class: "secondary", disabled: self,
        dataset: { action: disabled ? "enable" : "disable" } }, disabled ? "Enable" : "Disable");
      toggle.addEventListener("click", () => act(toggle,
        () => patch(u.username, { disabled: !disabled }, `${u.username} ${disabled ? "enabled" : "disabled"}.`)));
      const reset = h("button", { type: "button", class: "secondary", disabled: !u.mfa_enrolled }, "Reset MFA");
      reset.addEventListener("click", () => {
        if (!window.confirm(`Reset two-step verification of ${u.username}? They must enrol again at next sign-in.`)) return;
        act(reset, () => patch(u.username, { reset_mfa: true }, `MFA of ${u.username} reset.`));
      });
      const del = h("button", { type: "button", class: "secondary danger", disabled: self }, "Delete");
      del.addEventListener("click", () => {
        if (!window.confirm(`Delete ${u.username}? Their sessions and tokens end at once.`)) return;
        act(del, async () => { await api("DELETE", `/api/users/${encodeURIComponent(u.username)}`); await draw(); },
          `${u.username} deleted.`);
      });
      const camEdit = h("details", {}, h("summary", {}, u.cameras === null ? "all cameras" : u.cameras.join(", ")
        || "no camera"));
      if (!self) {
        const box = cameraChoices(cameras, u.cameras, `u-${u.username}`);
        const saveCams = h("button", { type: "button", class: "secondary" }, "Save cameras");
        saveCams.addEventListener("click", () => act(saveCams, () => {
          const cams = ticked(box, `u-${u.username}`);
          return patch(u.username, { cameras: cams.length ? cams : null }, `Cameras of ${u.username} saved.`);
        }));
        camEdit.append(box, saveCams);
      }
      return h("tr", { dataset: { user: u.username } },
        h("th", { scope: "row" }, u.username, self ? " (you)" : ""),
        h("td", {}, roleSel, " ", saveRole),
        h("td", {}, camEdit),
        h("td", {}, u.mfa_enrolled ? badge("MFA on", "ok") : badge("no MFA", "warn"), " ",
          disabled ? badge("disabled", "bad") : badge("active", "ok")),
        h("td", {}, when(u.created)),
        h("td", { class: "buttons" }, toggle, reset, del));
    }));
  }

  mount(main, h("section", {}, h("h1", {}, "Users"), form,
    h("table", { class: "grid", id: "user-table" }, h("thead", {}, h("tr", {},
      ["User", "Role", "Cameras", "State", "Created", "Actions"].map((t) => h("th", { scope: "col" }, t)))), tbody)));
  await draw();
}

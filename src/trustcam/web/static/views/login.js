// Sign-in (password, then TOTP when asked) and the first-start form that creates the first admin.
import { adoptSession, api } from "../api.js";
import { act, field, flash, h, mount } from "../dom.js";

/** True while no user exists: the first administrator must be created (public, reveals nothing else). */
async function setupRequired() {
  return (await api("GET", "/api/auth/setup", undefined, { quiet401: true })).setup_required;
}

export async function renderLogin(main, _args, _query, { afterLogin, go }) {
  if (await setupRequired()) { go("#/setup"); return; }
  const user = field("Username", { name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = field("Password", { name: "password", type: "password", autocomplete: "current-password",
    required: true });
  const submit = h("button", { type: "submit", id: "login-submit" }, "Sign in");
  const form = h("form", { class: "card narrow", id: "login-form", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"), user, pass, submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(submit, async () => {
      const answer = await api("POST", "/api/auth/login",
        { username: user.input.value.trim(), password: pass.input.value }, { quiet401: true });
      if (answer.mfa_required) {
        mount(main, totpStep(answer.challenge, afterLogin));
        main.querySelector("input").focus();
        return;
      }
      await adoptSession(answer);
      await afterLogin();
    });
  });
  mount(main, form);
  user.input.focus();
}

function totpStep(challenge, afterLogin) {
  const code = field("Authentication code", { name: "code", autocomplete: "one-time-code", inputmode: "numeric",
    required: true, hint: "The 6 digits from your authenticator app, or one of your recovery codes." });
  const submit = h("button", { type: "submit", id: "mfa-submit" }, "Verify");
  const form = h("form", { class: "card narrow", id: "mfa-form" }, h("h1", {}, "Two-step verification"), code, submit,
    h("p", {}, h("a", { href: "#/login" }, "Start again")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(submit, async () => {
      const answer = await api("POST", "/api/auth/mfa", { challenge, code: code.input.value.replace(/\s+/g, "") },
        { quiet401: true });
      await adoptSession(answer);
      await afterLogin();
    });
  });
  return form;
}

export async function renderSetup(main, _args, _query, { afterLogin, go }) {
  if (!(await setupRequired())) { go("#/login"); return; }
  const token = field("Setup token", { name: "setup_token", autocomplete: "off", required: true,
    hint: "Printed by `trustcam run` at first start (valid until the first administrator exists)." });
  const user = field("Administrator username", { name: "username", autocomplete: "username", required: true,
    value: "admin" });
  const pass = field("Password", { name: "password", type: "password", autocomplete: "new-password", required: true,
    minlength: 12, hint: "At least 12 characters; a passphrase of several words is best." });
  const again = field("Password again", { name: "password2", type: "password", autocomplete: "new-password",
    required: true });
  const submit = h("button", { type: "submit", id: "setup-submit" }, "Create administrator");
  const form = h("form", { class: "card narrow", id: "setup-form" }, h("h1", {}, "First start"),
    h("p", {}, "No user exists yet. Create the first administrator; you will then enrol two-step verification."),
    token, user, pass, again, submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (pass.input.value !== again.input.value) { flash("The two passwords differ; type the same password twice."); return; }
    act(submit, async () => {
      const creds = { username: user.input.value.trim(), password: pass.input.value };
      await api("POST", "/api/auth/setup", { setup_token: token.input.value.trim(), ...creds }, { quiet401: true });
      // then sign in with the new account (an admin has no TOTP yet: the session goes on to enrol it)
      await adoptSession(await api("POST", "/api/auth/login", creds, { quiet401: true }));
      await afterLogin();
    });
  });
  mount(main, form);
  token.input.focus();
}

// TOTP enrolment: QR code + secret, confirm with a first code, then the recovery codes, shown exactly once.
import { api, loadMe, session } from "../api.js";
import { act, field, h, mount } from "../dom.js";

/** The server's QR SVG as a DOM node, without anything active in it (CSP forbids inline scripts anyway). */
function svgNode(markup) {
  // Parsed as HTML: the server sends inline SVG (no xmlns), which the HTML parser puts in the SVG namespace.
  // DOMParser never runs scripts; anything active is stripped below all the same.
  const doc = new DOMParser().parseFromString(`<!doctype html><body>${markup || ""}`, "text/html");
  const svg = doc.querySelector("body > svg");
  if (!svg) return h("p", { class: "muted" }, "(QR code unavailable: type the secret below)");
  svg.querySelectorAll("script, foreignObject").forEach((n) => n.remove());
  for (const el of [svg, ...svg.querySelectorAll("*")]) {
    for (const attr of [...el.attributes]) if (/^on/i.test(attr.name) || attr.name === "style") el.removeAttribute(attr.name);
  }
  const w = parseFloat(svg.getAttribute("width")); // scale to the CSS size: give it a viewBox
  const ht = parseFloat(svg.getAttribute("height"));
  if (!svg.hasAttribute("viewBox") && w > 0 && ht > 0) svg.setAttribute("viewBox", `0 0 ${w} ${ht}`);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "QR code for your authenticator app");
  svg.classList.add("qr");
  return document.importNode(svg, true);
}

export async function render(main, _args, _query, { afterLogin }) {
  const me = session.me;
  if (me.mfa_enrolled) {
    mount(main, h("section", { class: "card narrow" }, h("h1", {}, "Two-step verification"),
      h("p", {}, "Two-step verification is active on your account. An administrator can reset it if you lose "
        + "your authenticator and your recovery codes."), h("p", {}, h("a", { href: "#/" }, "Continue"))));
    return;
  }
  const start = h("button", { type: "button", id: "mfa-start" }, "Set up my authenticator");
  mount(main, h("section", { class: "card", id: "mfa-enrol" }, h("h1", {}, "Set up two-step verification"),
    h("p", {}, me.mfa_required
      ? "Your role must use two-step verification before anything else."
      : "Protect your account with a code from an authenticator app."), start));
  start.addEventListener("click", () => act(start, async () => {
    const enrol = await api("POST", "/api/me/mfa/enroll", {});
    showSecret(main, enrol, afterLogin);
  }));
  if (me.mfa_required) start.click();
}

function showSecret(main, enrol, afterLogin) {
  const code = field("Code from the app", { name: "code", autocomplete: "one-time-code", inputmode: "numeric",
    required: true, pattern: "[0-9 ]{6,8}" });
  const confirm = h("button", { type: "submit", id: "mfa-confirm" }, "Confirm");
  const form = h("form", { id: "mfa-confirm-form" }, code, confirm);
  mount(main, h("section", { class: "card", id: "mfa-enrol" }, h("h1", {}, "Set up two-step verification"),
    h("ol", {},
      h("li", {}, "Scan this QR code with an authenticator app (or type the secret below)."),
      h("li", {}, "Type the 6-digit code the app shows.")),
    h("div", { class: "qr-wrap" }, svgNode(enrol.qr_svg)),
    h("p", {}, "Secret: ", h("code", { id: "mfa-secret", class: "secret" }, enrol.secret)),
    form));
  code.input.focus();
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    act(confirm, async () => {
      const answer = await api("POST", "/api/me/mfa/confirm", { code: code.input.value.replace(/\s+/g, "") });
      await loadMe();
      showRecovery(main, answer.recovery_codes, afterLogin);
    });
  });
}

function showRecovery(main, codes, afterLogin) {
  const done = h("button", { type: "button", id: "mfa-done" }, "I have saved them – continue");
  done.addEventListener("click", () => afterLogin());
  mount(main, h("section", { class: "card", id: "mfa-recovery" }, h("h1", {}, "Recovery codes"),
    h("p", {}, "Each code signs you in once if you lose your authenticator. Store them somewhere safe now: ",
      h("strong", {}, "they are shown only this once.")),
    h("ul", { class: "codes", id: "recovery-codes" }, codes.map((c) => h("li", {}, h("code", {}, c)))),
    done));
  done.focus();
}

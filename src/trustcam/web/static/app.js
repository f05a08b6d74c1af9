// Hash router and shell: decides which screen to show for who is signed in, builds the navigation by role.
import { api, can, loadMe, mustEnrol, session } from "./api.js";
import { flash, h, mount } from "./dom.js";
import * as login from "./views/login.js";
import * as mfa from "./views/mfa.js";
import * as live from "./views/live.js";
import * as timeline from "./views/timeline.js";
import * as grid from "./views/grid.js";
import * as events from "./views/events.js";
import * as eventDetail from "./views/event.js";
import * as alerts from "./views/alerts.js";
import * as users from "./views/users.js";
import * as tokens from "./views/tokens.js";
import * as audit from "./views/audit.js";
import * as account from "./views/account.js";
import * as zones from "./views/zones.js";
import * as faces from "./views/faces.js";

const PUBLIC = new Set(["login", "setup"]);

// route name → [view, who may open it]
const ROUTES = {
  login: [login.renderLogin, null],
  setup: [login.renderSetup, null],
  mfa: [mfa.render, "any"],
  grid: [grid.render, "video"],
  live: [live.render, "video"],
  timeline: [timeline.render, "video"],
  events: [events.render, "video"],
  event: [eventDetail.render, "video"],
  alerts: [alerts.render, "video"],
  users: [users.render, "admin"],
  tokens: [tokens.render, "admin"],
  zones: [zones.render, "admin"],
  faces: [faces.render, "faces"], // admins with the biometrics permission (as the server requires)
  audit: [audit.render, "audit"],
  account: [account.render, "any"],
};

let cleanup = null;
let wanted = null; // where to go after login

/** "#/events/abc?camera=x" → {name: "event", args: ["abc"], query} */
function parse(hash) {
  const [pathPart, queryPart] = hash.replace(/^#\/?/, "").split("?");
  const parts = pathPart.split("/").filter(Boolean).map(decodeURIComponent);
  const query = Object.fromEntries(new URLSearchParams(queryPart || ""));
  let name = parts[0] || "";
  if (name === "events" && parts.length > 1) name = "event";
  return { name, args: parts.slice(1), query };
}

function home() {
  if (!session.me) return "#/login";
  if (mustEnrol()) return "#/mfa";
  return can("video") ? "#/live" : can("audit") ? "#/audit" : "#/account";
}

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function renderNav(current) {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!session.me || mustEnrol()) {
    mount(nav);
    mount(who, session.me ? signOutButton() : null);
    return;
  }
  const links = [
    ["grid", "Cameras", "video"], ["live", "Live", "video"], ["timeline", "Timeline", "video"],
    ["events", "Events", "video"],
    ["alerts", "Alerts & health", "video"],
    ["users", "Users", "admin"], ["tokens", "API tokens", "admin"], ["audit", "Audit", "audit"],
    ["zones", "Zones", "admin"], ["faces", "Faces", "faces"],
    ["account", "Account", "any"],
  ].filter(([, , need]) => need === "any" || can(need));
  const active = current === "event" ? "events" : current;
  mount(nav, h("ul", {}, links.map(([name, text]) => h("li", {},
    h("a", { href: `#/${name}`, "aria-current": name === active ? "page" : null }, text)))));
  mount(who, h("span", { class: "muted", id: "whoami" }, `${session.me.username} (${session.me.role})`), " ",
    signOutButton());
}

function signOutButton() {
  return h("button", {
    type: "button", id: "logout", class: "secondary",
    onclick: async () => {
      try { await api("POST", "/api/auth/logout", {}); } catch { /* already gone */ }
      session.me = null;
      session.csrf = null;
      wanted = null;
      go("#/login");
    },
  }, "Sign out");
}

async function route() {
  if (cleanup) { try { cleanup(); } catch { /* view already gone */ } cleanup = null; }
  const { name, args, query } = parse(location.hash);
  const main = document.getElementById("main");
  if (!PUBLIC.has(name) && !session.me) await loadMe().catch((err) => flash(err.message));
  if (!name) { go(home()); return; }
  const entry = ROUTES[name];
  if (!entry) { go(home()); return; }
  const [view, need] = entry;
  if (need && !session.me) { wanted = location.hash; go("#/login"); return; }
  if (need && name !== "mfa" && name !== "account" && mustEnrol()) { go("#/mfa"); return; }
  if (need && need !== "any" && !can(need)) {
    flash("Your role cannot open that screen.");
    go(home());
    return;
  }
  if (PUBLIC.has(name) && session.me && !mustEnrol()) { go(home()); return; }
  renderNav(name);
  document.title = `trustcam – ${name}`;
  mount(main);
  try {
    cleanup = (await view(main, args, query, { go, afterLogin })) || null;
  } catch (err) {
    mount(main, h("p", { class: "flash error" }, err.message || String(err)));
  }
}

/** Called by the login/setup/MFA screens once the session changed. */
async function afterLogin() {
  await loadMe();
  const target = mustEnrol() ? "#/mfa" : wanted || home();
  wanted = null;
  flash(null);
  go(target);
}

window.addEventListener("trustcam:signed-out", () => {
  if (!PUBLIC.has(parse(location.hash).name)) {
    wanted = location.hash;
    flash("Your session ended; please sign in again.", "info");
    go("#/login");
  }
});
window.addEventListener("hashchange", () => { flash(null); route(); });
route();

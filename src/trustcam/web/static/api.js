// The one way the UI talks to the server: JSON in and out, CSRF header on unsafe methods, 401 → login,
// errors carry the server's `detail` (which names the problem and the fix).

export const session = { me: null, csrf: null };

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

/** Query string from an object, skipping empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

/** api("POST", "/api/x", {…}) → parsed JSON (or text/blob for other types). */
export async function api(method, path, body, { raw = false, quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (UNSAFE.has(method) && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  let res;
  try {
    res = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message}); check that trustcam is running`);
  }
  if (res.status === 401 && !quiet401) {
    session.me = null;
    session.csrf = null;
    window.dispatchEvent(new CustomEvent("trustcam:signed-out"));
  }
  if (!res.ok) {
    let detail = `the server answered ${res.status}`; // every API error is {"detail": "<problem and fix>"}
    try { detail = (await res.json()).detail; } catch { /* not JSON: a proxy in between? */ }
    throw new ApiError(res.status, detail);
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get("content-type") || "";
  return type.includes("json") ? res.json() : res.text();
}

/** Refresh who is signed in; null when nobody is. */
export async function loadMe() {
  try {
    session.me = await api("GET", "/api/me", undefined, { quiet401: true });
    if (session.me.csrf_token) session.csrf = session.me.csrf_token;
  } catch (err) {
    if (err.status !== 401) throw err;
    session.me = null;
    session.csrf = null;
  }
  return session.me;
}

/** After a login or MFA answer that opened a session: keep its CSRF token, then read /api/me for the rest. */
export async function adoptSession(answer) {
  session.csrf = answer.csrf_token;
  return loadMe();
}

export const ROLES = ["viewer", "operator", "admin", "auditor"];

/** What a role may use (the server decides; this only hides what would be refused). */
export function can(what) {
  const role = session.me && session.me.role;
  // the faces page: admins granted biometrics only (the server refuses the others, so no link leads there)
  if (what === "faces") return role === "admin" && Boolean(session.me.biometrics);
  const table = {
    video: ["viewer", "operator", "admin"],
    review: ["operator", "admin"],
    admin: ["admin"],
    audit: ["auditor", "admin"],
  };
  return Boolean(role && (table[what] || []).includes(role));
}

/** True when this session must enrol TOTP before anything else. */
export function mustEnrol() {
  const me = session.me;
  return Boolean(me && me.mfa_required && !me.mfa_enrolled);
}

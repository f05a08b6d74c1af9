// Tiny DOM helpers: every text goes in through textContent, so server data can never become markup.

/** h("button", {class: "x", onclick: fn}, "text", child) → element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" || key === "checked" || key === "selected") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's content. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let fieldSeq = 0;

/** A labelled form field; returns the wrapper (the input is `.input`). */
export function field(label, attrs = {}) {
  const id = attrs.id || `f${++fieldSeq}`;
  const tag = attrs.tag || "input";
  const { tag: _tag, options, hint, ...rest } = attrs;
  let input;
  if (tag === "select") {
    input = h("select", { id, ...rest }, (options || []).map((o) => {
      const [value, text] = Array.isArray(o) ? o : [o, o];
      return h("option", { value }, text);
    }));
  } else if (tag === "textarea") {
    input = h("textarea", { id, ...rest });
  } else {
    input = h("input", { id, ...rest });
  }
  const wrap = h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("small", { class: "muted" }, hint) : null);
  wrap.input = input;
  return wrap;
}

/** Seconds since the epoch → local date-time text; small values are stream seconds (file cameras). */
export function when(seconds) {
  if (seconds === null || seconds === undefined || seconds === "") return "";
  const n = Number(seconds);
  if (!Number.isFinite(n)) return String(seconds);
  if (n < 1e9) return `t=${n.toFixed(1)}s`;
  return new Date(n * 1000).toLocaleString();
}

/** <input type=datetime-local> value → epoch seconds (or "" when empty). */
export function toEpoch(localValue) {
  if (!localValue) return "";
  const ms = new Date(localValue).getTime();
  return Number.isFinite(ms) ? String(Math.floor(ms / 1000)) : "";
}

/** epoch seconds → value for <input type=datetime-local>. */
export function fromEpoch(seconds) {
  if (!seconds) return "";
  const d = new Date(Number(seconds) * 1000);
  const pad = (v) => String(v).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** A coloured badge; kind picks the colour (ok, warn, bad, info). */
export function badge(text, kind = "info") {
  return h("span", { class: `badge ${kind}` }, text);
}

/** Show a message at the top of the page (errors stay until the next navigation or message). */
export function flash(message, kind = "error") {
  const box = document.getElementById("flash");
  if (!box) return;
  mount(box, message ? h("p", { class: `flash ${kind}` }, message,
    h("button", { type: "button", class: "link", "aria-label": "Dismiss message", onclick: () => mount(box) }, "×"))
    : null);
}

/** Run an async action from a button: disable it meanwhile, show errors from the server's `detail`. */
export async function act(button, fn, success) {
  if (button) button.disabled = true;
  try {
    const result = await fn();
    if (success) flash(success, "ok");
    return result;
  } catch (err) {
    flash(err.message || String(err));
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

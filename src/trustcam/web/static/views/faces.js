// Enrolled faces (admin with the biometrics permission): list, enrol with consent, export, erase.
import { ApiError, api, session } from "../api.js";
import { act, field, h, mount, when } from "../dom.js";

/** POST /api/faces as multipart (photos are sent as files; api() speaks JSON only). */
async function enrol(form) {
  const headers = { Accept: "application/json" };
  if (session.csrf) headers["X-CSRF-Token"] = session.csrf;
  let res;
  try {
    res = await fetch("/api/faces", { method: "POST", headers, body: new FormData(form), credentials: "same-origin",
      cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message}); check that trustcam is running`);
  }
  if (!res.ok) {
    let detail = `the server answered ${res.status}`;
    try { detail = (await res.json()).detail; } catch { /* not JSON */ }
    throw new ApiError(res.status, detail);
  }
  return res.json();
}

/** Save the right-of-access JSON as a file. */
function download(name, record) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(record, null, 2)], { type: "application/json" }));
  const a = h("a", { href: url, download: `face-export-${name.replace(/[^A-Za-z0-9_.-]+/g, "_")}.json` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export async function render(main) {
  const tbody = h("tbody");
  const name = field("Name (as shown on events)", { name: "name", required: true, maxlength: 64, autocomplete: "off" });
  const consent = field("Consent or legal basis", { tag: "textarea", name: "consent", required: true, maxlength: 2000,
    rows: 2, hint: "What the person agreed to, or the legal basis, as stated (recorded with the enrolment)." });
  const expires = field("Expires (optional)", { name: "expires", type: "date",
    hint: "The templates are shredded on this date." });
  const images = field("Photos", { name: "images", type: "file", accept: "image/jpeg,image/png", multiple: true,
    required: true, hint: "Each with this person alone, face visible. Processed in memory, never kept." });
  const submit = h("button", { type: "submit", id: "enrol-face" }, "Enrol");
  const form = h("form", { class: "card", id: "face-form" }, h("h2", {}, "Enrol a person"),
    h("div", { class: "row" }, name, expires), consent, images, submit);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const who = name.input.value.trim();
    act(submit, async () => {
      await enrol(form);
      form.reset();
      await draw();
    }, `${who} enrolled.`);
  });

  async function draw() {
    const faces = await api("GET", "/api/faces");
    mount(tbody, faces.length ? faces.map((f) => {
      const exp = h("button", { type: "button", class: "secondary", "aria-label": `Export data of ${f.name}` },
        "Export");
      exp.addEventListener("click", () => act(exp, async () => {
        download(f.name, await api("GET", `/api/faces/${encodeURIComponent(f.name)}/export`));
      }));
      const erase = h("button", { type: "button", class: "secondary danger", "aria-label": `Erase ${f.name}` },
        "Erase");
      erase.addEventListener("click", () => {
        if (!window.confirm(`Erase ${f.name} for good? The templates are shredded and cannot be recovered; past `
          + "events show \"erased\" instead of the name.")) return;
        act(erase, async () => { await api("DELETE", `/api/faces/${encodeURIComponent(f.name)}`); await draw(); },
          `${f.name} erased.`);
      });
      return h("tr", { dataset: { face: f.name } }, h("td", {}, f.name), h("td", {}, f.enrolled_by),
        h("td", {}, when(f.enrolled_at)), h("td", { class: "consent" }, f.consent),
        h("td", {}, f.expires_at === null ? "never" : when(f.expires_at)), h("td", {}, String(f.templates)),
        h("td", {}, exp, " ", erase));
    }) : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "Nobody is enrolled.")));
  }

  mount(main, h("h1", {}, "Faces"),
    h("p", { class: "muted" }, "Enrolled people are recognised on cameras with face recognition on. Templates are "
      + "encrypted and never shown; erasing shreds them."),
    form,
    h("table", { class: "grid", id: "face-table" }, h("thead", {}, h("tr", {},
      ["Name", "Enrolled by", "Enrolled", "Consent", "Expires", "Templates", ""].map((t) =>
        h("th", { scope: "col" }, t)))), tbody));
  try {
    await draw();
  } catch (err) { // e.g. 403 for an admin without the biometrics permission: the server's message says so
    mount(main, h("h1", {}, "Faces"), h("p", { class: "flash error", id: "faces-refused" }, err.message || String(err)));
  }
}

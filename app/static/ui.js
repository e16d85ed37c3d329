// Small UI behaviours, kept out of the HTML so the Content-Security-Policy can forbid inline scripts.
// Everything that puts text on the page uses textContent: nothing a user or the model wrote is parsed as HTML.
document.addEventListener("click", (event) => {
  // An example question fills the question box too, so it can be edited and asked again.
  const example = event.target.closest("button.example");
  if (example) document.getElementById("question").value = example.textContent.trim();
  if (event.target.closest("#cancel-button")) cancelRequest();
  if (event.target.closest("#copy-sql")) copySql(event.target.closest("#copy-sql"));
  const kind = event.target.closest("button.chart-kind");
  if (kind) switchChart(kind);
});
document.addEventListener("htmx:afterRequest", (event) => {
  // "Re-read schema": reload the page once the server has re-read it.
  if (event.detail.elt.hasAttribute("data-reload-after") && event.detail.successful) location.reload();
});

// --- progress and cancel -------------------------------------------------------------------------------------
// Each question (or SQL run) gets an id the page makes up; the server reports what it is doing under that id, for
// this key only (GET /api/progress/{rid}), and cancels it on request (POST /api/progress/{rid}/cancel).
const TRACKED = new Set(["/ui/ask", "/ui/sql"]);
let current = null; // {rid, elt, started, tick, poll}

function newRid() {
  const bytes = new Uint8Array(12); // crypto.getRandomValues works on plain http too (randomUUID does not)
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function stageText(p) {
  if (p.stage === "candidates")
    return `The first SQL did not work: trying candidate ${p.candidate} of ${p.candidates}…`;
  return {
    queued: "Waiting for the model…",
    warming: "The model is still reading this database's schema (once, after a start or a model change); then it writes the SQL…",
    writing: "Writing SQL…",
    running: "Running the SQL…",
  }[p.stage] || "Working…";
}

function stopProgress() {
  if (!current) return;
  clearInterval(current.tick);
  clearInterval(current.poll);
  current = null;
}

function startProgress(rid, elt, path) {
  stopProgress();
  const text = document.getElementById("progress-text");
  const elapsed = document.getElementById("progress-elapsed");
  if (!text || !elapsed) return;
  text.textContent = path === "/ui/sql" ? "Running the SQL…" : "Writing SQL…";
  elapsed.textContent = "0.0 s";
  const started = performance.now();
  const state = { rid, elt, started };
  state.tick = setInterval(() => {
    elapsed.textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  state.poll = setInterval(async () => {
    try {
      const r = await fetch(`/api/progress/${rid}`, { headers: { Accept: "application/json" } });
      if (r.ok && current === state) text.textContent = stageText(await r.json());
    } catch (e) {
      /* the answer itself will say what went wrong */
    }
  }, 500);
  current = state;
}

function cancelRequest() {
  if (!current) return;
  const { rid, elt } = current;
  stopProgress();
  // Tell the server first (the request's decoding rows leave the batch), then drop the browser's request.
  fetch(`/api/progress/${rid}/cancel`, { method: "POST" }).catch(() => {});
  htmx.trigger(elt, "htmx:abort");
  const note = document.createElement("div");
  note.className = "notice warn";
  note.id = "result-cancelled";
  note.textContent = "Cancelled: the question was stopped before it was answered.";
  document.getElementById("result").replaceChildren(note);
}

document.addEventListener("htmx:configRequest", (event) => {
  if (!TRACKED.has(event.detail.path)) return;
  const rid = newRid();
  event.detail.parameters.rid = rid;
  startProgress(rid, event.detail.elt, event.detail.path);
});
document.addEventListener("htmx:afterRequest", (event) => {
  if (current && event.detail.elt === current.elt) stopProgress();
});

// --- the SQL editor: highlighting, Ctrl/Cmd+Enter, copy ----------------------------------------------------------
const KEYWORDS = new Set(
  ("select from where and or not in is null as on join left right inner outer full cross group by order having limit " +
    "offset union all intersect except distinct case when then else end with asc desc like between exists count sum " +
    "avg min max cast round coalesce true false over partition recursive using natural filter ilike")
    .split(" "),
);
// strings, quoted identifiers, comments, numbers, words, anything else (one character at a time)
const TOKEN = /('(?:[^']|'')*'?)|("(?:[^"]|"")*"?|`[^`]*`?|\[[^\]]*\]?)|(--[^\n]*|\/\*[\s\S]*?(?:\*\/|$))|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_$]*)|([\s\S])/g;

function highlight(pre, text) {
  const out = document.createDocumentFragment();
  let plain = "";
  const flush = () => {
    if (plain) out.append(plain);
    plain = "";
  };
  const span = (cls, s) => {
    flush();
    const el = document.createElement("span");
    el.className = cls;
    el.textContent = s;
    out.append(el);
  };
  for (const m of text.matchAll(TOKEN)) {
    if (m[1] !== undefined) span("t-str", m[0]);
    else if (m[2] !== undefined) span("t-id", m[0]);
    else if (m[3] !== undefined) span("t-com", m[0]);
    else if (m[4] !== undefined) span("t-num", m[0]);
    else if (m[5] !== undefined && KEYWORDS.has(m[5].toLowerCase())) span("t-kw", m[0]);
    else plain += m[0];
  }
  flush();
  out.append("\n"); // a trailing newline in the textarea needs a line here too
  pre.replaceChildren(out);
}

function fit(textarea) {
  textarea.style.height = "auto";
  textarea.style.height = `${textarea.scrollHeight + 2}px`;
}

function setUpEditors(root) {
  for (const editor of root.querySelectorAll(".sql-editor")) {
    const textarea = editor.querySelector("textarea");
    const pre = editor.querySelector("pre.sql-hl");
    if (!textarea || !pre || editor.dataset.ready) continue;
    editor.dataset.ready = "1";
    editor.classList.add("highlighted");
    const update = () => {
      highlight(pre, textarea.value);
      fit(textarea);
    };
    textarea.addEventListener("input", update);
    textarea.addEventListener("scroll", () => {
      pre.scrollTop = textarea.scrollTop;
    });
    update();
  }
}

document.addEventListener("keydown", (event) => {
  // Ctrl+Enter (Cmd+Enter on a Mac) in the SQL editor runs it.
  const textarea = event.target.closest && event.target.closest("form.sql textarea");
  if (textarea && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    textarea.form.requestSubmit();
  }
});

async function copySql(button) {
  const textarea = button.form && button.form.querySelector("textarea");
  if (!textarea) return;
  try {
    await navigator.clipboard.writeText(textarea.value);
  } catch (e) {
    textarea.select(); // no clipboard API (plain http on another host): the old way
    document.execCommand("copy");
  }
  button.textContent = "Copied";
  setTimeout(() => {
    button.textContent = "Copy SQL";
  }, 1500);
}

// --- charts and more rows ----------------------------------------------------------------------------------------
function switchChart(button) {
  const figure = button.closest("figure.chart");
  figure.classList.remove("show-bar", "show-line");
  figure.classList.add(`show-${button.dataset.kind}`);
  for (const b of figure.querySelectorAll("button.chart-kind")) b.setAttribute("aria-pressed", String(b === button));
}

document.addEventListener("htmx:afterSwap", (event) => {
  setUpEditors(event.detail.target);
  // "Load more rows": the new <tbody> says which page comes next; none means the last page arrived.
  if (event.detail.target.id === "rows") {
    const bodies = event.detail.target.querySelectorAll("tbody[data-next]");
    const last = bodies[bodies.length - 1];
    const button = document.getElementById("load-more");
    if (!last || !button) return;
    const vals = JSON.parse(button.getAttribute("hx-vals"));
    if (last.dataset.next) {
      vals.page = Number(last.dataset.next);
      button.setAttribute("hx-vals", JSON.stringify(vals));
    } else {
      const done = document.createElement("span");
      done.className = "hint";
      done.id = "all-rows";
      done.textContent = "All rows are shown.";
      button.replaceWith(done);
    }
  }
});
document.addEventListener("DOMContentLoaded", () => setUpEditors(document));

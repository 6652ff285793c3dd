// The runs page: the filtered list, a page at a time, kept live by /api/v1/stream (changed
// runs, and deleted ones: `removed`); sparklines; compare picks.

import { apiUrl, getJSON, pageUrl } from "./api.js";
import { element, formatValue, refreshAgo, setAgo, setStatus } from "./format.js";
import { subscribe } from "./live.js";
import { sparkline } from "./sparkline.js";

const PAGE = 100;
const MAX_LIMIT = 1000; // the server's largest page
const form = document.getElementById("filters");
const tbody = document.getElementById("runs-body");
const rowTemplate = document.getElementById("run-row");
const countNote = document.getElementById("runs-count");
const emptyNote = document.getElementById("runs-empty");
const moreButton = document.getElementById("more-runs");
const compareButton = document.getElementById("compare-button");

const rows = new Map(); // run id → {run, tr, spark}; the table holds them in the server's order
let total = 0;
let controller = null;
let asking = null; // the request the server is answering
let stale = false; // a run changed while `asking`: ask again once it is answered

function filters() {
  const data = Object.fromEntries(new FormData(form));
  return { project: data.project, status: data.status, q: data.q.trim(), tag: data.tag.trim(), sort: data.sort, archived: data.archived };
}

function fill(entry) {
  const { run, tr } = entry;
  tr.dataset.runId = run.id;
  tr.dataset.status = run.status;
  const pick = tr.querySelector(".pick");
  pick.value = run.id;
  pick.setAttribute("aria-label", `Select ${run.name} (#${run.id}) to compare`);
  setStatus(tr.querySelector(".badge"), run.status);
  const link = tr.querySelector(".run-name");
  link.href = pageUrl(`/runs/${run.id}`);
  link.textContent = run.name;
  tr.querySelector(".run-project").textContent = run.project;
  tr.querySelector(".run-tags").replaceChildren(...(run.tags || []).map((tag) => element("span", { className: "tag", text: tag })));
  tr.querySelector(".run-epochs").textContent = run.epochs ? `${run.epochs_done} / ${run.epochs}` : String(run.epochs_done);
  const key = run.main_metric; // the sparkline's metric too: the server chose both
  tr.querySelector(".metric-key").textContent = key ?? "";
  tr.querySelector(".metric-value").textContent = key ? formatValue(run.last[key]) : "—";
  const trend = tr.querySelector(".run-trend");
  if (entry.spark?.key) trend.replaceChildren(sparkline(entry.spark.key, entry.spark.values));
  setAgo(tr.querySelector("time"), run.updated_at);
}

function add(run, fresh) {
  const tr = rowTemplate.content.firstElementChild.cloneNode(true);
  if (fresh) tr.classList.add("fresh");
  const entry = { run, tr, spark: null };
  rows.set(run.id, entry);
  fill(entry);
  return entry;
}

function showCount() {
  countNote.textContent = `${total} run${total === 1 ? "" : "s"}${rows.size < total ? `, showing ${rows.size}` : ""}`;
  emptyNote.hidden = rows.size > 0;
  moreButton.hidden = rows.size >= total;
}

function updateCompareButton() {
  const picked = tbody.querySelectorAll(".pick:checked").length;
  compareButton.disabled = picked < 2;
  compareButton.textContent = picked ? `Compare selected (${picked})` : "Compare selected";
}

// Sparklines: fetched in bulk, again for a run that reports new values.
async function loadSparklines(ids) {
  for (let i = 0; i < ids.length; i += 200) {
    const chunk = ids.slice(i, i + 200);
    const { sparklines } = await getJSON("/sparklines", { ids: chunk.join(",") });
    for (const [id, spark] of Object.entries(sparklines)) {
      const entry = rows.get(Number(id));
      if (!entry) continue;
      entry.spark = spark;
      fill(entry);
    }
  }
}

/**
 * Show the server's answer for the filters: the first rows (as many as are shown, when a
 * live change asks again), or the next page with `append`. Rows keep the server's order.
 */
async function load({ append = false, live = false } = {}) {
  const f = filters();
  if (!live) {
    const query = new URLSearchParams(Object.entries(f).filter(([k, v]) => v && !(k === "sort" && v === "newest")));
    window.history.replaceState(null, "", query.size ? `?${query}` : window.location.pathname);
  }
  controller?.abort();
  controller = new AbortController();
  const offset = append ? rows.size : 0;
  const limit = append ? PAGE : Math.min(MAX_LIMIT, Math.max(PAGE, live ? rows.size : 0));
  const answer = await getJSON("/runs", { ...f, limit, offset }, controller.signal);
  let changed = answer.runs.map((run) => run.id);
  if (!append) changed = show(answer.runs, live);
  else for (const run of answer.runs) if (!rows.has(run.id)) tbody.append(add(run, false).tr);
  total = answer.total;
  showCount();
  updateCompareButton();
  await loadSparklines(changed);
  document.body.dataset.ready = "true";
}

/** Make the rows `runs`, in their order; return the ids whose values changed. */
function show(runs, live) {
  const wanted = new Set(runs.map((run) => run.id));
  for (const [id, entry] of rows) {
    if (wanted.has(id)) continue;
    entry.tr.remove();
    rows.delete(id);
  }
  const changed = [];
  runs.forEach((run, index) => {
    let entry = rows.get(run.id);
    if (!entry || entry.run.epochs_done !== run.epochs_done || JSON.stringify(entry.run.last) !== JSON.stringify(run.last)) {
      changed.push(run.id);
    }
    if (!entry) entry = add(run, live);
    else if (JSON.stringify(entry.run) !== JSON.stringify(run)) {
      entry.run = run; // a row is written again only when its run changed
      fill(entry);
    }
    const here = tbody.children[index] ?? null;
    if (here !== entry.tr) tbody.insertBefore(entry.tr, here);
  });
  return changed;
}

/**
 * Ask the server: a filter change or "more" at once (the newest request wins), a live
 * change once the request under way is answered (many changes, one more request).
 */
function ask(options) {
  const request = load(options)
    .catch(showError)
    .finally(() => {
      if (asking !== request) return;
      asking = null;
      if (stale) {
        stale = false;
        ask({ live: true });
      }
    });
  asking = request;
  return request;
}

/** A run changed somewhere: ask the server again which runs match, in what order. */
function liveChange() {
  if (asking) stale = true;
  else ask({ live: true });
}

let typing = null;
form.addEventListener("input", (event) => {
  if (event.target.tagName === "SELECT") return;
  clearTimeout(typing);
  typing = setTimeout(() => ask(), 250);
});
form.addEventListener("change", (event) => {
  if (event.target.tagName === "SELECT") ask();
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  ask();
});
moreButton.addEventListener("click", () => ask({ append: true }));
tbody.addEventListener("change", updateCompareButton);

function showError(error) {
  if (error.name !== "AbortError") countNote.textContent = `Could not load runs: ${error.message}`;
}

setInterval(refreshAgo, 1000); // the page's one timer: every "updated N ago" counts on

form.elements.archived.checked = new URLSearchParams(window.location.search).get("archived") === "true";
const runsStream = subscribe(apiUrl("/stream", { after: document.body.dataset.now }), { onRun: liveChange });
runsStream.addEventListener("removed", liveChange); // runs were deleted: their rows go
ask();

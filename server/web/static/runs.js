// The runs page: the filtered list, kept live by /api/v1/stream; sparklines; compare picks.

import { apiUrl, getJSON, pageUrl } from "./api.js";
import { element, formatValue, mainMetric, refreshAgo, setAgo, setStatus } from "./format.js";
import { subscribe } from "./live.js";
import { sparkline } from "./sparkline.js";

const PAGE = 100;
const form = document.getElementById("filters");
const tbody = document.getElementById("runs-body");
const rowTemplate = document.getElementById("run-row");
const countNote = document.getElementById("runs-count");
const emptyNote = document.getElementById("runs-empty");
const moreButton = document.getElementById("more-runs");
const compareButton = document.getElementById("compare-button");

const rows = new Map(); // run id → {run, tr, spark}
let total = 0;
let loaded = false;
let controller = null;
const early = [];

const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : b.id - a.id);
const SORTS = {
  newest: (a, b) => b.created_at - a.created_at || b.id - a.id,
  oldest: (a, b) => a.created_at - b.created_at || a.id - b.id,
  updated: (a, b) => b.updated_at - a.updated_at || b.id - a.id,
  name: byName,
};

function filters() {
  const data = Object.fromEntries(new FormData(form));
  return { project: data.project, status: data.status, q: data.q.trim(), tag: data.tag.trim(), sort: data.sort };
}

function order() {
  return SORTS[filters().sort] ?? SORTS.newest;
}

/** The server's filters, applied to a run that changed live. */
function matches(run, f) {
  if (f.project && run.project !== f.project) return false;
  if (f.status && run.status !== f.status) return false;
  if (f.q && !run.name.toLowerCase().includes(f.q.toLowerCase())) return false;
  return !f.tag || (run.tags || []).includes(f.tag);
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
  const key = entry.spark?.key ?? mainMetric(Object.keys(run.last || {}));
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

function place(entry) {
  const sorted = [...rows.values()].sort((a, b) => order()(a.run, b.run));
  const next = sorted[sorted.indexOf(entry) + 1]?.tr ?? null;
  if (entry.tr.parentNode !== tbody || entry.tr.nextElementSibling !== next) tbody.insertBefore(entry.tr, next);
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

// Sparklines: fetched in bulk, refreshed (debounced) when a run reports new values.
const staleSparks = new Set();
let sparkTimer = null;

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

function refreshSparkline(id) {
  staleSparks.add(id);
  clearTimeout(sparkTimer);
  sparkTimer = setTimeout(() => {
    const ids = [...staleSparks];
    staleSparks.clear();
    loadSparklines(ids).catch(() => {});
  }, 300);
}

async function load(append = false) {
  const f = filters();
  const query = new URLSearchParams(Object.entries(f).filter(([k, v]) => v && !(k === "sort" && v === "newest")));
  window.history.replaceState(null, "", query.size ? `?${query}` : window.location.pathname);
  controller?.abort();
  controller = new AbortController();
  const answer = await getJSON("/runs", { ...f, limit: PAGE, offset: append ? rows.size : 0 }, controller.signal);
  if (!append) {
    rows.clear();
    tbody.replaceChildren();
  }
  for (const run of answer.runs) if (!rows.has(run.id)) tbody.append(add(run, false).tr);
  total = answer.total;
  showCount();
  updateCompareButton();
  await loadSparklines(answer.runs.map((run) => run.id));
}

function onRun(run) {
  if (!loaded) {
    early.push(run);
    return;
  }
  const entry = rows.get(run.id);
  if (!matches(run, filters())) {
    if (entry) {
      entry.tr.remove();
      rows.delete(run.id);
      total -= 1;
      showCount();
    }
    return;
  }
  if (!entry) {
    const sorted = [...rows.values()].sort((a, b) => order()(a.run, b.run));
    const last = sorted[sorted.length - 1];
    total += 1;
    if (rows.size < total - 1 && last && order()(run, last.run) > 0) return showCount(); // beyond this page
    place(add(run, true));
    showCount();
    refreshSparkline(run.id);
    return;
  }
  const changed = entry.run.epochs_done !== run.epochs_done || JSON.stringify(entry.run.last) !== JSON.stringify(run.last);
  entry.run = run;
  fill(entry);
  place(entry);
  if (changed) refreshSparkline(run.id);
}

let typing = null;
form.addEventListener("input", (event) => {
  if (event.target.tagName === "SELECT") return;
  clearTimeout(typing);
  typing = setTimeout(() => load().catch(showError), 250);
});
form.addEventListener("change", (event) => {
  if (event.target.tagName === "SELECT") load().catch(showError);
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  load().catch(showError);
});
moreButton.addEventListener("click", () => load(true).catch(showError));
tbody.addEventListener("change", updateCompareButton);

function showError(error) {
  if (error.name !== "AbortError") countNote.textContent = `Could not load runs: ${error.message}`;
}

setInterval(refreshAgo, 1000); // the page's one timer: every "updated N ago" counts on

subscribe(apiUrl("/stream", { after: document.body.dataset.now }), { onRun });
load()
  .then(() => {
    loaded = true;
    for (const run of early.splice(0)) onRun(run);
    document.body.dataset.ready = "true";
  })
  .catch(showError);

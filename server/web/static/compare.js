// The compare page: one metric of several runs overlaid (or grouped: each group's mean and
// band, computed by the server), hyperparameters against the metric in parallel coordinates
// (dragging an axis filters the runs), and the best values. The whole view lives in the URL.

import { getJSON, metricPath } from "./api.js";
import { BandChart } from "./bands.js";
import { showBest, runValue } from "./best_values.js";
import { xTitleFor } from "./board.js";
import { CHART_VIEW, bindChartControls } from "./chart_controls.js";
import { MetricChart, PALETTE, pointsFor } from "./charts.js";
import { element } from "./format.js";
import { ParallelView, differingKeys, flattenConfig } from "./parallel.js";
import { readView, writeView } from "./viewstate.js";

const OVERLAID_AT_FULL_DETAIL = 8;
const COMPARE_VIEW = { metric: "", group: "", band: "std", value: "best", filter: "" };
const body = document.body;
const ids = body.dataset.ids.split(",").filter(Boolean).map(Number);
const chartBox = document.getElementById("compare-chart");
const controls = {
  metric: document.getElementById("metric-select"),
  group: document.getElementById("group-select"),
  band: document.getElementById("band-select"),
  value: document.getElementById("value-select"),
};
const groupHint = document.getElementById("group-hint");
const problem = document.getElementById("chart-problem");
const view = readView({ ...CHART_VIEW, ...COMPARE_VIEW });
let options = { xMode: "step", log: false, smoothing: 0 };
let runs = [];
let extremes = {};
let kept = ids; // the runs inside every parallel-coordinates range
let chart = null;
let drawing = 0; // the latest draw; an older one that finishes late draws nothing

/** The filter from the URL: `{axis key: range}`, or none when it is not JSON. */
function urlFilter() {
  try {
    const parsed = JSON.parse(view.filter || "{}");
    return parsed && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : {};
  } catch {
    return {};
  }
}

const parallel = new ParallelView(document.getElementById("parallel-chart"), {
  onFilter: (runIds, ranges) => {
    const filter = Object.keys(ranges).length ? JSON.stringify(ranges) : "";
    writeView({ filter }, COMPARE_VIEW);
    view.filter = filter;
    for (const row of document.querySelectorAll("#compared-runs tr[data-run-id]")) {
      row.classList.toggle("filtered-out", !runIds.includes(Number(row.dataset.runId)));
    }
    body.dataset.shownRuns = runIds.join(",");
    if (String(runIds) === String(kept)) return;
    kept = runIds;
    if (chart) draw();
  },
});

/**
 * Points to ask of each run's series: one per pixel up to eight runs, fewer beyond (every
 * bucket still keeps its min and max), so 50 overlaid runs load and draw in a fraction.
 */
function pointsPerRun(count) {
  const full = pointsFor(chartBox.clientWidth);
  return count <= OVERLAID_AT_FULL_DETAIL ? full : Math.max(200, Math.round((full * OVERLAID_AT_FULL_DETAIL) / count));
}

async function drawOverlay(key, turn) {
  const shown = runs.filter((run) => kept.includes(run.id));
  const maxPoints = pointsPerRun(shown.length);
  const answers = await Promise.all(
    shown.map((run) => (run.metrics.includes(key) ? getJSON(metricPath(run.id, key), { max_points: maxPoints }) : null)),
  );
  if (turn !== drawing) return null;
  const overlay = new MetricChart(chartBox, { title: key, xTitle: xTitleFor(key, answers.filter(Boolean).map((a) => a.x_axis)), xMode: options.xMode });
  overlay.div.classList.add("chart-wide");
  overlay.smoothing = options.smoothing;
  overlay.log = options.log;
  shown.forEach((run, i) => {
    const color = PALETTE[runs.indexOf(run) % PALETTE.length]; // a run keeps its colour when others are filtered out
    overlay.addSeries(String(run.id), { name: `${run.name} #${run.id}`, color, points: answers[i]?.points ?? [], origin: run.created_at });
  });
  return overlay;
}

let aggregated = { query: "", answer: null }; // the last /aggregate answer: restyling reuses it

async function drawGroups(key, turn) {
  const byTime = options.xMode === "wall" || options.xMode === "relative";
  const query = {
    ids: kept.join(","),
    key,
    group_by: view.group,
    x: options.xMode === "epoch" ? "epoch" : "step",
    max_points: pointsFor(chartBox.clientWidth),
  };
  const same = JSON.stringify(query) === aggregated.query;
  const none = { groups: [], x_axis: query.x, group_by: view.group }; // the filter kept no run
  const answer = same ? aggregated.answer : kept.length ? await getJSON("/aggregate", query) : none;
  aggregated = { query: JSON.stringify(query), answer };
  if (turn !== drawing) return null;
  groupHint.hidden = !byTime; // groups align on steps or epochs, not on time
  body.dataset.groups = String(answer.groups.length);
  const look = { title: key, xTitle: answer.x_axis, band: view.band, log: options.log, smoothing: options.smoothing };
  return new BandChart(chartBox, answer, look);
}

/** Draw the chosen metric, overlaid or grouped, for the runs the filter keeps. */
async function draw() {
  const turn = ++drawing;
  const key = controls.metric.value;
  chartBox.setAttribute("aria-busy", "true");
  delete body.dataset.chartsReady;
  groupHint.hidden = true;
  problem.hidden = true;
  let next = null;
  try {
    next = key ? await (view.group ? drawGroups(key, turn) : drawOverlay(key, turn)) : null;
  } catch (error) {
    problem.textContent = `Could not draw ${key}: ${error.message}`;
    problem.hidden = false;
  }
  if (turn !== drawing) {
    next?.remove(); // a newer draw started meanwhile
    return;
  }
  chart?.remove();
  chart = next;
  await chart?.draw();
  if (turn !== drawing) return;
  chartBox.setAttribute("aria-busy", "false");
  body.dataset.traces = String(chart?.div.data?.length ?? 0);
  body.dataset.chartsReady = "true";
}

/** Parallel coordinates of the configs against the chosen metric's best or last value. */
async function drawParallel() {
  const key = controls.metric.value;
  const results = Object.fromEntries(runs.map((run) => [run.id, runValue(extremes[run.id]?.[key], key, view.value)]));
  const label = `${key} (${view.value})`;
  const axes = await parallel.draw(runs, results, label, urlFilter());
  document.getElementById("parallel-empty").hidden = axes > 0;
}

function fillSelect(select, entries, chosen) {
  select.replaceChildren(...entries.map(([value, text]) => element("option", { value, text, selected: value === chosen })));
}

/** Group-by choices: tags, project, and each configuration key that differs between runs. */
function groupChoices() {
  const differing = differingKeys(runs.map((run) => flattenConfig(run.config)));
  const choices = [["", "nothing (one line per run)"], ["tags", "tags"], ["project", "project"]];
  for (const key of differing) choices.push([`config.${key}`, `config: ${key}`]);
  if (view.group && !choices.some(([value]) => value === view.group)) choices.push([view.group, view.group]);
  return choices;
}

function bindControl(name, onChange) {
  controls[name].addEventListener("change", () => {
    view[name] = controls[name].value;
    writeView({ [name]: view[name] }, COMPARE_VIEW);
    onChange();
  });
}

async function start() {
  runs = JSON.parse(body.dataset.runs); // as the server rendered the page: no request per run
  const keys = [...new Set(runs.flatMap((run) => run.metrics))].sort();
  const first = keys.includes(view.metric) ? view.metric : body.dataset.mainMetric || keys[0] || "";
  fillSelect(controls.metric, keys.map((key) => [key, key]), first);
  fillSelect(controls.group, groupChoices(), view.group);
  controls.band.value = view.band === "minmax" ? "minmax" : "std";
  controls.value.value = view.value === "last" ? "last" : "best";
  controls.band.disabled = !view.group;
  bindControl("metric", () => Promise.all([draw(), drawParallel()]));
  bindControl("group", () => {
    controls.band.disabled = !view.group;
    draw();
  });
  bindControl("band", draw);
  bindControl("value", drawParallel);
  const best = getJSON("/extremes", { ids: ids.join(",") }).then((answer) => {
    extremes = answer.runs;
    showBest(document.getElementById("best-table"), runs, extremes);
  });
  if (view.filter) {
    await best; // the filter in the URL decides which runs the chart draws
    await drawParallel();
    await draw();
  } else await Promise.all([draw(), best.then(drawParallel)]);
}

document.getElementById("show-same").addEventListener("change", (event) => {
  document.getElementById("config-diff").classList.toggle("hide-same", !event.target.checked);
});
options = bindChartControls(async (change) => {
  options = { ...options, ...change };
  if (view.group || !chart) return draw();
  if (change.log !== undefined) await chart.setLog(change.log);
  if (change.smoothing !== undefined) await chart.setSmoothing(change.smoothing);
  if (change.xMode !== undefined) await chart.setXMode(change.xMode);
}, view);
if (ids.length) start();

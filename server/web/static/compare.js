// The compare page: one metric of several runs overlaid, and their best values.

import { getJSON, metricPath, toNumber } from "./api.js";
import { xTitleFor } from "./board.js";
import { MetricChart, PALETTE, bindChartControls, pointsFor } from "./charts.js";
import { element, formatValue } from "./format.js";

const body = document.body;
const ids = body.dataset.ids.split(",").filter(Boolean).map(Number);
const select = document.getElementById("metric-select");
const chartBox = document.getElementById("compare-chart");
const bestTable = document.getElementById("best-table");
let options = { log: false, smoothing: 0 };
let chart = null;
let runs = [];

const LOWER_IS_BETTER = /loss|error|mae|mse|mape|msle|crossentropy|perplexity|hinge|divergence|kld|poisson/;
const HIGHER_IS_BETTER = /acc|auc|precision|recall|f1|iou|dice|r2|map|psnr|ssim/;

/** "min" for loss-like metrics, "max" for accuracy-like ones, else null (the last value counts). */
export function direction(key) {
  const name = key.replace(/^batch\//, "").replace(/^val_/, "").toLowerCase();
  if (name === "learning_rate" || name === "lr") return null;
  if (LOWER_IS_BETTER.test(name)) return "min";
  if (HIGHER_IS_BETTER.test(name)) return "max";
  return null;
}

async function drawMetric(key) {
  chartBox.setAttribute("aria-busy", "true");
  delete body.dataset.chartsReady;
  const maxPoints = pointsFor(chartBox.clientWidth);
  const answers = await Promise.all(
    runs.map((run) => (run.metrics.includes(key) ? getJSON(metricPath(run.id, key), { max_points: maxPoints }) : null)),
  );
  const series = answers.map((answer) => answer?.points ?? []);
  const axes = answers.filter(Boolean).map((answer) => answer.x_axis);
  chart?.remove();
  chart = new MetricChart(chartBox, { title: key, xTitle: xTitleFor(key, axes) });
  chart.div.classList.add("chart-wide");
  chart.smoothing = options.smoothing;
  chart.log = options.log;
  runs.forEach((run, i) => {
    chart.addSeries(String(run.id), { name: `${run.name} #${run.id}`, color: PALETTE[i % PALETTE.length], points: series[i] });
  });
  await chart.draw();
  chartBox.setAttribute("aria-busy", "false");
  body.dataset.traces = String(runs.length);
  body.dataset.chartsReady = "true";
}

function bestCell(value, isBest) {
  const cell = element("td", { className: "num" });
  if (value === null || value === undefined) {
    cell.append(element("span", { className: "muted", text: "—" }));
    return cell;
  }
  cell.textContent = formatValue(typeof value === "string" ? toNumber(value) : value);
  if (isBest) {
    cell.classList.add("best");
    cell.append(element("span", { text: " ★", title: "best" }));
  }
  return cell;
}

function showBest(extremes) {
  const keys = [...new Set(runs.flatMap((run) => Object.keys(extremes[run.id] || {})))].sort();
  const head = element("tr", {}, element("th", { scope: "col", text: "Metric" }), element("th", { scope: "col", text: "Better" }));
  for (const run of runs) head.append(element("th", { scope: "col", text: `${run.name} #${run.id}` }));
  const rows = keys.map((key) => {
    const way = direction(key);
    const values = runs.map((run) => {
      const found = extremes[run.id]?.[key];
      if (!found) return null;
      return way ? found[way] : found.last;
    });
    const numbers = values.map((v) => (v === null ? NaN : toNumber(v))).filter(Number.isFinite);
    const best = way && numbers.length > 1 ? (way === "min" ? Math.min(...numbers) : Math.max(...numbers)) : null;
    const row = element(
      "tr",
      {},
      element("th", { scope: "row", text: key }),
      element("td", { className: "muted", text: way === "min" ? "lower" : way === "max" ? "higher" : "(last value)" }),
    );
    for (const value of values) row.append(bestCell(value, best !== null && value !== null && toNumber(value) === best));
    return row;
  });
  bestTable.replaceChildren(
    element("caption", { className: "visually-hidden", text: "Best value of each metric per run" }),
    element("thead", {}, head),
    element("tbody", {}, ...rows),
  );
}

async function start() {
  runs = await Promise.all(ids.map((id) => getJSON(`/runs/${id}`)));
  const keys = [...new Set(runs.flatMap((run) => run.metrics))].sort();
  const wanted = new URLSearchParams(window.location.search).get("metric");
  const first = keys.includes(wanted) ? wanted : body.dataset.mainMetric || null;
  select.replaceChildren(...keys.map((key) => element("option", { value: key, text: key, selected: key === first })));
  select.addEventListener("change", () => {
    const url = new URL(window.location.href);
    url.searchParams.set("metric", select.value);
    window.history.replaceState(null, "", url);
    drawMetric(select.value);
  });
  const extremes = getJSON("/extremes", { ids: ids.join(",") }).then((a) => showBest(a.runs));
  if (first) await drawMetric(first);
  else body.dataset.chartsReady = "true";
  await extremes;
}

document.getElementById("show-same").addEventListener("change", (event) => {
  document.getElementById("config-diff").classList.toggle("hide-same", !event.target.checked);
});
options = bindChartControls(async (change) => {
  options = { ...options, ...change };
  if (!chart) return;
  if (change.log !== undefined) await chart.setLog(change.log);
  if (change.smoothing !== undefined) await chart.setSmoothing(change.smoothing);
});
start();

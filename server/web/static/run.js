// The run page: charts, progress, events, the Stop button and commands, kept live over SSE.

import { AlertFeed } from "./alerts.js";
import { apiUrl, getJSON, metricPath, pageUrl } from "./api.js";
import { MetricBoard, isSystemMetric, systemTitle } from "./board.js";
import { CHART_VIEW, bindChartControls } from "./chart_controls.js";
import { pointsFor } from "./charts.js";
import { CommandPanel } from "./commands.js";
import { refreshAgo, setAgo, setStatus } from "./format.js";
import { batcher, subscribe } from "./live.js";
import { checkGone, showRunChange } from "./manage.js";
import { Progress } from "./progress.js";
import { StopControl } from "./stop.js";
import { Timeline } from "./timeline.js";
import { readView } from "./viewstate.js";

const body = document.body;
const runId = Number(body.dataset.runId);
const streamAfter = Number(body.dataset.lastEventId);
let run = JSON.parse(body.dataset.run);

const chartsBox = document.getElementById("charts");
const origin = run.created_at; // relative time counts from the run's start
const board = new MetricBoard(chartsBox, document.getElementById("charts-empty"), { origin });
// The training machine's metrics (system/...) in their own section, below the training's.
const systemCharts = document.getElementById("system-charts");
const systemBoard = new MetricBoard(systemCharts, document.getElementById("system-empty"), {
  titleOf: systemTitle,
  origin,
});
const boards = [board, systemBoard];
const boardOf = (key) => (isSystemMetric(key) ? systemBoard : board);
const pointCount = () => board.pointCount() + systemBoard.pointCount();
const timeline = new Timeline(document.getElementById("timeline"), document.getElementById("timeline-empty"));
const progress = new Progress();
const stop = new StopControl(runId);
const commands = new CommandPanel(runId);
const alerts = new AlertFeed("run-alerts", { runId });
const watchLink = document.getElementById("watch-run");
const statusBadge = document.getElementById("run-status");
const created = document.getElementById("run-created");
const updated = document.getElementById("run-updated");

function showRun(summary) {
  run = { ...run, ...summary };
  setStatus(statusBadge, run.status);
  setAgo(updated, run.updated_at);
  stop.update(run.stop ?? run.control?.state ?? "none", run);
  commands.update(run);
  progress.setRun(run);
  progress.render();
  showWatchLink();
}

/** "Watch this run": the rules page's form filled in with the run's project and main metric. */
function showWatchLink() {
  if (!watchLink) return;
  const query = new URLSearchParams({ project: run.project });
  if (run.main_metric) query.set("metric", run.main_metric);
  watchLink.href = pageUrl(`/rules?${query}`);
}

let lastDrawn = streamAfter;

function applyEvent(event) {
  const metrics = Object.entries(event.metrics || {});
  if (metrics.length) {
    for (const [key, value] of metrics) {
      const point = { step: event.x, epoch: event.epoch, time: event.time, value };
      boardOf(key).push(key, point, event.x_axis);
    }
  }
  if (event.kind === "train_begin") progress.trainBegan(event.time, event.data);
  else if (event.kind === "epoch_end") progress.epochEnded(event.epoch, event.time);
  else if (event.kind === "batch_end" && event.step !== null) progress.batchEnded(event.step, event.epoch, event.time);
  timeline.add(event);
  lastDrawn = Math.max(lastDrawn, event.id);
}

/**
 * Announce (for tests and the benchmark) that events up to `upTo` are on screen, once the
 * frame that drew them has painted (a task queued from its rAF runs after the paint).
 * `scope`: "first" (the first chart that changed), "visible" (every chart in view),
 * "all" (the charts out of view too).
 */
function announceDrawn(upTo, scope) {
  requestAnimationFrame(() =>
    setTimeout(() => {
      if (scope === "visible") body.dataset.lastDrawnEvent = String(upTo);
      body.dataset.points = String(pointCount());
      const detail = { lastEventId: upTo, scope, at: performance.now() };
      document.dispatchEvent(new CustomEvent("callboard:drawn", { detail }));
    }),
  );
}

let applying = Promise.resolve();
function applyEvents(events) {
  applying = applying.then(async () => {
    for (const event of events) applyEvent(event);
    progress.update();
    const upTo = lastDrawn;
    let first = true;
    const flushes = boards.map((each) =>
      each.flush(() => {
        if (first) announceDrawn(upTo, "first");
        first = false;
      }),
    );
    await Promise.all(flushes.map((flush) => flush.visible));
    announceDrawn(upTo, "visible");
    Promise.all(flushes.map((flush) => flush.done)).then(() => announceDrawn(upTo, "all"));
  });
  return applying;
}

let ready = false;
const early = [];
const enqueue = batcher(applyEvents);

const stream = subscribe(apiUrl(`/runs/${runId}/stream`, { after: streamAfter }), {
  onEvent: (event) => {
    commands.notice(event);
    alerts.notice(event);
    if (ready) enqueue(event);
    else early.push(event);
  },
  onRun: (summary) => {
    showRun(summary);
    showRunChange(summary);
  },
});
stream.addEventListener("error", checkGone); // a deleted run ends its stream

/** Draw every chart, each as soon as its series arrive; return `{key: API series}`. */
async function loadSeries() {
  const maxPoints = pointsFor(board.chartWidth());
  const series = new Map();
  const load = (key) =>
    getJSON(metricPath(runId, key), { max_points: maxPoints })
      .catch(() => ({ points: [], x_axis: "step" }))
      .then((answer) => {
        series.set(key, answer);
        return answer;
      });
  await Promise.all([
    board.load(run.metrics.filter((key) => !isSystemMetric(key)), load),
    systemBoard.load(run.metrics.filter(isSystemMetric), load),
  ]);
  return series;
}

/** Seed the ETA from the loaded series: epoch end times, and the latest batch points. */
function seedProgress(series) {
  const epochs = series.get(run.metrics.find((k) => !k.startsWith("batch/") && !isSystemMetric(k)));
  if (epochs?.x_axis === "epoch") for (const point of epochs.points) progress.epochEnded(point.epoch, point.time);
  const batchKey = run.metrics.find((k) => k.startsWith("batch/"));
  for (const point of (series.get(batchKey)?.points ?? []).slice(-10)) {
    progress.batchEnded(point.step, point.epoch, point.time);
  }
}

async function loadTimeline() {
  let after = 0;
  for (let page = 0; page < 5; page += 1) {
    const { events } = await getJSON(`/runs/${runId}/events`, {
      include_metrics: false,
      after_id: after,
      limit: 1000,
    });
    for (const event of events) {
      if (event.kind === "train_begin") progress.trainBegan(event.time, event.data);
      timeline.add(event);
    }
    if (events.length < 1000) return;
    after = events[events.length - 1].id;
  }
}

async function start() {
  setAgo(created, run.created_at);
  showRun(run);
  commands.load();
  alerts.load();
  const series = await loadSeries();
  chartsBox.setAttribute("aria-busy", "false");
  requestAnimationFrame(() =>
    setTimeout(() => {
      performance.mark("callboard:charts-ready");
      body.dataset.chartsReady = "true";
      body.dataset.points = String(pointCount());
    }),
  );
  seedProgress(series);
  await loadTimeline().catch(() => {});
  ready = true;
  await applyEvents(early.splice(0));
}

const setOptions = (change) => Promise.all(boards.map((each) => each.setOptions(change)));
setOptions(bindChartControls(setOptions, readView(CHART_VIEW)));
// The page's one timer: "started/updated N ago" and the ETA count on between updates.
setInterval(() => {
  refreshAgo();
  progress.render();
}, 1000);
start();

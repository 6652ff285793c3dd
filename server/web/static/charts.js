// Plotly charts of metric series: train and validation overlaid, EMA smoothing, log scale,
// light/dark theme, and live points appended with Plotly.extendTraces (no full redraw).
/* global Plotly */

import { toNumber } from "./api.js";
import { element } from "./format.js";
import { Ema } from "./smoothing.js";

export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939",
];
const MARKERS_UP_TO = 60;
// Below this span of steps plotly would tick halves (epoch 0.5): tick every step instead.
// Wider spans get plotly's own ticks, which are whole numbers there.
const STEP_TICKS_BELOW = 10;

/** A point's x in `mode`: wall time in ms (a plotly date), relative time in seconds from `origin`. */
export function xOf(point, mode, origin = 0) {
  if (mode === "epoch") return point.epoch ?? null;
  if (mode === "wall") return point.time === null || point.time === undefined ? null : point.time * 1000;
  if (mode === "relative") return point.time === null || point.time === undefined ? null : point.time - origin;
  return point.step;
}

/** Resolves with Plotly once plotly.min.js (an async script, parsed while data loads) ran. */
export const plotlyReady = new Promise((resolve, reject) => {
  if (window.Plotly) {
    resolve(window.Plotly);
    return;
  }
  const tag = document.getElementById("plotly-js");
  tag.addEventListener("load", () => resolve(window.Plotly));
  tag.addEventListener("error", () => reject(new Error("plotly.js did not load")));
});

/** User text for Plotly, which renders a subset of HTML in names and titles: escape it. */
export function plotlyText(text) {
  return String(text).replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** A value for plotting: finite numbers stay, anything else (NaN, ±∞) is a gap. */
export function plotValue(value) {
  const number = typeof value === "number" ? value : toNumber(value);
  return Number.isFinite(number) ? number : null;
}

/**
 * The y range for series between `min` and `max` when they are flat, else null. A constant
 * (or float-noise flat) series is drawn ±10 % around its value: plotly alone spans a constant
 * over value ± 1 (0.001 sits on the tick "0") and float noise over 1e-11 (ticks like
 * "0.00100000003").
 */
export function flatSpan(min, max) {
  const size = Math.max(Math.abs(min), Math.abs(max));
  if (!(min <= max) || size === 0 || max - min > size * 1e-6) return null;
  const middle = (min + max) / 2;
  return [middle - size / 10, middle + size / 10];
}

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** `{"a.b": 1}` merged into `target` as `{a: {b: 1}}`. */
function mergeDotted(target, dotted) {
  for (const [path, value] of Object.entries(dotted)) {
    const parts = path.split(".");
    let node = target;
    for (const part of parts.slice(0, -1)) node = node[part] ??= {};
    node[parts[parts.length - 1]] = value;
  }
  return target;
}

/** Plotly layout colours from the page's CSS variables (so light/dark follow the system). */
export function themeUpdate() {
  const fg = cssVar("--fg");
  const grid = cssVar("--grid");
  const line = cssVar("--line");
  return {
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    "font.color": fg,
    "xaxis.gridcolor": grid,
    "yaxis.gridcolor": grid,
    "xaxis.linecolor": line,
    "yaxis.linecolor": line,
    "hoverlabel.bgcolor": cssVar("--panel"),
    "hoverlabel.bordercolor": line,
    "hoverlabel.font.color": fg,
  };
}

/** Plotly's options for every chart of the dashboard. */
export const PLOT_CONFIG = {
  responsive: true,
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d"],
};

/** The layout every line chart shares: title, axes, legend above, the page's theme. */
export function baseLayout({ title, xTitle, xType = "linear", log = false }) {
  const layout = {
    title: { text: plotlyText(title), x: 0.01, xanchor: "left", font: { size: 14 } },
    margin: { l: 64, r: 40, t: 34, b: 40 },
    xaxis: { type: xType, title: { text: plotlyText(xTitle), standoff: 4 }, zeroline: false, tick0: 0, dtick: 1 },
    yaxis: { type: log ? "log" : "linear", zeroline: false, exponentformat: "e" },
    hovermode: "x unified",
    showlegend: true,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.0, yanchor: "bottom" },
    // Plotly's toolbar stands upright in the right margin, clear of the legend above the plot.
    modebar: { orientation: "v" },
    uirevision: "keep",
  };
  return mergeDotted(layout, themeUpdate());
}

const themedCharts = new Set(); // every chart on the page: they follow the light/dark preference
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  for (const chart of themedCharts) chart.applyTheme();
});

/** A plotly chart in `div` that follows the page's light or dark theme; `remove()` frees it. */
export class ThemedChart {
  constructor(div) {
    this.div = div;
    this.drawn = false;
    themedCharts.add(this);
  }

  applyTheme() {
    if (this.drawn) Plotly.relayout(this.div, themeUpdate());
  }

  remove() {
    themedCharts.delete(this);
    if (this.drawn) Plotly.purge(this.div);
    this.div.remove();
  }
}

/**
 * One chart: several series (e.g. loss and val_loss, or one run each), each drawn as a
 * main trace (smoothed when smoothing > 0) and a faint raw trace shown while smoothing.
 */
export class MetricChart extends ThemedChart {
  constructor(container, { title, xTitle, before = null, xMode = "step" }) {
    super(element("div", { className: "chart" }));
    this.title = title;
    this.xTitle = xTitle; // what the server's steps count: "epoch", "step", "batch", "sample"
    this.xMode = xMode;
    this.div.setAttribute("role", "img");
    this.div.setAttribute("aria-label", `Chart of ${title}`);
    container.insertBefore(this.div, before);
    this.series = [];
    this.byKey = new Map();
    this.smoothing = 0;
    this.log = false;
    this.pending = new Map();
    this.yMin = Infinity; // extremes of every finite value drawn, for flatSpan
    this.yMax = -Infinity;
  }

  /**
   * Add a series; `points` are API points `{step, epoch, time, value}`; `origin` (unix
   * seconds, e.g. the run's start) is where its relative time counts from.
   */
  addSeries(key, { name, color, dash = "solid", points = [], origin = null }) {
    const series = {
      key,
      name,
      color,
      dash,
      origin: origin ?? points[0]?.time ?? 0,
      points: points.map(({ step, epoch, time }) => ({ step, epoch, time })),
      y: points.map((p) => plotValue(p.value)),
      ema: null,
    };
    series.x = series.points.map((p) => xOf(p, this.xMode, series.origin));
    series.smoothed = this.#smooth(series);
    for (const value of series.y) this.#widen(value);
    this.series.push(series);
    this.byKey.set(key, series);
    if (this.drawn) {
      const traces = this.#traces(series);
      Plotly.addTraces(this.div, traces);
      this.#fitAxes();
    }
    return series;
  }

  has(key) {
    return this.byKey.has(key);
  }

  pointCount() {
    return this.series.reduce((sum, s) => sum + s.x.length, 0);
  }

  #widen(value) {
    if (value === null) return;
    if (value < this.yMin) this.yMin = value;
    if (value > this.yMax) this.yMax = value;
  }

  /** First and last x drawn (x only grows within a series). */
  #steps() {
    const drawn = this.series.filter((s) => s.x.length);
    if (!drawn.length) return [0, 0];
    return [Math.min(...drawn.map((s) => s.x[0])), Math.max(...drawn.map((s) => s.x[s.x.length - 1]))];
  }

  /** Steps and epochs are whole numbers; times are not. */
  #countsWhole() {
    return this.xMode === "step" || this.xMode === "epoch";
  }

  #xTitle() {
    if (this.xMode === "epoch") return "epoch";
    if (this.xMode === "wall") return "time";
    if (this.xMode === "relative") return "time since start (s)";
    return this.xTitle;
  }

  /**
   * Layout settings that follow the data and the zoom: steps are whole numbers, so tick
   * every step while plotly would tick fractions of one; a flat series gets `flatSpan`
   * (autorange widened to it for float noise, clipped to it for a constant). A null value
   * removes the setting in `Plotly.relayout`.
   */
  #axisFit() {
    const zoomed = this.drawn && this.div.layout.xaxis.autorange === false;
    const [first, last] = zoomed ? this.div.layout.xaxis.range : this.#steps();
    const span = flatSpan(this.yMin, this.yMax);
    return {
      "xaxis.tickmode": this.#countsWhole() && last - first < STEP_TICKS_BELOW ? "linear" : "auto",
      "yaxis.autorangeoptions.include": span,
      "yaxis.autorangeoptions.clipmin": span && span[0],
      "yaxis.autorangeoptions.clipmax": span && span[1],
    };
  }

  /** Relayout when the data or the zoom changed what `#axisFit` asks for. */
  async #fitAxes() {
    const fit = this.#axisFit();
    const { xaxis, yaxis } = this.div.layout;
    const include = yaxis.autorangeoptions?.include ?? null;
    const sameTicks = fit["xaxis.tickmode"] === xaxis.tickmode;
    const sameSpan = String(fit["yaxis.autorangeoptions.include"]) === String(include);
    if (!sameTicks || !sameSpan) await Plotly.relayout(this.div, fit);
  }

  #smooth(series) {
    series.ema = new Ema(this.smoothing);
    return this.smoothing > 0 ? series.y.map((v) => series.ema.next(v)) : series.y.slice();
  }

  #traces(series) {
    const mode = series.x.length > MARKERS_UP_TO ? "lines" : "lines+markers";
    const main = {
      type: "scatter",
      mode,
      name: plotlyText(series.name),
      x: series.x.slice(),
      y: series.smoothed.slice(),
      line: { color: series.color, dash: series.dash, width: 2 },
      marker: { size: 5, color: series.color },
      legendgroup: series.key,
      hovertemplate: "%{y:.5g}",
    };
    const raw = {
      type: "scatter",
      mode: "lines",
      name: plotlyText(`${series.name} (raw)`),
      x: series.x.slice(),
      y: series.y.slice(),
      line: { color: series.color, dash: series.dash, width: 1 },
      opacity: 0.3,
      legendgroup: series.key,
      showlegend: false,
      visible: this.smoothing > 0,
      hovertemplate: "%{y:.5g}",
    };
    return [main, raw];
  }

  #layout() {
    const layout = baseLayout({ title: this.title, xTitle: this.#xTitle(), xType: this.xMode === "wall" ? "date" : "linear", log: this.log });
    const fit = Object.entries(this.#axisFit()).filter(([, value]) => value !== null);
    return mergeDotted(layout, Object.fromEntries(fit));
  }

  async draw() {
    await plotlyReady;
    this.pending.clear(); // the traces below hold every point so far
    const traces = this.series.flatMap((series) => this.#traces(series));
    await Plotly.newPlot(this.div, traces, this.#layout(), PLOT_CONFIG);
    this.drawn = true;
    this.div.removeAllListeners("plotly_relayout");
    this.div.on("plotly_relayout", () => this.#fitAxes());
  }

  /** Queue a live point `{step, epoch, time, value}`; `flush()` draws the queue in one extendTraces. */
  push(key, { step, epoch, time, value }) {
    const series = this.byKey.get(key);
    const y = plotValue(value);
    const x = xOf({ step, epoch, time }, this.xMode, series.origin);
    this.#widen(y);
    series.points.push({ step, epoch, time });
    series.x.push(x);
    series.y.push(y);
    const smoothed = this.smoothing > 0 ? series.ema.next(y) : y;
    series.smoothed.push(smoothed);
    const index = this.series.indexOf(series);
    let entry = this.pending.get(index);
    if (!entry) {
      entry = { x: [], y: [], smoothed: [] };
      this.pending.set(index, entry);
    }
    entry.x.push(x);
    entry.y.push(y);
    entry.smoothed.push(smoothed);
  }

  /** Draw the queued points (one flush at a time per chart). */
  flush() {
    this.flushing = (this.flushing ?? Promise.resolve()).then(() => this.#extend());
    return this.flushing;
  }

  async #extend() {
    if (!this.pending.size || !this.drawn) return;
    const indices = [];
    const update = { x: [], y: [] };
    for (const [index, entry] of this.pending) {
      indices.push(2 * index, 2 * index + 1);
      update.x.push(entry.x, entry.x.slice());
      update.y.push(entry.smoothed, entry.y);
    }
    this.pending.clear();
    await this.#fitAxes(); // before the new points are drawn, so none is clipped
    await Plotly.extendTraces(this.div, update, indices);
  }

  async setSmoothing(weight) {
    this.smoothing = weight;
    for (const series of this.series) series.smoothed = this.#smooth(series);
    if (!this.drawn) return;
    const mains = this.series.map((_, i) => 2 * i);
    const raws = this.series.map((_, i) => 2 * i + 1);
    await Plotly.restyle(this.div, { y: this.series.map((s) => s.smoothed.slice()) }, mains);
    await Plotly.restyle(this.div, { visible: weight > 0 }, raws);
  }

  /** Count x as `mode` ("step", "epoch", "wall", "relative"): every trace's x is recomputed from its points. */
  async setXMode(mode) {
    this.xMode = mode;
    for (const series of this.series) series.x = series.points.map((p) => xOf(p, mode, series.origin));
    if (!this.drawn) return;
    await this.flushing; // queued live points are already in series.x
    this.pending.clear();
    const x = this.series.flatMap((s) => [s.x.slice(), s.x.slice()]);
    const y = this.series.flatMap((s) => [s.smoothed.slice(), s.y.slice()]);
    await Plotly.restyle(this.div, { x, y });
    await Plotly.relayout(this.div, {
      "xaxis.type": mode === "wall" ? "date" : "linear",
      "xaxis.title.text": plotlyText(this.#xTitle()),
      "xaxis.autorange": true,
      ...this.#axisFit(),
    });
  }

  async setLog(on) {
    this.log = on;
    if (this.drawn) await Plotly.relayout(this.div, { "yaxis.type": on ? "log" : "linear" });
  }

}

/**
 * `max_points` for a series drawn `width` CSS pixels wide: one point per pixel of the plot
 * area. The server keeps each bucket's min and max, so every 2 px show a bucket's extremes.
 */
export function pointsFor(width) {
  const plotWidth = (width || 600) - 80;
  return Math.min(100000, Math.max(200, Math.ceil(plotWidth * (window.devicePixelRatio || 1))));
}

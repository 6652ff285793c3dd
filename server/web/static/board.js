// The run page's charts: one MetricChart per metric family (loss with val_loss, ...),
// drawn as each family's series arrive, then fed with live points. Live points reach the
// charts on screen first; charts scrolled out of view catch up just after.

import { MetricChart, PALETTE } from "./charts.js";
import { compareFamilies, familyOf, familyTitle, isValidation } from "./families.js";

/** The training machine's metrics (CPU, memory, GPUs): the run page draws them apart. */
export const isSystemMetric = (key) => key.startsWith("system/");

/** A system chart's title, in its own section: "system/gpu0_memory_mb" → "gpu0 memory mb". */
export const systemTitle = (family) => familyTitle(family.slice("system/".length));

/**
 * A chart's x title: "batch" for batch metrics, "sample" for system metrics (the client's
 * sample number), else what the server says its x counts.
 */
export function xTitleFor(family, axes) {
  if (family.startsWith("batch/")) return "batch";
  if (isSystemMetric(family)) return "sample";
  return axes.every((axis) => axis === "epoch") ? "epoch" : "step";
}

function seriesOrder(a, b) {
  return Number(isValidation(a)) - Number(isValidation(b)) || a.localeCompare(b);
}

export class MetricBoard {
  /** `titleOf(family)`: a chart's title (`familyTitle` unless given). */
  /** `origin`: the run's start (unix seconds), where relative time counts from. */
  constructor(container, emptyNote, { titleOf = familyTitle, origin = null } = {}) {
    this.origin = origin;
    this.container = container;
    this.emptyNote = emptyNote;
    this.titleOf = titleOf;
    this.charts = new Map(); // family → MetricChart
    this.loadedUpTo = new Map(); // key → last step of the initial load
    this.fresh = new Set(); // charts created live, drawn at the next flush
    this.offscreen = new Set(); // charts out of view
    this.options = { log: false, smoothing: 0, xMode: "step" };
    this.visibility = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const chart = entry.target.chart;
        if (entry.isIntersecting) {
          this.offscreen.delete(chart);
          chart.flush();
        } else this.offscreen.add(chart);
      }
    });
  }

  #chart(family, xTitle) {
    let chart = this.charts.get(family);
    if (chart) return chart;
    const next = [...this.charts.keys()].sort(compareFamilies).find((f) => compareFamilies(f, family) > 0);
    chart = new MetricChart(this.container, {
      title: this.titleOf(family),
      xTitle,
      xMode: this.options.xMode,
      before: next ? this.charts.get(next).div : null,
    });
    chart.smoothing = this.options.smoothing;
    chart.log = this.options.log;
    chart.div.chart = chart;
    this.visibility.observe(chart.div);
    this.charts.set(family, chart);
    this.emptyNote.hidden = true;
    return chart;
  }

  #addSeries(chart, key, points) {
    const index = chart.series.length;
    const color = isValidation(key) && index > 0 ? PALETTE[1] : PALETTE[index % PALETTE.length];
    const dash = isValidation(key) ? "dot" : "solid";
    chart.addSeries(key, { name: key, color, dash, points, origin: this.origin });
    this.loadedUpTo.set(key, points.length ? points[points.length - 1].step : -Infinity);
  }

  /** Chart width in CSS pixels (every chart of the grid has the same). */
  chartWidth() {
    const style = getComputedStyle(this.container);
    const columns = style.gridTemplateColumns.split(" ").length || 1;
    const gap = parseFloat(style.columnGap) || 0;
    return (this.container.clientWidth - gap * (columns - 1)) / columns;
  }

  /**
   * Draw every family as soon as its series arrive: `load(key)` returns a promise of the
   * key's API series (`{points, x_axis}`). Resolves once every chart is drawn.
   */
  async load(keys, load) {
    const families = new Map();
    for (const key of [...keys].sort(seriesOrder)) {
      const family = familyOf(key);
      if (!families.has(family)) families.set(family, []);
      families.get(family).push(key);
    }
    for (const family of [...families.keys()].sort(compareFamilies)) this.#chart(family, "");
    this.emptyNote.hidden = families.size > 0;
    await Promise.all(
      [...families].map(async ([family, members]) => {
        const loaded = await Promise.all(members.map((key) => load(key)));
        const chart = this.charts.get(family);
        chart.xTitle = xTitleFor(family, loaded.map((series) => series.x_axis));
        members.forEach((key, i) => this.#addSeries(chart, key, loaded[i].points));
        await chart.draw();
      }),
    );
  }

  /**
   * Queue a live point `{step, epoch, time, value}` at the server's `step` (what it counts:
   * `axis`); points the initial load already holds are skipped.
   */
  push(key, point, axis) {
    if (point.step <= (this.loadedUpTo.get(key) ?? -Infinity)) return;
    const family = familyOf(key);
    const chart = this.#chart(family, xTitleFor(family, [axis]));
    if (!chart.has(key)) {
      this.#addSeries(chart, key, [point]);
      this.loadedUpTo.set(key, -Infinity);
      if (!chart.drawn) this.fresh.add(chart);
      return;
    }
    chart.push(key, point);
  }

  /**
   * Draw queued points chart by chart, yielding to the browser between charts so each
   * paints at once: charts in view first (top to bottom), then the ones out of view.
   * `onChart(chart, inView)` follows each drawn chart. Returns `{visible, done}`: promises
   * of the charts in view drawn, and of all drawn.
   */
  flush(onChart = () => {}) {
    const fresh = new Set(this.fresh);
    this.fresh.clear();
    const waiting = [...this.charts.keys()]
      .sort(compareFamilies)
      .map((family) => this.charts.get(family))
      .filter((chart) => fresh.has(chart) || chart.pending.size);
    const draw = async (charts, inView) => {
      for (const chart of charts) {
        await (fresh.has(chart) ? chart.draw() : chart.flush());
        onChart(chart, inView);
        await yieldToBrowser();
      }
    };
    const visible = draw(waiting.filter((chart) => !this.offscreen.has(chart)), true);
    const done = visible.then(() => draw(waiting.filter((chart) => this.offscreen.has(chart)), false));
    return { visible, done };
  }

  async setOptions({ log, smoothing, xMode }) {
    if (log !== undefined) this.options.log = log;
    if (smoothing !== undefined) this.options.smoothing = smoothing;
    if (xMode !== undefined) this.options.xMode = xMode;
    const work = [];
    for (const chart of this.charts.values()) {
      if (log !== undefined) work.push(chart.setLog(log));
      if (smoothing !== undefined) work.push(chart.setSmoothing(smoothing));
      if (xMode !== undefined) work.push(chart.setXMode(xMode));
    }
    await Promise.all(work);
  }

  pointCount() {
    let total = 0;
    for (const chart of this.charts.values()) total += chart.pointCount();
    return total;
  }
}

/** Let the browser paint (and handle input) before the next chart; hidden tabs don't wait. */
function yieldToBrowser() {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 50);
    requestAnimationFrame(() =>
      setTimeout(() => {
        clearTimeout(timer);
        resolve();
      }),
    );
  });
}

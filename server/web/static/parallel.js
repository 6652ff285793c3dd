// Hyperparameters against a result: a plotly parallel-coordinates chart with one axis per
// configuration value that differs between the runs, and a last axis for the chosen metric.
// Dragging along an axis keeps the runs inside the range; `onFilter` hears which remain.
/* global Plotly */

import { PLOT_CONFIG, plotlyReady, plotlyText, themeUpdate, themedCharts } from "./charts.js";

/** `{a: {b: 1}, c: [1, 2]}` → `{"a.b": 1, "c": "[1,2]"}`: numbers stay numbers, else text. */
export function flattenConfig(config, prefix = "") {
  const flat = {};
  for (const [key, value] of Object.entries(config ?? {})) {
    const path = prefix + key;
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      Object.assign(flat, flattenConfig(value, `${path}.`));
    } else flat[path] = typeof value === "number" ? value : JSON.stringify(value);
  }
  return flat;
}

/**
 * One axis of values (a run's missing value is null). Numbers give a numeric axis; any text
 * gives a categorical one whose ticks name the values, sorted.
 */
function axis(label, values) {
  const present = values.filter((v) => v !== null && v !== undefined);
  if (present.every((v) => typeof v === "number")) return { label: plotlyText(label), key: label, values };
  const names = [...new Set(present.map(String))].sort();
  return {
    label: plotlyText(label),
    key: label,
    values: values.map((v) => (v === null || v === undefined ? null : names.indexOf(String(v)))),
    tickvals: names.map((_, i) => i),
    ticktext: names.map(plotlyText),
  };
}

/** Is `value` inside a plotly constraint range ([lo, hi] or a list of them)? */
function within(value, range) {
  if (!range) return true;
  if (value === null) return false;
  const ranges = Array.isArray(range[0]) ? range : [range];
  return ranges.some(([low, high]) => value >= low && value <= high);
}

export class ParallelView {
  /** `onFilter(ids, constraints)`: the runs inside every range, and the ranges by axis key. */
  constructor(div, { onFilter }) {
    this.div = div;
    this.onFilter = onFilter;
    this.axes = [];
    this.ids = [];
    this.drawn = false;
    themedCharts.add(this);
  }

  /**
   * Draw `runs` (API run details) against `results` (`{run id: number or null}`, the metric
   * `metricLabel`), starting with `constraints` (`{axis key: range}`, e.g. from the URL).
   * Returns the number of axes drawn (0 when no configuration value differs).
   */
  async draw(runs, results, metricLabel, constraints = {}) {
    const configs = runs.map((run) => flattenConfig(run.config));
    const keys = [...new Set(configs.flatMap(Object.keys))].sort();
    const differing = keys.filter((key) => new Set(configs.map((c) => JSON.stringify(c[key] ?? null))).size > 1);
    this.ids = runs.map((run) => run.id);
    this.axes = differing.map((key) => axis(key, configs.map((c) => c[key] ?? null)));
    const metricAxis = axis(metricLabel, runs.map((run) => results[run.id] ?? null));
    this.axes.push(metricAxis);
    if (!differing.length) {
      this.clear();
      return 0;
    }
    await plotlyReady;
    const dimensions = this.axes.map(({ label, key, values, tickvals, ticktext }) => ({
      label,
      values: values.map((v) => (v === null ? NaN : v)),
      ...(tickvals ? { tickvals, ticktext } : {}),
      ...(constraints[key] ? { constraintrange: constraints[key] } : {}),
    }));
    const finite = metricAxis.values.filter(Number.isFinite);
    const line = finite.length
      ? { color: metricAxis.values.map((v) => (v === null ? NaN : v)), colorscale: "Viridis", showscale: true, colorbar: { title: { text: plotlyText(metricLabel) } } }
      : {};
    const theme = themeUpdate();
    const layout = { margin: { l: 80, r: 80, t: 60, b: 30 }, paper_bgcolor: theme.paper_bgcolor, font: { color: theme["font.color"] } };
    await Plotly.react(this.div, [{ type: "parcoords", dimensions, line }], layout, PLOT_CONFIG);
    if (!this.drawn) this.div.on("plotly_restyle", () => this.#filter());
    this.drawn = true;
    this.#filter();
    return differing.length;
  }

  /** The runs inside every axis' range, told to `onFilter`. */
  #filter() {
    const dimensions = this.div.data?.[0]?.dimensions ?? [];
    const constraints = {};
    dimensions.forEach((dimension, i) => {
      if (dimension.constraintrange) constraints[this.axes[i].key] = dimension.constraintrange;
    });
    const inside = (run) => this.axes.every((a, i) => within(a.values[run], dimensions[i]?.constraintrange));
    const kept = this.ids.filter((_, run) => inside(run));
    this.onFilter(kept, constraints);
  }

  clear() {
    if (this.drawn) Plotly.purge(this.div);
    this.drawn = false;
    this.onFilter(this.ids, {});
  }

  applyTheme() {
    const theme = themeUpdate();
    if (this.drawn) Plotly.relayout(this.div, { paper_bgcolor: theme.paper_bgcolor, "font.color": theme["font.color"] });
  }
}

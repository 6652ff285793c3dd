// Hyperparameters against a result in parallel coordinates: one vertical axis per
// configuration value that differs between the runs, a last one for the chosen metric, and a
// line per run coloured by that metric. Dragging a box over an axis keeps the runs whose
// value lies in it (boxes on several axes: runs inside all of them); a double click clears.
//
// Drawn with plotly's SVG scatter traces: plotly's own `parcoords` is WebGL code that regl
// compiles with `new Function`, which the dashboard's Content-Security-Policy forbids.
/* global Plotly */

import { PLOT_CONFIG, ThemedChart, plotlyReady, plotlyText, themeUpdate } from "./charts.js";
import { formatValue } from "./format.js";

const FADED = 0.12;
// Viridis at five stops: a run's line colour by its metric value, low to high.
const VIRIDIS = [
  [68, 1, 84],
  [59, 82, 139],
  [33, 145, 140],
  [94, 201, 98],
  [253, 231, 37],
];

/** `{a: {b: 1}, c: [1, 2], d: "x"}` → `{"a.b": 1, "c": "[1,2]", "d": "x"}`: numbers and text stay. */
export function flattenConfig(config, prefix = "") {
  const flat = {};
  for (const [key, value] of Object.entries(config ?? {})) {
    const path = prefix + key;
    if (value !== null && typeof value === "object" && !Array.isArray(value)) {
      Object.assign(flat, flattenConfig(value, `${path}.`));
    } else flat[path] = typeof value === "number" || typeof value === "string" ? value : JSON.stringify(value);
  }
  return flat;
}

/** The configuration keys whose values are not the same in every one of `configs`. */
export function differingKeys(configs) {
  const keys = [...new Set(configs.flatMap(Object.keys))].sort();
  return keys.filter((key) => new Set(configs.map((c) => JSON.stringify(c[key] ?? null))).size > 1);
}

/**
 * One axis: `values` per run (null where missing) placed at `positions` between 0 (bottom)
 * and 1 (top). Numbers spread by value; anything else is a category, sorted by name.
 * A range of positions reads in the axis' own terms (`toFilter`: [low value, high value],
 * or the category names inside) and back (`fromFilter`), so a link names real values.
 */
export function makeAxis(key, values) {
  const present = values.filter((v) => v !== null && v !== undefined);
  const missing = (v) => v === null || v === undefined;
  if (present.every((v) => typeof v === "number")) {
    const [low, high] = [Math.min(...present), Math.max(...present)];
    const place = (v) => (high > low ? (v - low) / (high - low) : 0.5);
    const value = (position) => low + position * (high - low);
    return {
      key,
      values,
      positions: values.map((v) => (missing(v) ? null : place(v))),
      ticks: present.length ? [...new Set([low, high])].map((v) => [place(v), formatValue(v)]) : [],
      toFilter: ([from, to]) => [value(from), value(to)],
      fromFilter: (saved) => (saved.length === 2 && saved.every(Number.isFinite) ? saved.map(place) : null),
    };
  }
  const names = [...new Set(present.map(String))].sort();
  const place = (name) => (names.length > 1 ? names.indexOf(name) / (names.length - 1) : 0.5);
  const placed = (saved) => saved.filter((name) => names.includes(name)).map(place);
  return {
    key,
    values,
    positions: values.map((v) => (missing(v) ? null : place(String(v)))),
    ticks: names.map((name) => [place(name), name]),
    toFilter: ([from, to]) => names.filter((name) => place(name) >= from && place(name) <= to),
    fromFilter: (saved) => (placed(saved).length ? [Math.min(...placed(saved)), Math.max(...placed(saved))] : null),
  };
}

/** Is `position` inside `range` ([low, high] in axis positions, 0 … 1)? */
const inside = (position, range) => !range || (position !== null && position >= range[0] && position <= range[1]);

function viridis(t) {
  const at = Math.min(VIRIDIS.length - 1.000001, Math.max(0, t) * (VIRIDIS.length - 1));
  const [from, to] = [VIRIDIS[Math.floor(at)], VIRIDIS[Math.floor(at) + 1]];
  const mix = from.map((c, i) => Math.round(c + (to[i] - c) * (at - Math.floor(at))));
  return `rgb(${mix.join(", ")})`;
}

export class ParallelView extends ThemedChart {
  /** `onFilter(ids, filter)`: the runs inside every box, and the boxes by axis key in its terms. */
  constructor(div, { onFilter }) {
    super(div);
    this.onFilter = onFilter;
    this.axes = [];
    this.ids = [];
    this.constraints = {}; // axis key → [low, high] in positions 0 … 1 along the axis
  }

  /**
   * Draw `runs` (API run details) against `results` (`{run id: number or null}` of the metric
   * `metricLabel`), with `filter` (`{axis key: range}` as `onFilter` tells it, e.g. from the
   * URL) applied.
   * Returns the number of configuration axes drawn (0 when no value differs).
   */
  async draw(runs, results, metricLabel, filter = {}) {
    const configs = runs.map((run) => flattenConfig(run.config));
    const keys = differingKeys(configs);
    this.ids = runs.map((run) => run.id);
    this.axes = keys.map((key) => makeAxis(key, configs.map((c) => c[key] ?? null)));
    const metric = makeAxis(metricLabel, runs.map((run) => results[run.id] ?? null));
    this.axes.push(metric);
    this.constraints = {};
    for (const a of this.axes) {
      const range = Array.isArray(filter[a.key]) ? a.fromFilter(filter[a.key]) : null;
      if (range) this.constraints[a.key] = range;
    }
    if (!keys.length) {
      this.clear();
      return 0;
    }
    await plotlyReady;
    const traces = runs.map((run, i) => ({
      type: "scatter",
      mode: "lines+markers",
      name: plotlyText(`${run.name} #${run.id}`),
      x: this.axes.map((_, a) => a),
      y: this.axes.map((a) => a.positions[i]),
      customdata: this.axes.map((a) => (a.values[i] === null ? "—" : plotlyText(formatValue(a.values[i])))),
      text: this.axes.map((a) => plotlyText(a.key)),
      hovertemplate: "%{text}: %{customdata}",
      line: { color: metric.positions[i] === null ? "#999" : viridis(metric.positions[i]), width: 2 },
      marker: { size: 6 },
    }));
    await Plotly.react(this.div, traces, this.#layout(), { ...PLOT_CONFIG, modeBarButtonsToRemove: ["lasso2d"] });
    if (!this.drawn) {
      this.div.on("plotly_selected", (event) => event?.range && this.#select(event.range));
      this.div.on("plotly_deselect", () => this.#apply({}));
    }
    this.drawn = true;
    await this.#apply(this.constraints);
    return keys.length;
  }

  #layout() {
    const theme = themeUpdate();
    const hidden = { visible: false, fixedrange: true };
    const annotation = { showarrow: false, font: { size: 11 } };
    const annotations = this.axes.flatMap((a, i) => [
      { ...annotation, x: i, y: 1.04, yanchor: "bottom", text: plotlyText(a.key), font: { size: 12 } },
      ...a.ticks.map(([y, text]) => ({ ...annotation, x: i, y, xanchor: "right", xshift: -4, text: plotlyText(text) })),
    ]);
    return {
      margin: { l: 60, r: 30, t: 30, b: 10 },
      xaxis: { ...hidden, range: [-0.5, this.axes.length - 0.5] },
      yaxis: { ...hidden, range: [-0.05, 1.12] },
      dragmode: "select",
      showlegend: false,
      hovermode: "closest",
      annotations,
      paper_bgcolor: theme.paper_bgcolor,
      plot_bgcolor: theme.plot_bgcolor,
      font: { color: theme["font.color"] },
    };
  }

  /** A box dragged over the chart: it constrains every axis it spans to its height. */
  #select(range) {
    const [left, right] = range.x;
    const [bottom, top] = [Math.max(0, Math.min(...range.y)), Math.min(1, Math.max(...range.y))];
    const next = { ...this.constraints };
    this.axes.forEach((a, i) => {
      if (i >= left && i <= right) next[a.key] = [bottom, top];
    });
    this.#apply(next);
  }

  /** Keep the runs inside every constraint: the others fade; boxes mark the constraints. */
  async #apply(constraints) {
    this.constraints = constraints;
    const keptIndex = this.ids.map((_, run) => this.axes.every((a) => inside(a.positions[run], constraints[a.key])));
    const axisLine = (i) => ({ type: "line", x0: i, x1: i, y0: 0, y1: 1, line: { color: "#888", width: 1 } });
    const box = (i, [low, high]) => ({
      type: "rect",
      x0: i - 0.08,
      x1: i + 0.08,
      y0: low,
      y1: high,
      line: { color: "#d62728", width: 2 },
      fillcolor: "rgba(214, 39, 40, 0.12)",
    });
    const shapes = this.axes.map((_, i) => axisLine(i));
    this.axes.forEach((a, i) => constraints[a.key] && shapes.push(box(i, constraints[a.key])));
    if (this.drawn) {
      await Plotly.restyle(this.div, { opacity: keptIndex.map((kept) => (kept ? 1 : FADED)) });
      await Plotly.relayout(this.div, { shapes, selections: [] });
    }
    const filter = {};
    for (const a of this.axes) if (constraints[a.key]) filter[a.key] = a.toFilter(constraints[a.key]);
    this.onFilter(
      this.ids.filter((_, run) => keptIndex[run]),
      filter,
    );
  }

  clear() {
    if (this.drawn) Plotly.purge(this.div);
    this.drawn = false;
    this.constraints = {};
    this.onFilter(this.ids, {});
  }
}

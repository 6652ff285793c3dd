// Groups of runs drawn as Aim and W&B draw them: each group's mean as a line over a band
// (± one standard deviation, or min–max), from the server's /aggregate answer.
/* global Plotly */

import { PALETTE, PLOT_CONFIG, ThemedChart, baseLayout, plotlyReady, plotlyText } from "./charts.js";
import { element } from "./format.js";
import { ema } from "./smoothing.js";

/** "#1f77b4" at opacity `alpha` as CSS rgba(). */
function withAlpha(hex, alpha) {
  const [r, g, b] = [1, 3, 5].map((at) => parseInt(hex.slice(at, at + 2), 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

/** The band's lower and upper edge of a group: mean ± std, or min and max. */
export function bandEdges(group, band) {
  if (band === "minmax") return [group.min, group.max];
  return [group.mean.map((m, i) => m - group.std[i]), group.mean.map((m, i) => m + group.std[i])];
}

/** Three traces per group: the band's upper edge, its lower edge filled up to it, the mean. */
export function groupTraces(group, index, { band, smoothing }) {
  const color = PALETTE[index % PALETTE.length];
  const smooth = (values) => (smoothing > 0 ? ema(values, smoothing) : values);
  const [low, high] = bandEdges(group, band).map(smooth);
  const runs = group.run_ids.length;
  const edge = { type: "scatter", mode: "lines", x: group.x, line: { width: 0, color }, legendgroup: String(index), showlegend: false, hoverinfo: "skip" };
  return [
    { ...edge, name: `${group.label} high`, y: high },
    { ...edge, name: `${group.label} low`, y: low, fill: "tonexty", fillcolor: withAlpha(color, 0.2) },
    {
      type: "scatter",
      mode: group.x.length > 60 ? "lines" : "lines+markers",
      name: plotlyText(`${group.label} (${runs} run${runs === 1 ? "" : "s"})`),
      x: group.x,
      y: smooth(group.mean),
      line: { color, width: 2 },
      marker: { size: 5, color },
      legendgroup: String(index),
      customdata: group.count,
      hovertemplate: "%{y:.5g} (n=%{customdata})",
    },
  ];
}

export class BandChart extends ThemedChart {
  /** A chart of `answer` (GET /aggregate) with `band` ("std" or "minmax"), `log` and `smoothing`. */
  constructor(container, answer, { title, xTitle, band, log, smoothing }) {
    super(element("div", { className: "chart chart-wide" }));
    this.answer = answer;
    this.look = { title, xTitle, band, log, smoothing };
    this.div.setAttribute("role", "img");
    this.div.setAttribute("aria-label", `Chart of ${title}, runs grouped by ${answer.group_by}`);
    container.append(this.div);
  }

  async draw() {
    await plotlyReady;
    const { title, xTitle, band, log, smoothing } = this.look;
    const traces = this.answer.groups.flatMap((group, i) => groupTraces(group, i, { band, smoothing }));
    const layout = baseLayout({ title, xTitle, log });
    layout.xaxis.tickmode = "auto";
    await Plotly.react(this.div, traces, layout, PLOT_CONFIG);
    this.drawn = true;
  }
}

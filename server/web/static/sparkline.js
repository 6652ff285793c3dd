// A tiny SVG line of a metric's recent values (the runs list shows one per run).

import { toNumber } from "./api.js";
import { formatValue } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 120;
const HEIGHT = 28;
const PAD = 3;

export function sparkline(key, values) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  svg.setAttribute("role", "img");
  const points = values.map(toNumber).map((y, x) => [x, y]).filter(([, y]) => Number.isFinite(y));
  if (!points.length) {
    svg.setAttribute("aria-label", `${key}: no finite values yet`);
    return svg;
  }
  const first = points[0][1];
  const last = points[points.length - 1][1];
  svg.setAttribute("aria-label", `${key} over ${points.length} points, from ${formatValue(first)} to ${formatValue(last)}`);
  const ys = points.map(([, y]) => y);
  const low = Math.min(...ys);
  const span = Math.max(...ys) - low || 1;
  const spanX = Math.max(1, values.length - 1);
  const at = ([x, y]) => [
    PAD + ((WIDTH - 2 * PAD) * x) / spanX,
    HEIGHT - PAD - ((HEIGHT - 2 * PAD) * (y - low)) / span,
  ];
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((p) => at(p).map((v) => v.toFixed(1)).join(",")).join(" "));
  const dot = document.createElementNS(SVG, "circle");
  const [cx, cy] = at(points[points.length - 1]);
  dot.setAttribute("cx", cx.toFixed(1));
  dot.setAttribute("cy", cy.toFixed(1));
  dot.setAttribute("r", "2");
  svg.append(line, dot);
  return svg;
}

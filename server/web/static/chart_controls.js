// The controls shared by every chart page (partials/chart_controls.html): what x counts,
// log scale and smoothing, started from the URL and written back to it.

import { writeView } from "./viewstate.js";

/** The chart controls' view fields and defaults, as the URL holds them (see viewstate.js). */
export const CHART_VIEW = { x: "step", smooth: 0, log: false };

/**
 * Wire the shared chart controls (x-axis, log scale, smoothing) to `apply(change)`, with
 * `change` holding `xMode`, `log` or `smoothing`. The controls start at `view` (from the URL)
 * and each change is written back to the URL. Returns the options they start with.
 */
export function bindChartControls(apply, view = CHART_VIEW) {
  const xSelect = document.getElementById("x-mode");
  const log = document.getElementById("log-scale");
  const smoothing = document.getElementById("smoothing");
  const output = document.getElementById("smoothing-value");
  const known = [...xSelect.options].some((option) => option.value === view.x);
  xSelect.value = known ? view.x : "step";
  log.checked = view.log;
  smoothing.value = String(Math.min(0.99, Math.max(0, view.smooth)));
  output.value = Number(smoothing.value).toFixed(2);
  xSelect.addEventListener("change", () => {
    writeView({ x: xSelect.value }, CHART_VIEW);
    apply({ xMode: xSelect.value });
  });
  log.addEventListener("change", () => {
    writeView({ log: log.checked }, CHART_VIEW);
    apply({ log: log.checked });
  });
  smoothing.addEventListener("input", () => {
    output.value = Number(smoothing.value).toFixed(2);
    apply({ smoothing: Number(smoothing.value) });
  });
  // Into the URL once the slider is let go: browsers refuse a burst of history changes.
  smoothing.addEventListener("change", () => writeView({ smooth: Number(smoothing.value) }, CHART_VIEW));
  return { xMode: xSelect.value, log: log.checked, smoothing: Number(smoothing.value) };
}

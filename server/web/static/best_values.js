// The compare page's best-values table: each metric's best value per run, the best one starred.

import { toNumber } from "./api.js";
import { element, formatValue } from "./format.js";

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

/**
 * A run's value of `key` from its /extremes entry: the best (lowest or highest, by
 * `direction`) or the last one, as a number; null when the run has no such metric.
 */
export function runValue(found, key, which = "best") {
  if (!found) return null;
  const way = which === "best" ? direction(key) : null;
  const value = way ? found[way] : found.last;
  return value === null || value === undefined ? null : toNumber(value);
}

function bestCell(value, isBest) {
  const cell = element("td", { className: "num" });
  if (value === null) {
    cell.append(element("span", { className: "muted", text: "—" }));
    return cell;
  }
  cell.textContent = formatValue(value);
  if (isBest) {
    cell.classList.add("best");
    cell.append(element("span", { text: " ★", title: "best" }));
  }
  return cell;
}

/** Fill `table` with a row per metric of `runs`, from `extremes` (`{run id: {key: found}}`). */
export function showBest(table, runs, extremes) {
  const keys = [...new Set(runs.flatMap((run) => Object.keys(extremes[run.id] || {})))].sort();
  const head = element("tr", {}, element("th", { scope: "col", text: "Metric" }), element("th", { scope: "col", text: "Better" }));
  for (const run of runs) head.append(element("th", { scope: "col", text: `${run.name} #${run.id}` }));
  const rows = keys.map((key) => {
    const way = direction(key);
    const values = runs.map((run) => runValue(extremes[run.id]?.[key], key));
    const numbers = values.filter(Number.isFinite);
    const best = way && numbers.length > 1 ? (way === "min" ? Math.min(...numbers) : Math.max(...numbers)) : null;
    const row = element(
      "tr",
      {},
      element("th", { scope: "row", text: key }),
      element("td", { className: "muted", text: way === "min" ? "lower" : way === "max" ? "higher" : "(last value)" }),
    );
    for (const value of values) row.append(bestCell(value, best !== null && value === best));
    return row;
  });
  table.replaceChildren(
    element("caption", { className: "visually-hidden", text: "Best value of each metric per run" }),
    element("thead", {}, head),
    element("tbody", {}, ...rows),
  );
}

// A page's view (metric, x-axis, smoothing, log scale, grouping, filters) kept in its URL,
// so a copied link opens the same view. Values equal to their default stay out of the URL.

/**
 * The view in the address bar, each field read with its default's type.
 *
 * Example: `readView({ x: "step", smooth: 0, log: false })` on `?x=wall&log=1`
 * gives `{ x: "wall", smooth: 0, log: true }`.
 */
export function readView(defaults) {
  const params = new URLSearchParams(window.location.search);
  const view = { ...defaults };
  for (const [name, fallback] of Object.entries(defaults)) {
    const text = params.get(name);
    if (text === null) continue;
    if (typeof fallback === "boolean") view[name] = text === "1" || text === "true";
    else if (typeof fallback === "number") {
      const number = Number(text);
      if (text !== "" && Number.isFinite(number)) view[name] = number;
    } else view[name] = text;
  }
  return view;
}

/** Write `changes` into the address bar (no new history entry); defaults are dropped. */
export function writeView(changes, defaults) {
  const url = new URL(window.location.href);
  for (const [name, value] of Object.entries(changes)) {
    if (value === null || value === undefined || value === "" || value === defaults[name]) {
      url.searchParams.delete(name);
    } else if (typeof value === "boolean") url.searchParams.set(name, value ? "1" : "0");
    else url.searchParams.set(name, String(value));
  }
  window.history.replaceState(null, "", url);
}

// Small formatting and DOM helpers shared by the pages. Text only: never innerHTML.

export function formatValue(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value === "Infinity" ? "∞" : value === "-Infinity" ? "−∞" : value;
  if (!Number.isFinite(value)) return Number.isNaN(value) ? "NaN" : value > 0 ? "∞" : "−∞";
  if (value === 0) return "0";
  const size = Math.abs(value);
  if (size >= 1e5 || size < 1e-4) return Number(value.toPrecision(4)).toExponential();
  if (Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(5)));
}

export function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** "0.4s", "9.5s", "42s", "3m 05s", "2h 07m": two significant digits below 10 s. */
export function duration(seconds) {
  if (seconds < 9.95) return `${Math.max(0, Number(seconds.toPrecision(2)))}s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = s % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(rest).padStart(2, "0")}s`;
  return `${rest}s`;
}

export function clock(unixSeconds) {
  const date = new Date(unixSeconds * 1000);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour12: false })
    : date.toLocaleString([], { hour12: false, dateStyle: "short", timeStyle: "medium" });
}

export function isoTime(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString();
}

/**
 * Set a <time> element to "Ns ago", with the exact time as its datetime and tooltip;
 * `refreshAgo()` keeps it current.
 */
export function setAgo(timeElement, unixSeconds, now = Date.now() / 1000) {
  if (!unixSeconds) return;
  timeElement.dateTime = isoTime(unixSeconds);
  timeElement.dataset.ago = String(unixSeconds);
  timeElement.title = new Date(unixSeconds * 1000).toLocaleString();
  timeElement.textContent = ago(now - unixSeconds);
}

/** Re-render every "Ns ago" that `setAgo` wrote: call it from the page's one timer. */
export function refreshAgo(now = Date.now() / 1000) {
  for (const time of document.querySelectorAll("time[data-ago]")) {
    time.textContent = ago(now - Number(time.dataset.ago));
  }
}

export function setStatus(badge, status) {
  badge.dataset.status = status;
  badge.textContent = status;
}

/** `element("li", {className: "x", text: "y", dataset: {kind: "z"}}, ...children)` */
export function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { text, dataset, ...rest } = props;
  Object.assign(node, rest);
  if (text !== undefined) node.textContent = text;
  if (dataset) Object.assign(node.dataset, dataset);
  node.append(...children);
  return node;
}

// Server-sent events: one EventSource per page; the browser reconnects by itself and
// sends Last-Event-ID, so the server replays whatever was missed.

const indicator = document.getElementById("live-status");

function show(state, text) {
  if (!indicator) return;
  indicator.dataset.state = state;
  indicator.textContent = text;
}

/**
 * Subscribe to `url`: `onEvent(event)` for unnamed messages (run events),
 * `onRun(run)` for `run` messages (run summaries).
 */
export function subscribe(url, { onEvent, onRun } = {}) {
  const source = new EventSource(url);
  source.addEventListener("open", () => show("live", "live"));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) show("offline", "offline: reload the page");
    else show("reconnecting", "reconnecting…");
  });
  if (onEvent) source.addEventListener("message", (message) => onEvent(JSON.parse(message.data)));
  if (onRun) source.addEventListener("run", (message) => onRun(JSON.parse(message.data)));
  window.addEventListener("pagehide", () => source.close());
  return source;
}

/** Run `flush` once per frame for everything queued meanwhile (and in hidden tabs too). */
export function batcher(flush) {
  let queue = [];
  let scheduled = false;
  const run = () => {
    if (!scheduled) return;
    scheduled = false;
    const items = queue;
    queue = [];
    flush(items);
  };
  return (item) => {
    queue.push(item);
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(run);
    setTimeout(run, 100);
  };
}

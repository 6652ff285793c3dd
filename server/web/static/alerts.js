// Alerts: what the rules raised, newest on top. The notifications list (the board, the rules
// page) long-polls /api/v1/alerts; the run page's list reloads on its stream's `rule_fired`.

import { ApiError, getJSON, pageUrl } from "./api.js";
import { errorText } from "./commands.js";
import { clock, element } from "./format.js";

const WAIT_SECONDS = 25; // each long-poll (the server holds it up to 30 s)
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 60_000;
const MIN_ROUND_MS = 1000; // an empty answer sooner than this waits: never a hot loop
const MAX_SHOWN = 200;

/** Resolve after `ms`, or as soon as `signal` aborts. */
function pause(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/**
 * A list of alerts kept up to date: `new AlertFeed(ids, {runId})` reads the elements
 * `#<ids>-list`, `-empty`, `-status` and (optional) `-count`; then `follow()` long-polls,
 * or `load()` (after `notice(event)`) asks once for what is new.
 */
export class AlertFeed {
  constructor(ids, { runId = null } = {}) {
    this.list = document.getElementById(`${ids}-list`);
    this.emptyNote = document.getElementById(`${ids}-empty`);
    this.status = document.getElementById(`${ids}-status`);
    this.count = document.getElementById(`${ids}-count`);
    this.runId = runId;
    this.last = 0; // the newest alert id shown
    this.controller = null; // the running follow() loop's
    this.loading = null;
    this.again = false;
  }

  #query(wait) {
    return { after: this.last, run_id: this.runId, wait: wait || undefined };
  }

  /** Follow new alerts until the page goes away (and again if it comes back from the cache). */
  follow() {
    const start = () => {
      this.controller = new AbortController();
      this.#loop(this.controller.signal);
    };
    window.addEventListener("pagehide", () => this.controller?.abort());
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) start();
    });
    start();
  }

  async #loop(signal) {
    let retry = FIRST_RETRY_MS;
    let wait = 0; // the first request answers at once: the latest alerts
    while (!signal.aborted) {
      const began = performance.now();
      try {
        const { alerts } = await getJSON("/alerts", this.#query(wait), signal);
        this.#show(alerts);
        this.#say("");
        retry = FIRST_RETRY_MS;
        if (!alerts.length && wait && performance.now() - began < MIN_ROUND_MS) {
          await pause(MIN_ROUND_MS, signal);
        }
        wait = WAIT_SECONDS;
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          this.#say(`New alerts no longer arrive: ${errorText(error)}. Reload the page to sign in again.`, "error");
          return;
        }
        this.#say(`Alerts: ${errorText(error)}; trying again in ${Math.round(retry / 1000)} s.`, "error");
        await pause(retry, signal);
        retry = Math.min(retry * 2, MAX_RETRY_MS);
      }
    }
  }

  /** A run event from the stream: a `rule_fired` one loads what is new. */
  notice(event) {
    if (event.kind === "rule_fired") this.load();
  }

  /** Ask once for the alerts after the newest shown; calls during a load make one more after it. */
  load() {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = getJSON("/alerts", this.#query(0))
      .then(({ alerts }) => {
        this.#show(alerts);
        this.#say("");
      })
      .catch((error) => this.#say(`Could not load the alerts: ${errorText(error)}`, "error"))
      .finally(() => {
        this.loading = null;
        if (this.again) {
          this.again = false;
          this.load();
        }
      });
    return this.loading;
  }

  #say(text, state = "info") {
    if (!this.status) return;
    this.status.dataset.state = state;
    this.status.textContent = text;
  }

  /** Put `alerts` (oldest first, as answered) on top of the list, newest first. */
  #show(alerts) {
    for (const alert of alerts) {
      if (alert.id <= this.last) continue;
      this.list.prepend(this.#item(alert));
      this.last = alert.id;
    }
    while (this.list.children.length > MAX_SHOWN) this.list.lastElementChild.remove();
    this.list.dataset.loaded = "true"; // answered at least once (tests wait for it)
    const shown = this.list.children.length;
    this.emptyNote.hidden = shown > 0;
    if (this.count) this.count.textContent = shown ? `(${shown}${shown === MAX_SHOWN ? "+" : ""})` : "";
  }

  #item(alert) {
    const fired = element("time", {
      text: clock(alert.fired_at),
      dateTime: new Date(alert.fired_at * 1000).toISOString(),
      title: new Date(alert.fired_at * 1000).toLocaleString(),
    });
    // This dashboard's own page, not `run.url`: that is built from the Host the rule was added by.
    const href = pageUrl(`/runs/${alert.run.id}`);
    const run = element("a", { className: "alert-run", href, text: alert.run.name });
    const detail = element(
      "span",
      { className: "detail" },
      run,
      element("span", { className: "muted", text: ` (${alert.run.project}) ` }),
      element("span", { className: "alert-message", text: alert.message }),
    );
    if (alert.done.length) {
      detail.append(element("span", { className: "alert-done muted", text: ` · ${alert.done.join("; ")}` }));
    }
    return element(
      "li",
      { className: "alert", dataset: { alertId: String(alert.id), runId: String(alert.run.id), kind: "rule_fired" } },
      fired,
      element("span", { className: "kind alert-rule", text: alert.rule_name }),
      detail,
    );
  }
}

// The notifications list of the layout (base.html), where the page has one.
if (document.getElementById("notifications-list")) new AlertFeed("notifications").follow();

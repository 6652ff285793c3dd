// The Commands panel: pause / resume, stop after epoch, checkpoint now, set the learning
// rate; and the run's commands, reloaded whenever a `command_*` event arrives on the stream.

import { ApiError, getJSON, postJSON } from "./api.js";
import { clock, element, formatValue } from "./format.js";

const UNSETTLED = new Set(["requested", "delivered"]);
const LABELS = {
  stop: "stop",
  stop_after_epoch: "stop after epoch",
  checkpoint: "checkpoint now",
  set_learning_rate: "set learning rate",
  pause: "pause",
  resume: "resume",
};

/**
 * An API error's `detail` as one sentence: FastAPI's 422 list becomes its messages
 * ("a 'set_learning_rate' command's value must be a finite number > 0, not -1.0").
 */
export function errorText(error) {
  if (!(error instanceof ApiError)) return error.message;
  try {
    const detail = JSON.parse(error.message);
    if (Array.isArray(detail)) {
      return detail.map((item) => String(item?.msg ?? item).replace(/^Value error, /, "")).join("; ");
    }
  } catch {
    // a plain string detail
  }
  return error.message;
}

/** "epoch 3 · step 120", "epoch 3", or "" for a command that has not taken effect. */
function where(command) {
  const parts = [];
  if (command.epoch !== null && command.epoch !== undefined) parts.push(`epoch ${command.epoch}`);
  if (command.step !== null && command.step !== undefined) parts.push(`step ${command.step}`);
  return parts.join(" · ");
}

export class CommandPanel {
  constructor(runId) {
    this.runId = runId;
    const panel = document.getElementById("commands-panel");
    // false when the signed-in token may only read: no controls are rendered, no Cancel.
    this.allowed = panel.dataset.allowed === "true";
    this.controls = document.getElementById("command-controls");
    this.pause = document.getElementById("command-pause");
    this.resume = document.getElementById("command-resume");
    this.rate = document.getElementById("command-lr");
    this.message = document.getElementById("command-message");
    this.table = document.getElementById("command-list");
    this.rows = this.table.tBodies[0];
    this.emptyNote = document.getElementById("command-empty");
    this.run = null;
    this.sending = false;
    this.loading = null; // the list request in flight
    this.again = false; // a reload was asked for while one was in flight
    if (this.controls) this.#bindControls();
  }

  #bindControls() {
    for (const button of this.controls.querySelectorAll("button[data-kind]")) {
      button.addEventListener("click", () => this.send(button.dataset.kind));
    }
    document.getElementById("command-lr-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = this.rate.value.trim();
      // Sent as typed: the server's 422 explains a value that is not a finite number > 0.
      const value = text === "" ? null : Number(text);
      this.send("set_learning_rate", Number.isFinite(value) ? value : text === "" ? null : text);
    });
  }

  /** Show run `run` (its `status`, `ended`): the controls fit a live run's status. */
  update(run) {
    this.run = run;
    if (!this.controls) return;
    this.controls.hidden = Boolean(run.ended);
    this.pause.hidden = run.status === "paused";
    this.resume.hidden = run.status !== "paused";
    this.#setBusy(this.sending);
  }

  /** A run event from the stream: a `command_*` one reloads the list. */
  notice(event) {
    if (typeof event.kind === "string" && event.kind.startsWith("command_")) this.load();
  }

  /** Reload the list; calls during a load make one more load after it. */
  load() {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = getJSON(`/runs/${this.runId}/commands`)
      .then(({ commands }) => this.#render(commands))
      .catch((error) => {
        this.message.textContent = `Could not load the commands: ${errorText(error)}`;
      })
      .finally(() => {
        this.loading = null;
        if (this.again) {
          this.again = false;
          this.load();
        }
      });
    return this.loading;
  }

  /** POST command `kind` (with `value`), then show the answer or its error's detail. */
  async send(kind, value = null) {
    if (this.sending) return;
    this.#setBusy(true);
    this.#say(`Sending “${LABELS[kind] ?? kind}”…`);
    try {
      await postJSON(`/runs/${this.runId}/commands`, { kind, value });
      this.#say(`Sent “${LABELS[kind] ?? kind}”: waiting for the training.`);
      if (kind === "set_learning_rate") this.rate.value = "";
    } catch (error) {
      this.#say(`Could not send “${LABELS[kind] ?? kind}”: ${errorText(error)}`, "error");
    } finally {
      this.#setBusy(false);
      this.load();
    }
  }

  async #cancel(command, button) {
    button.disabled = true;
    try {
      await postJSON(`/runs/${this.runId}/commands/${command.id}/cancel`);
      this.#say(`Cancelled “${LABELS[command.kind] ?? command.kind}”.`);
    } catch (error) {
      this.#say(`Could not cancel: ${errorText(error)}`, "error");
    } finally {
      this.load();
    }
  }

  #say(text, state = "info") {
    this.message.dataset.state = state;
    this.message.textContent = text;
  }

  #setBusy(busy) {
    this.sending = busy;
    if (!this.controls) return;
    for (const control of this.controls.querySelectorAll("button, input")) control.disabled = busy;
  }

  #render(commands) {
    const rows = commands.map((command) => this.#row(command));
    this.rows.replaceChildren(...rows);
    this.table.hidden = rows.length === 0;
    this.emptyNote.hidden = rows.length > 0;
  }

  #row(command) {
    const state = element("span", { className: "command-state", text: command.state });
    const stateCell = element("td", {}, state);
    if (command.detail) stateCell.append(element("span", { className: "command-detail", text: `: ${command.detail}` }));
    const requested = element("time", {
      text: clock(command.requested_at),
      dateTime: new Date(command.requested_at * 1000).toISOString(),
    });
    const action = element("td");
    if (this.allowed && UNSETTLED.has(command.state)) {
      const cancel = element("button", { type: "button", className: "command-cancel", text: "Cancel" });
      cancel.addEventListener("click", () => this.#cancel(command, cancel));
      action.append(cancel);
    }
    return element(
      "tr",
      { dataset: { commandId: String(command.id), kind: command.kind, state: command.state } },
      element("td", { className: "command-kind", text: LABELS[command.kind] ?? command.kind }),
      element("td", { className: "num", text: command.value === null ? "" : formatValue(command.value) }),
      stateCell,
      element("td", { text: command.requested_by ?? "" }),
      element("td", {}, requested),
      element("td", { text: where(command) }),
      action,
    );
  }
}

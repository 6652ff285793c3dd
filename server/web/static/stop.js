// The Stop button: a confirmation <dialog>, then requested → acknowledged → stopped.

import { postJSON } from "./api.js";

const STEPS = ["requested", "acknowledged", "stopped"];
const MESSAGES = {
  requested: "Stop requested: waiting for the training to notice…",
  acknowledged: "The training is stopping after its current batch…",
  stopped: "Training stopped.",
};

export class StopControl {
  constructor(runId) {
    this.runId = runId;
    this.button = document.getElementById("stop-button");
    // false when the signed-in token may only read: the button stays disabled.
    this.allowed = this.button.dataset.allowed !== "false";
    this.dialog = document.getElementById("stop-dialog");
    this.reason = document.getElementById("stop-reason");
    this.steps = document.getElementById("stop-steps");
    this.message = document.getElementById("stop-message");
    this.state = this.steps.dataset.state;
    this.run = null; // {status, ended} as the server last sent them
    this.button.addEventListener("click", () => this.#ask());
    this.dialog.addEventListener("close", () => {
      if (this.dialog.returnValue === "confirm") this.#request(this.reason.value.trim());
    });
    this.reason.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.dialog.close("confirm");
      }
    });
  }

  #ask() {
    this.reason.value = "";
    this.dialog.returnValue = "";
    this.dialog.showModal();
  }

  async #request(reason) {
    this.button.disabled = true;
    this.message.textContent = "Requesting a stop…";
    try {
      const control = await postJSON(`/runs/${this.runId}/stop`, { reason: reason || null });
      this.update(control.state, this.run);
    } catch (error) {
      this.message.textContent = `Could not stop: ${error.message}`;
      this.update(this.state, this.run);
    }
  }

  /**
   * Show stop state `state` of `run` (its `status`, and whether it has `ended`, as the
   * server sends them: an ended run cannot be stopped). A stop only moves forward,
   * so an answer older than what is shown (our POST's, arriving after the live updates
   * that followed it) is ignored.
   */
  update(state, run) {
    if (STEPS.indexOf(state) < STEPS.indexOf(this.state)) return;
    this.state = state;
    this.run = run;
    const stoppable = Boolean(run) && !run.ended;
    this.steps.dataset.state = state;
    const reached = STEPS.indexOf(state);
    for (const item of this.steps.children) {
      item.classList.toggle("done", STEPS.indexOf(item.dataset.step) <= reached);
      if (item.dataset.step === state) item.setAttribute("aria-current", "step");
      else item.removeAttribute("aria-current");
    }
    this.button.disabled = !this.allowed || state !== "none" || !stoppable;
    if (MESSAGES[state] && state !== "stopped" && run?.ended) {
      this.message.textContent = `The run ended (${run.status}) before the stop took effect.`;
    } else if (MESSAGES[state]) this.message.textContent = MESSAGES[state];
    else if (!stoppable) this.message.textContent = "";
  }
}

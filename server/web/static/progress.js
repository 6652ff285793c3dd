// Progress of the training: epochs done of planned, the current epoch's batches (when the
// RemoteMonitor sends batch events), and an ETA from recent epoch or batch times.

import { duration } from "./format.js";

const KEEP = 20;

export class Progress {
  constructor() {
    this.epochBar = document.getElementById("epoch-progress");
    this.epochText = document.getElementById("epoch-text");
    this.batchLine = document.getElementById("batch-line");
    this.batchBar = document.getElementById("batch-progress");
    this.batchText = document.getElementById("batch-text");
    this.eta = document.getElementById("eta");
    this.run = null;
    this.params = {};
    this.epochTimes = []; // [epoch, time] of recent epoch ends
    this.batches = []; // {step, epoch, time} of recent batch events
    this.began = null;
    this.estimate = null; // {seconds, at}: remaining seconds when last computed (browser clock)
  }

  setRun(run) {
    this.run = run;
    if (run.params && Object.keys(run.params).length) this.params = run.params;
    this.#estimate();
  }

  trainBegan(time, params) {
    this.began = time;
    if (params && Object.keys(params).length) this.params = params;
  }

  epochEnded(epoch, time) {
    this.epochTimes.push([epoch, time]);
    if (this.epochTimes.length > KEEP) this.epochTimes.shift();
  }

  batchEnded(step, epoch, time) {
    this.batches.push({ step, epoch, time });
    if (this.batches.length > KEEP) this.batches.shift();
  }

  /** The epochs planned, as the server read them from the training's parameters. */
  planned() {
    return this.run?.epochs ?? null;
  }

  secondsPerEpoch() {
    const times = this.epochTimes.slice(-6);
    if (times.length >= 2) {
      const [first, last] = [times[0], times[times.length - 1]];
      if (last[0] > first[0]) return (last[1] - first[1]) / (last[0] - first[0]);
    }
    if (times.length === 1 && this.began !== null) return (times[0][1] - this.began) / (times[0][0] + 1);
    return null;
  }

  secondsPerBatch() {
    if (this.batches.length < 2) return null;
    const first = this.batches[0];
    const last = this.batches[this.batches.length - 1];
    return last.step > first.step ? (last.time - first.time) / (last.step - first.step) : null;
  }

  #estimate() {
    const planned = this.planned();
    if (!this.run || this.run.status !== "running" || !planned) {
      this.estimate = null;
      return;
    }
    const steps = this.params.steps;
    const last = this.batches[this.batches.length - 1];
    const perBatch = this.secondsPerBatch();
    let seconds = null;
    if (steps && last && perBatch) seconds = Math.max(0, planned * steps - last.step) * perBatch;
    else {
      const perEpoch = this.secondsPerEpoch();
      if (perEpoch !== null) seconds = Math.max(0, planned - this.run.epochs_done) * perEpoch;
    }
    this.estimate = seconds === null ? null : { seconds, at: Date.now() / 1000 };
  }

  /** Recompute from new data and redraw. */
  update() {
    this.#estimate();
    this.render();
  }

  render() {
    if (!this.run) return;
    const planned = this.planned();
    const done = this.run.epochs_done ?? 0;
    if (planned) {
      this.epochBar.max = planned;
      this.epochBar.value = Math.min(done, planned);
      this.epochText.textContent = `${done} / ${planned} epochs`;
    } else {
      this.epochBar.removeAttribute("value");
      this.epochText.textContent = `${done} epochs`;
    }
    this.epochBar.hidden = !planned && this.run.status !== "running";
    const steps = this.params.steps;
    const last = this.batches[this.batches.length - 1];
    const running = this.run.status === "running";
    this.batchLine.hidden = !(running && steps && last);
    if (!this.batchLine.hidden) {
      const within = Math.min(steps, Math.max(0, last.step - last.epoch * steps));
      this.batchBar.max = steps;
      this.batchBar.value = within;
      this.batchText.textContent = `batch ${within} / ${steps} of epoch ${last.epoch + 1}`;
    }
    this.eta.textContent = this.#etaText();
  }

  #etaText() {
    const run = this.run;
    if (run.ended) {
      const took = run.ended_at && run.created_at ? ` after ${duration(run.ended_at - run.created_at)}` : "";
      return `Ended: ${run.status}${took}.`;
    }
    if (run.status === "lost") return "The client has gone silent.";
    if (!this.estimate) return this.planned() ? "ETA: after the first epochs" : "";
    const left = this.estimate.seconds - (Date.now() / 1000 - this.estimate.at);
    const perEpoch = this.secondsPerEpoch();
    const pace = perEpoch ? ` · ${duration(perEpoch)} per epoch` : "";
    return `ETA ${duration(Math.max(0, left))}${pace}`;
  }
}

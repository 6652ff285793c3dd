// The run's events timeline: checkpoints, LR changes, early stop, remote stop, NaN, ...

import { clock, element, formatValue } from "./format.js";

export const METRIC_KINDS = new Set(["epoch_end", "batch_end", "metrics"]);

const LABELS = {
  train_begin: "training started",
  train_end: "training ended",
  checkpoint_saved: "checkpoint saved",
  early_stop: "early stop",
  lr_changed: "learning rate",
  nan: "NaN",
  restored: "resumed",
  stop_requested: "stop requested",
  stop_acknowledged: "stop acknowledged",
  lost: "client silent",
  warning: "warning",
  command_requested: "command sent",
  command_applied: "command applied",
  command_refused: "command refused",
  command_cancelled: "command cancelled",
  rule_fired: "rule fired",
  renamed: "renamed",
  tagged: "tags",
  noted: "note",
  archived: "archived",
  unarchived: "restored to the list",
};

const COMMAND = (d) => `${(d.kind ?? "?").replaceAll("_", " ")}${d.value !== null && d.value !== undefined ? ` ${formatValue(d.value)}` : ""}`;

const BY = (d) => (d.by ? ` by ${d.by}` : "");

const DESCRIBE = {
  train_begin: (d) => `${d.epochs ?? "?"} epochs × ${d.steps ?? "?"} steps`,
  train_end: (d) => `status ${d.status ?? "?"}${d.error ? `: ${d.error}` : ""}`,
  checkpoint_saved: (d) =>
    `${d.path ?? ""}${d.monitor ? ` (${d.monitor} = ${formatValue(d.value)})` : ""}`,
  early_stop: (d) =>
    `${d.monitor ?? "monitor"} best ${formatValue(d.best)}${d.restored_weights ? ", best weights restored" : ""}`,
  lr_changed: (d) =>
    `${formatValue(d.old)} → ${formatValue(d.new)}${d.optimizer ? ` (${d.optimizer})` : ""}`,
  nan: (d) => `non-finite loss at batch ${d.batch ?? "?"}`,
  restored: (d) => `from the backup of epoch ${d.epoch ?? "?"}`,
  stop_requested: (d) => (d.reason ? `reason: ${d.reason}` : "no reason given"),
  stop_acknowledged: () => "the training saw the request and is stopping",
  lost: (d) => `no news for ${d.silent_seconds ?? "?"} s`,
  warning: (d) => d.message ?? "",
  command_requested: (d) => `${COMMAND(d)}${d.by ? ` by ${d.by}` : ""}${d.reason ? ` (${d.reason})` : ""}`,
  command_applied: (d) => `${COMMAND(d)}${d.step !== null && d.step !== undefined ? ` at step ${d.step}` : ""}${d.detail ? `: ${d.detail}` : ""}`,
  command_refused: (d) => `${COMMAND(d)}: ${d.detail ?? "no reason given"}`,
  command_cancelled: (d) => COMMAND(d),
  renamed: (d) => `${d.from ?? "?"} → ${d.to ?? "?"}${BY(d)}`,
  tagged: (d) =>
    `${(d.added ?? []).map((t) => `+${t}`).concat((d.removed ?? []).map((t) => `−${t}`)).join(" ")}${BY(d)}`,
  noted: (d) => `${d.chars ? `${d.chars} characters` : "note removed"}${BY(d)}`,
  archived: (d) => `hidden from the runs list${BY(d)}`,
  unarchived: (d) => `shown in the runs list again${BY(d)}`,
  rule_fired: (d) => `${d.rule_name ?? "a rule"}: ${d.message ?? ""}${d.done?.length ? ` → ${d.done.join(", ")}` : ""}`,
};

function describe(event) {
  const data = event.data || {};
  const text = DESCRIBE[event.kind] ? DESCRIBE[event.kind](data) : JSON.stringify(data).slice(0, 300);
  return event.epoch !== null && event.epoch !== undefined ? `epoch ${event.epoch} · ${text}` : text;
}

export class Timeline {
  constructor(list, emptyNote) {
    this.list = list;
    this.emptyNote = emptyNote;
    this.seen = new Set();
  }

  /** Add an event (newest first); metric events and events already shown are ignored. */
  add(event) {
    if (METRIC_KINDS.has(event.kind) || this.seen.has(event.id)) return;
    this.seen.add(event.id);
    const time = element("time", { text: clock(event.time), dateTime: new Date(event.time * 1000).toISOString() });
    const item = element(
      "li",
      { dataset: { kind: event.kind } },
      time,
      element("span", { className: "kind", text: LABELS[event.kind] ?? event.kind }),
      element("span", { className: "detail", text: describe(event) }),
    );
    this.list.prepend(item);
    this.emptyNote.hidden = true;
  }
}

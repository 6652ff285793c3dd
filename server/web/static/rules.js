// The rules page: the form that adds a rule (its 422 shown by the field it names), Remove,
// and each rule's webhook delivery log for admins. The notifications list is alerts.js'.

import { ApiError, deleteJSON, getJSON, pageUrl, postJSON } from "./api.js";
import { errorText } from "./commands.js";
import { clock, element } from "./format.js";

const panel = document.getElementById("rules-panel");
const table = document.getElementById("rules-table");
const emptyNote = document.getElementById("rules-empty");
const message = document.getElementById("rules-message");

function say(text, state = "info") {
  message.dataset.state = state;
  message.textContent = text;
}

/** A number field as sent: empty is left out, a number as a number, anything else as typed
 * (the server's 422 then names the field). */
function numberOrText(text) {
  const trimmed = text.trim();
  if (trimmed === "") return undefined;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : trimmed;
}

/** The fields of `box` that are in use (not in a hidden label) as `{name: value}`. */
function shownFields(box) {
  const fields = {};
  for (const control of box.querySelectorAll("input, select")) {
    if (control.closest("label")?.hidden) continue;
    const value = control.tagName === "SELECT" ? control.value : numberOrText(control.value);
    if (value !== undefined) fields[control.name] = value;
  }
  return fields;
}

class RuleForm {
  constructor(form) {
    this.form = form;
    this.kind = document.getElementById("rule-kind");
    this.actions = document.getElementById("rule-action-list");
    this.errors = document.getElementById("rule-errors");
    this.submit = document.getElementById("rule-submit");
    this.kind.addEventListener("change", () => this.#showKind());
    document.getElementById("add-webhook").addEventListener("click", () => this.addAction("webhook").focus());
    document.getElementById("add-command").addEventListener("click", () => this.addAction("command").focus());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.#showKind();
    // "Watch this run" (a metric given): stop the run when it goes NaN; else notify a webhook.
    this.addAction(form.dataset.watch === "true" ? "command" : "webhook");
  }

  #showKind() {
    for (const label of this.form.querySelectorAll("label[data-kinds]")) {
      label.hidden = !label.dataset.kinds.split(" ").includes(this.kind.value);
    }
  }

  /** Add an action row of `kind` ("webhook" or "command"); return its first field. */
  addAction(kind) {
    const row = document.getElementById(`${kind}-action`).content.firstElementChild.cloneNode(true);
    row.querySelector(".action-remove").addEventListener("click", () => {
      row.remove();
      this.#numberActions();
    });
    const command = row.querySelector("select[name=command]");
    if (command) {
      const showValue = () => {
        for (const label of row.querySelectorAll("label[data-commands]")) {
          label.hidden = !label.dataset.commands.split(" ").includes(command.value);
        }
      };
      command.addEventListener("change", showValue);
      showValue();
    }
    this.actions.append(row);
    this.#numberActions();
    return row.querySelector("input, select");
  }

  #numberActions() {
    [...this.actions.children].forEach((row, index) => {
      row.dataset.index = String(index);
      row.setAttribute("aria-label", `Action ${index + 1}: ${row.dataset.kind}`);
    });
  }

  /** The POST body: `{name, project?, condition, actions}` from the fields in use. */
  body() {
    const { name = "", project = "", kind, ...condition } = shownFields(this.form.querySelector(".filters"));
    const actions = [...this.actions.children].map((row) => ({ kind: row.dataset.kind, ...shownFields(row) }));
    const rule = { name: String(name), condition: { kind, ...condition }, actions };
    if (String(project) !== "") rule.project = String(project);
    return rule;
  }

  async send() {
    this.#clearErrors();
    this.submit.disabled = true;
    try {
      const rule = await postJSON("/rules", this.body());
      // The list is drawn by the server, in the command line's words: show it with the new rule.
      window.location.assign(`${pageUrl("/rules")}?added=${rule.id}#rule-${rule.id}`);
    } catch (error) {
      this.#showErrors(error);
      this.submit.disabled = false;
    }
  }

  #clearErrors() {
    this.errors.hidden = true;
    this.errors.replaceChildren();
    for (const field of this.form.querySelectorAll("[aria-invalid]")) {
      field.removeAttribute("aria-invalid");
      field.removeAttribute("aria-describedby");
    }
  }

  /** Show a 422's problems each with the field it names (marked invalid), else the error. */
  #showErrors(error) {
    let problems = null;
    if (error instanceof ApiError && error.status === 422) {
      try {
        problems = JSON.parse(error.message);
      } catch {
        // a plain string detail
      }
    }
    if (!Array.isArray(problems)) {
      this.errors.append(element("p", { text: `Could not add the rule: ${errorText(error)}` }));
    } else {
      for (const problem of problems) {
        const field = this.#fieldAt(problem.loc ?? []);
        const text = String(problem.msg ?? problem).replace(/^Value error, /, "");
        const label = field ? field.closest("label").firstChild.textContent.trim() : (problem.loc ?? []).slice(1).join(" → ");
        const where = field?.closest(".rule-action") ? ` (action ${Number(field.closest(".rule-action").dataset.index) + 1})` : "";
        this.errors.append(element("p", { className: "rule-error", text: `${label}${where}: ${text}` }));
        if (field) {
          field.setAttribute("aria-invalid", "true");
          field.setAttribute("aria-describedby", "rule-errors");
        }
      }
      this.form.querySelector("[aria-invalid]")?.focus();
    }
    this.errors.hidden = false;
  }

  /** The form field a 422's `loc` names: ["body", "actions", 0, "webhook", "url"] → action
   * 1's URL; ["body", "condition", "above", "value"] → the condition's value. */
  #fieldAt(loc) {
    const [, part, index] = loc;
    let box = this.form.querySelector(".filters");
    if (part === "actions" && Number.isInteger(index)) box = this.actions.children[index];
    if (!box) return null;
    for (const name of [...loc].reverse()) {
      if (typeof name !== "string") continue;
      const field = box.querySelector(`[name="${CSS.escape(name)}"]`);
      if (field && !field.closest("label").hidden) return field;
    }
    return null;
  }
}

/** DELETE a rule; its row goes, or the server's refusal is said. */
async function removeRule(row, button) {
  const name = row.querySelector(".rule-name").textContent;
  if (!window.confirm(`Remove the rule “${name}”? Its alerts and delivery log go with it.`)) return;
  button.disabled = true;
  try {
    await deleteJSON(`/rules/${row.dataset.ruleId}`);
    document.getElementById(`deliveries-${row.dataset.ruleId}`)?.remove();
    row.remove();
    const left = table.tBodies[0].rows.length;
    table.hidden = left === 0;
    emptyNote.hidden = left > 0;
    say(`Removed “${name}”.`);
  } catch (error) {
    button.disabled = false;
    say(`Could not remove “${name}”: ${errorText(error)}`, "error");
  }
}

function deliveryTable(deliveries) {
  if (!deliveries.length) return element("p", { className: "empty", text: "No webhook posts yet." });
  const head = ["Posted to", "Run", "State", "Attempts", "Last status", "Last error", "Created"];
  return element(
    "table",
    { className: "commands-table deliveries-table" },
    element("thead", {}, element("tr", {}, ...head.map((text) => element("th", { scope: "col", text })))),
    element(
      "tbody",
      {},
      ...deliveries.map((delivery) =>
        element(
          "tr",
          { dataset: { deliveryId: String(delivery.id), state: delivery.state } },
          element("td", { text: delivery.url }),
          element("td", {}, element("a", { href: pageUrl(`/runs/${delivery.run_id}`), text: `run ${delivery.run_id}` })),
          element("td", { className: "command-state", text: delivery.state }),
          element("td", { className: "num", text: String(delivery.attempts) }),
          element("td", { className: "num", text: delivery.last_status === null ? "" : String(delivery.last_status) }),
          element("td", { text: delivery.last_error ?? "" }),
          element("td", { text: clock(delivery.created_at) }),
        ),
      ),
    ),
  );
}

/** Show (or hide again) the rule's webhook delivery log, read when asked for. */
async function toggleDeliveries(row, button) {
  const id = `deliveries-${row.dataset.ruleId}`;
  const shown = document.getElementById(id);
  if (shown) {
    shown.remove();
    button.setAttribute("aria-expanded", "false");
    return;
  }
  button.disabled = true;
  try {
    const { deliveries } = await getJSON(`/rules/${row.dataset.ruleId}/deliveries`);
    const cell = element("td", { colSpan: row.cells.length }, deliveryTable(deliveries));
    row.after(element("tr", { id, className: "deliveries-row" }, cell));
    button.setAttribute("aria-expanded", "true");
  } catch (error) {
    say(`Could not load the deliveries: ${errorText(error)}`, "error");
  } finally {
    button.disabled = false;
  }
}

for (const row of table.tBodies[0].rows) {
  row.querySelector(".rule-remove")?.addEventListener("click", (event) => removeRule(row, event.currentTarget));
  row.querySelector(".rule-deliveries")?.addEventListener("click", (event) => toggleDeliveries(row, event.currentTarget));
}
const added = new URLSearchParams(window.location.search).get("added");
if (added && document.getElementById(`rule-${added}`)) {
  document.getElementById(`rule-${added}`).classList.add("run-row", "fresh");
  say("Rule added: it watches the runs from now on.");
  window.history.replaceState(null, "", `${pageUrl("/rules")}${window.location.hash}`); // a reload says it once
}
const form = document.getElementById("rule-form");
if (form) new RuleForm(form);
panel.dataset.ready = "true";

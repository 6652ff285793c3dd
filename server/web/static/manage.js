// The run page's Manage block: rename, tags, the note (Markdown the server renders safely),
// archive / restore, delete. Every change, made here or anywhere else, shows live.

import { ApiError, deleteJSON, getJSON, pageUrl, patchJSON } from "./api.js";
import { element } from "./format.js";

const runId = Number(document.body.dataset.runId);
let run = JSON.parse(document.body.dataset.run);

const panel = document.getElementById("manage-panel");
const message = document.getElementById("manage-message");
const heading = document.getElementById("run-name");
const meta = document.querySelector(".run-meta");
const archivedBadge = document.getElementById("manage-archived");
const noteView = document.getElementById("manage-note-view");
const noteEmpty = document.getElementById("manage-note-empty");
const nameInput = document.getElementById("manage-name");
const tagsInput = document.getElementById("manage-tags");
const noteInput = document.getElementById("manage-note");
const archiveButton = document.getElementById("manage-archive");
const deleteButton = document.getElementById("manage-delete");

/** A 422's field errors, or any other refusal, as one sentence. */
function why(error) {
  const detail = error instanceof ApiError ? error.detail : null;
  if (Array.isArray(detail)) return detail.map((item) => `${item.loc?.slice(1).join(".")}: ${item.msg}`).join("; ");
  return error.message;
}

async function change(changes, done) {
  message.textContent = "Saving…";
  try {
    show(await patchJSON(`/runs/${runId}`, changes));
    message.textContent = done;
  } catch (error) {
    message.textContent = `Could not save: ${why(error)}`;
  }
}

/** The note as the server rendered it (raw HTML in it escaped, no scripts, no images). */
function showNote(html) {
  noteView.innerHTML = html ?? ""; // server-made HTML, never the user's text as such
  noteEmpty.hidden = Boolean(html);
}

/** Show `next` (a run summary or detail): name, tags, archived, note; fields being edited stay. */
function show(next) {
  const noteChanged = next.note !== run.note;
  run = { ...run, ...next };
  heading.textContent = run.name;
  document.title = `${run.name} · Callboard`;
  for (const tag of meta.querySelectorAll(":scope > .tag")) tag.remove();
  const badge = meta.firstElementChild;
  badge.after(...run.tags.map((tag) => element("span", { className: "tag", text: tag })));
  archivedBadge.hidden = !run.archived;
  panel.dataset.archived = String(run.archived);
  if (archiveButton) archiveButton.textContent = run.archived ? "Restore" : "Archive";
  for (const [input, value] of [
    [nameInput, run.name],
    [tagsInput, run.tags.join(", ")],
    [noteInput, run.note ?? ""],
  ]) {
    if (input && document.activeElement !== input) input.value = value;
  }
  if ("note_html" in next) showNote(next.note_html);
  else if (noteChanged) getJSON(`/runs/${runId}`).then((detail) => showNote(detail.note_html), () => {});
}

/** A run page whose run was deleted (here or elsewhere) says so and offers nothing more. */
async function checkGone() {
  try {
    await getJSON(`/runs/${runId}`);
  } catch (error) {
    if (error.status !== 404) return;
    panel.dataset.deleted = "true";
    message.textContent = "This run was deleted.";
    for (const control of panel.querySelectorAll("button, input, textarea")) control.disabled = true;
  }
}

document.getElementById("manage-name-form")?.addEventListener("submit", (event) => {
  event.preventDefault();
  change({ name: nameInput.value }, "Renamed.");
});
document.getElementById("manage-tags-form")?.addEventListener("submit", (event) => {
  event.preventDefault();
  const tags = [...new Set(tagsInput.value.split(",").map((tag) => tag.trim()).filter(Boolean))];
  change({ tags }, "Tags saved.");
});
document.getElementById("manage-note-form")?.addEventListener("submit", (event) => {
  event.preventDefault();
  change({ note: noteInput.value.trim() ? noteInput.value : null }, "Note saved.");
});
archiveButton?.addEventListener("click", () => {
  const archived = !run.archived;
  change({ archived }, archived ? "Archived: hidden from the runs list until restored." : "Restored to the runs list.");
});
deleteButton?.addEventListener("click", async () => {
  if (!window.confirm(`Delete “${run.name}” and all its data for good? This cannot be undone.`)) return;
  message.textContent = "Deleting…";
  try {
    await deleteJSON(`/runs/${runId}`);
    window.location.assign(pageUrl("/"));
  } catch (error) {
    message.textContent = `Could not delete: ${why(error)}`;
  }
});

// The run page's one stream (run.js) brings the run's changes (`show`) and its errors
// (`checkGone`): a second stream per page would hold a second of the browser's six
// connections to the server, and three open run pages would stall a fourth page.
export { checkGone, show as showRunChange };
panel.dataset.ready = "true";

// Metric families: a chart per family (loss with val_loss, batch/acc with batch/val_acc),
// in a stable order (loss first, learning rate last, per-batch charts after per-epoch ones).

/** "val_loss" → "loss", "batch/val_acc" → "batch/acc", "lr" → "learning_rate". */
export function familyOf(key) {
  let prefix = "";
  let name = key;
  if (name.startsWith("batch/")) {
    prefix = "batch/";
    name = name.slice(6);
  }
  if (name.startsWith("val_")) name = name.slice(4);
  if (name === "lr") name = "learning_rate";
  return prefix + name;
}

export function isValidation(key) {
  return key.replace(/^batch\//, "").startsWith("val_");
}

export function familyTitle(family) {
  const batch = family.startsWith("batch/");
  const name = (batch ? family.slice(6) : family).replaceAll("_", " ");
  return batch ? `${name} (per batch)` : name;
}

function familyRank(family) {
  const name = family.replace(/^batch\//, "");
  const rank = name === "loss" ? 0 : name === "learning_rate" ? 2 : 1;
  return (family.startsWith("batch/") ? 10 : 0) + rank;
}

export function compareFamilies(a, b) {
  return familyRank(a) - familyRank(b) || a.localeCompare(b);
}

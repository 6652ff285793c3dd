"""Before and after: the figures of docs/benchmarks.md against a new run's, and merging them.

`sections(markdown)` cuts a benchmarks page into its `## ` sections;
`changes(old, new)` pairs every figure of a new section with the same figure
(same section, table, row and column) in the old page; `merge(old, new)`
replaces the sections a run measured and keeps the others.
"""

import re

NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
NOT_FIGURES = ("target", "holds", "peer")  # columns that state goals, not measurements


def section_key(heading):
    """What names a section across runs: its heading up to a `(` or `:` (sizes may change).

    Example:
        >>> section_key("## Client overhead (1000-step epoch, 11 rounds)")
        'Client overhead'
    """
    return re.split(r"[(:]", heading.removeprefix("## "), maxsplit=1)[0].strip()


def sections(markdown):
    """`{key: text}` of each `## ` section, in page order (the text before the first: `""`)."""
    found, key, lines = {}, "", []
    for line in markdown.splitlines(keepends=True):
        if line.startswith("## "):
            found[key] = "".join(lines)
            key, lines = section_key(line.strip()), []
        lines.append(line)
    found[key] = "".join(lines)
    return found


def merge(old, new):
    """`old` page with `new`'s sections: the same section replaced in place, a new one
    placed after the section the run measured before it (else at the end)."""
    merged = sections(old)
    merged.pop("", None)
    order = list(merged)
    after = None
    for key, text in sections(new).items():
        if not key:
            continue
        if key not in merged:
            order.insert(order.index(after) + 1 if after in order else len(order), key)
        merged[key] = text.rstrip("\n") + "\n\n"
        after = key
    return "".join(merged[key] for key in order).rstrip("\n") + "\n"


def figures(section):
    """`{(table, row, column): cell}` of the numeric cells of a section's tables."""
    found = {}
    table, columns, seen = -1, None, set()
    for line in section.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if columns is None:
            table, columns, seen = table + 1, cells, set()
            continue
        if set(line) <= set("|-: "):
            continue
        row = cells[0] if cells[0] not in seen else " / ".join(cells[:2])
        seen.add(row)
        for column, cell in zip(columns[1:], cells[1:], strict=False):
            if column.lower() not in NOT_FIGURES and NUMBER.search(cell):
                found[table, row, column] = cell
    return found


def value(cell):
    return float(NUMBER.search(cell).group().replace(",", ""))


def changes(old, new):
    """Rows `(section, row, column, before, now, change)` for each figure in both pages."""
    before = sections(old)
    rows = []
    for key, text in sections(new).items():
        if not key or key not in before:
            continue
        old_figures = figures(before[key])
        for (table, row, column), cell in figures(text).items():
            was = old_figures.get((table, row, column))
            if was is None:
                continue
            change = f"{value(cell) / value(was) - 1:+.0%}" if value(was) else ""
            rows.append((key, row, column, was, cell, change))
    return rows


def changes_table(old, new):
    """`changes` as one markdown table (empty text when no figure is in both)."""
    rows = changes(old, new)
    if not rows:
        return ""
    lines = ["| benchmark | measure | figure | before | now | change |", "|---" * 6 + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"

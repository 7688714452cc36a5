"""The experiments table (the paper's Table 3 on our runs): rows from `dvc exp show --json`, as markdown and HTML."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from damc_core.gallery import STYLE, number_text, relative_url
from damc_core.gallery_charts import escape_attribute, escape_text
from damc_core.staging import staged_file

METRICS_FILE = "reports/metrics.json"
"""The evaluate stage's metrics, as `dvc exp show` names the file."""
PARAMS_FILE = "params.yaml"
"""The params file holding `fusion.mode` and `fusion.dim`."""
SETTLED_STATES = ("success",)
"""Experiment states whose metrics are their own; a queued, running or failed one shows none (they would be stale)."""

PAPER_TABLE_3: dict[str, dict[str, Any]] = {
    "content": {"method": "Content Features Only", "LMD": 3.331, "Sync": 4.417},
    "dynamic": {"method": "Dynamic Features Only", "LMD": 2.976, "Sync": 6.624},
    "concat": {"method": "Concatenation", "LMD": 6.129, "Sync": 3.571},
    "cross_attention": {"method": "Cross-Attention", "LMD": 2.911, "Sync": 6.697},
    "csfm": {"method": "Ours (CSFM)", "LMD": 2.718, "Sync": 7.589},
}
"""The DAMC paper's Table 3 as reported there, by our `fusion.mode`; Sync is LSE-C. Not reproduced here."""


class ExperimentsError(ValueError):
    """`dvc exp show --json` output that is not shaped as expected."""


@dataclass(frozen=True)
class Value:
    """One table cell: a number, or None and why."""

    value: float | None
    reason: str | None


@dataclass(frozen=True)
class ExperimentRow:
    """One experiment (or the workspace, or a baseline commit) and one subject: its fusion settings and metrics."""

    experiment: str
    """The experiment's name; the branch or short commit of a baseline; "workspace"."""
    rev: str
    """Its commit ("workspace" for the workspace)."""
    kind: str
    """"workspace", "baseline" or "experiment"."""
    state: str
    """"success", "queued", "running", "failed", or "error" when dvc could not read it."""
    subject: str | None
    """The subject the metrics are of; None when there are no metrics."""
    fusion_mode: str | None
    fusion_dim: int | None
    psnr: Value
    lmd: Value
    lse_c: Value
    expert_confidence: Value
    """Our expert's confidence on the validation renders."""
    tts_expert_confidence: Value
    """Our expert's confidence, mean over the TTS-driven renders (None unless every clip has one)."""


COLUMNS: tuple[tuple[str, str], ...] = (
    ("PSNR \u2191", "psnr"),
    ("LMD \u2193", "lmd"),
    ("Sync (LSE-C) \u2191", "lse_c"),
    ("expert conf. val \u2191", "expert_confidence"),
    ("expert conf. TTS \u2191", "tts_expert_confidence"),
)
"""(header, ExperimentRow field) of the metric columns."""


def experiment_rows(
    shown: Sequence[Mapping[str, Any]], metrics_file: str = METRICS_FILE, params_file: str = PARAMS_FILE
) -> list[ExperimentRow]:
    """The table's rows, in `dvc exp show`'s order: each baseline (and the workspace), then its experiments (the tip
    of each); one row per subject in the metrics file, or one row with every value None and the reason."""
    if not isinstance(shown, list):
        raise ExperimentsError(f"`dvc exp show --json` output must be a list of revisions, got {type(shown).__name__}")
    rows: list[ExperimentRow] = []
    for baseline in shown:
        rev = _field(baseline, "rev", "a revision")
        if rev == "workspace":
            rows += _rows(baseline, "workspace", "workspace", "success", metrics_file, params_file)
        else:
            rows += _rows(baseline, baseline.get("name") or rev[:7], "baseline", "success", metrics_file, params_file)
        for experiment in baseline.get("experiments") or []:
            revs = _field(experiment, "revs", f"an experiment of {rev}")
            if not revs:
                continue
            tip = revs[0]
            name = experiment.get("name") or tip.get("name") or _field(tip, "rev", "an experiment")[:7]
            state = (experiment.get("executor") or {}).get("state") or "success"
            rows += _rows(tip, name, "experiment", state, metrics_file, params_file)
    return rows


def _rows(entry: Mapping[str, Any], name: str, kind: str, state: str, metrics_file: str,
          params_file: str) -> list[ExperimentRow]:
    rev = entry["rev"]
    data = entry.get("data") or {}
    error = entry.get("error")
    params = ((data.get("params") or {}).get(params_file) or {}).get("data") or {}
    fusion = params.get("fusion") or {}
    mode, dim = fusion.get("mode"), fusion.get("dim")

    def row(subject: str | None, values: dict[str, Value]) -> ExperimentRow:
        return ExperimentRow(name, rev, kind, "error" if error else state, subject,
                             str(mode) if mode is not None else None, int(dim) if dim is not None else None, **values)

    def missing(reason: str) -> list[ExperimentRow]:
        return [row(None, {field: Value(None, reason) for _, field in COLUMNS})]

    if error:
        return missing(f"dvc could not read {rev}: {error.get('msg') or error}")
    if state not in SETTLED_STATES:
        return missing(f"the experiment is {state}: no metrics of its own yet")
    metrics = (data.get("metrics") or {}).get(metrics_file)
    if metrics is None:
        return missing(f"{metrics_file} is not in this revision (run the evaluate stage)")
    if "error" in metrics:
        return missing(f"dvc could not read {metrics_file}: {(metrics['error'] or {}).get('msg') or metrics['error']}")
    subjects = metrics.get("data") or {}
    if not subjects:
        return missing(f"{metrics_file} has no subjects")
    return [row(subject, _values(scores, f"{metrics_file}: {subject}")) for subject, scores in subjects.items()]


def _values(scores: Mapping[str, Any], where: str) -> dict[str, Value]:
    validation = scores.get("validation") or {}
    values = {field: _value(validation, field, f"{where}.validation") for field in
              ("psnr", "lmd", "lse_c", "expert_confidence")}
    clips = scores.get("tts") or {}
    per_clip = {clip: _value(clip_scores or {}, "expert_confidence", f"{where}.tts.{clip}")
                for clip, clip_scores in clips.items()}
    if not per_clip:
        values["tts_expert_confidence"] = Value(None, f"{where}: no TTS-driven render was evaluated")
    elif any(v.value is None for v in per_clip.values()):
        missing = "; ".join(f"{clip}: {v.reason}" for clip, v in per_clip.items() if v.value is None)
        values["tts_expert_confidence"] = Value(None, f"not every TTS clip has a value ({missing})")
    else:
        values["tts_expert_confidence"] = Value(math.fsum(v.value for v in per_clip.values()) / len(per_clip), None)
    return values


def _value(section: Mapping[str, Any], name: str, where: str) -> Value:
    """A metric entry {"value", "reason", "backend"}; dvc drops null fields, so "value" may be absent."""
    entry = section.get(name)
    if not isinstance(entry, Mapping):
        return Value(None, f"{where} has no {name}")
    value = entry.get("value")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return Value(float(value), None)
    return Value(None, entry.get("reason") or f"{where}.{name} is null and gives no reason")


def _field(entry: Any, key: str, what: str) -> Any:
    if not isinstance(entry, Mapping) or key not in entry:
        raise ExperimentsError(f"`dvc exp show --json`: {what} has no {key!r} (is this dvc 3's output?)")
    return entry[key]


# ---------------------------------------------------------------------------------------------------------- output


HEADERS = ("experiment", "subject", "fusion.mode", "fusion.dim", *(header for header, _ in COLUMNS))
"""Column headers of both renderings."""


def _cells(row: ExperimentRow, note: Callable[[str | None], str]) -> list[str]:
    """The row's cells as text; `note(reason)` gives the text of a null cell."""
    label = row.experiment if row.state == "success" else f"{row.experiment} ({row.state})"
    numbers = [number_text(value.value) if value.value is not None else note(value.reason)
               for value in (getattr(row, field) for _, field in COLUMNS)]
    return [label, row.subject or "-", row.fusion_mode or "-", "-" if row.fusion_dim is None else str(row.fusion_dim),
            *numbers]


def markdown_table(rows: Sequence[ExperimentRow]) -> str:
    """A GitHub-flavoured markdown table of the rows, nulls as "n/a [k]" with the k-th reason listed below it."""
    reasons: list[str] = []

    def note(reason: str | None) -> str:
        text = reason or "no reason given"
        if text not in reasons:
            reasons.append(text)
        return f"n/a [{reasons.index(text) + 1}]"

    lines = ["| " + " | ".join(HEADERS) + " |",
             "| " + " | ".join(["---"] * 4 + ["---:"] * len(COLUMNS)) + " |"]
    lines += ["| " + " | ".join(_markdown_escape(cell) for cell in _cells(row, note)) + " |" for row in rows]
    if not rows:
        lines.append("| no experiments |" + " |" * (len(HEADERS) - 1))
    lines += ["", *(f"[{number}] {_markdown_escape(text)}" for number, text in enumerate(reasons, start=1))]
    return "\n".join(lines).rstrip() + "\n"


def experiments_html(rows: Sequence[ExperimentRow], page_dir: Path, gallery_page: Path | None = None) -> str:
    """A static HTML page of the rows (nulls "n/a" with the reason as tooltip and footnote) and the paper's Table 3
    for reference; links to the gallery when given (a path, linked relative to page_dir)."""
    reasons: list[str] = []

    def note(reason: str | None) -> str:
        text = reason or "no reason given"
        if text not in reasons:
            reasons.append(text)
        number = reasons.index(text) + 1
        return f'<span class="na" title="{escape_attribute(text)}">n/a<sup><a href="#note-{number}">{number}</a></sup></span>'

    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>DAMC experiments</title>", f"<style>\n{STYLE}</style>", "</head>", "<body>",
             "<h1>DAMC experiments</h1>",
             ("<p>Every experiment <code>dvc exp show</code> lists, with its fusion settings and the evaluate stage's "
              "metrics: the paper's Table 3 on this project's runs (<code>dvc exp run -S fusion.mode=...</code>). "
              "Written by <code>scripts/experiments_table.py</code>; run it again after new experiments.</p>")]
    if gallery_page is not None:
        parts.append(f'<p class="links"><a href="{relative_url(gallery_page, page_dir)}">Results gallery</a></p>')
    parts += ['<table class="experiments">', "<thead><tr>" + "".join(f"<th>{escape_text(h)}</th>" for h in HEADERS)
              + "</tr></thead>", "<tbody>"]
    for row in rows:
        cells = _cells(row, note)
        texts = [escape_text(cell) for cell in cells[:4]] + cells[4:]  # the metric cells are already HTML
        parts.append(f'<tr data-state="{escape_attribute(row.state)}" data-rev="{escape_attribute(row.rev)}">'
                     + "".join(f"<td>{cell}</td>" for cell in texts) + "</tr>")
    if not rows:
        parts.append(f'<tr><td colspan="{len(HEADERS)}">No experiments.</td></tr>')
    parts += ["</tbody>", "</table>"]
    if reasons:
        parts.append('<ol class="notes">')
        parts += [f'<li id="note-{number}">{escape_text(text)}</li>' for number, text in enumerate(reasons, start=1)]
        parts.append("</ol>")
    parts += ["<h2>Reference: the paper's Table 3</h2>", '<table class="reference">',
              "<caption>The DAMC paper's Table 3 as reported (its numbers, not reproduced here); Sync is LSE-C."
              "</caption>", "<thead><tr><th>fusion.mode</th><th>Method</th><th>LMD \u2193</th><th>Sync \u2191</th>"
              "</tr></thead>", "<tbody>"]
    parts += [f"<tr><td>{escape_text(mode)}</td><td>{escape_text(row['method'])}</td><td>{number_text(row['LMD'])}</td>"
              f"<td>{number_text(row['Sync'])}</td></tr>" for mode, row in PAPER_TABLE_3.items()]
    parts += ["</tbody>", "</table>", "</body>", "</html>", ""]
    return "\n".join(parts)


def write_experiments_page(path: Path, rows: Sequence[ExperimentRow], gallery_page: Path | None = None) -> None:
    """Write `experiments_html` to path (replaced atomically)."""
    path = Path(path)
    text = experiments_html(rows, Path(os.path.abspath(path.parent)), gallery_page)
    with staged_file(path) as partial:
        partial.write_text(text, encoding="utf-8", newline="\n")


def _markdown_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


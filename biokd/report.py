"""Run reports: ``metrics.json`` plus ``report.md`` and a self-contained ``report.html``, with figures.

Usage::

    report = Report("FACED: CBraMod teacher vs MiC student")
    report.add_note("the teacher was not pretrained; data generated")
    report.add_table("models", comparison_rows({"teacher": t_metrics, "student": s_metrics}, extra=costs))
    report.add_figure("confusion: student", plot_confusion_matrix(cm, class_names))
    report.add_json("student", s_metrics)
    paths = report.write(run_dir)

Figures are matplotlib ``Figure`` objects drawn on the Agg canvas (pyplot's global state is never touched);
they are written as PNG under ``figures/`` beside the Markdown and embedded (base64) in the HTML. The
Markdown tables and the HTML page are assembled here: pandas' ``to_markdown`` needs ``tabulate``, which is
not a dependency.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ._io import atomic_path, write_json, write_text

#: The metrics of the side-by-side table, in order, with the column names shown.
TABLE_METRICS = {"balanced_accuracy": "balanced acc.", "cohen_kappa": "Cohen's κ", "f1_weighted": "weighted F1"}
_RESERVED = {"title", "notes", "tables", "figures", "texts"}


@dataclass
class _Figure:
    name: str
    fig: Figure
    caption: str


@dataclass
class Report:
    """A report assembled from notes, tables, figures, text and JSON entries, written in one go."""

    title: str
    notes: list[str] = field(default_factory=list)
    _blocks: list[tuple[str, Any]] = field(default_factory=list)
    _json: dict[str, Any] = field(default_factory=dict)

    def add_note(self, note: str) -> Report:
        """A caveat shown under the title (e.g. "the teacher was not pretrained; data generated")."""
        self.notes.append(str(note))
        return self

    def add_text(self, text: str, heading: str | None = None) -> Report:
        """A paragraph of plain text, optionally under its own heading."""
        self._blocks.append(("text", (heading, str(text))))
        return self

    def add_table(self, name: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Report:
        """A table, one dict per row; columns in first-seen order unless given."""
        if columns is None:
            columns = list(dict.fromkeys(key for row in rows for key in row))
        self._blocks.append(("table", (name, [dict(r) for r in rows], list(columns))))
        return self

    def add_figure(self, name: str, fig: Figure, caption: str = "") -> Report:
        """Any matplotlib figure; written as ``figures/<name>.png`` and embedded in the HTML."""
        names = {b[1].name for b in self._blocks if b[0] == "figure"}
        if _slug(name) in {_slug(n) for n in names}:
            raise ValueError(f"a figure named {name!r} (or one with the same file name) is already in the report")
        self._blocks.append(("figure", _Figure(name, fig, caption)))
        return self

    def add_json(self, key: str, obj: Any) -> Report:
        """A JSON-able entry of ``metrics.json`` (e.g. a model's full metrics under its name)."""
        if key in _RESERVED:
            raise ValueError(f"{key!r} is reserved in metrics.json; use another key")
        self._json[key] = obj
        return self

    def write(self, out_dir: str | Path, stem: str = "report", json_name: str | None = "auto") -> dict[str, Path]:
        """Write ``<stem>.md``, ``<stem>.html``, the JSON and ``figures/*.png``; return their paths.

        With the default stem the JSON is ``metrics.json`` (the run-folder contract) and figures are
        ``figures/<name>.png``; another stem (e.g. ``report-test``) gets ``<stem>.json`` and
        ``figures/<stem>-<name>.png``, so several reports share a folder. ``json_name=None`` writes no JSON.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if json_name == "auto":
            json_name = "metrics.json" if stem == "report" else f"{stem}.json"
        prefix = "" if stem == "report" else f"{_slug(stem)}-"
        files = {b.name: f"figures/{prefix}{_slug(b.name)}.png" for kind, b in self._blocks if kind == "figure"}
        pngs: dict[str, bytes] = {}
        paths: dict[str, Path] = {}
        for kind, block in self._blocks:
            if kind == "figure":
                pngs[block.name] = _png(block.fig)
                with atomic_path(out / files[block.name]) as tmp:
                    tmp.write_bytes(pngs[block.name])
                paths[f"figure:{block.name}"] = out / files[block.name]
        tables = {b[0]: b[1] for kind, b in self._blocks if kind == "table"}
        document = {"title": self.title, "notes": self.notes, "tables": tables, "figures": list(files.values())}
        if json_name is not None:
            paths["json"] = write_json(out / json_name, _json_safe({**document, **self._json}))
        paths["md"] = write_text(out / f"{stem}.md", self._markdown(files))
        paths["html"] = write_text(out / f"{stem}.html", self._html(pngs))
        return paths

    def _markdown(self, files: Mapping[str, str]) -> str:
        lines = [f"# {self.title}", ""]
        if self.notes:
            lines += ["**Notes**", "", *[f"- {n}" for n in self.notes], ""]
        for kind, block in self._blocks:
            if kind == "text":
                heading, text = block
                lines += ([f"## {heading}", ""] if heading else []) + [text, ""]
            elif kind == "table":
                name, rows, columns = block
                lines += [f"## {name}", ""]
                lines.append("| " + " | ".join(_md_cell(c) for c in columns) + " |")
                lines.append("|" + "---|" * len(columns))
                lines += ["| " + " | ".join(_md_cell(_fmt(r.get(c))) for c in columns) + " |" for r in rows]
                lines.append("")
            else:
                lines += [f"## {block.name}", "", f"![{block.name}]({files[block.name]})", ""]
                lines += [block.caption, ""] if block.caption else []
        return "\n".join(lines)

    def _html(self, pngs: Mapping[str, bytes]) -> str:
        e = html.escape
        parts = [f"<h1>{e(self.title)}</h1>"]
        if self.notes:
            items = "".join(f"<li>{e(n)}</li>" for n in self.notes)
            parts.append(f'<div class="notes"><strong>Notes</strong><ul>{items}</ul></div>')
        for kind, block in self._blocks:
            if kind == "text":
                heading, text = block
                parts.append((f"<h2>{e(heading)}</h2>" if heading else "") + f"<p>{e(text)}</p>")
            elif kind == "table":
                name, rows, columns = block
                head = "".join(f"<th>{e(str(c))}</th>" for c in columns)
                body = "".join(
                    "<tr>" + "".join(f"<td>{e(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
                )
                parts.append(f"<h2>{e(name)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                data = base64.b64encode(pngs[block.name]).decode("ascii")
                caption = f"<figcaption>{e(block.caption)}</figcaption>" if block.caption else ""
                parts.append(
                    f'<h2>{e(block.name)}</h2><figure><img alt="{e(block.name)}" '
                    f'src="data:image/png;base64,{data}">{caption}</figure>'
                )
        style = (
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}"
            "th:first-child,td:first-child{text-align:left}.notes{background:#fff6dd;padding:.5em 1em}"
            "img{max-width:100%}"
        )
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{e(self.title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
        )


def format_ci(value: float | None, ci: Sequence[float | None] | None = None, digits: int = 3) -> str:
    """``"0.612 [0.550, 0.670]"``; ``"n/a"`` for an undefined value; no bracket without a CI."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{value:.{digits}f}"
    if ci is not None and all(v is not None for v in ci):
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def comparison_rows(
    models: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    metrics: Mapping[str, str] = TABLE_METRICS,
    digits: int = 3,
) -> list[dict[str, Any]]:
    """One row per model: each metric of ``metrics`` with its CI, then the model's ``extra`` columns.

    ``models`` maps a model name to the output of :func:`biokd.metrics.classification_report` (or any dict
    with the metric keys and an optional ``ci`` mapping); ``extra`` maps it to further columns, e.g.
    ``{"parameters": 1_250_000, "MFLOPs": 6.1, "CPU ms / window": 2.3}``.
    """
    rows = []
    for name, result in models.items():
        cis = result.get("ci") or {}
        row: dict[str, Any] = {"model": name}
        for key, label in metrics.items():
            row[label] = format_ci(result.get(key), cis.get(key), digits)
        row.update((extra or {}).get(name, {}))
        rows.append(row)
    return rows


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray, class_names: Sequence[str], title: str = ""
) -> Figure:
    """Counts and row-normalised (recall) confusion matrices side by side, drawn by scikit-learn's display."""
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(matrix)
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = counts.sum(axis=1, keepdims=True)
        normalised = np.where(rows > 0, counts / np.maximum(rows, 1), 0.0)
    size = max(4.0, 0.55 * len(class_names) + 2.5)
    fig = Figure(figsize=(2 * size + 1, size), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, values, fmt, label in ((axes[0], counts, "d", "counts"), (axes[1], normalised, ".2f", "row-normalised")):
        display = ConfusionMatrixDisplay(values, display_labels=list(class_names))
        display.plot(ax=ax, values_format=fmt, colorbar=False, cmap="Blues", xticks_rotation=45)
        ax.set_title(label)
    if title:
        fig.suptitle(title)
    return fig


def plot_layer_weights_per_class(
    weights: np.ndarray, labels: np.ndarray, class_names: Sequence[str], layer_names: Sequence[str]
) -> Figure:
    """Heatmap of a router's mean weight on each teacher layer (columns) for each true class (rows)."""
    weights = np.asarray(weights, dtype=np.float64)
    labels = np.asarray(labels)
    if weights.ndim != 2 or weights.shape[0] != len(labels) or weights.shape[1] != len(layer_names):
        raise ValueError(
            f"weights must be (n, {len(layer_names)}) for {len(labels)} labels and {len(layer_names)} layer names; "
            f"got {weights.shape}"
        )
    means = np.full((len(class_names), len(layer_names)), np.nan)
    for c in range(len(class_names)):
        if np.any(labels == c):
            means[c] = weights[labels == c].mean(axis=0)
    fig = Figure(figsize=(max(4.5, 2.2 + 0.7 * len(layer_names)), 1.4 + 0.45 * len(class_names)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(means, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layer_names)), [str(n) for n in layer_names], rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), [str(n) for n in class_names])
    ax.set_xlabel("teacher layer")
    ax.set_ylabel("true class")
    finite = means[np.isfinite(means)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (r, c), value in np.ndenumerate(means):
        if np.isfinite(value):
            colour = "k" if value > middle else "w"
            ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(image, ax=ax, label="mean router weight")
    ax.set_title("router weight per layer and class")
    return fig


def write_report(
    out_dir: str | Path,
    title: str,
    models: Mapping[str, Mapping[str, Any]],
    *,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    notes: Sequence[str] = (),
    figures: Mapping[str, Figure] | None = None,
    confusion: bool = True,
) -> dict[str, Path]:
    """The common case in one call: a side-by-side table of classification models, their confusion
    matrices, notes, extra figures; each model's metrics stored under its name in ``metrics.json``."""
    report = Report(title)
    for note in notes:
        report.add_note(note)
    report.add_table("models", comparison_rows(models, extra))
    for name, result in models.items():
        report.add_json(name, result)
        if confusion and result.get("confusion_matrix") is not None:
            names = result.get("class_names") or [str(i) for i in range(len(result["confusion_matrix"]))]
            report.add_figure(f"confusion matrix: {name}", plot_confusion_matrix(result["confusion_matrix"], names))
    for name, fig in (figures or {}).items():
        report.add_figure(name, fig)
    return report.write(out_dir)


def _png(fig: Figure) -> bytes:
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-").lower() or "figure"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{float(value):.4g}"
    return str(value)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _json_safe(obj: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN); numpy values become Python values."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def plot_learning_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], metric: str) -> Figure:
    """Training loss and the validation ``metric`` per epoch, one line per model (from ``history.json``)."""
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_val = fig.subplots(1, 2)
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        ax_loss.plot(epochs, [h.get("train_loss", np.nan) for h in history], marker=".", label=name)
        ax_val.plot(epochs, [h.get(f"val_{metric}", np.nan) for h in history], marker=".", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_val.set(xlabel="epoch", ylabel=metric, title=f"validation {metric}")
    ax_val.legend(fontsize=7)
    return fig


def plot_roc(curves: Mapping[str, Mapping[str, Sequence[float]]]) -> Figure:
    """ROC curves (``{"fpr": [...], "tpr": [...]}`` per model) with the chance diagonal."""
    fig = Figure(figsize=(4.2, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for name, c in curves.items():
        ax.plot(c["fpr"], c["tpr"], label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="chance")
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC (test set)")
    ax.legend(fontsize=7)
    return fig


def ci_caption(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """What the intervals rest on, e.g. "95% CIs: bootstrap over 12 subjects" (warns below ten units)."""
    first = next(iter(reports.values()), {})
    n, unit = first.get("n_units"), first.get("ci_unit", "subject")
    if n is None:
        return "no confidence intervals"
    level = round(100 * first.get("ci_level", 0.95))
    method = first.get("ci_method", "percentile bootstrap")
    text = f"{level}% CIs: {method} over {n} {unit}{'s' if n != 1 else ''}"
    if first.get("few_units", n < 10):
        text += f" (WARNING: only {n} {unit}s; intervals this small are unreliable)"
    return text


def write_task_report(
    out: Path,
    title: str,
    reports: Mapping[str, Mapping[str, Any]],
    task: Any,
    notes: Sequence[str],
    *,
    split_sizes: Sequence[Mapping[str, Any]] = (),
    router: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    layer_names: Mapping[str, Sequence[str]] | None = None,
    history: Any = None,
    stem: str = "report",
    differences: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """A run's report for any task: data sizes, the side-by-side test table, task figures, learning curves."""
    rep = Report(title)
    for note in notes:
        rep.add_note(note)
    if split_sizes:
        rep.add_table("Data (items and subjects per split)", split_sizes)
    extra = {}
    for name, r in reports.items():
        m = r.get("model", {})
        extra[name] = {
            "parameters": f"{m.get('parameters', 0):,}",
            "MFLOPs / item": f"{m.get('flops', 0) / 1e6:.1f}",
            "CPU ms / item (1 thread, p50)": f"{m.get('cpu_latency_ms', {}).get('p50', float('nan')):.2f}",
        }
    rep.add_table(f"Test set ({ci_caption(reports)})", comparison_rows(reports, extra, task.table_metrics))
    diff_rows = []
    for pair, d in (differences or {}).items():
        row: dict[str, Any] = {"difference": pair}
        for m, value in d.get("difference", {}).items():
            row[task.table_metrics.get(m, m)] = format_ci(value, (d.get("ci") or {}).get(m))
        row["subjects"] = d.get("n_units")
        row["method"] = d.get("ci_method", "")
        diff_rows.append(row)
    if diff_rows:
        rep.add_table("Paired differences on the test set (95% CIs over the same subjects)", diff_rows)
    chance = next((r.get("chance_balanced_accuracy") for r in reports.values()), None)
    if chance is not None:
        rep.add_note(f"Chance level: balanced accuracy {chance:.3f} (1 / number of classes).")
    if task.kind == "forecasting":
        horizons = next(iter(reports.values())).get("horizons", [])
        per_h = {f"rmse_{h}": f"RMSE {h}" for h in horizons} | {f"mae_{h}": f"MAE {h}" for h in horizons}
        unit = task.target.unit
        rep.add_table(f"Error per horizon ({unit})", comparison_rows(reports, None, per_h, digits=2))
        for name, r in reports.items():
            for table, rows in (r.get("clinical") or {}).get("tables", {}).items():
                rep.add_table(f"{table}: {name}", rows)
    if task.kind == "classification":
        for name, r in reports.items():
            rep.add_figure(f"Confusion matrix: {name}", plot_confusion_matrix(r["confusion_matrix"], r["class_names"]))
    if task.kind == "binary":
        curves = {n: r["roc_curve"] for n, r in reports.items() if r.get("roc_curve")}
        if curves:
            rep.add_figure("ROC curves", plot_roc(curves))
    for column in dict.fromkeys(c for r in reports.values() for c in (r.get("groups") or {})):
        rows = [
            {column: value, **row}
            for name, r in reports.items()
            for value, group in (r.get("groups") or {}).get(column, {}).items()
            for row in comparison_rows({name: group}, {name: {"subjects": group.get("n_units")}}, task.table_metrics)
        ]
        rep.add_table(f"Per {column} (test set; CIs over each group's subjects)", rows)
    per_subject = [
        {"model": name, "subject": s, **{k: _fmt(v) for k, v in vals.items() if isinstance(v, float | int)}}
        for name, r in reports.items()
        for s, vals in (r.get("per_subject") or {}).items()
    ]
    if per_subject:
        rep.add_table("Per subject (test set)", per_subject)
    if history:
        histories = history if isinstance(history, Mapping) else {"model": history}
        metric = next((k[4:] for k in histories[next(iter(histories))][0] if k.startswith("val_")), "loss")
        rep.add_figure("Learning curves", plot_learning_curves(histories, metric))
    for term, (weights, labels) in (router or {}).items():
        names = list((layer_names or {}).get(term) or [f"layer {i}" for i in range(weights.shape[1])])
        short = [n.rsplit(".", 1)[-1] if n.rsplit(".", 1)[-1].isdigit() else n for n in names]
        class_names = list(getattr(task.target, "classes", [])) or [str(c) for c in sorted(set(labels.tolist()))]
        if task.kind == "classification":
            from .distill.router import CAPTION as ROUTER_CAPTION  # torch is loaded once a router exists

            rep.add_figure(
                f"Router weights per class ({term})",
                plot_layer_weights_per_class(weights, labels, class_names, short),
                caption=ROUTER_CAPTION,
            )
    rep.add_json("results", dict(reports))
    return rep.write(out, stem=stem, json_name=None)

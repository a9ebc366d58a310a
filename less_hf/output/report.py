"""`less-hf report`: a self-contained HTML page (plots embedded as base64 PNG) and a markdown twin of a selection.

Per target: the score distribution with the selection threshold, the source mix of the selection vs the pool, the
top and bottom pool rows with their scores; then the overlap between targets' selections and the run's settings.
Reads only the selection folder (``selection.json`` + ``scores/``), so it works without the pool or the model.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import top_indices
from .provenance import load_scores, load_selection

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;
color:#1f2328;line-height:1.45}
h1{font-size:1.7em;margin-bottom:4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.9em}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}th{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots img{max-width:570px;height:auto;border:1px solid #eee;align-self:flex-start}
.muted{color:#57606a}td.text{max-width:760px;font-size:0.92em}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:0.85em}
"""


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _histogram(name: str, scores: np.ndarray, threshold: float | None) -> bytes:
    import matplotlib.pyplot as plt

    finite = scores[np.isfinite(scores)]
    fig, ax = plt.subplots(figsize=(6.2, 3.4))
    ax.hist(finite, bins=min(50, max(10, len(finite) // 10)), color="#8fb3d9", edgecolor="#4a77a8")
    if threshold is not None:
        ax.axvline(threshold, color="#d1242f", linestyle="--", label=f"selection threshold {threshold:.4f}")
        ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{name}: score distribution over the pool ({len(finite):,} scorable rows)", fontsize=10)
    ax.set_xlabel("score")
    ax.set_ylabel("pool rows")
    return _png(fig)


def _source_mix(
    name: str, pool_counts: dict[str, int], selected_counts: dict[str, int], max_sources: int = 20
) -> bytes:
    import matplotlib.pyplot as plt

    n_pool, n_sel = sum(pool_counts.values()), max(1, sum(selected_counts.values()))
    sources = sorted(pool_counts, key=lambda s: (-selected_counts.get(s, 0), -pool_counts[s]))[:max_sources][::-1]
    y = np.arange(len(sources))
    fig, ax = plt.subplots(figsize=(6.2, max(2.6, 0.6 + 0.26 * len(sources))))
    ax.barh(y + 0.2, [100 * pool_counts[s] / n_pool for s in sources], 0.4, label="pool", color="#c4c9d0")
    ax.barh(
        y - 0.2, [100 * selected_counts.get(s, 0) / n_sel for s in sources], 0.4, label="selected", color="#2f81f7"
    )
    ax.set_yticks(y, sources, fontsize=8)
    ax.set_xlabel("% of rows")
    ax.set_title(f"{name}: source mix, selection vs pool", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def _overlap(selection_dir: Path, selection: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    names = list(selection["targets"])
    if selection.get("sampled"):  # the drawn rows are not the top of the scores: no overlap table
        return [], np.zeros((0, 0), dtype=np.int64)
    chosen = {}
    for name in names:
        scores = load_scores(selection_dir, name).astype(np.float64)
        k = selection["targets"][name]["n_selected"]
        chosen[name] = set(top_indices(scores, k).tolist())
    matrix = np.array([[len(chosen[a] & chosen[b]) for b in names] for a in names])
    return names, matrix


def _examples_rows(examples: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return [(str(e["row"]), f"{e['score']:+.4f}", str(e["source"] or ""), e["text"]) for e in examples]


def _drawn_rows(info: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [
        (f"{e['count']}×", f"{e['score']:+.4f}", str(e["source"] or ""), e["text"]) for e in info["drawn_examples"]
    ]


def _settings_rows(selection: dict[str, Any]) -> list[tuple[str, str]]:
    s = selection["settings"]
    pool = selection["pool"]
    rows = [
        ("method", selection["method"]),
        ("created", selection["created"]),
        ("pool", f"{pool['spec']} — {pool['n_rows']:,} rows, fingerprint {pool['fingerprint']}"),
    ]
    if "model" in s:
        rows.append(("model", str(s["model"])))
    if s.get("checkpoints"):
        rows.append(
            (
                "checkpoints (η̄)",
                ", ".join(
                    f"{c['name']} ({c['weight']:.3f}{'' if c['captured'] else ', from optimizer.pt'})"
                    for c in s["checkpoints"]
                ),
            )
        )
    for key in ("projection", "gradient", "selection"):
        if key in s:
            rows.append((key, ", ".join(f"{k}={v}" for k, v in s[key].items())))
    if "warmup_seed" in s:
        rows.append(("seeds", f"warmup {s['warmup_seed']}, projection {(s.get('projection') or {}).get('seed')}"))
    return rows


def build_report(selection_dir: str | os.PathLike) -> dict[str, Any]:
    """Compute the report's parts: ``{"selection", "targets": {name: {...pngs, tables}}, "overlap"}``."""
    selection_dir = Path(selection_dir)
    selection = load_selection(selection_dir)
    pool_counts = selection["pool"]["counts_per_source"]
    parts: dict[str, Any] = {"selection": selection, "targets": {}}
    for name, t in selection["targets"].items():
        scores = load_scores(selection_dir, name).astype(np.float64)
        finite = scores[np.isfinite(scores)]
        part = {
            "info": t,
            "stats": {
                "min": float(finite.min()) if finite.size else float("nan"),
                "median": float(np.median(finite)) if finite.size else float("nan"),
                "max": float(finite.max()) if finite.size else float("nan"),
            },
            "histogram": _histogram(name, scores, t["threshold"]),
            "source_mix": _source_mix(name, pool_counts, t["counts_per_source"]) if pool_counts else None,
        }
        parts["targets"][name] = part
    parts["overlap"] = _overlap(selection_dir, selection)
    return parts


def _table_html(header: tuple[str, ...], rows: list[tuple], numeric: tuple[int, ...] = (), text: tuple[int, ...] = ()):
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ' class="text"' if i in text else ""
            cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render_html(parts: dict[str, Any]) -> str:
    """One self-contained HTML page (no external files or scripts)."""
    sel = parts["selection"]
    body = [
        "<h1>less_hf selection report</h1>",
        f'<p class="muted">{html.escape(sel["method"].upper())} selection from '
        f"{html.escape(str(sel['pool']['spec']))} ({sel['pool']['n_rows']:,} rows) for {len(sel['targets'])} "
        f"target task(s), {html.escape(sel['created'])}.</p>",
        _table_html(
            ("target", "examples", "subtasks", "selected", "scorable", "threshold", "min", "median", "max"),
            [
                (
                    name,
                    p["info"]["n_examples"],
                    len(p["info"]["subtasks"]) or "—",
                    p["info"]["n_selected"],
                    p["info"]["n_selectable"],
                    f"{p['info']['threshold']:+.4f}" if p["info"]["threshold"] is not None else "—",
                    f"{p['stats']['min']:+.4f}",
                    f"{p['stats']['median']:+.4f}",
                    f"{p['stats']['max']:+.4f}",
                )
                for name, p in parts["targets"].items()
            ],
            numeric=tuple(range(1, 9)),
        ),
    ]
    for name, p in parts["targets"].items():
        body.append(f'<h2 id="target-{html.escape(name)}">Target: {html.escape(name)}</h2>')
        plots = [_img(p["histogram"], f"{name} score histogram")]
        if p["source_mix"] is not None:
            plots.append(_img(p["source_mix"], f"{name} source mix"))
        body.append('<div class="plots">' + "".join(plots) + "</div>")
        if p["info"].get("drawn_examples") is not None:
            body.append("<h3>Most drawn rows (sampled selection: rows are drawn at random, weighted by score)</h3>")
            body.append(_table_html(("drawn", "score", "source", "text"), _drawn_rows(p["info"]), (0, 1), (3,)))
            continue
        for label, key in (("Top pool rows", "top_examples"), ("Bottom pool rows", "bottom_examples")):
            body.append(f"<h3>{label}</h3>")
            body.append(_table_html(("row", "score", "source", "text"), _examples_rows(p["info"][key]), (0, 1), (3,)))
    names, matrix = parts["overlap"]
    if len(names) > 1:
        body.append("<h2>Overlap between targets' selections</h2>")
        body.append('<p class="muted">Rows selected for both targets (diagonal: the selection size).</p>')
        body.append(
            _table_html(
                ("",) + tuple(names),
                [(a,) + tuple(int(v) for v in matrix[i]) for i, a in enumerate(names)],
                numeric=tuple(range(1, len(names) + 1)),
            )
        )
    body.append("<h2>Settings</h2>")
    body.append(_table_html(("setting", "value"), _settings_rows(sel)))
    body.append(
        f"<details><summary>selection.json</summary><pre>{html.escape(json.dumps(sel['settings'], indent=2))}"
        "</pre></details>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>less_hf selection report</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _md_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(parts: dict[str, Any], image_dir: Path, image_prefix: str) -> str:
    """The report as markdown; the plots are written as PNG files into ``image_dir``."""
    sel = parts["selection"]
    image_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "# less_hf selection report",
        "",
        f"{sel['method'].upper()} selection from `{sel['pool']['spec']}` ({sel['pool']['n_rows']:,} rows) for "
        f"{len(sel['targets'])} target task(s), {sel['created']}"
        + (f", policy `{sel['policy']}`." if sel.get("policy") else "."),
        "",
    ]
    for name, p in parts["targets"].items():
        info = p["info"]
        lines += [
            f"## Target: {name}",
            "",
            f"{info['n_selected']} of {info['n_selectable']} scorable rows selected "
            + (
                f"(threshold {info['threshold']:+.4f})."
                if info["threshold"] is not None
                else ("(taken in turn, not by one threshold)." if not sel.get("sampled") else "(drawn at random).")
            )
            + "",
            "",
        ]
        for key in ("histogram", "source_mix"):
            if p[key] is not None:
                (image_dir / f"{name}_{key}.png").write_bytes(p[key])
                lines += [f"![{name} {key}]({image_prefix}/{name}_{key}.png)", ""]
        if info.get("drawn_examples") is not None:
            lines += [
                "### Most drawn rows",
                "",
                _md_table(("drawn", "score", "source", "text"), _drawn_rows(info)),
                "",
            ]
            continue
        for label, key in (("Top pool rows", "top_examples"), ("Bottom pool rows", "bottom_examples")):
            lines += [f"### {label}", "", _md_table(("row", "score", "source", "text"), _examples_rows(info[key])), ""]
    names, matrix = parts["overlap"]
    if len(names) > 1:
        lines += ["## Overlap between targets' selections", ""]
        lines += [
            _md_table(("",) + tuple(names), [(a,) + tuple(int(v) for v in matrix[i]) for i, a in enumerate(names)]),
            "",
        ]
    lines += ["## Settings", "", _md_table(("setting", "value"), _settings_rows(sel)), ""]
    return "\n".join(lines)


def write_report(selection_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``report_files/*.png``).

    Args:
        selection_dir: a folder written by `less-hf select`.
        output_dir: where to write (default: ``selection_dir``).

    Returns:
        ``{"html": path, "markdown": path}``.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("The report needs matplotlib: pip install 'less-hf[report]'.") from e
    matplotlib.use("Agg")
    out = Path(output_dir or selection_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = build_report(selection_dir)
    html_path, md_path = out / "report.html", out / "report.md"
    from ..datastore.atomic import write_atomic

    html, markdown = render_html(parts), render_markdown(parts, out / "report_files", "report_files")
    write_atomic(html_path, lambda f: f.write(html.encode("utf-8")))
    write_atomic(md_path, lambda f: f.write(markdown.encode("utf-8")))
    return {"html": html_path, "markdown": md_path}

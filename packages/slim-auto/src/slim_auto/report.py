"""The run's report: ``metrics.json``, ``report.md`` and ``report.html`` with a plot.

The plot (metric vs latency of every candidate, the Pareto front joined) is drawn
with matplotlib when it is installed, and otherwise written as an SVG by hand, so
the report never depends on an optional package.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slim_auto.candidates import Candidate, meets_target, pareto_front, primary_latency, speedup, unmet_reasons
from slim_auto.recipe import TargetConfig
from slim_core import atomic_write

__all__ = [
    "RunSummary",
    "before_after_rows",
    "before_after_markdown",
    "write_report",
    "svg_scatter",
    "speed_text",
    "sentence",
    "chosen_stages",
]


@dataclass
class RunSummary:
    """Everything the report shows."""

    baseline: Candidate
    best: Candidate
    candidates: list[Candidate]
    target: TargetConfig
    stopped: str
    seconds: float
    model_path: str
    title: str = "slim auto-compression report"
    translation: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    sensitivity: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    @property
    def target_met(self) -> bool:
        """Whether a compressed candidate (not the original) meets the whole target (never without a target)."""
        return self.target.is_set and self.best.id != self.baseline.id and meets_target(self.best, self.baseline, self.target)

    def unmet(self) -> list[str]:
        if not self.target.is_set:
            return ["no target was set"]
        if self.best.id == self.baseline.id:
            return ["no compressed candidate beat the original model under the target, so the original model is delivered"]
        return unmet_reasons(self.best, self.baseline, self.target)


def _fmt_int(v: int | None) -> str:
    return "n/a" if v is None else f"{v:,}"


def _fmt_size(v: int | None) -> str:
    if v is None:
        return "n/a"
    return f"{v / 1024:.1f} KiB" if v < 1024 * 1024 else f"{v / 1024 / 1024:.2f} MiB"


def _fmt_metric(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def speed_text(ratio: float | None) -> str:
    """``"2.50x faster"`` or ``"1.25x slower"`` (never ``"0.80x faster"``).

    Example:
        >>> speed_text(0.8)
        '1.25x slower'
    """
    if ratio is None or ratio <= 0:
        return ""
    if 1 / 1.005 < ratio < 1.005:
        return "same speed"
    return f"{ratio:.2f}x faster" if ratio >= 1.0 else f"{1.0 / ratio:.2f}x slower"


def sentence(text: str, limit: int = 400) -> str:
    """``text`` as a sentence: capitalised, ending with a full stop, cut at a word boundary with an ellipsis."""
    text = " ".join(str(text).split())
    if not text:
        return ""
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "…", "!", "?")) else text + "."


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b:
        return ""
    return f"{a / b:.2f}x"


def before_after_rows(s: RunSummary) -> list[tuple[str, str, str, str]]:
    """``(quantity, before, after, change)`` rows of the before/after table."""
    b, a = s.baseline, s.best
    rows = [
        (
            "metric",
            _fmt_metric(b.metric),
            _fmt_metric(a.metric),
            "" if a.metric is None or b.metric is None else f"{a.metric - b.metric:+.4f}",
        )
    ]
    rows.append(("FLOPs", _fmt_int(b.flops), _fmt_int(a.flops), _ratio(a.flops, b.flops)))
    rows.append(("parameters", _fmt_int(b.params), _fmt_int(a.params), _ratio(a.params, b.params)))
    rows.append(("size on disk", _fmt_size(b.size_bytes), _fmt_size(a.size_bytes), _ratio(a.size_bytes, b.size_bytes)))
    for backend, per_batch in b.latency_ms.items():
        for batch, ms in per_batch.items():
            after = a.latency_ms.get(backend, {}).get(batch)
            sp = speed_text(ms / after) if after else ""
            rows.append((f"latency {backend} batch {batch}", f"{ms:.3f} ms", "n/a" if after is None else f"{after:.3f} ms", sp))
    return rows


def before_after_markdown(s: RunSummary) -> str:
    """The before/after table as Markdown."""
    lines = ["| | original | compressed | change |", "|---|---|---|---|"]
    lines += [f"| {q} | {x} | {y} | {z} |" for q, x, y, z in before_after_rows(s)]
    return "\n".join(lines) + "\n"


def _candidate_rows(s: RunSummary) -> list[list[str]]:
    front = {c.id for c in pareto_front(s.candidates, s.target)}
    rows = []
    for c in s.candidates:
        sp = speedup(c, s.baseline)
        lat = primary_latency(c)
        drop = None if c.metric is None or s.baseline.metric is None else s.baseline.metric - c.metric
        mark = ("best" if c.id == s.best.id else "") + (" pareto" if c.id in front else "")
        rows.append(
            [
                str(c.id),
                c.name,
                c.status,
                _fmt_metric(c.metric),
                "" if drop is None else f"{drop:+.4f}",
                "n/a" if lat is None else f"{lat:.3f}",
                "" if sp is None or c.id == s.baseline.id else speed_text(sp),
                _fmt_size(c.size_bytes),
                f"{c.seconds:.1f}",
                mark.strip(),
                " ".join(sentence(n) for n in ([c.error] if c.error else []) + list(c.notes)),
            ]
        )
    return rows


_CAND_HEAD = ["#", "candidate", "status", "metric", "drop", "latency ms", "speed", "size", "stage s", "", "notes"]


def _verdict_class(s: RunSummary) -> str:
    return "ok" if s.target_met else ("info" if not s.target.is_set else "bad")


def _verdict(s: RunSummary) -> str:
    if not s.target.is_set:
        drop = None if s.best.metric is None or s.baseline.metric is None else s.baseline.metric - s.best.metric
        change = "" if drop is None else f" Its metric is {abs(drop):.4f} {'below' if drop > 0 else 'above'} the original's."
        return f"No target was set, so the fastest candidate is delivered (#{s.best.id} {s.best.name}).{change}"
    if s.target_met:
        return f"Target met ({s.target.describe()})."
    reasons = "; ".join(s.unmet()) or "no candidate met it"
    return (
        f"Target NOT met ({s.target.describe()}): the best result found is saved ({reasons}). "
        "Relax the target, give more time or training, or add stages."
    )


def svg_scatter(s: RunSummary, width: int = 640, height: int = 400) -> str:
    """Metric vs latency of every candidate as a standalone SVG (no matplotlib needed)."""
    pts = [(c, primary_latency(c), c.metric) for c in s.candidates if c.status == "ok" and c.metric is not None]
    pts = [(c, x, y) for c, x, y in pts if x is not None]
    m = 56
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">'
    ]
    out.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no measured candidate</text></svg>')
        return "\n".join(out)
    xs = [p[1] for p in pts]
    ys = [p[2] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 * 0.9, x1 * 1.1 + 1e-6
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.01, y1 + 0.01
    padx, pady = (x1 - x0) * 0.08, (y1 - y0) * 0.12
    x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady

    def sx(v: float) -> float:
        return m + (v - x0) / (x1 - x0) * (width - 2 * m)

    def sy(v: float) -> float:
        return height - m - (v - y0) / (y1 - y0) * (height - 2 * m)

    out.append(f'<line x1="{m}" y1="{height - m}" x2="{width - m}" y2="{height - m}" stroke="black"/>')
    out.append(f'<line x1="{m}" y1="{m}" x2="{m}" y2="{height - m}" stroke="black"/>')
    for i in range(5):
        xv = x0 + (x1 - x0) * i / 4
        yv = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{height - m + 16}" text-anchor="middle">{xv:.3g}</text>')
        out.append(f'<text x="{m - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.4g}</text>')
    out.append(
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">latency (ms, batch {_first_batch_label(s)}, fastest runtime)</text>'
    )
    legend = [("#555", "original"), ("#2f6fde", "candidate"), ("#1a7f37", "delivered")]
    for i, (color, label) in enumerate(legend):
        out.append(f'<circle cx="{width - m - 90}" cy="{m + 14 * i}" r="4" fill="{color}"/>')
        out.append(f'<text x="{width - m - 80}" y="{m + 14 * i + 4}">{label}</text>')
    out.append(f'<text x="14" y="{height / 2}" text-anchor="middle" transform="rotate(-90 14 {height / 2})">metric</text>')
    front = pareto_front(s.candidates, s.target)
    if len(front) > 1:
        path = " ".join(f"{sx(primary_latency(c) or 0):.1f},{sy(c.metric or 0):.1f}" for c in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#999" stroke-dasharray="4 3"/>')
    if s.baseline.metric is not None and s.target.max_metric_drop is not None:
        yt = s.baseline.metric - s.target.max_metric_drop if s.target.higher_is_better else s.baseline.metric + s.target.max_metric_drop
        if y0 <= yt <= y1:
            out.append(f'<line x1="{m}" y1="{sy(yt):.1f}" x2="{width - m}" y2="{sy(yt):.1f}" stroke="#c33" stroke-dasharray="2 2"/>')
            out.append(f'<text x="{width - m}" y="{sy(yt) - 4:.1f}" text-anchor="end" fill="#c33">target</text>')
    for c, x, y in pts:
        color = "#1a7f37" if c.id == s.best.id else ("#555" if c.id == s.baseline.id else "#2f6fde")
        r = 6 if c.id == s.best.id else 4
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{r}" fill="{color}"><title>{html.escape(c.name)}</title></circle>')
        out.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 5:.1f}">{c.id}: {html.escape(c.name[:28])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def _first_batch_label(s: RunSummary) -> str:
    for per in s.baseline.latency_ms.values():
        for batch in per:
            return str(batch)
    return "1"


def _plot_png(s: RunSummary, path: Path) -> bool:
    """Draw the scatter with matplotlib when installed; return whether it did."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    pts = [(c, primary_latency(c), c.metric) for c in s.candidates if c.status == "ok" and c.metric is not None and primary_latency(c)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    groups = {
        "original": ([p for p in pts if p[0].id == s.baseline.id], "tab:gray", 40),
        "candidates": ([p for p in pts if p[0].id not in (s.baseline.id, s.best.id)], "tab:blue", 20),
        "delivered": ([p for p in pts if p[0].id == s.best.id and p[0].id != s.baseline.id], "tab:green", 50),
    }
    for label, (group, color, size) in groups.items():
        if group:
            ax.scatter([p[1] for p in group], [p[2] for p in group], c=color, s=size, label=label)
    for c, x, y in pts:
        ax.annotate(f"{c.id}: {c.name[:28]}", (x, y), fontsize=7)
    front = pareto_front(s.candidates, s.target)
    if len(front) > 1:
        ax.plot([primary_latency(c) for c in front], [c.metric for c in front], "--", color="gray", label="Pareto front")
    if s.baseline.metric is not None and s.target.max_metric_drop is not None:
        sign = -1 if s.target.higher_is_better else 1
        ax.axhline(s.baseline.metric + sign * s.target.max_metric_drop, color="tab:red", ls=":", label="target (allowed drop)")
    ax.set_xlabel(f"latency (ms, batch {_first_batch_label(s)}, fastest runtime)")
    ax.set_ylabel("metric (your eval function)")
    ax.set_title("Metric vs latency of every candidate")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return True


def _sensitivity_svg(curves: dict[str, list[tuple[float, float]]], width: int = 640, height: int = 300) -> str:
    pts = [(x, y) for c in curves.values() for x, y in c]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-3)
    m = 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="10">']
    out.append(f'<rect width="{width}" height="{height}" fill="white"/>')
    out.append(f'<line x1="{m}" y1="{height - m}" x2="{width - m}" y2="{height - m}" stroke="black"/>')
    out.append(f'<line x1="{m}" y1="{m}" x2="{m}" y2="{height - m}" stroke="black"/>')
    colors = ["#2f6fde", "#c33", "#1a7f37", "#a5a", "#e80", "#555"]
    for i, (name, curve) in enumerate(curves.items()):
        p = " ".join(
            f"{m + (x - x0) / (x1 - x0) * (width - 2 * m):.1f},{height - m - (y - y0) / (y1 - y0) * (height - 2 * m):.1f}" for x, y in curve
        )
        out.append(f'<polyline points="{p}" fill="none" stroke="{colors[i % len(colors)]}"><title>{html.escape(name)}</title></polyline>')
    for i, name in enumerate(curves):
        y = m + 14 * i
        color = colors[i % len(colors)]
        out.append(f'<line x1="{width - m - 200}" y1="{y}" x2="{width - m - 185}" y2="{y}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{width - m - 180}" y="{y + 4}">{html.escape(name[:40])}</text>')
    out.append(f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">trial number ({x0:.3g} .. {x1:.3g})</text>')
    out.append(
        f'<text x="14" y="{height / 2}" text-anchor="middle" transform="rotate(-90 14 {height / 2})">metric ({y0:.4g} .. {y1:.4g})</text>'
    )
    out.append("</svg>")
    return "\n".join(out)


def metrics_dict(s: RunSummary) -> dict[str, Any]:
    """The content of ``metrics.json``."""
    return {
        "target": s.target.to_dict(),
        "target_met": s.target_met,
        "unmet_reasons": [] if s.target_met else s.unmet(),
        "stopped": s.stopped,
        "seconds": round(s.seconds, 3),
        "model_path": s.model_path,
        "baseline": s.baseline.to_dict(),
        "best": s.best.to_dict(),
        "speedup": speedup(s.best, s.baseline),
        "metric_drop": None if s.best.metric is None or s.baseline.metric is None else s.baseline.metric - s.best.metric,
        "candidates": [c.to_dict() for c in s.candidates],
        **({"act_translation": {"mapped": s.translation.mapped, "unsupported": s.translation.unsupported}} if s.translation else {}),
        **s.extra,
    }


def write_report(s: RunSummary, out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``report.html`` and the plot into ``out_dir`` (each atomically).

    Returns:
        ``{"metrics": path, "markdown": path, "html": path, "plot": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "markdown": out / "report.md", "html": out / "report.html"}
    with atomic_write(paths["metrics"]) as fh:
        json.dump(metrics_dict(s), fh, indent=2, default=str)
    svg = svg_scatter(s)
    if _plot_png(s, out / "candidates.png"):
        paths["plot"] = out / "candidates.png"
    else:
        paths["plot"] = out / "candidates.svg"
        with atomic_write(paths["plot"]) as fh:
            fh.write(svg)
    curves = dict(s.sensitivity)
    for c in s.candidates:
        pts = [(float(i), float(t["metric"])) for i, t in enumerate(c.trials) if "metric" in t]
        if len(pts) > 1:
            curves[f"#{c.id} {c.name}: settings search"] = pts
    sens_svg = _sensitivity_svg(curves)
    if sens_svg:
        with atomic_write(out / "sensitivity.svg") as fh:
            fh.write(sens_svg)
    md = [f"# {s.title}", "", _verdict(s), ""]
    md += [f"Stopped: {s.stopped}. Wall time of the compression: {s.seconds:.1f} s. Model: `{s.model_path}`.", ""]
    md += ["## Before / after", "", before_after_markdown(s)]
    md += [
        "The metric is measured by your eval function on the exported model running on Paddle Inference; "
        "latency is the median of repeated runs of the exported model (Paddle Inference with oneDNN on CPU, "
        "and ONNX Runtime when requested). Timings taken while other processes load the machine are slower: compare within one report.",
        "",
    ]
    md += ["## Candidates", "", "| " + " | ".join(_CAND_HEAD) + " |", "|" + "---|" * len(_CAND_HEAD)]
    md += ["| " + " | ".join(r) + " |" for r in _candidate_rows(s)]
    md += ["", f"![metric vs latency]({paths['plot'].name})", ""]
    if sens_svg:
        md += ["## Settings searches and sensitivity", "", "![metric per trial](sensitivity.svg)", ""]
        for c in s.candidates:
            for i, t in enumerate(c.trials):
                value = f"{t['metric']:.4f}" if "metric" in t else t.get("error", "")
                md.append(f"- #{c.id} trial {i}: `{json.dumps(t['settings'], default=str)}` -> {value}")
        md.append("")
    md += ["## Stages of the chosen model", ""]
    md += [f"- `{name}`: `{settings}`" for name, settings in chosen_stages(s)] or ["- none (the original model is the best result)"]
    md.append("")
    if s.translation is not None:
        md.append(s.translation.to_markdown())
    with atomic_write(paths["markdown"]) as fh:
        fh.write("\n".join(md))
    paths_html = _html(s, svg, sens_svg)
    with atomic_write(paths["html"]) as fh:
        fh.write(paths_html)
    return paths


def chosen_stages(s: RunSummary) -> list[tuple[str, str]]:
    """``(stage name, settings as JSON)`` of each stage that made the delivered model."""
    if s.best.id == s.baseline.id:
        return []
    kept = [c for c in s.candidates if c.plan == s.best.plan and 0 <= c.stage < s.best.stage and c.status == "ok"]
    by_stage: dict[int, Candidate] = {}
    for c in kept:  # one per stage: the route the plan continued from is the best metric of that stage
        if c.stage not in by_stage or (c.metric or 0) > (by_stage[c.stage].metric or 0):
            by_stage[c.stage] = c
    return [(c.name, json.dumps(c.settings, default=str)) for c in [*by_stage.values(), s.best]]


def _table_html(head: list[str], rows: list[list[str]] | list[tuple[str, ...]]) -> str:
    h = "".join(f"<th>{html.escape(x)}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _html(s: RunSummary, svg: str, sens_svg: str) -> str:
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        ".ok{color:#1a7f37}.bad{color:#c33}.info{color:#225}"
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(s.title)}</title><style>{style}</style></head><body>",
        f"<h1>{html.escape(s.title)}</h1>",
        f"<p class='{_verdict_class(s)}'>{html.escape(_verdict(s))}</p>",
        f"<p>Stopped: {html.escape(s.stopped)}. Wall time: {s.seconds:.1f} s. Model: <code>{html.escape(s.model_path)}</code></p>",
        "<h2>Before / after</h2>",
        _table_html(["", "original", "compressed", "change"], before_after_rows(s)),
        "<h2>Candidates</h2>",
        _table_html(_CAND_HEAD, _candidate_rows(s)),
        "<h2>Stages of the chosen model</h2>",
        _table_html(["stage", "settings"], chosen_stages(s)) if chosen_stages(s) else "<p>None: the original model is the best result.</p>",
        "<h2>Metric vs latency</h2>",
        svg,
    ]
    if sens_svg:
        parts += ["<h2>Settings searches and sensitivity</h2>", sens_svg]
    if s.translation is not None:
        parts += ["<h2>PaddleSlim ACT recipe translation</h2><h3>Mapped</h3><ul>"]
        parts += [f"<li><code>{html.escape(m)}</code></li>" for m in s.translation.mapped]
        parts += ["</ul><h3>Not supported</h3><ul>"]
        parts += [f"<li><code>{html.escape(u)}</code></li>" for u in s.translation.unsupported]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)

"""Best-candidate choice, Pareto front and the written report (from hand-made candidates)."""

import json
import xml.etree.ElementTree as ET

import pytest

from slim_auto import Candidate, RunSummary, TargetConfig, pareto_front, select_best, write_report
from slim_auto.candidates import meets_target, speedup, unmet_reasons


def cand(i, metric, ms, size=1000, status="ok", name=None):
    return Candidate(
        id=i, name=name or f"c{i}", metric=metric, latency_ms={"paddle": {"1": ms, "16": ms * 10}}, size_bytes=size, status=status
    )


BASE = cand(0, 0.90, 10.0, 4000, name="baseline")


@pytest.mark.parametrize(
    "target, cands, best_id",
    [
        (TargetConfig(max_metric_drop=0.01), [cand(1, 0.895, 4.0), cand(2, 0.85, 2.0)], 1),
        (TargetConfig(max_metric_drop=0.01), [cand(1, 0.899, 6.0), cand(2, 0.892, 4.0)], 2),
        (TargetConfig(max_metric_drop=0.01, min_speedup=100.0), [cand(1, 0.899, 6.0), cand(2, 0.80, 0.05)], 1),
        (TargetConfig(min_metric=0.99), [cand(1, 0.95, 6.0), cand(2, 0.93, 1.0)], 1),
        (TargetConfig(max_metric_drop=0.01), [cand(1, 0.95, 1.0, status="failed")], 0),
        (TargetConfig(), [cand(1, 0.10, 1.0)], 1),
        (TargetConfig(max_metric_drop=0.03), [cand(1, 0.88, 4.0), cand(2, 0.895, 4.1)], 2),
    ],
    ids=[
        "fastest-within-drop",
        "faster-wins-when-both-ok",
        "speed-unreachable-keeps-metric-ok",
        "metric-unreachable-best-metric",
        "failed-ignored",
        "no-target-fastest",
        "latency-within-noise-metric-decides",
    ],
)
def test_select_best(target, cands, best_id):
    assert select_best([BASE, *cands], BASE, target).id == best_id


def test_pareto_front_and_speedup():
    cands = [BASE, cand(1, 0.89, 5.0), cand(2, 0.88, 6.0), cand(3, 0.80, 1.0)]
    assert [c.id for c in pareto_front(cands, TargetConfig())] == [3, 1, 0]
    assert speedup(cands[1], BASE) == pytest.approx(2.0)


def test_unmet_reasons_name_each_part():
    t = TargetConfig(max_metric_drop=0.001, min_speedup=3.0, max_size=10)
    reasons = unmet_reasons(cand(1, 0.85, 5.0), BASE, t)
    assert len(reasons) == 3 and "metric drop" in reasons[0] and "2.00x < 3x" in reasons[1] and "size" in reasons[2]
    assert not meets_target(cand(1, 0.85, 5.0), BASE, t)


def _summary(target, cands):
    best = select_best([BASE, *cands], BASE, target)
    return RunSummary(
        baseline=BASE, best=best, candidates=[BASE, *cands], target=target, stopped="done", seconds=1.5, model_path="out/model"
    )


def test_report_files(tmp_path):
    s = _summary(
        TargetConfig(max_metric_drop=0.01),
        [
            cand(1, 0.895, 4.0, 1000, name="ptq"),
            cand(2, 0.5, 1.0, name="prune"),
            Candidate(id=3, name="qat", status="failed", error="ValueError: boom"),
        ],
    )
    paths = write_report(s, tmp_path)
    md = paths["markdown"].read_text()
    assert "Target met" in md and "| metric | 0.9000 | 0.8950 | -0.0050 |" in md
    assert "| latency paddle batch 1 | 10.000 ms | 4.000 ms | 2.50x faster |" in md
    assert "| latency paddle batch 16 |" in md and "ValueError: boom" in md
    html = paths["html"].read_text()
    assert "<svg" in html and "Before / after" in html and "2.50x faster" in html
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["best"]["name"] == "ptq" and metrics["target_met"] is True and metrics["speedup"] == pytest.approx(2.5)
    assert len(metrics["candidates"]) == 4
    ET.fromstring(paths["plot"].read_text()) if paths["plot"].suffix == ".svg" else None


def test_report_says_when_target_is_missed(tmp_path):
    s = _summary(TargetConfig(max_metric_drop=0.01, min_speedup=50.0), [cand(1, 0.895, 4.0)])
    paths = write_report(s, tmp_path)
    md = paths["markdown"].read_text()
    assert "Target NOT met" in md and "the best result found is saved" in md and "speedup 2.50x < 50x" in md
    assert json.loads(paths["metrics"].read_text())["target_met"] is False


def test_svg_is_well_formed_even_without_points(tmp_path):
    from slim_auto.report import svg_scatter

    s = _summary(TargetConfig(), [])
    ET.fromstring(svg_scatter(s))
    s2 = _summary(TargetConfig(max_metric_drop=0.01), [cand(1, 0.895, 4.0, name="a<b>&c")])
    ET.fromstring(svg_scatter(s2))


def test_search_trials_are_plotted_and_listed(tmp_path):
    c = cand(1, 0.895, 4.0, name="ptq")
    c.trials = [
        {"settings": {"calibrator": "kl"}, "metric": 0.89},
        {"settings": {"calibrator": "mse"}, "metric": 0.895},
        {"settings": {"calibrator": "avg"}, "error": "boom"},
    ]
    paths = write_report(_summary(TargetConfig(max_metric_drop=0.01), [c]), tmp_path)
    md = paths["markdown"].read_text()
    assert "Settings searches" in md and '`{"calibrator": "mse"}` -> 0.8950' in md and "-> boom" in md
    ET.fromstring((tmp_path / "sensitivity.svg").read_text())


def test_slowdowns_notes_settings_and_no_target(tmp_path):
    from slim_auto.report import sentence, speed_text

    assert speed_text(0.8) == "1.25x slower" and speed_text(2.5) == "2.50x faster"
    assert sentence("latency on onnxruntime: " + "word " * 200).endswith("…") and sentence("kept in float").endswith(".")
    slow = cand(1, 0.85, 12.5, name="distill")
    slow.notes = ["latency on onnxruntime: no model for this runtime in the export"]
    fast = cand(2, 0.80, 2.0, name="prune")
    fast.settings = {"flops_ratio": 0.3}
    paths = write_report(_summary(TargetConfig(), [slow, fast]), tmp_path)  # a recipe without a target
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    assert "1.25x slower" in md and "0.80x" not in md and "1.25x slower" in html
    assert "Latency on onnxruntime: no model for this runtime in the export." in md
    assert "No target was set" in md and "0.1000 below the original" in md and "Target met" not in md
    assert "class='info'" in html and "class='ok'" not in html  # never green for a 10-point drop
    assert "Stages of the chosen model" in html and "flops_ratio" in html
    assert json.loads(paths["metrics"].read_text())["target_met"] is False

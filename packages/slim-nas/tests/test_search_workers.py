"""Kill / resume and several workers on one study (issue 18, item 14).

Workers are real processes (``nas_worker.py``) killed with SIGKILL at a write of their own
(the "started" line of a trial), never after a fixed delay. ``SLIM_NAS_PG_URL`` (set by the
``nas_postgres`` nox session) runs the several-workers case on PostgreSQL as well.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from nas_worker import space, value

import slim_nas

WORKER = Path(__file__).with_name("nas_worker.py")
N_TRIALS = 12


def _lines(log_dir: Path, pattern: str) -> list[str]:
    return [line for f in sorted(log_dir.glob(pattern)) for line in f.read_text().splitlines()]


def _spawn(url, strategy, n_trials, log_dir, wid, block_at, n_ready):
    args = [sys.executable, str(WORKER), url, strategy, str(n_trials), str(log_dir), str(wid), str(block_at), str(n_ready)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_at_write(proc, log: Path, n_lines: int) -> None:
    """SIGKILL ``proc`` once ``log`` holds ``n_lines`` lines (the worker then blocks right after writing)."""
    deadline = time.time() + 300  # only a guard against a hung worker, not a timing assertion
    while not (log.exists() and len(log.read_text().splitlines()) >= n_lines):
        if proc.poll() is not None:
            pytest.fail(f"worker exited before its write ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("worker never reached the write to kill it at")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _study_state(url: str):
    import optuna

    study = optuna.load_study(study_name="shared", storage=url)
    return study.get_trials(deepcopy=False)


def _check_exactly_once(trials, log_dir: Path, killed: list[str]) -> None:
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == N_TRIALS, Counter(t.state.name for t in trials)
    assert not [t for t in trials if t.state.name == "RUNNING"], "a trial was left RUNNING"
    configs = [json.dumps(t.params, sort_keys=True) for t in complete]
    assert len(set(configs)) == N_TRIALS, "a config is in the study twice"
    done = _lines(log_dir, "done-*.log")
    assert len(done) == len(set(done)) == N_TRIALS, "a config was evaluated twice"
    assert set(done) == set(configs)
    started = Counter(_lines(log_dir, "started-*.log"))
    # only the killed trials' configs were started twice: once by the dead worker, once when re-queued
    assert {c for c, n in started.items() if n > 1} <= set(killed)
    assert all(k in done for k in killed), "the killed trial's config was run again"


STRATEGIES = ["sa", "random", "tpe"]


def test_killed_workers_resume_to_exactly_n_trials(tmp_path):
    """One worker per strategy (started together: importing Paddle is the slow part), each killed at the
    first write of its 4th trial, then resumed here: exactly N_TRIALS finished, no config run twice."""
    dirs = {s: tmp_path / s for s in STRATEGIES}
    urls = {}
    procs = {}
    for strategy, d in dirs.items():
        d.mkdir()
        urls[strategy] = f"sqlite:///{d / 'study.db'}"
        procs[strategy] = _spawn(urls[strategy], strategy, N_TRIALS, d, 0, 4, 1)
    for strategy, d in dirs.items():
        _kill_at_write(procs[strategy], d / "started-0.log", 4)
    for strategy, d in dirs.items():
        url = urls[strategy]
        killed = _lines(d, "started-0.log")[-1:]
        assert [t.state.name for t in _study_state(url)].count("RUNNING") == 1, strategy

        def objective(cfg, d=d):  # the resumed run, in this process
            line = json.dumps(cfg, sort_keys=True)
            for name in ("started-resume.log", "done-resume.log"):
                with open(d / name, "a") as fh:
                    fh.write(line + "\n")
            return value(cfg)

        result = slim_nas.search(objective, space(), strategy, n_trials=N_TRIALS, storage=url, study_name="shared", seed=0)
        trials = _study_state(url)
        _check_exactly_once(trials, d, killed)
        stale = [t for t in trials if "slim_stale" in t.user_attrs]
        assert len(stale) == 1 and json.dumps(stale[0].params, sort_keys=True) == killed[0], strategy
        assert len([t for t in result.trials if t.state == "complete"]) == N_TRIALS


def _url_cases():
    yield pytest.param("sqlite", id="sqlite")
    if os.environ.get("SLIM_NAS_PG_URL"):
        yield pytest.param(os.environ["SLIM_NAS_PG_URL"], id="postgresql")


@pytest.mark.parametrize("where", list(_url_cases()))
def test_four_workers_start_a_new_study_together_and_survive_a_kill(tmp_path, where):
    """Four workers create one new study at the same moment (no pre-created tables); worker 0 is killed
    at the first write of its first trial; the three others finish the study with exactly N_TRIALS."""
    if where == "sqlite":
        url = f"sqlite:///{tmp_path / 'study.db'}"
    else:
        url = where
        import optuna

        try:  # a fresh study for this run (the database outlives it)
            optuna.delete_study(study_name="shared", storage=url)
        except KeyError:
            pass
    procs = [_spawn(url, "sa", N_TRIALS, tmp_path, wid, 1 if wid == 0 else 0, 4) for wid in range(4)]
    _kill_at_write(procs[0], tmp_path / "started-0.log", 1)
    killed = _lines(tmp_path, "started-0.log")
    outs = []
    for p in procs[1:]:
        out, _ = p.communicate(timeout=600)
        outs.append(out)
    assert [p.returncode for p in procs[1:]] == [0, 0, 0], "\n".join(o[-3000:] for o in outs)
    assert not any("already exists" in o for o in outs)
    _check_exactly_once(_study_state(url), tmp_path, killed)

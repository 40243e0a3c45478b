"""A search worker process for the kill / resume / several-workers tests (and the nas_postgres nox session).

Usage: python nas_worker.py URL STRATEGY N_TRIALS LOG_DIR WORKER_ID BLOCK_AT N_READY

Each objective call appends the config to LOG_DIR/started-ID.log before it works and to
LOG_DIR/done-ID.log when it returns; with BLOCK_AT=k > 0 the k-th call of this worker blocks
after its "started" line, so the test can kill it mid-trial at that write (not after a fixed
delay). Workers other than 0 hold their first result until worker 0 has started a trial, so
worker 0 is sure to be killed while the study still needs it. N_READY workers start together.
"""

import json
import sys
import time
from pathlib import Path


def space():
    from slim_nas import Choice, IntRange, SearchSpace

    return SearchSpace({"x": IntRange(0, 10_000), "y": Choice([1, 2, 3])})


def value(cfg):
    return -abs(cfg["x"] - 5000) - cfg["y"]


def _append(path: Path, cfg) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(cfg, sort_keys=True) + "\n")
        fh.flush()


def main() -> None:
    url, strategy, n_trials, log_dir, wid, block_at, n_ready = sys.argv[1:8]
    log_dir, n_trials, block_at, n_ready = Path(log_dir), int(n_trials), int(block_at), int(n_ready)
    import slim_nas

    (log_dir / f"ready-{wid}").touch()
    deadline = time.time() + 300
    while len(list(log_dir.glob("ready-*"))) < n_ready and time.time() < deadline:
        time.sleep(0.05)
    calls = []

    def objective(cfg):
        calls.append(cfg)
        _append(log_dir / f"started-{wid}.log", cfg)
        if len(calls) == block_at:
            time.sleep(3600)  # killed here
        if wid != "0":
            while not (log_dir / "started-0.log").exists() and time.time() < deadline:
                time.sleep(0.05)
        time.sleep(0.02)
        _append(log_dir / f"done-{wid}.log", cfg)
        return value(cfg)

    slim_nas.search(objective, space(), strategy, n_trials=n_trials, storage=url, study_name="shared", seed=0)


if __name__ == "__main__":
    main()

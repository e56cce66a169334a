"""Multi-process data parallel with jax.distributed on localhost (gloo collectives on CPU).

Two processes with one CPU device each must train exactly like one process with two
devices: each process feeds its local device its share of every global batch.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphrec_jax.checkpoint import CheckpointStore
from tests.helpers import REPO_ROOT, free_port, subprocess_environment

TIMEOUT = 600


def _run_two_processes(command: list[str]) -> list[subprocess.CompletedProcess]:
    """Runs `command` as processes 0 and 1 of a 2-process job; returns both results."""
    address = f"localhost:{free_port()}"
    processes = [
        subprocess.Popen(
            [*command, f"--coordinator_address={address}", "--num_processes=2", f"--process_id={index}"],
            env=subprocess_environment(1),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    return results


@pytest.mark.slow  # three processes start and compile: about 25 s on 2 cores
def test_two_processes_train_like_one_process_with_two_devices(tmp_path):
    script = [sys.executable, str(REPO_ROOT / "tests" / "workers" / "distributed_steps.py")]
    single = subprocess.run(
        [*script, f"--out={tmp_path / 'single'}"],
        env=subprocess_environment(2),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    results = _run_two_processes([*script, f"--out={tmp_path / 'multi'}"])
    reports = [json.loads(result.stdout.strip().splitlines()[-1]) for result in results]
    assert [report["devices"] for report in reports] == [2, 2]
    for mode in ("full", "sampled"):
        one, two = np.load(tmp_path / f"single_{mode}.npz"), np.load(tmp_path / f"multi_{mode}.npz")
        assert sorted(one.files) == sorted(two.files)
        for key in one.files:
            np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-6, err_msg=f"{mode}: {key}")
        assert one["losses"][-1] < one["losses"][0]
        assert reports[1][mode] == reports[0][mode]  # every process sees the global loss


def _train_command(workdir: Path, epochs: int) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "scripts" / "train.py"),
        f"--config={REPO_ROOT / 'configs' / 'test.py'}",
        f"--workdir={workdir}",
        "--show_users=0",
        "--config.sampling.mode=sampled",
        "--config.sampling.fanouts=4,3",
        f"--config.train.num_epochs={epochs}",
    ]


def _records(workdir: Path) -> list[dict]:
    timing = ("epoch_seconds", "eval_seconds")
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith(timing)} for line in lines]


@pytest.mark.slow
def test_train_script_as_two_processes_matches_one_process_and_checkpoints(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    result = subprocess.run(
        _train_command(single, 4), env=subprocess_environment(2), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = _run_two_processes(_train_command(multi, 4))
    assert _records(multi) == _records(single)
    # only process 0 prints the final metrics (and writes metrics.jsonl, config.json, logs)
    assert '"epoch": 4' in first.stdout and '"epoch"' not in second.stdout
    assert "epoch 4 step" not in second.stdout + second.stderr
    # every process called save; the checkpoints restore to the single-process state
    store_single, store_multi = CheckpointStore(single, read_only=True), CheckpointStore(multi, read_only=True)
    assert store_multi.steps() == store_single.steps()
    _, state_single, _, _ = store_single.restore(None, None)
    _, state_multi, arrays, metadata = store_multi.restore(None, None)
    np.testing.assert_allclose(
        state_multi["train_state"]["params"]["node_embedding"],
        state_single["train_state"]["params"]["node_embedding"],
        atol=1e-6,
    )
    assert metadata["step"] == store_multi.steps()[-1] and len(arrays["train_users"]) > 0
    # a multi-process run resumes from its own checkpoints
    _run_two_processes(_train_command(multi, 6))
    result = subprocess.run(
        _train_command(single, 6), env=subprocess_environment(2), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _records(multi) == _records(single)
    assert [record["epoch"] for record in _records(multi)] == [2, 4, 6]

"""Stopping and resuming: a real SIGTERM (single- and multi-process) saves at the next step and
the rerun ends with an uninterrupted run's metrics; two saves of one step; the README's
multi-process command exits by itself."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from graphrec_jax.checkpoint import CheckpointStore
from tests.helpers import REPO_ROOT, free_port, subprocess_environment

TIMEOUT = 600
TIMING = ("epoch_seconds", "eval_seconds")


def _records(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith(TIMING)} for line in lines]


def _command(workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "scripts" / "train.py"),
        f"--config={REPO_ROOT / 'configs' / 'test.py'}",
        f"--workdir={workdir}",
        "--show_users=0",
        "--config.train.num_epochs=120",
        "--config.train.eval_every_epochs=40",
        "--config.train.progress_bar=False",
        *extra,
    ]


def _wait_for_first_record(workdir: Path, processes) -> None:
    deadline = time.time() + TIMEOUT
    while not (workdir / "metrics.jsonl").exists() or not (workdir / "metrics.jsonl").read_text().strip():
        assert all(process.poll() is None for process in processes), "training ended before the signal"
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_the_rerun_matches_an_uninterrupted_run(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    subprocess.run(_command(straight), env=subprocess_environment(), check=True, capture_output=True, timeout=TIMEOUT)
    process = subprocess.Popen(_command(stopped), env=subprocess_environment(), stderr=subprocess.PIPE, text=True)
    _wait_for_first_record(stopped, [process])
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 143, stderr[-2000:]
    step = int(re.search(r"preempted: stopped at step (\d+)", stderr).group(1))
    assert 40 * 6 <= step < 120 * 6  # after the first evaluation (6 steps an epoch), before the end
    assert CheckpointStore(stopped, read_only=True).steps()[-1] == step
    subprocess.run(_command(stopped), env=subprocess_environment(), check=True, capture_output=True, timeout=TIMEOUT)
    assert _records(stopped) == _records(straight)
    assert [record["epoch"] for record in _records(stopped)] == [40, 80, 120]


def _two_processes(command: list[str], address: str) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [*command, f"--coordinator_address={address}", "--num_processes=2", f"--process_id={index}"],
            env=subprocess_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(2)
    ]


def _finish(processes) -> list[tuple[int, str, str]]:
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
            results.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return results


@pytest.mark.slow
def test_sigterm_to_one_process_of_two_stops_both_at_one_step_and_the_rerun_matches(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    subprocess.run(_command(straight), env=subprocess_environment(2), check=True, capture_output=True, timeout=TIMEOUT)
    processes = _two_processes(_command(stopped), f"127.0.0.1:{free_port()}")
    _wait_for_first_record(stopped, processes)
    processes[1].send_signal(signal.SIGTERM)  # JAX's preemption service tells process 0
    results = _finish(processes)
    assert [code for code, _, _ in results] == [143, 143], [stderr[-1500:] for _, _, stderr in results]
    steps = {int(re.search(r"stopped at step (\d+)", stderr).group(1)) for _, _, stderr in results}
    assert len(steps) == 1  # both saved the same step
    assert CheckpointStore(stopped, read_only=True).steps()[-1] == steps.pop()
    results = _finish(_two_processes(_command(stopped), f"127.0.0.1:{free_port()}"))
    assert [code for code, _, _ in results] == [0, 0]
    assert _records(stopped) == _records(straight)


def test_checkpoint_every_step_with_an_evaluation_every_epoch_finishes_and_reruns(tmp_path):
    command = _command(
        tmp_path,
        "--config.train.num_epochs=3",
        "--config.train.eval_every_epochs=1",
        "--config.train.checkpoint_every_steps=1",
    )
    for _ in range(2):  # a rerun on the finished workdir saves nothing twice either
        result = subprocess.run(command, env=subprocess_environment(), capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 0, result.stderr[-2000:]
    longer = subprocess.run(
        [*command[:-3], "--config.train.num_epochs=4", *command[-2:]],
        env=subprocess_environment(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert [record["epoch"] for record in _records(tmp_path)] == [1, 2, 3, 4]


def _readme_two_process_command() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    lines = [line.strip() for line in readme.splitlines() if "--num_processes 2 --process_id $I" in line]
    assert len(lines) == 1, "the README's two-process demo command is not where the test looks for it"
    return lines[0].rstrip("&").strip()


@pytest.mark.slow
def test_the_readmes_two_process_command_exits_by_itself(tmp_path):
    command = _readme_two_process_command()
    port = free_port()
    command = command.replace("127.0.0.1:12345", f"127.0.0.1:{port}").replace("runs/demo-2p", str(tmp_path / "w"))
    processes = []
    for index in range(2):
        argv = command.replace("$I", str(index)).split()
        assert argv[0] == "python"
        processes.append(
            subprocess.Popen(
                [sys.executable, *argv[1:]],
                cwd=REPO_ROOT,
                env=subprocess_environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = _finish(processes)
    assert [code for code, _, _ in results] == [0, 0], [stderr[-2000:] for _, _, stderr in results]
    assert "Top 10 for user" in results[0][1] and "Top 10 for user" not in results[1][1]

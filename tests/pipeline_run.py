"""The end-to-end test's pipeline run: `dvc repro` of a shrunk copy of the repository, started in the background
when the session begins, so that the unit tests run beside it (imported as `pipeline_run`: tests/ is on sys.path)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

SHRUNK_FOR_TESTS = {
    ("sync_expert", "training", "steps"): 200,
    ("sync_expert", "training", "batch_size"): 16,
    ("sync_encoder", "training", "steps"): 20,
    ("sync_encoder", "training", "warmup_steps"): 5,
    ("nerf_coarse", "training", "steps"): 600,
    ("nerf_coarse", "training", "eval_every"): 600,
    ("nerf_coarse", "training", "checkpoint_every"): 600,
    ("nerf_coarse", "eval_frames"): 1,
    ("nerf_fine", "training", "steps"): 20,
    ("nerf_fine", "training", "warmup_steps"): 5,
    ("nerf_fine", "training", "eval_every"): 20,
    ("nerf_fine", "eval_frames"): 1,
}
"""The training stages are shrunk in the copy (what they compute is tested in tests/test_nerf_train.py and
tests/test_sync_train.py; here it is the pipeline around them), so the whole run fits the test budget; every other
stage runs with the committed params. The expert (200 steps of 16 pairs) must still beat chance on held-out clips and
find a known audio shift; 600 coarse steps of the committed field must still beat showing the mean training frame."""

THREADS = 1
"""Threads of every numeric library in the pipeline's processes, and of torch in the test process while the pipeline
runs: the two share the machine's cores, and thread pools sized for all of them make each spin-wait for the other."""


def run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """stdout of a command that must succeed (its output in the failure message otherwise)."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def pipeline_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The pipeline's environment, as on a machine where no audio client ever ran: empty XDG_CONFIG_HOME and TMPDIR
    (PulseAudio's client, which espeak-ng loads, keeps its state there; its first run once changed the sample's
    speech), so the byte-identity check meets what a fresh machine meets."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH="", OMP_NUM_THREADS=str(THREADS))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for name in ("XDG_CONFIG_HOME", "TMPDIR"):
        env[name] = str(tmp_path_factory.mktemp(name.lower()))
    for name in ("XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH", "PULSE_SERVER"):
        env.pop(name, None)
    return env


def shrink_training(params_path: Path) -> None:
    """Write SHRUNK_FOR_TESTS into a params.yaml."""
    params = yaml.safe_load(params_path.read_text())
    for keys, value in SHRUNK_FOR_TESTS.items():
        section = params
        for key in keys[:-1]:
            section = section[key]
        section[keys[-1]] = value
    params_path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))


def copy_repository(repo_root: Path, work: Path) -> None:
    """The tracked and unignored files of the repository, copied to `work`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo_root, capture_output=True, text=True, check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = repo_root / name
        if source.is_file():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)


class BackgroundRepro:
    """A fresh copy of the repository with its training shrunk, committed to its own git repository, whose
    `dvc repro` runs in a process of its own until `finished()` is asked for."""

    def __init__(self, repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.env = pipeline_environment(tmp_path_factory)
        self.work = tmp_path_factory.mktemp("pipeline") / "repo"
        copy_repository(repo_root, self.work)
        self.env["PYTHONPATH"] = str(self.work)
        shrink_training(self.work / "params.yaml")
        for command in (
            ["git", "init", "-q"],
            ["git", "add", "-A"],
            ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "copy"],
        ):
            run(command, self.work, self.env)
        self.log = self.work.parent / "repro.log"
        with self.log.open("w") as log:
            self._process = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=self.work, env=self.env,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def running(self) -> bool:
        """Whether `dvc repro` has not ended yet."""
        return self._process.poll() is None

    def finished(self) -> Path:
        """The copy once `dvc repro` has succeeded there (waits for it; fails with its output otherwise)."""
        returncode = self._process.wait()
        assert returncode == 0, f"dvc repro failed ({returncode}):\n{self.log.read_text()[-20000:]}"
        return self.work

    def stop(self) -> None:
        """End the run and its stages' processes if it is still going (an interrupted session)."""
        if self.running:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

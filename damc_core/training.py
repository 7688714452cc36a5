"""Training utilities shared by the stages: LR schedule, seeding, resumable checkpoints, DDP and dvclive logging."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from dvclive import Live
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from tqdm import tqdm

from damc_core.config import to_dict
from damc_core.devices import resolve_device
from damc_core.params import TrainingConfig
from damc_core.staging import staged_file

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

_Settings_co = TypeVar("_Settings_co", bound=TrainingConfig, covariant=True)
"""The training settings of a TrainingRun: TrainingConfig, or a stage's extension of it (BatchTrainingConfig)."""


def learning_rate(
    step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1
) -> float:
    """The learning rate of (0-based) `step`: linear warmup, then cosine decay, then constant.

    - `step < warmup_steps`: `base_lr * (step + 1) / warmup_steps`, so step 0 gets `base_lr / warmup_steps` and the
      last warmup step gets `base_lr`;
    - `warmup_steps <= step < total_steps`: cosine from `base_lr` at `warmup_steps` towards `base_lr * min_lr_ratio`;
    - `step >= total_steps`: `base_lr * min_lr_ratio`.
    """
    if step < 0 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= step, 0 <= warmup_steps <= total_steps; got {step}, {warmup_steps}, {total_steps}")
    min_lr = base_lr * min_lr_ratio
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return base_lr - (base_lr - min_lr) * 0.5 * (1.0 - math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's legacy global generator and torch (CPU and every CUDA device), and ask torch
    for deterministic algorithms.

    `warn_only=True`: operations without a deterministic implementation (e.g. some CUDA scatter/index backward passes
    used by hash-grid encoders) warn instead of raising, so runs are bit-reproducible on CPU and as reproducible as
    the kernels allow on GPU. `CUBLAS_WORKSPACE_CONFIG` is set (unless already set) for deterministic cuBLAS.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def save_checkpoint(
    path: Path,
    *,
    step: int,
    models: dict[str, nn.Module],
    optimizers: dict[str, Optimizer],
    rng: np.random.Generator | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Atomically write one checkpoint dict to `path`: a crash mid-write leaves the previous file intact.

    The dict is `{"step", "models": {name: state_dict}, "optimizers": {name: state_dict}, "torch_rng", "cuda_rng"
    (current CUDA device, None without CUDA), "numpy_rng" (`rng.bit_generator.state`, None without `rng`), "extra"}`.
    `step` is by convention the next step to run. DDP-wrapped models are saved unwrapped (no `module.` prefix).
    `extra` must hold only tensors and plain Python values (it is loaded with `weights_only=True`).
    """
    checkpoint = {
        "step": step,
        "models": {name: _unwrap(model).state_dict() for name, model in models.items()},
        "optimizers": {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy_rng": rng.bit_generator.state if rng is not None else None,
        "extra": extra,
    }
    with staged_file(path) as partial:
        torch.save(checkpoint, partial)


def load_checkpoint(
    path: Path,
    *,
    models: dict[str, nn.Module],
    optimizers: dict[str, Optimizer],
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Restore in place the models (DDP-wrapped or not), optimizers, torch RNG and, if given, `rng` from a
    checkpoint written by `save_checkpoint`; return its dict (read `step` and `extra` from it).

    Loaded with `weights_only=True`, so a checkpoint cannot run code. The RNG states are those of the process that
    saved: under DDP, where only the main rank saves, derive per-rank data generators from `shard_seed` and the step
    rather than restoring `rng` on every rank.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for name, model in models.items():
        _unwrap(model).load_state_dict(checkpoint["models"][name])
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(checkpoint["optimizers"][name])
    torch.set_rng_state(checkpoint["torch_rng"])
    if checkpoint["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(checkpoint["cuda_rng"])
    if rng is not None:
        rng.bit_generator.state = checkpoint["numpy_rng"]
    return checkpoint


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a (possibly single-process) run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_main: bool


def setup_distributed(backend: str | None = None, device: str = "auto") -> DistributedContext:
    """Join the process group described by torchrun's environment variables, or describe a single process.

    `device` is params.yaml's setting (see resolve_device). Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR and MASTER_PORT all set) the process group is initialised with `backend` (default "nccl" with CUDA,
    else "gloo") and a CUDA device is `cuda:LOCAL_RANK` (made the current CUDA device). Otherwise: rank 0 of 1.
    """
    placement = resolve_device(device)
    if not all(name in os.environ for name in TORCHRUN_VARIABLES):
        return DistributedContext(rank=0, world_size=1, local_rank=0, device=placement, is_main=True)
    rank, world_size, local_rank = (int(os.environ[name]) for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if placement.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = placement
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device, is_main=rank == 0)


def teardown_distributed() -> None:
    """Leave the process group, if one was initialised."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed(backend: str | None = None, device: str = "auto") -> Iterator[DistributedContext]:
    """setup_distributed() for the duration of a block, torn down however the block ends. A block that ends
    normally waits at a barrier first: a rank that left early would close connections (rank 0 also serves the
    group's store) while another still uses them, which gloo answers with an abort."""
    context = setup_distributed(backend, device)
    try:
        yield context
        if context.world_size > 1:
            dist.barrier()
    finally:
        teardown_distributed()


def wrap_ddp(model: nn.Module, context: DistributedContext) -> nn.Module:
    """Wrap `model` (already on `context.device`) in DistributedDataParallel when there are several processes."""
    if context.world_size == 1:
        return model
    device_ids = [context.device] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def all_reduce_mean(value: float | torch.Tensor, context: DistributedContext) -> float:
    """The mean of a scalar over all processes (every rank must call it); the value itself when single."""
    if context.world_size == 1:
        return float(value)
    tensor = torch.as_tensor(value).detach().to(device=context.device, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.item() / context.world_size


def average_gradients(parameters: Iterable[nn.Parameter], context: DistributedContext) -> None:
    """Replace each parameter's gradient by its mean over all processes (every rank must call it), in one
    all-reduce of the flattened gradients: DDP's averaging, for models trained through methods other than
    `forward` (the talking head renders rays). A parameter without a gradient counts as zero."""
    if context.world_size == 1:
        return
    parameters = list(parameters)
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
    flat = torch.cat([parameter.grad.reshape(-1) for parameter in parameters])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= context.world_size
    for parameter, mean in zip(parameters, flat.split([parameter.numel() for parameter in parameters]), strict=True):
        parameter.grad.copy_(mean.view_as(parameter))


def check_ranks_agree(models: dict[str, nn.Module], context: DistributedContext) -> None:
    """Raise RuntimeError unless every process holds the same weights (every rank must call it): a checksum of the
    parameters is compared across ranks. Ranks that average their gradients stay identical; a divergence is a bug."""
    if context.world_size == 1:
        return
    parameters = [p.detach().double() for model in models.values() for p in _unwrap(model).parameters()]
    checksum = torch.stack([sum(p.sum() for p in parameters), sum((p * p).sum() for p in parameters)])
    low, high = checksum.to(context.device), checksum.clone().to(context.device)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError(f"the {context.world_size} processes ended with different weights (parameter checksums "
                           f"{low.tolist()} to {high.tolist()})")


def shard_seed(seed: int, context: DistributedContext) -> int:
    """A data seed derived from `seed` and the rank: deterministic, and different on every rank."""
    return int(np.random.SeedSequence([seed, context.rank]).generate_state(1)[0])


def _truncate_metrics(plots: Path, step: int) -> None:
    """Drop the rows at or after `step` from every metric TSV under `plots`."""
    for tsv in plots.rglob("*.tsv"):
        with tsv.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file, delimiter="\t")
            fields, rows = reader.fieldnames, [row for row in reader if int(row["step"]) < step]
        with staged_file(tsv) as partial, partial.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fields, delimiter="\t", lineterminator=os.linesep)
            writer.writeheader()
            writer.writerows(rows)


class TrainingLog:
    """Metrics of a training stage, logged with dvclive by the main rank (a no-op everywhere when disabled).

    Files in `directory`: `metrics.json` (latest value of every metric, `step`, and the `summary` values) and
    `plots/metrics/<name>.tsv` (columns `step` and `<name>`, one row per logged step; `dvc plots show` reads them).
    dvclive writes no dvc.yaml, report or DVC experiment: the stage declares these files in the pipeline's dvc.yaml.

    `resume_step=None` starts afresh (dvclive clears earlier files); `resume_step=n` keeps the earlier files but drops
    their rows for steps >= n, so that a run resumed from a checkpoint at step n logs each step exactly once.
    """

    def __init__(self, directory: Path, enabled: bool, resume_step: int | None = None) -> None:
        self._live: Live | None = None
        if not enabled:
            return
        if resume_step is not None:
            _truncate_metrics(directory / "plots" / "metrics", resume_step)
        self._live = Live(dir=str(directory), resume=resume_step is not None, save_dvc_exp=False, dvcyaml=None)

    def log(self, step: int, **metrics: float) -> None:
        """Log each metric under its name at `step`."""
        if self._live is None:
            return
        self._live.step = step
        for name, value in metrics.items():
            self._live.log_metric(name, float(value))
        self._live.next_step()

    def summary(self, **values: float | str | None) -> None:
        """Record final values (numbers; or a string, or None, where a value could not be computed and says why);
        they are written to `metrics.json` on `close`."""
        if self._live is not None:
            self._live.summary.update({
                name: float(value) if isinstance(value, int | float) else value for name, value in values.items()
            })

    def close(self) -> None:
        """Write `metrics.json` and end the dvclive session."""
        if self._live is not None:
            self._live.end()
            self._live = None

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True)
class RunFolders:
    """Where a training run writes."""

    out_dir: Path
    """The exported model and its meta file (the stage's output)."""
    checkpoint_dir: Path
    """Checkpoints for resuming; kept across runs, named by the run's fingerprint."""
    log_dir: Path
    """dvclive metrics and plots."""


def run_fingerprint(config: object, data_fingerprint: str, world_size: int, *inputs: str) -> str:
    """Identity of a run: its config, data, process count and other inputs (e.g. the model it starts from).
    A checkpoint resumes only the same run."""
    text = json.dumps(
        {"config": to_dict(config), "data": data_fingerprint, "world": world_size, "inputs": inputs}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_path(checkpoint_dir: Path, fingerprint: str) -> Path:
    """The checkpoint file of the run `fingerprint`; checkpoints of other runs in the folder are deleted."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / f"checkpoint-{fingerprint}.pt"
    for stale in checkpoint_dir.glob("checkpoint-*.pt"):
        if stale != path:
            stale.unlink()
    return path


def export_weights(path: Path, weights: dict, meta: dict) -> None:
    """Write `weights` (state dicts and tensors) to `path` and `meta` to the same name with `.json`.

    Serialised in memory first: torch.save names the archive's records after the file it writes, and the staging
    file's name is random, which would make identical weights differ in bytes."""
    buffer = io.BytesIO()
    torch.save(weights, buffer)
    with staged_file(path) as partial:
        partial.write_bytes(buffer.getvalue())
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def metrics_line(stage: str, metrics: dict[str, float | str | None]) -> str:
    """The line a training stage prints at the end: its final metrics, numbers to 4 decimals."""
    return f"{stage}: " + ", ".join(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
                                    for name, value in metrics.items())


@dataclass(frozen=True)
class TrainingRun(Generic[_Settings_co]):
    """What run_training trains, with which settings, and where its state goes."""

    name: str
    """The stage's name, shown on the progress bar and in messages."""
    models: dict[str, nn.Module]
    """The models the checkpoint holds, by name (wrapped in DDP or not)."""
    optimizer: Optimizer
    """One optimizer over them; each parameter group's `lr` is its peak learning rate."""
    training: _Settings_co
    """Steps, schedule, logging, evaluation and checkpoint intervals."""
    folders: RunFolders
    """Where the run writes."""
    fingerprint: str
    """run_fingerprint of the run: a checkpoint of another fingerprint is never resumed."""
    context: DistributedContext
    """This process's place among the run's processes."""


def run_training(
    run: TrainingRun[TrainingConfig],
    step_loss: Callable[[int], torch.Tensor],
    evaluate: Callable[[], dict[str, float]],
    finish: Callable[[dict[str, float]], dict[str, float | str | None]],
) -> dict[str, float | str | None]:
    """The flat training loop every stage shares: schedule, logging, periodic evaluation, checkpoints, resume.

    `step_loss(step)` draws step `step`'s batch (from a generator seeded by the step, so a resumed run draws exactly
    the batches an uninterrupted one would, with no sampler state to restore) and returns its loss. Each parameter
    group follows `learning_rate` with its own peak: its `lr` when the optimizer was made. `evaluate()` is logged every
    `eval_every` steps and at the end; `finish(evaluation)` turns that last evaluation into the final metrics, logged
    as the summary and returned. The
    checkpoint is deleted once the run has finished: it exists to resume interrupted runs. With several processes,
    gradients are averaged over them: by DDP for models wrapped in it, else here (average_gradients)."""
    models, optimizer, training, context = run.models, run.optimizer, run.training, run.context
    for group in optimizer.param_groups:
        group.setdefault("peak_lr", group["lr"])
    checkpoint = checkpoint_path(run.folders.checkpoint_dir, run.fingerprint)
    start = 0
    if checkpoint.exists():
        start = load_checkpoint(checkpoint, models=models, optimizers={"main": optimizer})["step"]
        if context.is_main:
            print(f"{run.name}: resuming from step {start} ({checkpoint})")
    # Log rows are stamped with the number of steps done, so the rows up to `start` came before the checkpoint.
    with TrainingLog(run.folders.log_dir, enabled=context.is_main, resume_step=start + 1 if start else None) as log:
        progress = tqdm(range(start, training.steps), initial=start, total=training.steps, desc=run.name,
                        disable=not context.is_main, leave=False, mininterval=5.0)
        for step in progress:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, base_lr=group["peak_lr"], warmup_steps=training.warmup_steps,
                                            total_steps=training.steps)
            loss = step_loss(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if not any(isinstance(model, DistributedDataParallel) for model in models.values()):
                average_gradients((p for group in optimizer.param_groups for p in group["params"]), context)
            optimizer.step()
            done = step + 1
            if done % training.log_every == 0:
                value = all_reduce_mean(loss.detach(), context)
                log.log(done, train_loss=value, learning_rate=optimizer.param_groups[0]["lr"])
                progress.set_postfix(loss=f"{value:.4f}")
            if done % training.eval_every == 0 or done == training.steps:
                evaluation = evaluate()
                log.log(done, **evaluation)
            if done % training.checkpoint_every == 0 and context.is_main:
                save_checkpoint(checkpoint, step=done, models=models, optimizers={"main": optimizer})
        check_ranks_agree(models, context)
        final = finish(evaluation if start < training.steps else evaluate())  # a run resumed at its end evaluates here
        log.summary(**final)
    if context.is_main:
        checkpoint.unlink(missing_ok=True)  # finished: a rerun (e.g. after a code change) starts afresh
    return final

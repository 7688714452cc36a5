"""Tests for damc_core.training: LR schedule, seeding, resumable checkpoints, DDP on CPU and dvclive logging."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from damc_core import training
from damc_core.training import (
    metrics_line,
    DistributedContext,
    TrainingLog,
    all_reduce_mean,
    average_gradients,
    check_ranks_agree,
    learning_rate,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    setup_distributed,
    shard_seed,
    teardown_distributed,
    wrap_ddp,
)

SCHEDULE = {"base_lr": 1e-2, "warmup_steps": 5, "total_steps": 20}
BATCH = 8
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def restore_determinism() -> Iterator[None]:
    """seed_everything switches torch to deterministic algorithms process-wide; put the setting back."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def make_model(dropout: float = 0.2) -> nn.Module:
    """A small MLP; its dropout makes resuming depend on the torch RNG too."""
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def draw_batch(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(rng.standard_normal((BATCH, 3), dtype=np.float32))
    return x, x.sum(dim=1, keepdim=True).sin()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, rng: np.random.Generator, step: int) -> None:
    optimizer.param_groups[0]["lr"] = learning_rate(step, **SCHEDULE)
    x, y = draw_batch(rng)
    loss = nn.functional.mse_loss(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def fresh_run(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, np.random.Generator]:
    seed_everything(seed)
    model = make_model()
    return model, torch.optim.Adam(model.parameters()), np.random.default_rng(seed)


def train(seed: int, steps: int) -> nn.Module:
    model, optimizer, rng = fresh_run(seed)
    for step in range(steps):
        train_step(model, optimizer, rng, step)
    return model


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_learning_rate_known_values() -> None:
    schedule = {"base_lr": 2.0, "warmup_steps": 4, "total_steps": 14}
    assert [learning_rate(step, **schedule) for step in range(5)] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])
    assert learning_rate(9, **schedule) == pytest.approx(0.2 + 0.5 * 1.8)  # half-way through the cosine
    assert learning_rate(14, **schedule) == pytest.approx(0.2)
    assert learning_rate(1000, **schedule) == pytest.approx(0.2)
    assert learning_rate(1000, **schedule, min_lr_ratio=0.0) == 0.0
    assert learning_rate(0, base_lr=1.0, warmup_steps=0, total_steps=10) == 1.0


def test_learning_rate_rises_then_falls() -> None:
    rates = [learning_rate(step, **SCHEDULE) for step in range(30)]
    warmup, decay = rates[:5], rates[4:]
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False))
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[1] > decay[-1] == pytest.approx(1e-3)


def test_learning_rate_rejects_warmup_longer_than_schedule() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        learning_rate(0, base_lr=1.0, warmup_steps=10, total_steps=5)


def test_same_seed_same_parameters() -> None:
    first, second, other = train(seed=7, steps=10), train(seed=7, steps=10), train(seed=8, steps=10)
    assert_same_parameters(first, second)
    assert not torch.equal(first[0].weight, other[0].weight)


def test_resumed_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    uninterrupted = train(seed=0, steps=20)

    model, optimizer, rng = fresh_run(seed=0)
    for step in range(12):  # killed after step 11, with checkpoints after steps 3, 7 and 11
        train_step(model, optimizer, rng, step)
        if (step + 1) % 4 == 0:
            save_checkpoint(
                tmp_path / "last.pt",
                step=step + 1,
                models={"net": model},
                optimizers={"adam": optimizer},
                rng=rng,
                extra={"note": "hi", "best": (step, 0.5)},
            )

    model, optimizer, rng = fresh_run(seed=123)  # a new process: different weights, RNG and data stream
    checkpoint = load_checkpoint(tmp_path / "last.pt", models={"net": model}, optimizers={"adam": optimizer}, rng=rng)
    assert checkpoint["step"] == 12
    assert checkpoint["extra"] == {"note": "hi", "best": (11, 0.5)}
    for step in range(checkpoint["step"], 20):
        train_step(model, optimizer, rng, step)

    assert_same_parameters(model, uninterrupted)


def test_checkpoint_interrupted_mid_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, optimizer, rng = fresh_run(seed=0)
    save_checkpoint(tmp_path / "last.pt", step=4, models={"net": model}, optimizers={"adam": optimizer})

    def dying_save(obj: object, path: Path) -> None:
        path.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt

    train_step(model, optimizer, rng, 0)
    monkeypatch.setattr(training.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last.pt", step=8, models={"net": model}, optimizers={"adam": optimizer})
    monkeypatch.undo()

    assert [path.name for path in tmp_path.iterdir()] == ["last.pt"]
    restored, adam, _ = fresh_run(seed=0)
    checkpoint = load_checkpoint(tmp_path / "last.pt", models={"net": restored}, optimizers={"adam": adam})
    assert checkpoint["step"] == 4
    assert not torch.equal(restored[0].weight, model[0].weight)


def test_single_process_context(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in training.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    context = setup_distributed()
    assert (context.rank, context.world_size, context.is_main) == (0, 1, True)
    assert not dist.is_initialized()
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, context) is model
    assert all_reduce_mean(torch.tensor(2.5), context) == 2.5


def test_shard_seeds_are_deterministic_and_distinct_per_rank() -> None:
    seeds = [shard_seed(0, DistributedContext(rank, 4, rank, CPU, rank == 0)) for rank in range(4)]
    assert len(set(seeds)) == 4
    assert seeds == [shard_seed(0, DistributedContext(rank, 4, rank, CPU, rank == 0)) for rank in range(4)]
    assert seeds[0] != shard_seed(1, DistributedContext(0, 4, 0, CPU, True))


def ddp_worker(rank: int, port: int, out: Path) -> None:
    """One torchrun-like process: train 5 steps of DDP on its own shard, save (main rank) and reload a checkpoint."""
    env = {"RANK": rank, "WORLD_SIZE": 2, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    os.environ.update({name: str(value) for name, value in env.items()})
    torch.set_num_threads(1)
    context = setup_distributed()
    try:
        seed_everything(0)
        model = wrap_ddp(make_model(dropout=0.0), context)
        optimizer = torch.optim.Adam(model.parameters())
        rng = np.random.default_rng(shard_seed(0, context))
        for step in range(5):
            train_step(model, optimizer, rng, step)
        if context.is_main:
            save_checkpoint(out / "ddp.pt", step=5, models={"net": model}, optimizers={"adam": optimizer})
        dist.barrier()
        reloaded = wrap_ddp(make_model(dropout=0.0), context)
        load_checkpoint(out / "ddp.pt", models={"net": reloaded}, optimizers={})
        plain = make_model(dropout=0.0)  # no DDP: its gradients are averaged by average_gradients
        x, y = draw_batch(np.random.default_rng(shard_seed(1, context)))
        nn.functional.mse_loss(plain(x), y).backward()
        own_gradients = [p.grad.clone() for p in plain.parameters()]
        average_gradients(plain.parameters(), context)
        check_ranks_agree({"net": model}, context)
        with torch.no_grad():
            next(plain.parameters()).add_(float(rank))  # now the ranks differ
        try:
            check_ranks_agree({"plain": plain}, context)
            diverged = False
        except RuntimeError:
            diverged = True
        result = {
            "own_gradients": own_gradients,
            "averaged_gradients": [p.grad.clone() for p in plain.parameters()],
            "divergence_caught": diverged,
            "parameters": [p.detach() for p in model.module.parameters()],
            "reloaded": [p.detach() for p in reloaded.module.parameters()],
            "mean_rank": all_reduce_mean(float(context.rank), context),
            "context": (context.rank, context.world_size, context.local_rank, context.is_main, context.device.type),
        }
        torch.save(result, out / f"rank{rank}.pt")
        dist.barrier()  # as training.distributed() does: nobody leaves while the other still talks
    finally:
        teardown_distributed()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_on_cpu_averages_gradients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo on CPU even on a GPU machine
    mp.spawn(ddp_worker, args=(free_port(), tmp_path), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]

    assert [r["context"] for r in ranks] == [(0, 2, 0, True, "cpu"), (1, 2, 1, False, "cpu")]
    assert [r["mean_rank"] for r in ranks] == [0.5, 0.5]
    assert [r["divergence_caught"] for r in ranks] == [True, True]
    for own_0, own_1, mean_0, mean_1 in zip(*(ranks[r][key] for key in ("own_gradients", "averaged_gradients")
                                              for r in (0, 1)), strict=True):
        assert not torch.equal(own_0, own_1)
        torch.testing.assert_close(mean_0, (own_0 + own_1) / 2)
        assert torch.equal(mean_0, mean_1)
    for a, b in zip(ranks[0]["parameters"], ranks[1]["parameters"], strict=True):
        assert torch.equal(a, b)
    for rank in ranks:
        for a, b in zip(rank["parameters"], rank["reloaded"], strict=True):
            assert torch.equal(a, b)

    # DDP averages the gradients of both shards: the same as one process training on both shards' batches at once.
    seed_everything(0)
    model = make_model(dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters())
    rngs = [np.random.default_rng(shard_seed(0, DistributedContext(r, 2, r, CPU, r == 0))) for r in range(2)]
    for step in range(5):
        optimizer.param_groups[0]["lr"] = learning_rate(step, **SCHEDULE)
        batches = [draw_batch(rng) for rng in rngs]
        loss = nn.functional.mse_loss(model(torch.cat([x for x, _ in batches])), torch.cat([y for _, y in batches]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for a, b in zip(model.parameters(), ranks[0]["parameters"], strict=True):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-6)
    assert set(torch.load(tmp_path / "ddp.pt")["models"]["net"]) == set(model.state_dict())  # no "module." prefix


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file, delimiter="\t"))


def test_training_log_resumes_without_duplicate_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outside any DVC repository, so dvclive cannot touch one
    directory = tmp_path / "live"
    with TrainingLog(directory, enabled=True) as log:
        log.log(0, loss=99.0)
    log = TrainingLog(directory, enabled=True)  # a fresh start clears the earlier run
    for step in range(5):
        log.log(step, loss=float(step), **({"val/psnr": 20.0 + step} if step % 2 == 0 else {}))
    del log  # the run dies after logging step 4; its last checkpoint is at step 3

    with TrainingLog(directory, enabled=True, resume_step=3) as log:
        for step in range(3, 10):
            log.log(step, loss=step / 10, **({"val/psnr": 30.0 + step} if step % 2 == 0 else {}))
        log.summary(psnr=31.5)

    loss = read_tsv(directory / "plots" / "metrics" / "loss.tsv")
    assert [int(row["step"]) for row in loss] == list(range(10))
    assert [float(row["loss"]) for row in loss] == [0.0, 1.0, 2.0] + [step / 10 for step in range(3, 10)]
    psnr = read_tsv(directory / "plots" / "metrics" / "val" / "psnr.tsv")
    assert [(int(row["step"]), float(row["psnr"])) for row in psnr] == [(0, 20), (2, 22), (4, 34), (6, 36), (8, 38)]
    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics == {"loss": 0.9, "val": {"psnr": 38.0}, "psnr": 31.5, "step": 9}
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "live/metrics.json",
        "live/plots/metrics/loss.tsv",
        "live/plots/metrics/val/psnr.tsv",
    ]


def test_disabled_training_log_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with TrainingLog(tmp_path / "live", enabled=False, resume_step=3) as log:
        log.log(0, loss=1.0)
        log.summary(psnr=math.pi)
    assert list(tmp_path.iterdir()) == []


def test_the_final_metrics_line_rounds_numbers_and_keeps_reasons() -> None:
    metrics = {"val_psnr": 36.106066, "lpips": "unavailable: no weights", "train_lpips": None}
    assert metrics_line("nerf_fine", metrics) == "nerf_fine: val_psnr 36.1061, lpips unavailable: no weights, " \
                                                  "train_lpips None"

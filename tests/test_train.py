"""Tests for course.train: the loop learns, EMA, schedules, bit-identical resume, Ctrl-C, accelerate."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from course.checkpoints import CheckpointError
from course.train import TrainConfig, ema_decay_at, fit, lr_at, step_seed

REPO_ROOT = Path(__file__).resolve().parents[1]
W_TRUE = torch.tensor([[1.0, -2.0, 0.5, 3.0]])


def batch_fn(step, batch_size, generator):
    x = torch.randn(batch_size, 4, generator=generator)  # (B, 4)
    return x, x @ W_TRUE.T  # (B, 4), (B, 1)


def loss_fn(model, batch, generator):
    x, y = batch
    x = x + 0.01 * torch.randn(x.shape, generator=generator)  # uses the generator, as DDPM's eps
    return ((model(x) - y) ** 2).mean()


def make_model(seed=0):
    torch.manual_seed(seed)
    # dropout draws from the global RNG, which the loop reseeds each step
    return nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Dropout(0.1), nn.Linear(16, 1))


def cfg(steps=20, **kw):
    base = dict(batch_size=8, lr=1e-2, warmup_steps=3, schedule="cosine", ema_decay=0.9,
                checkpoint_every=4)
    return TrainConfig(steps=steps, **{**base, **kw})


def run(config, run_dir=None, model_seed=0, loss=loss_fn, **kw):
    return fit(make_model(model_seed), loss, batch_fn, config, run_dir, progress=False, **kw)


def assert_same(a: nn.Module, b: nn.Module):
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def test_loss_decreases_on_a_toy_problem():
    logged = []
    result = run(cfg(steps=150, lr=3e-2, log_every=50), on_log=lambda s, v: logged.append((s, v)))
    assert len(result.losses) == 150 and result.step == 150 and not result.interrupted
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.2 * first, (first, last)
    assert [s for s, _ in logged] == [50, 100, 150]
    assert logged[-1][1] == pytest.approx(sum(result.losses[100:]) / 50)


def test_ema_differs_from_model_and_equals_it_when_decay_is_zero():
    result = run(cfg(steps=15))
    diffs = [(e - p).abs().max().item()
             for e, p in zip(result.ema.parameters(), result.model.parameters())]
    assert max(diffs) > 1e-4
    assert not result.ema.training and not any(p.requires_grad for p in result.ema.parameters())
    zero = run(cfg(steps=15, ema_decay=0.0))
    assert_same(zero.ema, zero.model)
    assert run(cfg(steps=3, ema_decay=None)).ema is None


def test_ema_decay_warmup_values():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(0.91)
    assert ema_decay_at(100_000, 0.999) == 0.999
    assert ema_decay_at(5, 0.0) == 0.0


def test_lr_schedule_values():
    c = TrainConfig(steps=15, batch_size=1, lr=1.0, warmup_steps=4, schedule="cosine")
    lrs = [lr_at(s, c) for s in range(15)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] == pytest.approx(1.0)  # cosine starts at lr right after warm-up
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5)  # half way: 0.55
    assert lrs[14] == pytest.approx(0.1)  # ends at 10% of lr
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    k = TrainConfig(steps=10, batch_size=1, lr=2e-3, warmup_steps=2)
    assert [lr_at(s, k) for s in range(10)] == pytest.approx([1e-3] + [2e-3] * 9)


def test_the_optimizer_uses_the_scheduled_lr():
    # AdamW's first update moves every weight by lr (m / sqrt(v) = +-1): measure it.
    c = cfg(steps=1, warmup_steps=0, schedule="constant", lr=1e-3, grad_clip=None, ema_decay=None)
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    fit(model, loss_fn, batch_fn, c, progress=False)
    moved = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(model.parameters(), before)])
    assert moved.max().item() == pytest.approx(1e-3, rel=1e-3)


def test_invalid_configs_are_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        TrainConfig(steps=1, batch_size=1, schedule="linear")
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=5, batch_size=1, warmup_steps=6)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(steps=5, batch_size=1, ema_decay=1.0)


def test_seeds_differ_per_step_and_process():
    seeds = {step_seed(0, s, r) for s in range(50) for r in range(2)}
    assert len(seeds) == 100 and step_seed(0, 3, 1) == step_seed(0, 3, 1)


def test_resume_is_bit_identical(tmp_path):
    straight = run(cfg(steps=20, schedule="constant"))
    first = run(cfg(steps=10, schedule="constant"), tmp_path / "run")
    assert first.step == 10
    # a differently initialised model: resuming must overwrite it with the saved state
    second = run(cfg(steps=20, schedule="constant"), tmp_path / "run", model_seed=123)
    assert second.step == 20 and len(second.losses) == 20
    assert second.losses == straight.losses
    assert_same(second.model, straight.model)
    assert_same(second.ema, straight.ema)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["state.json", "state.safetensors"]
    info = json.loads((tmp_path / "run" / "state.json").read_text())
    assert info["step"] == 20 and info["config"]["steps"] == 20 and len(info["losses"]) == 20
    assert info["fingerprint"]["0.weight"] == [16, 4]
    assert info["wall_time_s"] >= first.wall_time_s


def test_ctrl_c_saves_and_resume_completes_identically(tmp_path, capsys):
    straight = run(cfg(steps=20))
    calls = {"n": 0}

    def interrupting_loss(model, batch, generator):
        if calls["n"] == 7:
            raise KeyboardInterrupt
        calls["n"] += 1
        return loss_fn(model, batch, generator)

    run_dir = tmp_path / "run"
    stopped = run(cfg(steps=20), run_dir, loss=interrupting_loss)
    assert stopped.interrupted and stopped.step == 7 and len(stopped.losses) == 7
    out = capsys.readouterr().out
    assert "Interrupted at step 7/20" in out and str(run_dir) in out and "resume" in out
    assert json.loads((run_dir / "state.json").read_text())["step"] == 7
    with safe_open(str(run_dir / "state.safetensors"), "pt") as f:
        keys = set(f.keys())
        assert json.loads(f.metadata()["state"])["step"] == 7
    assert {"model.0.weight", "ema.0.weight", "optim.0.exp_avg", "optim.0.exp_avg_sq",
            "optim.0.step"} <= keys
    resumed = run(cfg(steps=20), run_dir, model_seed=5)
    assert not resumed.interrupted and resumed.step == 20
    assert_same(resumed.model, straight.model)
    assert_same(resumed.ema, straight.ema)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_real_sigint_stops_at_the_next_step_boundary(tmp_path):
    calls = {"n": 0}

    def loss_with_ctrl_c(model, batch, generator):
        calls["n"] += 1
        if calls["n"] == 5:  # during step 4's forward (0-based): step 4 is not applied
            os.kill(os.getpid(), signal.SIGINT)
        return loss_fn(model, batch, generator)

    before = signal.getsignal(signal.SIGINT)
    stopped = run(cfg(steps=12), tmp_path / "run", loss=loss_with_ctrl_c)
    assert stopped.interrupted and stopped.step == 4
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    resumed = run(cfg(steps=12), tmp_path / "run")
    assert_same(resumed.model, run(cfg(steps=12)).model)


def test_resuming_a_different_model_or_config_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run(cfg(steps=4), run_dir)
    wide = nn.Sequential(nn.Linear(4, 32), nn.SiLU(), nn.Dropout(0.1), nn.Linear(32, 1))
    with pytest.raises(CheckpointError) as e:
        fit(wide, loss_fn, batch_fn, cfg(steps=8), run_dir, progress=False)
    msg = str(e.value)
    assert "different model" in msg and "0.weight: saved [16, 4] vs now [32, 4]" in msg
    assert "new run dir" in msg and "--fresh" in msg
    with pytest.raises(CheckpointError, match=r"different config \(lr: saved 0.01 vs now 0.02\)"):
        run(cfg(steps=8, lr=2e-2), run_dir)
    fresh = fit(wide, loss_fn, batch_fn, cfg(steps=2, lr=2e-2, warmup_steps=0), run_dir, resume=False,
                progress=False)
    assert fresh.step == 2 and json.loads((run_dir / "state.json").read_text())["step"] == 2


def test_non_scalar_and_nan_losses_are_refused():
    with pytest.raises(ValueError, match="scalar"):
        run(cfg(steps=3), loss=lambda m, b, g: (m(b[0]) - b[1]) ** 2)
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        run(cfg(steps=3), loss=lambda m, b, g: m(b[0]).sum() * float("nan"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(tmp_path):
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is installed;
    # `--multi_gpu` starts N processes via torchrun, and ACCELERATE_USE_CPU makes them use gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--num_cpu_threads_per_process", "1", "--main_process_port", str(_free_port()),
           "tests/_toy_train_script.py", str(tmp_path / "run")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO_ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("process ")]
    assert sorted(line.split()[1] for line in lines) == ["0/2", "1/2"], proc.stdout
    checksums = {line.split()[-1] for line in lines}
    assert len(checksums) == 1, lines  # DDP kept both processes' weights identical
    final = [line for line in proc.stdout.splitlines() if line.startswith("final loss")]
    assert len(final) == 1 and math.isfinite(float(final[0].split()[2]))
    assert json.loads((tmp_path / "run" / "state.json").read_text())["step"] == 30
    print(f"2-process launch took {elapsed:.1f} s")

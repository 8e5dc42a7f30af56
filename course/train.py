"""The course's one training loop: AdamW, warm-up + schedule, clipping, EMA, resumable, on accelerate.

Every model of the course trains through `fit`. A chapter supplies two small functions:

    batch_fn(step, batch_size, generator) -> batch      # a tensor, or a tuple/dict of tensors
    loss_fn(model, batch, generator) -> loss             # a scalar tensor

Randomness. Before each step the loop reseeds one CPU `torch.Generator` (and torch's global RNG,
for dropout) from (config.seed, step, process index) and hands it to `batch_fn` and then to
`loss_fn`. Draw every random number from it on the CPU and move the result to the batch's device
(`torch.randn(x0.shape, generator=g).to(x0.device)`): a run then draws the same numbers on any
device, and a resumed run is bit-identical to an uninterrupted one on the CPU.

Resuming. With `run_dir`, the state is saved every `checkpoint_every` steps, at the end and on
Ctrl-C or SIGTERM, as `run_dir/state.safetensors` (model "model.*", EMA "ema.*", AdamW moments and step
counts "optim.<param index>.<name>"; the run's bookkeeping in the header) plus a readable copy
of the bookkeeping in `run_dir/state.json`. Calling `fit` again with the same `run_dir` resumes;
a different model or config is refused (use a new run dir, or `resume=False` / `--fresh`), except
for `steps` (train longer or shorter: the cosine then ends at the new last step), the saving and
logging intervals, and `warmup_steps` once the run is past both warm-ups. A corrupt state file is
refused with the same advice.

Determinism. `torch.use_deterministic_algorithms` is not switched on: the CPU kernels this loop
uses are already deterministic for a fixed thread count (the resume test checks it with
`torch.equal`), and on CUDA the flag needs a cuBLAS workspace setting and slows some kernels,
while bit-identity across GPU runs is not something the course promises.

Several processes. `accelerate launch --num_processes N -m course train NAME` runs the same code
on N processes: each draws its own batch (the process index is in the seed), accelerate/DDP
averages the gradients, only the main process writes files and shows the progress bar, and a
Ctrl-C stops every process at the same step.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from course.checkpoints import CheckpointError, load_tensors, read_header, save_tensors

SCHEDULES = ("constant", "cosine")
# Fields that may change between a run and its resumption without changing what is learned so
# far: training longer, or saving/logging more often. warmup_steps may change too once the run
# is past both warm-ups (recipes derive it from steps), see `_check_resumable`.
_RESUMABLE_FIELDS = ("steps", "checkpoint_every", "log_every")


def recipe_steps(steps: int | None, default: int) -> int:
    """The number of steps of a recipe's run: `default` when `steps` is None, else `steps`, refused if < 1.

    Never `steps or default`: 0 would silently train the full recipe.
    """
    if steps is None:
        return default
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (or None for the recipe's {default}), got {steps!r}")
    return steps


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, schedule, EMA, checkpointing and the seed."""

    steps: int  # total optimizer steps
    batch_size: int  # per process
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 0  # linear warm-up from lr/warmup_steps to lr, then `schedule`
    schedule: str = "constant"  # "constant" | "cosine" (from lr down to 10% of lr at the last step)
    grad_clip: float | None = 1.0  # clip the global gradient norm to this; None: no clipping
    ema_decay: float | None = 0.999  # EMA of the weights, see `ema_decay_at`; None: no EMA
    checkpoint_every: int = 500  # save the resumable state every this many steps
    log_every: int = 50  # call on_log with the mean loss every this many steps
    seed: int = 0  # seeds every random draw of the run

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) or None, got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class TrainResult:
    """What `fit` returns."""

    model: nn.Module  # the trained model (unwrapped from accelerate/DDP)
    ema: nn.Module | None  # the EMA copy (in eval mode), or None when config.ema_decay is None
    step: int  # optimizer steps done in total, including those of earlier sessions of the run
    wall_time_s: float  # training time in seconds, summed over the sessions of the run
    losses: list[float]  # loss of every step (mean over processes), from step 0
    interrupted: bool  # True if a Ctrl-C stopped the run before config.steps


# ----------------------------------------------------------------------------- pure schedule math


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based).

    Linear warm-up lr * (step + 1) / warmup_steps for the first warmup_steps steps, then either
    constant, or a cosine from lr at the first step after warm-up to 0.1 lr at the last step.

    Ref: Loshchilov & Hutter 2017 (SGDR), cosine annealing without restarts.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    span = max(1, config.steps - config.warmup_steps - 1)
    progress = min(1.0, (step - config.warmup_steps) / span)
    lr_min = 0.1 * config.lr
    return lr_min + (config.lr - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay used after optimizer step `step` (0-based): min(decay, (1 + step) / (10 + step)).

    The warm-up keeps the EMA from being dominated by the random initial weights: after the
    first step it is 0.1 (the EMA nearly copies the model), after 90 steps 0.91, and it reaches
    `decay` = 0.999 after about 9,000 steps. decay = 0 makes the EMA equal the model.

    Ref: the warm-up of TensorFlow's ExponentialMovingAverage(num_updates=...).
    """
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)  # torch.lerp is exact at weight 1: decay 0 copies
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def step_seed(seed: int, step: int, process_index: int) -> int:
    """A well-mixed 63-bit seed for one step of one process."""
    digest = hashlib.sha256(f"{seed}:{step}:{process_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def model_fingerprint(model: nn.Module) -> dict[str, list[int]]:
    """name -> shape of everything in the model's state_dict: what a resumed run must match."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- resumable state


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """AdamW's state flattened to "optim.<param index>.<name>" (step counts as tensors)."""
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"optim.{index}.{name}"] = torch.as_tensor(value)
    return out


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})


def _save_state(run_dir: Path, model, ema, optimizer, info: dict[str, Any]) -> None:
    """Write state.safetensors (atomic; bookkeeping in its header) and then state.json."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    tensors.update(_optimizer_tensors(optimizer))
    save_tensors(run_dir / "state.safetensors", tensors, metadata={"state": json.dumps(info)})
    (run_dir / "state.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def _check_resumable(saved: dict[str, Any], config: TrainConfig, model: nn.Module, run_dir: Path):
    """Refuse to resume a run made with a different model or config, saying what differs."""
    fix = (f"Use a new run dir, or start over in {run_dir} with resume=False "
           "(`--fresh` on the command line).")
    current = model_fingerprint(model)
    if saved["fingerprint"] != current:
        old = saved["fingerprint"]
        diffs = [f"{k}: saved {old.get(k)} vs now {current.get(k)}"
                 for k in sorted(set(old) | set(current)) if old.get(k) != current.get(k)]
        raise CheckpointError(f"{run_dir} holds a run of a different model "
                              f"({len(diffs)} differences: {'; '.join(diffs[:5])}). {fix}")
    now = dataclasses.asdict(config)
    done = saved["step"]
    # a different warm-up changes nothing learned once the run is past both (lr_at is the same from there)
    warmed_up = done >= max(saved["config"].get("warmup_steps", 0), config.warmup_steps)
    diffs = [f"{k}: saved {saved['config'].get(k)!r} vs now {now[k]!r}" for k in now
             if k not in _RESUMABLE_FIELDS and saved["config"].get(k) != now[k]
             and not (k == "warmup_steps" and warmed_up)]
    if diffs:
        raise CheckpointError(f"{run_dir} holds a run with a different config "
                              f"({'; '.join(diffs)}). {fix}")


# ----------------------------------------------------------------------------- the loop


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class _DeferredInterrupt:
    """First Ctrl-C (SIGINT) or SIGTERM sets a flag that the loop reads at the next step boundary; a
    second one raises KeyboardInterrupt at once. Installed only in the main thread, where signals arrive."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False


def _read_state(state_file: Path, run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The saved bookkeeping and tensors of a run, or a CheckpointError that says to start over."""
    try:
        saved = json.loads(read_header(state_file)["state"])
        if not isinstance(saved, dict) or not {"step", "config", "fingerprint"} <= set(saved):
            raise ValueError("its bookkeeping is incomplete")
        return saved, load_tensors(state_file)
    except (CheckpointError, KeyError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{state_file} cannot be resumed: it is corrupt or truncated ({str(err).splitlines()[0][:200]}). Start "
            f"over with --fresh (in Python: resume=False), or train in another --run-dir than {run_dir}") from err


def fit(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any, torch.Generator], torch.Tensor],
    batch_fn: Callable[[int, int, torch.Generator], Any],
    config: TrainConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = True,
    progress: bool = True,
    accelerator: Accelerator | None = None,
    on_log: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train `model` for `config.steps` AdamW steps, resuming from `run_dir` if it holds a run.

    Args:
        model: the module to train (trained in place; moved to the accelerator's device).
        loss_fn: (model, batch, generator) -> scalar loss tensor.
        batch_fn: (step, batch_size, generator) -> batch of CPU tensors (moved to the device).
        config: the TrainConfig.
        run_dir: folder for the resumable state; None keeps nothing on disk.
        resume: continue the run saved in run_dir; False starts over (and overwrites it).
        progress: show a tqdm bar with the loss and it/s (main process only).
        accelerator: an accelerate.Accelerator; None creates `Accelerator(cpu=<no GPU here>)`,
            which uses the GPU if there is one and honours `accelerate launch` settings.
        on_log: called on the main process as on_log(step, mean loss of the last log_every steps).

    Returns:
        TrainResult; `interrupted` is True when Ctrl-C stopped the run (its state is saved).
    """
    if accelerator is None:
        # cpu=True where there is no GPU: the same as Accelerator() for one process, and it lets
        # a multi-process launch (torchrun, `accelerate launch --multi_gpu`) use gloo on CPUs.
        has_gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
        accelerator = Accelerator(cpu=not has_gpu)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    ema = None
    if config.ema_decay is not None:
        ema = copy.deepcopy(raw).eval().requires_grad_(False)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"run_dir {run_dir} is a file, not a folder: pass a folder (--run-dir on the command "
                              "line); it is created if needed")
    main = accelerator.is_main_process

    start, wall_before, losses = 0, 0.0, []
    state_file = run_dir / "state.safetensors" if run_dir is not None else None
    if resume and state_file is not None and state_file.is_file():
        saved, tensors = _read_state(state_file, run_dir)
        _check_resumable(saved, config, raw, run_dir)
        raw.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        _load_optimizer(optimizer, tensors)
        start, wall_before, losses = saved["step"], saved["wall_time_s"], list(saved["losses"])
    elif main and run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)

    def save(step: int, wall: float) -> None:
        if main and run_dir is not None:
            info = {"step": step, "wall_time_s": wall, "losses": losses,
                    "config": dataclasses.asdict(config), "fingerprint": model_fingerprint(raw)}
            _save_state(run_dir, raw, ema, optimizer, info)

    generator = torch.Generator()
    bar = tqdm(total=config.steps, initial=start, disable=not (progress and main),
               desc="train", unit="step", dynamic_ncols=True)
    t0, step, interrupted, updating = time.perf_counter(), start, False, False
    with _DeferredInterrupt() as ctrl_c:
        try:
            while step < config.steps:
                seed = step_seed(config.seed, step, accelerator.process_index)
                generator.manual_seed(seed)
                # dropout and other draws from the global RNG (torch.manual_seed would also
                # queue a seed for every CUDA/XPU device: ~5 ms a step)
                torch.default_generator.manual_seed(seed)
                if accelerator.device.type == "cuda":
                    torch.cuda.manual_seed(seed)
                batch = _to_device(batch_fn(step, config.batch_size, generator), accelerator.device)
                model.train()
                loss = loss_fn(model, batch, generator)
                if loss.ndim != 0:
                    raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
                # one collective per step: the mean loss over processes and "did anyone press Ctrl-C"
                stats = torch.stack([loss.detach().float(),
                                     torch.tensor(float(ctrl_c.requested), device=loss.device)])
                stats = accelerator.reduce(stats, reduction="sum")
                if stats[1].item() > 0:
                    raise KeyboardInterrupt
                mean_loss = stats[0].item() / accelerator.num_processes
                if not math.isfinite(mean_loss):
                    kept = f"; the last saved state is in {run_dir}" if run_dir is not None else ""
                    raise FloatingPointError(
                        f"loss is {mean_loss} at step {step}: lower the lr or warm up longer, and "
                        f"check the data and loss_fn{kept}")
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, config)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if config.grad_clip is not None:
                    accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
                updating = True  # from here until `step += 1` a hard stop leaves a half update
                optimizer.step()
                if ema is not None:
                    update_ema(ema, raw, ema_decay_at(step, config.ema_decay))
                losses.append(mean_loss)
                step += 1
                updating = False
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
                if on_log is not None and main and step % config.log_every == 0:
                    on_log(step, sum(losses[-config.log_every:]) / config.log_every)
                if step % config.checkpoint_every == 0 and step < config.steps:
                    save(step, wall_before + time.perf_counter() - t0)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
    wall = wall_before + time.perf_counter() - t0
    if interrupted and updating:
        kept = (f"the state last saved in {run_dir} is kept; run the same command again to resume "
                "from it" if run_dir is not None else "nothing was saved (no run_dir given)")
        accelerator.print(f"\nStopped in the middle of step {step + 1}, so the weights are "
                          f"half-updated: {kept}.")
    elif interrupted:
        save(step, wall)
        where = (f"the state is saved in {run_dir} (state.safetensors, state.json). To resume, "
                 "run the same command again (in Python: call fit(...) again with "
                 f"run_dir={str(run_dir)!r}); it continues from step {step}."
                 if run_dir is not None else "nothing was saved (no run_dir given).")
        accelerator.print(f"\nInterrupted at step {step}/{config.steps}: {where}")
    elif run_dir is not None:
        save(step, wall)
    accelerator.wait_for_everyone()
    return TrainResult(model=raw, ema=ema, step=step, wall_time_s=wall, losses=losses,
                       interrupted=interrupted)

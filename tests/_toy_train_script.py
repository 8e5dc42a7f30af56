"""A toy regression trained with course.train.fit, for the multi-process test.

Run as `accelerate launch --cpu --num_processes 2 tests/_toy_train_script.py [RUN_DIR]`. Every
process prints one line "process I/N step S checksum C" (C is the sum of the trained weights, so
the test can check that DDP kept the processes in step); the main process also prints
"final loss L checksum C".
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without install

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from torch import nn  # noqa: E402

from course.train import TrainConfig, fit  # noqa: E402

W_TRUE = torch.tensor([[1.0, -2.0, 0.5, 3.0]])  # the regression's true weights


def batch_fn(step: int, batch_size: int, generator: torch.Generator):
    x = torch.randn(batch_size, 4, generator=generator)  # (B, 4)
    y = x @ W_TRUE.T + 0.1 * torch.randn(batch_size, 1, generator=generator)  # (B, 1)
    return x, y


def loss_fn(model: nn.Module, batch, generator: torch.Generator) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def main() -> None:
    run_dir = sys.argv[1] if len(sys.argv) > 1 else None
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    config = TrainConfig(steps=30, batch_size=16, lr=0.2, ema_decay=0.9, checkpoint_every=10)
    result = fit(model, loss_fn, batch_fn, config, run_dir, progress=False)
    state = PartialState()
    checksum = sum(p.detach().double().sum().item() for p in result.model.parameters())
    # one write per line: the two processes share stdout, and print() writes the text and the
    # newline separately, so their lines could interleave
    lines = (f"process {state.process_index}/{state.num_processes} step {result.step} "
             f"checksum {checksum:.10f}\n")
    if state.is_main_process:
        lines += f"final loss {result.losses[-1]:.6f} checksum {checksum:.10f}\n"
    sys.stdout.write(lines)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

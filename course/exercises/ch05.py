"""Chapter 05's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def check_text_time(fn) -> bool:
    """Chapter 05: the learner's `text_time(pooled, time_ids, dim)` against `course.nn.unet.text_time_vector`."""
    import torch

    from course.nn.unet import text_time_vector

    g = torch.Generator().manual_seed(5)
    pooled = torch.randn(3, 12, generator=g)
    ids = torch.tensor([[64.0, 64, 0, 0, 64, 64], [128, 128, 32, 16, 64, 64], [24, 40, 0, 0, 48, 80]])
    cases = [
        Case(args=(pooled[:1], ids[:1], 8), label="one image, default conditioning (64, 64), (0, 0), (64, 64)"),
        Case(args=(pooled, ids, 8), label="three images with different sizes and crops"),
        Case(args=(pooled, ids, 16), label="a wider sinusoid per id (dim 16)"),
    ]
    return run_cases(fn, lambda p, i, d: text_time_vector(p, i, d), cases, name="text_time", hint={
        "shape": "the result is (B, P + 6 * dim): the pooled vector, then the six ids' embeddings flattened per image",
        "values": "embed EACH id with the timestep embedding (cos first, as SD: flip_sin_to_cos=True), flatten the "
                  "(B, 6, dim) embeddings to (B, 6 * dim) in id order, and put the pooled text FIRST",
    })

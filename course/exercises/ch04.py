"""Chapter 04's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def check_cfg(fn) -> bool:
    """Chapter 04: the learner's `cfg(eps_uncond, eps_cond, guidance)` against `course.pipelines.base.cfg_combine`."""
    import torch

    from course.pipelines.base import cfg_combine

    g = torch.Generator().manual_seed(4)
    uncond, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    cases = [
        Case(args=(uncond, cond, 1.0), label="w = 1: the conditional prediction alone"),
        Case(args=(uncond, cond, 7.5), label="w = 7.5, SD's default"),
        Case(args=(uncond[:1], cond[:1], 3.0), label="one image, w = 3"),
        Case(args=(uncond, uncond + 0.1, 5.0), label="a prompt that changes eps a little, w = 5"),
    ]
    return run_cases(fn, cfg_combine, cases, name="cfg", atol=1e-5, hint={
        "values": "eps = eps_uncond + w * (eps_cond - eps_uncond): start from the unconditional prediction and "
                  "move w times the difference towards the conditional one (swapping the two runs away from the prompt; "
                  "w = 1 must give eps_cond exactly)",
        "shape": "the guided eps has the shape of each input",
    })


def _cross_attention_reference(q, k, v):
    from course.nn.attention import attention

    return attention(q, k, v, heads=1)  # (B, N, d): one head, softmax(q k^T / sqrt(d)) v


def check_cross_attention(fn) -> bool:
    """Chapter 04: the learner's `cross_attention(q, k, v)` (one head) against `course.nn.attention.attention`.

    q (B, N, d) comes from the N image tokens, k and v (B, T, d) from the T text tokens; the answer
    is softmax(q k^T / sqrt(d)) v, (B, N, d), the softmax over the text tokens.
    """
    import torch

    g = torch.Generator().manual_seed(5)

    def qkv(B, N, T, d):
        return (torch.randn(B, N, d, generator=g), torch.randn(B, T, d, generator=g) * 2,
                torch.randn(B, T, d, generator=g))

    cases = [
        Case(args=qkv(2, 16, 5, 8), label="2 images of 4x4 tokens attending to 5 text tokens, d = 8"),
        Case(args=qkv(1, 64, 32, 64), label="an 8x8 latent, 32 text tokens, d = 64 (sd1-shapes' cross-attention)"),
        Case(args=qkv(3, 4, 4, 16), label="as many image tokens as text tokens, d = 16"),
        Case(args=qkv(1, 9, 1, 4), label="a single text token: every image token gets its value"),
    ]
    return run_cases(fn, _cross_attention_reference, cases, name="cross_attention", atol=1e-5, hint={
        "values": "scores = q @ k.transpose(-1, -2) / sqrt(d) is (B, N, T); softmax over the LAST axis (the text tokens, "
                  "so each image token's weights sum to 1), then @ v. Forgetting 1/sqrt(d) or taking the softmax over "
                  "the image tokens gives the right shape but wrong values",
        "shape": "the output has one row per image token: (B, N, d), the shape of q",
    })

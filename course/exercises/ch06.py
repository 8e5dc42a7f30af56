"""Chapter 06's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def check_patchify(fn) -> bool:
    """Chapter 06: the learner's `patchify(x, p)` against `course.nn.dit.patchify`.

    (B, C, H, W) -> (B, T, p*p*C), T = (H/p)(W/p) patches in row-major order, each vector ordered
    (row in the patch, column in the patch, channel), as DiT's `unpatchify` reads it back.
    """
    import torch

    from course.nn.dit import patchify

    g = torch.Generator().manual_seed(6)
    cases = [
        Case(args=(torch.randn(2, 4, 8, 8, generator=g), 2), label="two 8x8x4 latents, p = 2: 16 tokens of 16"),
        Case(args=(torch.randn(1, 4, 8, 8, generator=g), 1), label="p = 1: one token per latent pixel"),
        Case(args=(torch.randn(1, 4, 8, 8, generator=g), 4), label="p = 4: four tokens of 64"),
        Case(args=(torch.arange(2 * 3 * 4 * 6.0).reshape(2, 3, 4, 6), 2), label="a non-square 4x6 image, p = 2"),
    ]
    return run_cases(fn, patchify, cases, name="patchify", hint={
        "shape": "reshape (B, C, H, W) -> (B, C, H/p, p, W/p, p), move the patch grid to the front "
                 "(B, H/p, W/p, p, p, C), then flatten to (B, T, p*p*C)",
        "values": "the right shape with the wrong order: inside a patch vector the channel must vary fastest, then the "
                  "column, then the row (DiT's einsum 'nhwpqc->nchpwq' undoes exactly that); and patches go row by row",
    })


def check_unpatchify(fn) -> bool:
    """Chapter 06: the learner's `unpatchify(x, p, channels)` (square grids) against `course.nn.dit.unpatchify`."""
    import torch

    from course.nn.dit import unpatchify

    g = torch.Generator().manual_seed(7)
    cases = [
        Case(args=(torch.randn(2, 16, 16, generator=g), 2, 4), label="16 tokens of 2x2x4 -> (2, 4, 8, 8)"),
        Case(args=(torch.randn(1, 16, 32, generator=g), 2, 8), label="learned sigma: 2x2x8 -> (1, 8, 8, 8)"),
        Case(args=(torch.randn(1, 64, 4, generator=g), 1, 4), label="p = 1: 64 tokens of 4 channels"),
        Case(args=(torch.randn(3, 4, 64, generator=g), 4, 4), label="p = 4: four tokens of 64"),
    ]
    return run_cases(fn, unpatchify, cases, name="unpatchify", hint={
        "shape": "h = w = sqrt(T); reshape to (B, h, w, p, p, C), permute to (B, C, h, p, w, p), reshape to (B, C, h*p, w*p)",
        "values": "the inverse of patchify: check that unpatchify(patchify(x, p), p, C) gives x back",
    })


def _adaln_zero_reference(block, x, c):
    return block(x, c)


def check_adaln_zero_block(fn) -> bool:
    """Chapter 06: the learner's `adaln_zero_block(block, x, c)` against `course.nn.dit.DiTBlock.forward`.

    `block` is an adaLN-Zero DiTBlock: use its `modulation` (Linear D -> 6D, applied to SiLU(c)),
    `norm1`, `attn`, `norm2` and `mlp`. The modulation weights are random here (not zero as at
    init), so that every shift, scale and gate matters.
    """
    import torch

    from course.nn.dit import DiTBlock

    torch.manual_seed(8)
    g = torch.Generator().manual_seed(8)

    def case(B, T, D, heads, label):
        block = DiTBlock(D, heads, 4.0, "adaln-zero").eval()
        torch.nn.init.normal_(block.modulation.weight, std=0.2)
        torch.nn.init.normal_(block.modulation.bias, std=0.2)
        return Case(args=(block, torch.randn(B, T, D, generator=g), torch.randn(B, D, generator=g)), label=label)

    cases = [case(2, 16, 32, 2, "2 images, 16 tokens of width 32"), case(1, 64, 16, 1, "64 tokens (p = 1), width 16"),
             case(3, 4, 64, 4, "3 images, 4 tokens (p = 4), width 64")]
    return run_cases(fn, _adaln_zero_reference, cases, name="adaln_zero_block", atol=1e-5, hint={
        "values": "shift, scale, gate for attention and then for the MLP: the 6 chunks of modulation(silu(c)) in the order "
                  "shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp. Each branch: "
                  "x = x + gate[:, None] * branch(norm(x) * (1 + scale[:, None]) + shift[:, None]). Forgetting the 1 + in "
                  "the scale, the SiLU, or the gate gives the right shape and wrong values",
        "shape": "shift, scale and gate are (B, D), one per image: broadcast them over the tokens with [:, None]",
    })

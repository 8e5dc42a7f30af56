"""Chapter 09's exercise checkers (see `course.exercises.runner` for how a checker works)."""

from __future__ import annotations

from course.exercises.runner import Case, run_cases


def check_joint_attention(fn) -> bool:
    """Chapter 09: the learner's `joint_attention(qkv_x, qkv_c, heads)` against `course.nn.mmdit.joint_attention`.

    qkv_x = (q, k, v) of the image tokens, each (B, T, D); qkv_c those of the text tokens, (B, S, D).
    One attention over all T + S tokens; return (out_x (B, T, D), out_c (B, S, D)).
    """
    import torch

    from course.nn.mmdit import joint_attention

    g = torch.Generator().manual_seed(9)

    def case(B, T, S, D, heads, label):
        return Case(args=(tuple(torch.randn(B, T, D, generator=g) for _ in range(3)),
                          tuple(torch.randn(B, S, D, generator=g) for _ in range(3)), heads), label=label)

    cases = [case(2, 16, 5, 32, 2, "16 image tokens, 5 text tokens, 2 heads"),
             case(1, 4, 9, 16, 4, "more text than image tokens, 4 heads"),
             case(3, 8, 1, 24, 3, "one text token")]
    return run_cases(fn, joint_attention, cases, name="joint_attention", atol=1e-5, hint={
        "shape": "concatenate q, k and v of both streams on the token axis (dim=1), attend once, then split the "
                 "output back at T: out[:, :T] for the image, out[:, T:] for the text",
        "values": "every token must attend to all T + S tokens with one softmax (course.nn.attention.attention does "
                  "the heads); attending within each stream, or image-to-text only, is not MM-DiT's joint attention",
        "type": "return a pair (out_x, out_c)",
    })


def _block_reference(block, x, c, y):
    return block(x, c, y)


def check_joint_block(fn) -> bool:
    """Chapter 09: the learner's `joint_block(block, x, c, y)` against `course.nn.mmdit.JointBlock.forward`.

    `block` is a JointBlock (not the last one, no dual attention): `block.x` and `block.c` each hold a
    `modulation` (Linear D -> 6D on SiLU(y)), `norm1`, `attn` (`.qkv(h)` -> q, k, v and `.to_out`),
    `norm2` and `mlp`; `block.heads` is nh. Return (x, c). The modulations are random here, so that
    every shift, scale and gate matters.
    """
    import torch

    from course.nn.mmdit import JointBlock

    torch.manual_seed(10)
    g = torch.Generator().manual_seed(10)

    def case(B, T, S, D, heads, qk_norm, label):
        block = JointBlock(D, heads, qk_norm=qk_norm).eval()
        for m in (block.x.modulation, block.c.modulation):
            torch.nn.init.normal_(m.weight, std=0.2)
            torch.nn.init.normal_(m.bias, std=0.2)
        return Case(args=(block, torch.randn(B, T, D, generator=g), torch.randn(B, S, D, generator=g),
                          torch.randn(B, D, generator=g)), label=label)

    cases = [case(2, 16, 5, 32, 2, False, "2 images, 16 + 5 tokens, width 32"),
             case(1, 4, 7, 16, 2, True, "QK-norm on, 4 + 7 tokens"),
             case(3, 8, 2, 24, 3, False, "3 heads, 2 text tokens")]
    return run_cases(fn, _block_reference, cases, name="joint_block", atol=1e-5, hint={
        "values": "each stream: the 6 chunks of its modulation(silu(y)) are shift, scale, gate for the attention, then "
                  "shift, scale, gate for the MLP; q, k, v come from attn.qkv(norm1(h) * (1 + scale) + shift) of EACH "
                  "stream, ONE attention runs over both (joint_attention), then each stream adds gate * to_out(its "
                  "part) and gate * mlp(norm2(.) modulated) to its own tokens",
        "type": "return a pair (x, c)",
    })

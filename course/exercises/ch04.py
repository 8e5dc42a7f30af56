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


def _perturbed(module, seed: int):
    """`module` with every parameter redrawn (norms and biases too), so no default value hides a mistake."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p + 0.1 * torch.randn(p.shape, generator=g))
    return module.eval()


def check_resnet_block(fn) -> bool:
    """Chapter 04: the learner's `resnet_block(block, x, temb)` against `ResnetBlock2D.forward`.

    `block` is a `course.nn.unet_blocks.ResnetBlock2D`; the learner uses its layers (norm1,
    conv1, time_emb_proj, norm2, dropout, conv2, conv_shortcut) and writes the wiring.
    """
    import torch

    from course.nn.unet_blocks import ResnetBlock2D

    g = torch.Generator().manual_seed(40)
    same = _perturbed(ResnetBlock2D(16, 16, temb_dim=32, groups=4, eps=1e-5), 1)
    wider = _perturbed(ResnetBlock2D(16, 32, temb_dim=32, groups=4, eps=1e-5), 2)
    x, temb = torch.randn(3, 16, 8, 8, generator=g), torch.randn(3, 32, generator=g)
    cases = [
        Case(args=(same, x, temb), label="16 -> 16 channels: the skip is the identity"),
        Case(args=(wider, x, temb), label="16 -> 32 channels: the skip is conv_shortcut (1x1)"),
        Case(args=(same, x, torch.zeros(3, 32)), label="a zero time embedding still adds time_emb_proj's bias"),
        Case(args=(wider, x[:1], temb[:1]), label="one image"),
    ]
    with torch.no_grad():
        return run_cases(fn, lambda block, x, temb: block(x, temb), cases, name="resnet_block", atol=1e-5, hint={
            "values": "h = conv1(silu(norm1(x))); h = h + time_emb_proj(silu(temb))[:, :, None, None] (one vector per "
                      "image, broadcast over H and W); h = conv2(dropout(silu(norm2(h)))); return skip(x) + h, where "
                      "skip is conv_shortcut when the block has one (channels change) and the identity otherwise",
            "shape": "the output has the block's out channels: the skip of x must be projected with conv_shortcut "
                     "when in and out channels differ",
        })


def two_level_unet(seed: int = 0):
    """The U-Net of exercise 4.0b: two levels (32 and 64 channels), one resnet each, no attention."""
    from course.nn.unet import PLAIN_DOWN, PLAIN_MID, PLAIN_UP, UNet, UNetConfig

    config = UNetConfig(in_channels=4, out_channels=4, sample_size=8, block_out_channels=(32, 64),
                        down_block_types=(PLAIN_DOWN, PLAIN_DOWN), mid_block_type=PLAIN_MID,
                        up_block_types=(PLAIN_UP, PLAIN_UP), layers_per_block=1, num_heads=1,
                        cross_attention_dim=None, norm_num_groups=8)
    import torch

    torch.manual_seed(seed)
    return _perturbed(UNet(config), seed + 10)


def check_unet_forward(fn) -> bool:
    """Chapter 04: the learner's `unet_forward(net, x, t)` (the skip wiring) against `UNet.forward`.

    `net` is a two-level `course.nn.unet.UNet` without attention (`two_level_unet`).
    """
    import torch

    g = torch.Generator().manual_seed(41)
    net = two_level_unet(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    cases = [
        Case(args=(net, x, torch.tensor([10, 900])), label="8x8 latents, two timesteps"),
        Case(args=(net, x[:1], torch.tensor([500])), label="one latent"),
        Case(args=(two_level_unet(1), torch.randn(2, 4, 16, 16, generator=g), torch.tensor([0, 999])),
             label="another U-Net, 16x16 inputs"),
    ]
    with torch.no_grad():
        return run_cases(fn, lambda net, x, t: net(x, t), cases, name="unet_forward", atol=1e-4, hint={
            "values": "the skips are pushed in order: conv_in's output, then every resnet's output and every "
                      "downsampler's output; each up resnet concatenates [h, skips.pop()] on channels (the LAST skip "
                      "first), and an up level has one more resnet than its down level (it also eats the "
                      "downsampler's skip); end with conv_out(conv_act(conv_norm_out(h)))",
            "shape": "the output has the input's shape; a shape error means a skip was concatenated at the wrong "
                     "resolution (pop from the end of the list)",
        })

"""Write notebooks/09_mmdit_sd3.ipynb, part 1 (then run tools/store_outputs.py on it).

    python tools/build_nb09.py

Part 1: the MM-DiT block (exercises), QK-norm measured, the size table by depth, the SD3
pipeline and its parity, the guarded section on real SD3 folders. Part 2 (after the END OF PART 1
cell): sd3-shapes (course.recipes.sd3_shapes): the architecture choice by measured step time, the
three text streams and their dropout, the cache, a live training demo, the shipped model's samples
(when it is shipped), concept bleeding, and the course's ending.
The QK-norm curves come from course.recipes.qk_norm.RESULT (written by `python -m course.recipes.qk_norm`).
"""

from pathlib import Path

import nbformat

NB = Path(__file__).resolve().parents[1] / "notebooks" / "09_mmdit_sd3.ipynb"

SETUP = '''# NBVAL_IGNORE_OUTPUT
# Setup (the same first cell in every chapter): works locally, on Colab and under nbval.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("course") is None:
    repo = "https://github.com/diffusion-from-scratch/course"  # the course's public repository
    subprocess.run(["git", "clone", "--depth", "1", repo, "/content/course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/course"], check=True)
    sys.path.insert(0, "/content/course")

from course.runtime import setup
device = setup(seed=0)  # seeds Python, NumPy and torch; picks the device (these models are small: the CPU is fine)'''

IMPORTS = '''import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from course import parity
from course.nn import attention, mmdit
from course.pipelines import sd3
from course.recipes import qk_norm
from course.exercises.ch09 import check_joint_attention, check_joint_block

if device.type == "cpu":
    torch.set_num_threads(1)  # small tensors: one thread is as fast and leaves the other core free'''

CELLS: list[tuple[str, str]] = [
    ("md", '''# Chapter 09 — MM-DiT and the full SD3 sampler (part 1)

Chapter 06 built DiT, a transformer that denoises latent patches and hears its condition (a class
label) only through adaLN. Chapters 07 and 08 replaced DDPM by **rectified flow** and gave it SD3's
training recipe. This chapter builds the network of Stable Diffusion 3 (Esser et al. 2024,
"Scaling Rectified Flow Transformers for High-Resolution Image Synthesis"), the **MM-DiT**, and the
whole sampler around it: three text encoders → MM-DiT → flow Euler with guidance → VAE decoder.

What MM-DiT changes, in one line: text is not a condition beside the image any more, it is a
**second sequence of tokens** in the same transformer. Each modality keeps **its own weights**
(adaLN modulation, q/k/v and output projections, MLP), and **one attention** runs over the
concatenated image and text tokens, so text reads the image as much as the image reads the text.
"Two sets of weights, one attention."

Part 1 (this part): the block, built by you; QK-norm, measured; the model's size by depth; the SD3
pipeline, proven equal to diffusers'; loading a real SD3 folder. Part 2 trains `sd3-shapes` and
compares it with the U-Net of Part 1.'''),
    ("code", SETUP),
    ("code", IMPORTS),
    ("md", '''## 1. The parts, in the order of SD3's figure

| part | what it does | shapes (SD3-medium) |
|---|---|---|
| patchify, 2×2 | a 2×2 conv with stride 2 (chapter 06) | (B, 16, 128, 128) → (B, 4096, 1536) |
| positions | 2-D sin-cos codes **cropped from the centre** of a fixed M×M grid (M = `pos_embed_max_size`, 192) | (4096, 1536) |
| y = t_emb + pooled_emb | the timestep's sinusoid → MLP, plus the pooled CLIP vector → MLP: the one vector that drives **every adaLN** | (B, 2048) → (B, 1536) |
| context projection | a linear map of the text tokens to the model width | (B, 333, 4096) → (B, 333, 1536) |
| d joint blocks | two streams, one attention (below) | |
| final adaLN + linear | LayerNorm modulated by y, D → p·p·C | (B, 4096, 64) |
| unpatchify | back to a latent: the **velocity** v ≈ ε − x0 | (B, 16, 128, 128) |

The cropped grid is how SD3 handles many sizes and aspect ratios with one position table: an image
of h×w patches reads the middle h×w window, so its tokens keep the codes they had in a larger image.
Below, a tiny MM-DiT (width 32, 2 blocks) run stage by stage on a non-square latent.'''),
    ("code", '''cfg = mmdit.MMDiTConfig(sample_size=8, patch_size=2, in_channels=4, out_channels=4, depth=2, num_heads=2,
                        head_dim=16, context_dim=24, pooled_dim=12, pos_embed_max_size=6)
torch.manual_seed(0)
tiny = mmdit.MMDiT(cfg).eval()
x, t = torch.randn(2, 4, 8, 6), torch.tensor([250.0, 900.0])      # a latent of 4x3 patches; t = sigma * 1000
context, pooled = torch.randn(2, 5, 24), torch.randn(2, 12)         # 5 text tokens of width E = 24; pooled P = 12
with torch.no_grad():
    tokens = tiny.x_embedder(x)
    pos = mmdit.crop_pos_embed(tiny.pos_embed, cfg.pos_embed_max_size, 4, 3)
    y = tiny.t_embedder(t) + tiny.y_embedder(pooled)
    c = tiny.context_embedder(context)
    print("patchify:", tuple(x.shape), "->", tuple(tokens.shape), "| positions: the centre 4x3 of a",
          f"{cfg.pos_embed_max_size}x{cfg.pos_embed_max_size} grid ->", tuple(pos.shape))
    print("y = t_emb + pooled_emb:", tuple(y.shape), "| context projection:", tuple(context.shape), "->", tuple(c.shape))
    h = tokens + pos
    for i, block in enumerate(tiny.blocks):
        h, c = block(h, c, y)
        print(f"joint block {i}: image {tuple(h.shape)}, text", "None (context_pre_only)" if c is None else tuple(c.shape))
    v = tiny(x, t, context, pooled)
print("final adaLN + linear + unpatchify ->", tuple(v.shape), "| a fresh model predicts v = 0:", bool((v == 0).all()))'''),
    ("md", '''## 2. The joint block, built by you

A block holds two `Stream`s, `block.x` (image) and `block.c` (text). Each has its own
`modulation` (SiLU then a linear D → 6D on y: shift, scale and gate for the attention, then for
the MLP: adaLN-Zero of chapter 06, once per modality), `norm1`, `attn` (its q/k/v projections,
`attn.qkv(h)`, and its output projection `attn.to_out`), `norm2` and `mlp`. What the streams share
is the attention itself: q, k and v of both are concatenated on the token axis and **one softmax**
runs over all T + S tokens.

**Exercise 9.1.** Write `joint_attention(qkv_x, qkv_c, heads)`: concatenate, attend once with
`attention.attention(q, k, v, heads)` (chapter 04's multi-head attention), split the result back.'''),
    ("code", '''def joint_attention(qkv_x, qkv_c, heads):
    ### BEGIN SOLUTION
    T = qkv_x[0].shape[1]
    q, k, v = (torch.cat([a, b], dim=1) for a, b in zip(qkv_x, qkv_c))  # (B, T + S, D) each
    out = attention.attention(q, k, v, heads)                            # (B, T + S, D)
    return out[:, :T], out[:, T:]                                        # (B, T, D), (B, S, D)
    ### END SOLUTION

check_joint_attention(joint_attention)'''),
    ("md", '''**Exercise 9.2.** Write the block's forward pass, `joint_block(block, x, c, y)` → (x, c), for a
block that is neither the last one nor a dual-attention one. Per stream: chunk its modulation of
SiLU(y) into six, modulate `norm1` of its tokens (`h * (1 + scale) + shift`), take q, k, v with
`attn.qkv`; run your joint attention; then, per stream, add the gated output projection and the
gated MLP of the modulated `norm2`, exactly as DiT's adaLN-Zero block did.'''),
    ("code", '''def joint_block(block, x, c, y):
    ### BEGIN SOLUTION
    mx = block.x.modulation(F.silu(y)).chunk(6, dim=-1)   # shift, scale, gate (attention); shift, scale, gate (MLP)
    mc = block.c.modulation(F.silu(y)).chunk(6, dim=-1)   # the text stream's own six
    qkv_x = block.x.attn.qkv(block.x.norm1(x) * (1 + mx[1][:, None]) + mx[0][:, None])
    qkv_c = block.c.attn.qkv(block.c.norm1(c) * (1 + mc[1][:, None]) + mc[0][:, None])
    out_x, out_c = joint_attention(qkv_x, qkv_c, block.heads)
    x = x + mx[2][:, None] * block.x.attn.to_out(out_x)
    x = x + mx[5][:, None] * block.x.mlp(block.x.norm2(x) * (1 + mx[4][:, None]) + mx[3][:, None])
    c = c + mc[2][:, None] * block.c.attn.to_out(out_c)
    c = c + mc[5][:, None] * block.c.mlp(block.c.norm2(c) * (1 + mc[4][:, None]) + mc[3][:, None])
    return x, c
    ### END SOLUTION

check_joint_block(joint_block)'''),
    ("code", '''block = mmdit.JointBlock(64, 4)
n_x, n_c = (sum(p.numel() for p in s.parameters()) for s in (block.x, block.c))
print(f"one joint block at D = 64: image stream {n_x:,} parameters, text stream {n_c:,}: two sets of weights, "
      "and no parameter in the attention itself")
for m in (block.x.modulation, block.c.modulation):
    torch.nn.init.normal_(m.weight, std=0.2)
x, c, y = torch.randn(1, 16, 64), torch.randn(1, 6, 64), torch.randn(1, 64)
with torch.no_grad():
    ours, pkg = joint_block(block, x, c, y), block(x, c, y)
    torch.testing.assert_close(ours, pkg)  # yours is the package's; from here on the package's is used
    moved = block(x, c + torch.randn_like(c), y)[0]  # change only the text tokens...
print("change the text tokens, and the image tokens change by up to", f"{(moved - pkg[0]).abs().max():.3f}",
      "(the attention is joint); the text stream also reads the image, which cross-attention never did")'''),
    ("md", '''Two more variants live in the same block (`course.nn.mmdit.JointBlock`):

- **`context_pre_only`, the last block.** The text stream's output after the last attention would
  never be read, so the last block drops its output projection, MLP and gates; its adaLN gives only
  a shift and a scale (diffusers' `AdaLayerNormContinuous`).
- **SD3.5's dual attention (MMDiT-X).** In the listed `dual_attention_layers`, the image stream
  has a second, image-only self-attention (`attn2`) with its own shift, scale and gate (9 chunks
  instead of 6), added after the joint attention.

## 3. QK-norm, measured

SD3 (Sec. 5.3.2) saw the **attention logits** q·k/√hd of its large models grow without bound in
high-resolution training, until the softmax saturated to one-hot and the loss diverged (as
Dehghani et al. 2023 had seen in ViT-22B). The fix: an RMSNorm with a learned scale on q and on k of
every head, before the dot product (`qk_norm`; SD3.5 ships with it). With unit scales
|q·k|/√hd ≤ √hd whatever the tokens; the learned scales move that bound only slowly.

The experiment (`course.recipes.qk_norm`): a small MM-DiT (D = 64, 4 blocks, 4 heads of 16) learns
rectified flow on chapter 06's one-object Shapes latents, the text a stand-in of two fixed random
tokens per class ("colour word", "shape word"). 1,000 AdamW steps of 64, at lr 1e-3 and at a high
lr 1e-2, with and without QK-norm, no gradient clipping; every 10 steps the largest logit of each
block on a fixed probe batch. Stored from `python -m course.recipes.qk_norm` (about 10 minutes on
one CPU thread):'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
result = qk_norm.RESULT
fig, axes = plt.subplots(1, len(result["results"]), figsize=(13, 2.9), layout="constrained", sharey=True)
for ax, (name, run) in zip(axes, result["results"].items()):
    logits = np.array(run["max_logit"])  # (logs, blocks)
    for b in range(logits.shape[1]):
        ax.plot(run["steps"], logits[:, b], label=f"block {b}", lw=1)
    ax.set(title=name, xlabel="step")
axes[0].set_ylabel("max attention logit")
axes[0].legend(fontsize=7)
fig.suptitle("largest q.k/sqrt(hd) per block while training (stored run)", fontsize=9);'''),
    ("code", '''for name, run in qk_norm.RESULT["results"].items():
    start, end = np.array(run["max_logit"][0]), np.array(run["max_logit"][-1])
    late = np.mean(run["loss"][-5:])  # the last 100 steps
    print(f"{name:<18} max logit at step 0: {start.max():4.1f} | largest stored: {np.max(run['max_logit']):5.1f} | "
          f"per block at step {run['steps'][-1]}: {', '.join(f'{v:4.1f}' for v in end)} | loss (last 100 steps) {late:.3f}")'''),
    ("md", '''What the curves show. Without the norm the logits grow with training, faster at the high
learning rate: at lr 1e-2 they climb from about 4 to peaks of 22–34 in every block within 200 steps
(a softmax with one logit 30 above the others is one-hot), at lr 1e-3 to peaks of 7–19. With QK-norm they stay where they started, at most 5,
at both rates, and the loss is no worse: over the last 100 steps 0.309 / 0.307 at lr 1e-3 and
0.304 / 0.286 at lr 1e-2 (without / with; one seed each). This small model does not diverge in fp32:
the growth is the mechanism SD3 reports, seen before it breaks anything; in their large
mixed-precision runs it ended in divergence. Below, the same measurement live and short (60 steps
at lr 1e-2).'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
bank = qk_norm.load_bank(n=1024)
live = {qk: qk_norm.run_setting(1e-2, qk, bank, steps=60) for qk in (False, True)}
fig, ax = plt.subplots(figsize=(6, 2.6), layout="constrained")
for qk, run in live.items():
    ax.plot(run["steps"], np.array(run["max_logit"]).max(axis=1), marker="o", label="QK-norm" if qk else "no norm")
ax.set(xlabel="step", ylabel="max logit (all blocks)", title="live: lr 1e-2, 60 steps")
ax.legend(fontsize=8);'''),
    ("md", '''## 4. Size by depth: "800 M to 8 B"

SD3 sets every size from one number, the depth d (Sec. 5.3): width 64·d, d heads of 64, d blocks,
MLP 4×. Counted on torch's meta device (shapes without storage) with SD3's text widths (E = 4096,
P = 2048) and 16-channel latents, by the course and by diffusers' `SD3Transformer2DModel`:'''),
    ("code", '''rows = mmdit.sizes_by_depth((15, 18, 24, 30, 38))
print(f"{'d':>3}{'width':>7}{'heads':>6}{'course':>16}{'diffusers':>16}{'36 d D^2':>10}")
for r in rows:
    approx = 36 * r["depth"] * r["width"] ** 2  # two streams x (6 D^2 modulation + 4 D^2 attention + 8 D^2 MLP) per block
    print(f"{r['depth']:>3}{r['width']:>7}{r['heads']:>6}{r['params']:>16,}{r['diffusers']:>16,}{approx / 1e9:>9.2f}B")
    assert r["params"] == r["diffusers"]'''),
    ("md", '''d = 38 gives **8.06 B** parameters, the paper's largest model, and d = 24 gives **2.03 B**, SD3-medium
(2,028,328,000 parameters, the published "2B"). The "800 M" end of the range is **d = 18** (0.86 B);
d = 15 is 0.50 B. Almost all of it is the blocks, 36·d·D² = 147,456·d³ (the last column): the
parameters grow with the **cube** of the depth, so d = 18 → 24 → 30 → 38 multiplies the model by
2.4, 2.0 and 2.0. A third of each block is adaLN modulation (6D² of each stream's 18D²), as in DiT.'''),
    ("md", '''The proof that the course's MM-DiT is SD3's: diffusers' `SD3Transformer2DModel` with random weights (every
one perturbed, the RMSNorm scales too), copied in by `MMDiT.from_diffusers`, the same non-square latent,
text tokens and fractional timesteps, for several configurations (`parity.compare("mmdit", config)`); and the
T5 encoder against transformers' `T5EncoderModel`, with a padding mask and more tokens than `max_distance`.
The MM-DiT comes out exactly equal, 0.0: the same float32 operations in the same order; T5 differs by
float rounding (below 1e-6).'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
from course.nn import t5

base = mmdit.PARITY_DEFAULT_CONFIG
for label, overrides in {"QK-norm, dual attention in block 0, p = 2": {},
                         "no QK-norm, no dual attention (SD3-medium's kind)": dict(qk_norm=None, dual_attention_layers=()),
                         "p = 1": dict(patch_size=1, pos_embed_max_size=10),
                         "p = 4, 16x16 latents": dict(patch_size=4, sample_size=16, pos_embed_max_size=6),
                         "4 blocks, width 48, E = 40, P = 8, dual in 0 and 2": dict(
                             num_attention_heads=2, attention_head_dim=24, caption_projection_dim=48, joint_attention_dim=40,
                             pooled_projection_dim=8, num_layers=4, dual_attention_layers=(0, 2))}.items():
    diff = parity.compare("mmdit", base | overrides)
    print(f"mmdit, {label:<52} max |course - diffusers| = {diff:.1e}")
    assert diff <= 1e-5
print(f"t5, {'3 blocks, gated GELU, 8 buckets, 30 tokens, padding mask':<55} max |course - transformers| = {t5.parity_t5():.1e}")'''),
    ("md", '''## 5. The SD3 pipeline, equal to diffusers'

`course.pipelines.sd3` puts the parts together, as SD3 does:

- **Text.** Two CLIP text models with projection read the prompt; their **penultimate** states
  (77 tokens each, 768 + 1280 channels) are concatenated on channels and **zero-padded** to T5's
  4096; their pooled outputs are concatenated into the **pooled vector** (768 + 1280 = 2048) that
  joins the timestep in y. The T5 encoder's states (`course.nn.t5`, from scratch: relative position
  buckets, RMSNorm, gated GELU; equal to transformers' `T5EncoderModel`) follow on the **sequence**
  axis: 77 + 77 = 154 tokens in the paper, 77 + 256 in diffusers' default.
- **Sampling.** Classifier-free guidance on the velocity, the flow Euler sampler of chapter 07 on
  the **shifted** sigma grid of chapter 08 (`course.diffusion.flow`; SD3 uses shift 3).
- **Decoding.** SD3's VAE has **16 channels**; latents are decoded as z / scaling_factor +
  shift_factor.

The proof: diffusers' `StableDiffusion3Pipeline` built from tiny random parts (two
`CLIPTextModelWithProjection`, a tiny `T5EncoderModel`, a 16-channel `AutoencoderKL`, an
`SD3Transformer2DModel`, `FlowMatchEulerDiscreteScheduler`; the real CLIP BPE tokenizer and a small
T5 tokenizer built from a hand-written Unigram vocabulary, no download), saved with
`save_pretrained`, then loaded by diffusers and by the course's own loader,
`load_diffusers_sd3_folder`.'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
folder = Path(tempfile.mkdtemp()) / "tiny-sd3"
tiny_cfg = sd3.build_tiny_sd3_folder(folder)  # diffusers' and transformers' progress bars and notes below'''),
    ("code", '''pipe = sd3.load_diffusers_sd3_folder(folder, t5_length=tiny_cfg["t5_length"])
print("saved:", sorted(p.name for p in folder.iterdir()))
prompts = ["a red circle in the top left", "a large blue square"]
context, pooled = pipe.text_encoder(prompts)
print("context", tuple(context.shape), "= 77 CLIP tokens + 16 T5 tokens, 48 channels | pooled", tuple(pooled.shape),
      "= 16 + 24 | shift", pipe.shift)'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

ref = StableDiffusion3Pipeline.from_pretrained(folder, local_files_only=True)
ref.set_progress_bar_config(disable=True)
latents = torch.randn((2, *pipe.latent_shape), generator=torch.Generator().manual_seed(0))
for guidance, shift in ((4.0, 3.0), (1.0, 1.0)):
    ref.scheduler = FlowMatchEulerDiscreteScheduler.from_config(ref.scheduler.config, shift=shift)
    with torch.no_grad():
        expected = ref(prompts, latents=latents.clone(), num_inference_steps=6, guidance_scale=guidance,
                       max_sequence_length=16, height=16, width=16, output_type="np").images
    got = (pipe.sample(prompts, steps=6, guidance=guidance, shift=shift, latents=latents) / 2 + 0.5).clamp(0, 1)
    diff = np.abs(got.permute(0, 2, 3, 1).numpy() - expected).max()
    print(f"guidance {guidance:g}, shift {shift:g}: max |course - diffusers| over the images = {diff:.1e}")
    assert diff <= 1e-4
for name in ("mmdit",):
    print(f"{name} parity: {parity.compare(name):.1e}")
print("the full comparison (4 settings, T5 dropped too) is parity.compare('sd3_pipeline'), run by the tests")'''),
    ("md", '''**Dropping an encoder.** SD3 was trained with each text encoder dropped independently (its
states replaced by zeros) 46.3% of the time, so at inference any of them can stay on disk: without
T5 (4.7 B parameters, more than the 2 B MM-DiT) the model still works, with weaker typography and
long prompts. `load_diffusers_sd3_folder(path, drop=("t5",))` does not load T5 and puts zeros in
its place, as diffusers does with `text_encoder_3=None`; "clip_l" and "clip_g" can be dropped the
same way. Below, what the MM-DiT receives for one prompt: the magnitude of every token's context
channels.'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
variants = {"all three encoders": (), "T5 dropped": ("t5",), "CLIP-L dropped": ("clip_l",)}
vmax = float(pipe.text_encoder(prompts[:1])[0].abs().max())  # one colour scale for the three panels
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained", sharey=True)
for ax, (title, drop) in zip(axes, variants.items()):
    p = sd3.load_diffusers_sd3_folder(folder, t5_length=tiny_cfg["t5_length"], drop=drop)
    c, pl = p.text_encoder(prompts[:1])
    ax.imshow(c[0].abs().T, aspect="auto", cmap="magma", interpolation="nearest", vmin=0, vmax=vmax)
    ax.axvline(76.5, color="w", lw=0.8)
    ax.set(title=f"{title}\\npooled: {int((pl[0] != 0).sum())} of {pl.shape[1]} non-zero", xlabel="token (77 CLIP | 16 T5)")
axes[0].set_ylabel("channel (16 CLIP-L, 24 CLIP-G, 8 zero pad)")
fig.suptitle("|context| of one prompt: a dropped encoder leaves zeros in its place", fontsize=9);'''),
    ("md", '''## 6. Loading a real SD3 or SD3.5 folder

The same loader reads the real models in diffusers format, e.g.
`stabilityai/stable-diffusion-3-medium-diffusers` or `stabilityai/stable-diffusion-3.5-medium` (gated:
accept the licence on Hugging Face first). Nothing here downloads: download a snapshot yourself
when you are online (`huggingface-cli download stabilityai/stable-diffusion-3-medium-diffusers
--local-dir ~/sd3-medium`), then point `COURSE_SD3_FOLDER` at it. In float32 the MM-DiT takes about
8 GB, the CLIPs 3 GB and T5 19 GB: `drop=("t5",)` leaves T5 on disk. With a GPU it takes seconds; on
a CPU one 1024×1024 image takes many minutes.'''),
    ("code", '''# NBVAL_IGNORE_OUTPUT
real = os.environ.get("COURSE_SD3_FOLDER")
if real is None or not (Path(real) / "model_index.json").is_file():
    print("no real SD3 folder: set COURSE_SD3_FOLDER to a downloaded stable-diffusion-3(-5)-*-diffusers snapshot "
          "to run this cell (nothing is downloaded)")
else:
    real_pipe = sd3.load_diffusers_sd3_folder(real, drop=("t5",)).to(device)
    print("loaded:", real_pipe.transformer.config, "| encoders:", real_pipe.text_encoder.present)
    image = real_pipe.generate(["a red circle to the left of a blue square, flat colours"], steps=28, guidance=7.0,
                               seed=0, size=(512, 512))
    plt.figure(figsize=(4, 4))
    plt.imshow(image[0])
    plt.axis("off")
    plt.title("SD3 through the course's pipeline (T5 dropped)", fontsize=8);'''),
    ("md", '''---
**END OF PART 1.** Part 2 trains `sd3-shapes`, an MM-DiT with rectified flow on the
Shapes world, and closes the course with the capstone table: U-Net + DDPM against MM-DiT +
rectified flow on the same data and compute.'''),
]

PART2: list[tuple[str, str]] = [
    ("md", """# Part 2 — `sd3-shapes`: the SD3 recipe in miniature

Part 1 proved the course's MM-DiT and SD3 sampler equal to diffusers' on random weights. Part 2
trains one: `sd3-shapes` (`course.recipes.sd3_shapes`), the MM-DiT on `vae-shapes` latents with

- **three frozen text streams in SD3's roles**: `clip-shapes` (CLIP-L's: per-token states and a
  pooled vector), `clip-shapes-wide` (CLIP-G's: the same, wider) and the pretrained MiniLM of
  chapter 03 (T5's: per-token states from a *bidirectional* encoder, so a colour word's state can
  depend on the shape word after it). The pooled vectors concatenate into the adaLN vector y; the
  tokens form the context;
- **caption dropout per encoder**, SD3's 46.3% each, independently;
- **rectified flow** with chapter 08's logit-normal(0, 1) sampler of t, and the **Euler sampler
  with CFG** of part 1;
- **cached latents and text states**, so that the CPU time goes to the denoiser."""),
    ("md", """## 7. Choosing the resolution and the patch size by measurement

Three layouts are on the table: 64×64 images give 8×8 latents, 64 tokens at patch size p = 1 or 16
at p = 2; 128×128 images give 16×16 latents, 64 tokens at p = 2 (SD3's own patching). The text adds
48 tokens to every sequence (24 CLIP positions, 24 MiniLM positions), so the image tokens are not
the whole cost. The recipe's `time_architectures` timed one training step of each (batch 64, one CPU
thread, with the machine shared by other trainings: the ratios matter, not the seconds)."""),
    ("code", """# NBVAL_IGNORE_OUTPUT
from course.recipes import capstone, sd3_shapes
from course.widgets import image_grid
from course.world import shapes

names, secs = list(sd3_shapes.ARCHITECTURE_TIMING), list(sd3_shapes.ARCHITECTURE_TIMING.values())
fig, ax = plt.subplots(figsize=(8, 2.6), layout="constrained")
bars = ax.barh(range(len(names)), secs, color=["C2" if "p=2 (16" in n else "C0" for n in names])
ax.set_yticks(range(len(names)), names, fontsize=8)
ax.invert_yaxis()
ax.bar_label(bars, fmt="%.2f s", fontsize=8)
ax.set(xlabel="seconds per training step (batch 64, one shared CPU thread)", xlim=(0, max(secs) * 1.2))
ax.set_title("16 image tokens train at half the cost of 64: twice the steps in the same budget (green: chosen)",
             fontsize=9);"""),
    ("md", """Why 64×64 with p = 2: the 64-token layouts cost 1.8–1.9× a step of the 16-token one, so in the
same CPU budget the 16-token model trains twice the steps; a 16×16-pixel token still separates two
objects (they never share a 21-pixel grid cell); and 64×64 keeps the VAE, ShapesEval and the
comparison with `sd1-shapes` / `sdxl-shapes` at the same size. At 64×64 no resolution shift is needed:
chapter 08 chose the sampler of t at this resolution (shift 1).

## 8. Three streams, each dropped 46.3% of the time

SD3 drops each text encoder independently. Three coins per caption give eight cases: the model
sees all three streams only 15% of the time, and none (the unconditional model that CFG needs)
10% of the time, 0.463³, close to the 10% that chapter 04 chose by hand. Each stream alone is seen
about 12% of the time, so each learns to condition the image on its own, and T5's role can be left
out at inference."""),
    ("code", """import itertools

keep = sd3_shapes.drop_mask(100_000, torch.Generator().manual_seed(0))  # (N, 3): clip_l, clip_g, minilm kept?
p = 1 - sd3_shapes.CAPTION_DROPOUT
print(f"{'kept streams':<28}{'expected':>10}{'drawn':>10}")
for case in itertools.product((True, False), repeat=3):
    label = ", ".join(n for n, k in zip(("CLIP-L", "CLIP-G", "MiniLM"), case) if k) or "none (unconditional)"
    expected = np.prod([p if k else 1 - p for k in case])
    drawn = float((keep == torch.tensor(case)).all(1).float().mean())
    print(f"{label:<28}{expected:>10.3f}{drawn:>10.3f}")"""),
    ("md", """What the MM-DiT reads for one prompt: the 24 CLIP positions carry CLIP-L's 64 and CLIP-G's 96
channels side by side, zero-padded to MiniLM's 384; the 24 MiniLM positions follow on the sequence
axis. A dropped stream is zeros in its place, in the states and in its half of the pooled vector."""),
    ("code", """# NBVAL_IGNORE_OUTPUT
text, codec, parts = sd3_shapes._frozen_parts()
prompt = ["a red circle to the left of a blue square"]
streams = sd3_shapes.encode_streams(text, prompt)
cases = {"all three streams": (1, 1, 1), "MiniLM dropped (T5-free)": (1, 1, 0), "only MiniLM": (0, 0, 1)}
full = sd3_shapes.assemble(streams)[0][0].abs()
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), layout="constrained", sharey=True)
for ax, (title, k) in zip(axes, cases.items()):
    context, pooled = sd3_shapes.assemble(streams, torch.tensor([k], dtype=torch.bool))
    ax.imshow(context[0].abs().T, aspect="auto", cmap="magma", interpolation="nearest", vmin=0,
              vmax=float(full.quantile(0.99)))
    ax.axvline(sd3_shapes.CLIP_LENGTH - 0.5, color="w", lw=0.8)
    ax.set(title=f"{title}\\npooled: {int((pooled[0] != 0).sum())} of {pooled.shape[1]} non-zero",
           xlabel="token (24 CLIP | 24 MiniLM)")
axes[0].set_ylabel("channel")
fig.suptitle("|context| of one prompt: each stream drops on its own (CLIP positions: channels 0-63 CLIP-L, "
             "64-159 CLIP-G, then zeros; MiniLM positions: 384 channels)", fontsize=9);"""),
    ("md", """## 9. Cache what is frozen

The text encoders and the VAE never change during training, so their outputs are computed once
for the bank of training scenes (16,384 scenes, one random caption each, float16 on disk) and a
training step is the MM-DiT alone. Below, the cost of encoding one batch of 64 captions against
one training step of the MM-DiT: without the cache, MiniLM alone would cost about as much as the
denoiser (it has 22.7 M parameters, the MM-DiT 2.3 M)."""),
    ("code", """# NBVAL_IGNORE_OUTPUT
import time

captions = sd3_shapes.bank_captions(shapes.sample_scenes(64, 1), 1)
t0 = time.perf_counter(); sd3_shapes.encode_streams(text, captions); encode_s = time.perf_counter() - t0
model = mmdit.MMDiT(sd3_shapes.SD3_SHAPES)
batch = (torch.randn(64, 4, 8, 8), *sd3_shapes.assemble(sd3_shapes.encode_streams(text, captions)))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
t0 = time.perf_counter()
for _ in range(2):
    loss = sd3_shapes.sd3_loss(model, batch, torch.Generator().manual_seed(0)); opt.zero_grad(); loss.backward(); opt.step()
step_s = (time.perf_counter() - t0) / 2
print(f"encode 64 captions (two CLIPs + MiniLM): {encode_s:.2f} s; one MM-DiT training step: {step_s:.2f} s")"""),
    ("md", """A live demo of the recipe: a small MM-DiT (width 64, two blocks) trained for 80 steps on a bank of
256 scenes with the recipe's loss and batches (rectified flow, logit-normal t, each stream dropped
46.3% of the time). The shipped model is the same loop at width 128, four blocks, 16,384 scenes and
thousands of steps."""),
    ("code", """# NBVAL_IGNORE_OUTPUT
import dataclasses

from course.train import TrainConfig, fit

demo_bank = sd3_shapes.build_bank(text, codec, n=256, seed=3)
torch.manual_seed(0)
demo = mmdit.MMDiT(dataclasses.replace(sd3_shapes.SD3_SHAPES, depth=2, num_heads=2))
result = fit(demo, sd3_shapes.sd3_loss, sd3_shapes.make_batch_fn(demo_bank),
             TrainConfig(steps=80, batch_size=32, lr=2e-3, warmup_steps=8, ema_decay=None), progress=False)
fig, ax = plt.subplots(figsize=(6, 2.6), layout="constrained")
ax.plot(result.losses, lw=0.8)
ax.set(xlabel="step", ylabel="CFM loss", title="the recipe's loss on a 256-scene bank (live)");"""),
    ("md", """## 10. The shipped `sd3-shapes`

Trained with `python -m course train sd3-shapes --ship` (the manifest records the command, the
time, the steps and every number below). Its recommended settings, `generate`'s defaults, are
20 Euler steps and the guidance scale of the manifest:
`python -m course generate --model sd3-shapes --prompt "a red circle and a blue square"`."""),
    ("code", """# NBVAL_IGNORE_OUTPUT
from course import checkpoints
from course.pipelines import base

try:
    checkpoints.manifest_entry("sd3-shapes")
    shipped = True
except KeyError:
    shipped = False
    print("sd3-shapes is not shipped yet: train it with `python -m course train sd3-shapes --ship`")
if shipped:
    pipe3 = base.load("sd3-shapes")
    rows = ["a red circle", "a large blue square in the top left and a small green triangle in the bottom right",
            "a yellow triangle to the left of a purple circle", "a cyan square and a red circle"]
    images = [pipe3.generate([p] * 4, seed=0) for p in rows]
    samples = image_grid(images, row_titles=[p if len(p) < 40 else p[:37] + "..." for p in rows],
                         suptitle="sd3-shapes, 20 Euler steps")
samples if shipped else None  # at the top level, so that the figure is shown"""),
    ("md", """## 11. Concept bleeding

SDXL's report names "concept bleeding" as a limitation: a blue hat and red gloves come out as blue
gloves and a red hat. Its miniature: on a two-object prompt of two colours and two shapes, the
share of images whose colours are **swapped** between the objects (the circle in the square's
colour and the square in the circle's) or **merged** (both shapes in one of the two colours).
`capstone.concept_bleeding` measures it from ShapesEval's detector; here it is checked on real
renders, on renders with the colours swapped, and on renders with one colour on both objects."""),
    ("code", """import dataclasses

pairs = [s for s in shapes.sample_scenes(400, 11) if len(s.objects) == 2
         and s.objects[0].color != s.objects[1].color and s.objects[0].shape != s.objects[1].shape][:48]
prompts2 = [shapes.caption(s) for s in pairs]

def recolour(scene, first, second):
    a, b = scene.objects
    return dataclasses.replace(scene, objects=(dataclasses.replace(a, color=first), dataclasses.replace(b, color=second)))

sets = {"real renders": pairs, "colours swapped": [recolour(s, s.objects[1].color, s.objects[0].color) for s in pairs],
        "one colour on both": [recolour(s, s.objects[0].color, s.objects[0].color) for s in pairs]}
for name, scenes_ in sets.items():
    print(f"{name:<20}", capstone.concept_bleeding(shapes.render_batch(scenes_), prompts2))"""),
    ("md", """The Part 1 models on the 83 eligible two-object prompts of the 256 held-out scenes, at their
recommended settings (25 DDIM steps, guidance 3), measured with `python -m course.recipes.capstone
bleeding` and stored in `capstone.MEASURED_BLEEDING`. `bound` is the share with both objects right.
`sd3-shapes`' rates are the `bleeding_*` keys of its manifest entry (`capstone.style_metrics`)."""),
    ("code", """print(f"{'model':<13}{'prompts':<11}{'bleeding':>9}{'swapped':>9}{'merged':>8}{'bound':>7}")
for model, by_style in capstone.MEASURED_BLEEDING.items():
    for style, r in by_style.items():
        print(f"{model:<13}{style:<11}{r['bleeding']:>9.3f}{r['swapped']:>9.3f}{r['merged']:>8.3f}{r['bound']:>7.3f}")"""),
    ("md", """## 12. What you built

| chapter | what you built | where it lives |
|---|---|---|
| 01 DDPM | forward process, schedules, ε-loss, ancestral sampling, DDIM | `course.diffusion.ddpm`, `course.recipes.ddpm_fashion` |
| 02 Latent space | the VAE, per-channel latent normalisation | `course.nn.vae`, `course.nn.codec`, `course.recipes.vae_shapes` |
| 03 Text encoders | CLIP's tokenizer and text transformer, a mini-CLIP, MiniLM | `course.nn.clip_text`, `course.nn.mini_clip`, `course.recipes.clip_shapes` |
| 04 U-Net and guidance | ResBlocks, cross-attention, CFG, img2img: mini SD 1.x | `course.nn.unet`, `course.pipelines.sd1`, `course.recipes.sd1_shapes` |
| 05 SDXL | micro-conditioning, two encoders, buckets, offset noise, the refiner | `course.pipelines.sdxl`, `course.recipes.sdxl_shapes` |
| 06 DiT | patchify, sin-cos positions, adaLN-Zero | `course.nn.dit`, `course.recipes.dit_shapes` |
| 07 Flow matching | paths, the CFM loss, Euler, reflow | `course.diffusion.flow`, `course.recipes.flow_shapes` |
| 08 SD3's recipe | samplers of t, the resolution shift | `course.diffusion.timesteps`, `course.recipes.timestep_ablation` |
| 09 MM-DiT and SD3 | joint attention, QK-norm, three text streams, the SD3 sampler | `course.nn.mmdit`, `course.nn.t5`, `course.pipelines.sd3`, `course.recipes.sd3_shapes` |

Where to go next: the real models load through the same code. `sd3.load_diffusers_sd3_folder`
reads SD3-medium or SD3.5 in diffusers format (section 6), `course.pipelines.sdxl` and `sd1` read
theirs; on a GPU the course's `fit` fine-tunes any of them (`accelerate launch -m course train
NAME` scales the same loop to several GPUs)."""),
]


def build() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in CELLS + PART2:
        nb.cells.append(nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source))
    return nb


if __name__ == "__main__":
    nbformat.write(build(), NB)
    print(f"wrote {NB} ({len(CELLS) + len(PART2)} cells)")

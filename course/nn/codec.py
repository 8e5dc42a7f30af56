"""Normalised latents: a trained VAE plus a per-channel shift and scale (`LatentCodec`).

Every latent chapter (04-09) diffuses in this space:

    x0 (B, 3, 64, 64) in [-1, 1]  --encode-->  z (B, 4, 8, 8), about N(0, 1) per channel
    z                             --decode-->  x0_hat (B, 3, 64, 64)

The raw latents of a VAE trained with a weak KL term are not unit-scale (SD 1.x's had std ~5.5,
hence its scaling factor 0.18215 = 1 / std). `fit_scaling_factor` finds SD's global factor;
`fit_channel_normalization` the per-channel (shift, scale) the codec applies. The shipped codecs
(`vae-shapes`, `ae-shapes`) load with `load_vae_shapes`; the recipe that trains and fits them,
and the helpers that speak the Shapes world's uint8 images, are in `course.recipes.vae_shapes`.

Shape letters: B batch, C latent channels, h, w latent size.
Ref: Rombach et al. 2022 (LDM), Sec. 4.3.2.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from course.nn.vae import VAE, DiagonalGaussian, VAEConfig


def fit_scaling_factor(latents: torch.Tensor) -> float:
    """1 / std of the latents: scaled latents have unit variance (how SD found 0.18215).

    Ref: Rombach et al. 2022, Sec. 4.3.2 and App. D.1.
    """
    return float(1.0 / latents.float().std())


def fit_channel_normalization(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (shift, scale), each (C,): (z - shift) * scale has mean 0 and std 1 per channel."""
    z = latents.float().transpose(0, 1).flatten(1)  # (C, B*H*W)
    return z.mean(dim=1), 1.0 / z.std(dim=1)


# ----------------------------------------------------------------------------- normalised latents


class LatentCodec(nn.Module):
    """A trained VAE plus a per-channel latent normalisation: images <-> latents with std ~1.

    z = (mean(q(z | x0)) - shift) * scale per channel; decode inverts it first.

    Args:
        vae: the trained VAE.
        shift, scale: (C,) the per-channel normalisation (`fit_channel_normalization`).
        image_size: the side of the images it was trained on (the Shapes world's 64).
    """

    def __init__(self, vae: VAE, shift: torch.Tensor, scale: torch.Tensor, image_size: int = 64):
        super().__init__()
        c = vae.config.latent_channels
        if shift.shape != (c,) or scale.shape != (c,):
            raise ValueError(f"shift and scale must have shape ({c},); got {tuple(shift.shape)}, {tuple(scale.shape)}")
        self.vae = vae
        self.image_size = image_size
        # not saved in the weights file: they live in the checkpoint's config
        self.register_buffer("shift", shift.float().clone(), persistent=False)
        self.register_buffer("scale", scale.float().clone(), persistent=False)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of the latent of one training image: (4, 8, 8) for 64x64 Shapes images."""
        f = self.vae.config.downsample_factor
        return (self.vae.config.latent_channels, self.image_size // f, self.image_size // f)

    def normalize(self, z_raw: torch.Tensor) -> torch.Tensor:
        return (z_raw - self.shift.view(1, -1, 1, 1)) * self.scale.view(1, -1, 1, 1)  # (B, C, h, w)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z / self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)  # (B, C, h, w)

    def encode(self, x0: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """x0 (B, 3, 64, 64) in [-1, 1] -> normalised z (B, 4, 8, 8); the posterior mean unless `sample`."""
        return self.normalize(_latent(self.vae.encode(x0), sample, generator))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """normalised z (B, 4, h, w) -> x0_hat (B, 3, 8h, 8w), clamped to [-1, 1]."""
        return self.vae.decode(self.denormalize(z)).clamp(-1, 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """The reconstruction decode(encode(x0))."""
        return self.decode(self.encode(x0))

    def config_dict(self) -> dict:
        """What the checkpoint's config holds: the VAE config plus the normalisation."""
        return asdict(self.vae.config) | {"latent_shift": [float(v) for v in self.shift],
                                          "latent_scale": [float(v) for v in self.scale]}


@torch.no_grad()
def raw_latents(vae: VAE, x0: torch.Tensor, sample: bool = False, batch_size: int = 256,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Unnormalised latents (B, C, h, w): posterior means, or samples z = mean + std * eps."""
    out = []
    for i in range(0, len(x0), batch_size):
        out.append(_latent(vae.encode(x0[i : i + batch_size]), sample, generator))  # (b, C, h, w)
    return torch.cat(out)


def _latent(q: DiagonalGaussian | torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
    """The posterior's mean or a sample of it; a plain autoencoder's z as it is."""
    if isinstance(q, DiagonalGaussian):
        return q.sample(generator) if sample else q.mode()
    return q


def load_codec_from(tensors: dict[str, torch.Tensor], config: dict) -> LatentCodec:
    """Rebuild a `LatentCodec` (`vae-shapes` or `ae-shapes`) from checkpoint tensors and config (zoo load contract)."""
    from course import checkpoints

    config = dict(config)
    missing = {"latent_shift", "latent_scale"} - set(config)
    if missing:
        raise ValueError(f"the checkpoint's config lacks {sorted(missing)}: it is not a LatentCodec; retrain it "
                         "with `python -m course train vae-shapes --ship`")
    shift, scale = torch.tensor(config.pop("latent_shift")), torch.tensor(config.pop("latent_scale"))
    codec = LatentCodec(VAE(VAEConfig(**config)), shift, scale)
    checkpoints.load_into(codec, tensors, source="a LatentCodec checkpoint")
    return codec.eval()


def load_vae_shapes(checkpoint: str | Path | None = None, name: str = "vae-shapes") -> LatentCodec:
    """The shipped codec `name` ("vae-shapes" or "ae-shapes"), or one from `checkpoint`, hash-verified, in eval mode."""
    from course import checkpoints

    tensors, entry = checkpoints.load_checkpoint(None if checkpoint else name, checkpoint)
    return load_codec_from(tensors, entry["config"])

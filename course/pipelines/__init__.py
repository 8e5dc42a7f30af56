"""Text -> denoiser -> sampler -> decoder, and the loaders of real diffusers folders.

Holds: `load(NAME)`, `TextToImage` and the guided samplers (`base`), Stable Diffusion 1.x / 2.x
(`sd1`), SDXL (`sdxl`); later SD3 (`sd3`).

May import: `course.nn`, `course.diffusion`, `course.world`, `course.checkpoints`, `course.zoo`;
never `recipes`, `train`, `widgets`, `cli`.
"""

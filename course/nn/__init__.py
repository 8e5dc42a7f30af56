"""The networks, each with its `from_diffusers` / `from_transformers` and its parity function.

Holds: attention and the time embedding (`attention`), the U-Net (`unet_blocks`, `unet`), the VAE
(`vae`) and the normalised latents (`codec`), the CLIP tokenizer, text transformer and MiniLM
(`clip_text`), the mini-CLIP image tower and loss (`mini_clip`); later `dit`, `mmdit`.

May import: `course.diffusion`, `course.checkpoints`, `course.paths`, `course.runtime`; never
`pipelines`, `recipes`, `world`, `train`, `widgets`, `cli`.
"""

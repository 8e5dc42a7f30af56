"""Parity harness: each from-scratch component against its production counterpart.

`compare(component, config, seed)` builds the reference class (diffusers / transformers) from
`config` (the reference class's constructor arguments) with random weights, copies those
weights into the course's module, feeds both the same random inputs in float32 and returns the
largest absolute difference over everything the component outputs.

Each chapter registers its component here by name; the function lives beside the component
(`course.nn.vae`, `course.pipelines.sd1`, ...; the schedulers' in `course.diffusion.scheduler_parity`)
and is imported only when asked for, so that `import course` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> "module:function"; the function has the signature fn(config: dict | None, seed: int) -> float
COMPONENTS: dict[str, str] = {
    "ddpm_scheduler": "course.diffusion.scheduler_parity:parity_ddpm_scheduler",  # diffusers.DDPMScheduler
    "ddim_scheduler": "course.diffusion.scheduler_parity:parity_ddim_scheduler",  # diffusers.DDIMScheduler
    "euler_scheduler": "course.diffusion.scheduler_parity:parity_euler_scheduler",  # diffusers.EulerDiscreteScheduler
    "vae": "course.nn.vae:parity_vae",  # diffusers.AutoencoderKL
    "unet": "course.nn.unet:parity_unet",  # diffusers.UNet2DConditionModel
    "clip_text": "course.nn.clip_text:parity_clip_text",  # transformers.CLIPTextModel / CLIPTextModelWithProjection
    "sd1_pipeline": "course.pipelines.sd1:parity_sd1_pipeline",  # diffusers.StableDiffusionPipeline, via a saved folder
    "sdxl_unet": "course.pipelines.sdxl:parity_sdxl_unet",  # diffusers.UNet2DConditionModel with SDXL's text_time embedding
    "sdxl_pipeline": "course.pipelines.sdxl:parity_sdxl_pipeline",  # diffusers.StableDiffusionXLPipeline, via a saved folder
    "dit": "course.nn.dit:parity_dit",  # diffusers.DiTTransformer2DModel (adaLN-Zero, learned sigma)
    "mmdit": "course.nn.mmdit:parity_mmdit",  # diffusers.SD3Transformer2DModel (QK-norm, dual attention)
    "sd3_pipeline": "course.pipelines.sd3:parity_sd3_pipeline",  # diffusers.StableDiffusion3Pipeline, via a saved folder
    "flow_scheduler": "course.diffusion.scheduler_parity:parity_flow_scheduler",  # diffusers.FlowMatchEulerDiscreteScheduler
}


def compare(component: str, config: dict[str, Any] | None = None, seed: int = 0) -> float:
    """Largest absolute difference between the course's `component` and its reference.

    Args:
        component: a registered name, one of `COMPONENTS`.
        config: the reference class's constructor arguments; None takes a small default.
        seed: seeds the random weights and inputs.

    Returns:
        max |course - reference| over all outputs, in float32.
    """
    if component not in COMPONENTS:
        known = ", ".join(sorted(COMPONENTS))
        raise KeyError(f"unknown parity component {component!r}; known components: {known}")
    module_name, fn_name = COMPONENTS[component].split(":")
    fn = getattr(importlib.import_module(module_name), fn_name)
    return float(fn(config, seed))

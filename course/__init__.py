"""Diffusion from Scratch: the helper package that every chapter imports.

Every model, schedule, sampler, dataset, metric and widget of the course lives here, one concept
per module, in rooms by role; a room imports only the rooms above it in this list:

    course.diffusion   the math as pure functions: ddpm, euler, scheduler_parity, vlb, flow, timesteps
    course.nn          the networks with their diffusers/transformers bridges: attention, unet_blocks,
                       unet, vae, codec, clip_text, mini_clip, dit, mmdit, t5
    course.world       what the course makes and how it scores it: shapes, toys, fashion_mnist,
                       metrics, classifiers
    course.pipelines   text -> denoiser -> sampler -> decoder, and real-folder loaders: base, sd1, sdxl, sd3
    course.recipes     one module per shipped model family: its data, loss, training, evaluation and
                       its chapter's figures: classifiers, toy_2d, ddpm_fashion, vae_shapes,
                       clip_shapes, sd1_shapes, offset_noise, sdxl_shapes, shapes_tour, unet_diagram,
                       dit_shapes, dit_ablations, flow_toys, flow_shapes, flow_ablations,
                       timestep_densities, timestep_ablation, resolution_shift, qk_norm, sd3_shapes

and the course's own tools at the top: checkpoints, zoo, train, parity, runtime, paths, cli,
doctor, bench, student, exercises (runner and one checker module per chapter), widgets.

Glossary (one set of names for the whole package, as the papers write them):

    x0          clean data (an image or a latent)
    xt          the noisy sample at time t
    eps         the Gaussian noise, eps ~ N(0, I)
    t           time. Diffusion schedules: integer t = 0 ... T-1 as diffusers indexes them,
                t = 0 is the least noisy. Flow models: continuous t in [0, 1] with t = 1
                pure noise and t = 0 data, as SD3 does. Converters live in one place.
    alpha_bar   cumulative product of (1 - beta_t): xt = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps
    sigma       noise level; for a variance-preserving schedule sigma_t = sqrt(1 - alpha_bar_t)
    snr         signal-to-noise ratio alpha_bar / (1 - alpha_bar)
    v           velocity target sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 (Salimans & Ho 2022);
                in `course.diffusion.flow`, v is the flow model's velocity dx/dsigma instead
    u           a flow's velocity target along one conditional path; u = eps - x0 for rectified flow
    cond        the conditioning (text tokens, pooled vectors, class labels)

Shape letters used in shape comments: B batch, C channels, H height, W width, T tokens,
D width of a token, nh heads, hd head dimension.
"""

__version__ = "0.1.0"

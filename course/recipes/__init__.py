"""One module per shipped model family: its config, training data, loss, `train_*`, `evaluate_*`,
and the figures and explorers its chapter shows.

Holds: `shapes_tour` (chapter 00's explorer), `classifiers`, `toy_2d`, `ddpm_fashion`,
`vae_shapes`, `clip_shapes`, `sd1_shapes`, `offset_noise`, `sdxl_shapes`; later `dit_shapes`,
`flow_*`, `sd3_shapes`. `python -m course train NAME` finds them through `course.zoo`.

May import: anything below it (`diffusion`, `nn`, `world`, `pipelines`) and the top-level tools.
"""

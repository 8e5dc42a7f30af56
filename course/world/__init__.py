"""What the course makes and how it scores it.

Holds: the Shapes world (`shapes`), the 2-D toy sets (`toys`), Fashion-MNIST read offline
(`fashion_mnist`), ShapesEval and the FIDs (`metrics`), and the feature classifiers behind the FIDs
with their loaders (`classifiers`).

May import: `course.nn`, `course.diffusion`, `course.checkpoints`; never `pipelines`, `recipes`,
`widgets`, `cli`.
"""

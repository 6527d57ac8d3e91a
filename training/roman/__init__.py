"""Language-agnostic ASR through romanized targets: uroman with a persistent cache and `with_targets` for the stage
scripts (`romanize`), and the de-romanizer back to the native script (`deromanize`).

Imports `avalign.training.schema`, `avalign.training.evaluation` (to score the de-romanizer) and
`avalign.training.logs`.
"""

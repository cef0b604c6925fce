"""The pure core: the model's maths, data, optimizers and the compiled training loop (JAX, Optax).

Nothing here imports Hydra, OmegaConf or MLflow, nor anything of lrexp outside ``lrexp.core``.
"""

"""The core: plain values in, arrays out. Data, the model and its loss, the optimizers' registry,
the compiled training loop and the scoring of its results (JAX, Optax).

Nothing here imports Hydra, OmegaConf or MLflow, nor anything of lrexp outside ``lrexp.core``,
and nothing here sees a config.
"""

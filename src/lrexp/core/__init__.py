"""The core: plain values in, arrays out. Data, the model and its loss, the optimizers' registry,
the compiled training loop and the scoring of its results. It never imports Hydra, OmegaConf or
MLflow, and never sees a config."""

"""Multiruns: the Hydra callback that makes a sweep's parent run and summary
(:mod:`~lrexp.sweeps.callback`), and the batched launcher's work (:mod:`~lrexp.sweeps.batched`)."""

"""The pipeline: one run from a typed config to its outcome, **config → data → fit → track**.

- :mod:`~lrexp.pipeline.prepare`: check the input, make or load the data, split it
  (:class:`Prepared`)
- :mod:`~lrexp.pipeline.runner`: train every split, score, record, summarize (:func:`run`)
- :mod:`~lrexp.pipeline.outcome`: what a run produced (:class:`Outcome`), :class:`Diverged`
- :mod:`~lrexp.pipeline.record`: what a run records in MLflow, through the tracking layer
- :mod:`~lrexp.pipeline.job`: a run's name, and the sweep it belongs to
- :mod:`~lrexp.pipeline.provenance`: the tags that say where a run came from

It never imports Hydra or MLflow: configs arrive typed (:mod:`lrexp.config`), and the store is
reached through :mod:`lrexp.tracking`.
"""

from lrexp.pipeline.outcome import Diverged, Outcome
from lrexp.pipeline.prepare import Prepared, loop_spec, prepare
from lrexp.pipeline.runner import conclude, raise_if_diverged, run, skip_if_finished, train_folds

__all__ = [
    "Diverged",
    "Outcome",
    "Prepared",
    "conclude",
    "loop_spec",
    "prepare",
    "raise_if_diverged",
    "run",
    "skip_if_finished",
    "train_folds",
]

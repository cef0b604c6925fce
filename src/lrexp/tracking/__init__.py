"""MLflow, and nothing else imports it. Two sides:

- the training side, without MLflow: :mod:`~lrexp.tracking.interface` declares the calls a run
  makes (:class:`~lrexp.tracking.interface.TrackingCalls`); :mod:`~lrexp.tracking.client` sends
  them to a tracking process over :mod:`~lrexp.tracking.channel`; :mod:`~lrexp.tracking.store`
  resolves and checks tracking URIs; :mod:`~lrexp.tracking.signals` says how a run ends;
- the store side, with MLflow: :mod:`~lrexp.tracking.server` (the tracking process) carries the
  calls out with :mod:`~lrexp.tracking.local`, built from :mod:`~lrexp.tracking.lifecycle`
  (runs opened and ended), :mod:`~lrexp.tracking.writer` (what a run writes) and
  :mod:`~lrexp.tracking.reader` (reading runs back); :mod:`~lrexp.tracking.sweep_summary`
  summarizes a sweep (its children ranked by :mod:`~lrexp.tracking.leaderboard`);
  :mod:`~lrexp.tracking.mlflow_private` isolates MLflow internals.
"""

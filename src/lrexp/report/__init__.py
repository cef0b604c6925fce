"""What a person reads: SVG figures (:mod:`~lrexp.report.plots`) and the terminal summary
(:mod:`~lrexp.report.text`), made from plain values."""

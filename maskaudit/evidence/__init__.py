"""Evidence of a bad label, one module per family; every value is per sample, higher = worse.

- :mod:`.segmenter`: does the mask disagree with the trained segmenter?
- :mod:`.image`: does each structure's outline sit on the image's edges and on its colour step?
- :mod:`.priors`: is the mask unusual for this dataset (an absent class that is nearly always there,
  an outlying area, position, component count or shape)?
- the label critic's score t comes from the QAM itself (:mod:`maskaudit.critic`, :mod:`maskaudit.signals`).
- :mod:`.scaling`: per-class evidence in units of each class's own spread, then the worst class.
- :mod:`.fusion`: combines them with weights learned on synthetic corruptions of the dataset itself.

Every family works on any mask, given or synthetic, so that the fusion can learn from corrupted
copies whose labels are known.
"""

"""Studies: a paper's experiment grid declared as data and reproduced with one command (``bench study``).

A study = recipes x seeds x tasks under a profile (+ the pretraining dataset) + the leaderboard layouts
that present it.  Study files are small YAML documents validated strictly into :class:`StudyConfig`
(:mod:`studies.schema`), shipped as package data in ``studies/files/`` and registered explicitly
(:mod:`studies.registry`).  :mod:`studies.run` plans the cells, delegates them to ``bench run`` and writes
the study's tables (filtered to its own cells) into ``<runs>/studies/<name>/``.
"""

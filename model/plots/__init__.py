"""Figures drawn from elfscreen's analyses (matplotlib, Agg, imported only here): the residual analysis
(:mod:`.residual`) and the model evaluation (:mod:`.evaluate`). ``model/`` holds no command: the
commands that write these live in :mod:`elfscreen.app.cli`."""

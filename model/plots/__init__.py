"""Figures drawn from elfscreen's analyses (matplotlib, Agg). ``model/`` holds no plotting command:
the commands that write these live in :mod:`elfscreen.app.cli`."""

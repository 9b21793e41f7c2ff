"""Evaluation of trained checkpoints: `python eval/per_language_bleu.py` and its helpers.

data_sources (test sets, read through mtmoe.data), buckets (resource sizes and
averages), report (json/csv/md files), plot (the png), progress (the bar).
Installed with the project (`pip install -e .`), so the script's `eval.*` and
`mtmoe.*` imports work from any working directory.
"""

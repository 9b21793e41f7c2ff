"""Evaluation of trained checkpoints: `python eval/per_language_bleu.py` and its helpers.

data_sources (test sets), languages (codes and names), buckets (resource sizes
and averages), report (json/csv/md files), plot (the png), progress (the bar).
"""

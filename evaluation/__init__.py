"""Evaluation of any renderer of (z, label): the generation test, its judges, the female-share,
leak and identity tables, the monitoring grid and the oracle."""

"""Reproducing the papers' tables: their figures as data, results read from runs, charts and suites.

Framework-free like the core (PyYAML and matplotlib are imported where used); reading an
mmengine run's config uses mmengine, imported only then.
"""

"""Evaluation: per-case metrics and their summary and report, and cross-validation (fold summary and the
post-processing decision from validation predictions).

May import: medseg.inference, medseg.handlers and everything below them; never medseg.training.
"""

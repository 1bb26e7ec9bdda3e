"""The loss study: losses x seeds on one plan under one MLflow parent run, its table and report.

May import: medseg.training, medseg.inference, medseg.evaluation and everything below them.
"""

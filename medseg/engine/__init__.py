"""Workflows on MONAI engines: training, prediction, post-processing, evaluation, cross-validation."""

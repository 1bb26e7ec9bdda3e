"""Inference: sliding-window prediction of one model or an ensemble (TTA), and learned post-processing.

May import: medseg.handlers, medseg.preprocessing, medseg.plan, medseg.data, medseg.io and the bottom layer.
"""

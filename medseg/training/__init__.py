"""Training: the run definition (:class:`TrainConfig`), the named builders, the ignite training workflow,
the multi-process launcher and the distributed helpers.

May import: medseg.handlers, medseg.preprocessing, medseg.plan, medseg.data, medseg.io and the bottom layer.
"""

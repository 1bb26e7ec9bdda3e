"""Pre-processing planned for a run: the MONAI transform pipelines a plan implies (training, validation,
inference), above both the dataset reader and the planner.

May import: medseg.plan, medseg.data, medseg.io and the bottom layer (losses, metrics, transforms, utils).
"""

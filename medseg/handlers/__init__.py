"""ignite handlers: validation metrics, crash-safe checkpoints, MLflow tracking, loss-weight schedules.

May import: the bottom layer (losses, metrics, transforms, utils) only.
"""

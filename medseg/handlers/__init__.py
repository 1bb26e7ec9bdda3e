"""ignite handlers: validation metrics, crash-safe checkpoints, MLflow tracking, loss-weight schedules."""

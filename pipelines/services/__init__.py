"""What the stages stand on: MLflow tracking (with retries) and its contract, the Ray runtime,
checkpoint files, model URIs."""

"""ganpipe's stages and workflow: Ray Train, Ray Tune, Ray Data, MLflow, the config and the CLI."""

"""The stages: train (Ray Train), tune (Ray Tune), evaluate, register. Each takes a config and
URIs and hands back URIs (run ids, checkpoint paths, model versions), never in-memory objects."""

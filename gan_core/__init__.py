"""ganpipe's core: GAN, DCGAN and conditional GAN in pure PyTorch, the game, the theory, the data.

Imports torch, numpy, pyarrow and PIL only, so it runs in a notebook, a test or
inside a Ray worker alike.
"""
from .game import EMA, Game, GameOptions, StepStats, adam_pair, unwrap
from .models import ModelSpec, build_models
from .sampling import (FORWARD_BLOCK, aligned_blocks, labels_for_rows, latent_rows, render_rows, rows_generator,
                       sample_latent, seeded, uniform_rows)

__all__ = ["Game", "GameOptions", "StepStats", "EMA", "adam_pair", "unwrap", "ModelSpec", "build_models", "sample_latent", "seeded",
           "latent_rows", "labels_for_rows", "uniform_rows", "FORWARD_BLOCK", "aligned_blocks", "render_rows",
           "rows_generator"]

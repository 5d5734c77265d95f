"""The registered generator as an MLflow model with two flavors:

- `pytorch` (pt2, torch.export, pickle-free): `mlflow.pytorch.load_model(URI)` returns G itself,
  called as G(z, y);
- `python_function`: `mlflow.pyfunc.load_model(URI)` and `mlflow models serve` answer a request
  for labeled images. A request is a table of (label, count) rows (count only, for an unconditional
  G) and the parameter `seed`; the answer has one row per image: `id`, `label` and `image` (PNG,
  base64). Row i is drawn exactly as `ganpipe generate --labels <the same counts> --seed <seed>`
  draws its row i (gan_core's row sampler on the same aligned blocks), so the images are the same
  bytes as that dataset's.

This module is the flavor passed to `mlflow.models.Model.log` (`save_model`) and the pyfunc loader
named in the MLmodel file (`_load_pyfunc`); serving it needs ganpipe installed where it runs.
"""
from __future__ import annotations

import base64
import json
import os

import numpy as np
import torch

from gan_core import ModelSpec, aligned_blocks, build_models, labels_for_rows, render_rows, rows_generator
from gan_core.data import encode_png, to_uint8

SPEC_FILE = "ganpipe.json"  # next to model.pt2: the model spec and class names
PT2_FILE = "model.pt2"
DATA_DIR = "data"  # the pytorch flavor's data folder
MAX_ROWS = 4096  # images per request; larger jobs are what `ganpipe generate` is for


def _tensor_signature(g):
    """(example, signature) of G's own inputs, which the pt2 export traces."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from gan_core import sample_latent, seeded

    n = 4
    z, _ = sample_latent(n, g.z_dim, None, seeded(0))
    inputs = [TensorSpec(np.dtype(np.float32), (-1, g.z_dim), "z")]
    example = [z.numpy()]
    if g.num_classes:
        example.append((np.arange(n) % g.num_classes).astype(np.int64))
        inputs.append(TensorSpec(np.dtype(np.int64), (-1,), "y"))
    outputs = [TensorSpec(np.dtype(np.float32), (-1, *g.image_shape), "images")]
    return example, ModelSignature(Schema(inputs), Schema(outputs))


def request_signature(conditional: bool):
    """The python_function flavor's request and answer."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = ([ColSpec("long", "label")] if conditional else []) + [ColSpec("long", "count")]
    outputs = [ColSpec("long", "id"), ColSpec("long", "label"), ColSpec("string", "image")]
    return ModelSignature(Schema(inputs), Schema(outputs), ParamSchema([ParamSpec("seed", "long", 0)]))


def save_model(path: str, mlflow_model, generator: torch.nn.Module, spec: dict, class_names: list[str], **kwargs):
    """Write both flavors into `path` (called by `mlflow.models.Model.log(flavor=this module)`)."""
    import mlflow.pytorch
    from mlflow import pyfunc

    example, tensor_signature = _tensor_signature(generator)
    mlflow.pytorch.save_model(generator, path, mlflow_model=mlflow_model, signature=tensor_signature,
                              input_example=example, serialization_format="pt2", pip_requirements=requirements())
    with open(os.path.join(path, DATA_DIR, SPEC_FILE), "w") as f:
        json.dump({"spec": spec, "class_names": list(class_names)}, f, indent=2, sort_keys=True)
    # The tensor example would be checked against the pyfunc request schema; G's inputs are
    # described in the pytorch flavor's docs instead.
    for name in (mlflow_model.saved_input_example_info or {}).get("artifact_path", ""), "serving_input_example.json":
        if name and os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))
    mlflow_model.saved_input_example_info = None
    mlflow_model.signature = request_signature(bool(generator.num_classes))
    # What a caller of the pytorch flavor needs to draw z and y (an exported program has no attributes):
    # mlflow.models.get_model_info(uri).metadata
    mlflow_model.metadata = {**(mlflow_model.metadata or {}), "z_dim": int(generator.z_dim),
                             "num_classes": int(generator.num_classes or 0), "class_names": list(class_names),
                             "image_shape": list(generator.image_shape)}
    pyfunc.add_to_model(mlflow_model, loader_module=__name__, data=DATA_DIR, conda_env="conda.yaml",
                        python_env="python_env.yaml")
    mlflow_model.save(os.path.join(path, "MLmodel"))


def requirements() -> list[str]:
    """What serving the model needs, pinned to what made it (MLflow would otherwise infer them in a
    subprocess, which takes seconds). ganpipe itself must be installed where it is served."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("mlflow", "torch", "numpy", "pandas", "pillow"):
        try:
            pins.append(f"{dist}=={version(dist).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(dist)
    return pins


def check_requirements_ahead() -> None:
    """What the first `save_model` of a process does before it writes anything: MLflow checks the pins
    of `requirements()` against the installed packages, first mapping every installed package to its
    modules (the map is then kept for the process). Done ahead, while a run trains (BENCHMARKS.md, "The
    registration's requirement check made while the run trains")."""
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    warn_dependency_requirement_mismatches(requirements())


class ImageServer:
    """The python_function model: (label, count) rows and a seed in, PNG images out."""

    def __init__(self, g: torch.nn.Module, class_names: list[str]):
        self.g, self.class_names = rows_generator(g), class_names

    def counts(self, table) -> list[int] | None:
        """Counts per class from the request rows; one clear error for a bad request."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        def bad(msg):
            return MlflowException(msg, error_code=INVALID_PARAMETER_VALUE)

        count = np.asarray(table["count"], dtype=np.int64)
        if (count < 0).any() or count.sum() <= 0:
            raise bad(f"count: give positive counts (got {count.tolist()})")
        if count.sum() > MAX_ROWS:
            raise bad(f"count: {int(count.sum())} images asked for; one request serves at most {MAX_ROWS} "
                      f"(use ganpipe generate for datasets)")
        if not self.g.num_classes:
            return None
        if "label" not in table:
            raise bad(f"label: the model is conditional; give a label (0..{len(self.class_names) - 1}) per row")
        labels = np.asarray(table["label"], dtype=np.int64)
        if ((labels < 0) | (labels >= self.g.num_classes)).any():
            raise bad(f"label: {labels.tolist()} outside the model's classes 0..{self.g.num_classes - 1}")
        return np.bincount(labels, weights=count, minlength=self.g.num_classes).astype(np.int64).tolist()

    @torch.no_grad()
    def predict(self, model_input, params: dict | None = None):
        import pandas as pd

        torch.set_num_threads(1)  # the same reductions as the batch stage's actors
        table = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        seed = int((params or {}).get("seed", 0))
        counts = self.counts(table)
        total = int(sum(counts)) if counts else int(np.asarray(table["count"]).sum())
        ids, labels, images = [], [], []
        for block, _ in aligned_blocks(0, total, total):
            y = labels_for_rows(block, counts, seed) if counts else None
            pixels = to_uint8(render_rows(self.g, block, seed, y))
            ids.extend(block.tolist())
            labels.extend(y.tolist() if y is not None else [-1] * len(block))
            images.extend(base64.b64encode(encode_png(p)).decode("ascii") for p in pixels)
        return pd.DataFrame({"id": ids, "label": labels, "image": images})


def _load_pyfunc(data_path: str, model_config=None) -> ImageServer:
    """The pyfunc loader named in the MLmodel file: G rebuilt from its spec with the exported weights."""
    with open(os.path.join(data_path, SPEC_FILE)) as f:
        info = json.load(f)
    g, _ = build_models(ModelSpec.from_dict(info["spec"]))
    exported = torch.export.load(os.path.join(data_path, PT2_FILE))
    constants = getattr(exported, "constants", None) or {}
    own = g.state_dict()
    g.load_state_dict({**exported.state_dict, **{k: v for k, v in constants.items() if k in own}})
    return ImageServer(g, info["class_names"])

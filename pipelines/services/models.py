"""Model URIs: a checkpoint folder or state.pt, an MLflow run (`runs:/ID` or the bare id) or a
registered version (`models:/NAME@ALIAS`, `models:/NAME/VERSION`), resolved to the generator and
what its checkpoint says about it."""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from gan_core import build_models

from ..errors import UserError
from . import checkpoints, contract, tracking

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class LoadedGenerator:
    generator: torch.nn.Module
    meta: checkpoints.CheckpointMeta
    config: dict
    iteration: int
    source: str
    d_state: dict | None = None  # the run's discriminator, when the checkpoint has one

    @property
    def run_id(self) -> str | None:
        return self.meta.run_id

    @property
    def label_prior(self) -> torch.Tensor | None:
        prior = self.meta.label_prior
        return torch.tensor(prior) if prior and self.generator.num_classes else None


def generator_from_state(state: dict, source: str) -> LoadedGenerator:
    meta = checkpoints.CheckpointMeta.from_dict(json.loads(state.get("meta", "{}")), source)
    g, _ = build_models(meta.spec)
    try:
        g.load_state_dict(state.get("G_ema") or state["G"])
    except RuntimeError as e:
        raise UserError(f"{source}: the generator weights do not fit its model spec ({str(e).splitlines()[0]})") \
            from None
    return LoadedGenerator(g.eval(), meta, json.loads(state.get("config", "{}")), int(state["iteration"]), source,
                           state.get("D"))


def resolve(uri: str, tracking_uri: str) -> LoadedGenerator:
    """A checkpoint path, `runs:/RUN_ID` or a bare run id; anything else is one clear error."""
    path = Path(uri).expanduser()
    if path.is_dir() and not (path / checkpoints.STATE_FILE).exists() and checkpoints.checkpoint_folders(path):
        import sys

        folder, why = checkpoints.run_checkpoint(path)  # a training run's folder, as `ganpipe train` names it
        print(f"model: {uri} is a training run's folder; using {folder.name}, {why}", file=sys.stderr)
        return generator_from_state(checkpoints.load_state(folder), str(folder))
    if path.is_file() and path.name != checkpoints.STATE_FILE and path.suffix != ".pt":
        raise UserError(f"--model {uri}: not a checkpoint (a checkpoint is a checkpoint_* folder or its "
                        f"state.pt; {checkpoints.listing(path.parent)})")
    if path.exists():
        return generator_from_state(checkpoints.load_state(path), uri)
    if contract.model_ref(uri):
        run_id = _registered_run(uri, tracking_uri)
    else:
        run_id = uri[len("runs:/"):].split("/")[0] if uri.startswith("runs:/") else uri
    if RUN_ID.match(run_id):
        client = tracking.client(tracking_uri)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifacts(run_id, contract.CHECKPOINT_STATE, tmp)
                return generator_from_state(checkpoints.load_state(local), uri)
        except UserError:
            raise
        except Exception as e:  # MlflowException: unknown run, missing artifact
            raise UserError(f"--model {uri}: MLflow run {run_id} has no checkpoint/state.pt in {tracking_uri} "
                            f"({e.__class__.__name__})") from None
    raise UserError(f"--model {uri!r} does not resolve: give a checkpoint folder or state.pt, runs:/RUN_ID, "
                    f"a run id, or models:/NAME@ALIAS")


def _registered_run(uri: str, tracking_uri: str) -> str:
    """The training run behind `models:/NAME@ALIAS` or `models:/NAME/VERSION`."""
    from mlflow.exceptions import MlflowException

    name, number, alias = contract.model_ref(uri)
    client = tracking.client(tracking_uri)
    try:
        version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as e:
        raise UserError(f"--model {uri!r} does not resolve in {tracking_uri}: {e.message}") from None
    return version.run_id

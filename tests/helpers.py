"""Small fixtures shared by tests: fixed samplers posing as generators, toy densities."""
import torch
from torch import nn


def trained_batchnorm(module):
    """Give every BatchNorm running statistics and an affine transform other than the identity, as
    training would, so that folding them into the layers before is not trivially exact."""
    gen = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return module


class FixedSampler(nn.Module):
    """A 'generator' whose distribution never changes: x = mean + std * z, shaped (N, 1, 1, 1)."""

    def __init__(self, mean: float, std: float):
        super().__init__()
        self.z_dim, self.num_classes, self.image_shape = 1, None, (1, 1, 1)
        self.mean, self.std = mean, std
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, z, y=None):
        return (self.mean + self.std * z).view(-1, 1, 1, 1) + 0.0 * self.dummy


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`ganpipe ARGS` in this process (no interpreter or Ray start-up): (exit code, stdout, stderr)."""
    import os

    from pipelines.cli import COMMANDS, main

    folder = os.environ.get("GANPIPE_TEST_FEATURES")  # the session's feature-network cache
    extra = ["--set", f"eval.cache_dir={folder}"] if folder and args and COMMANDS.get(args[0]) and \
        COMMANDS[args[0]].config else []
    code = main([*args, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    """Exit code 2, one line on stderr containing every needle, no traceback."""
    assert code == 2, (code, err[-2000:])
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err[-2000:]
    for n in needles:
        assert n in err, err


def holder(code: str):
    """A separate Python process that runs `code` (which takes a lock in a `with` block and prints
    'held'), returned once it holds; the caller kills it."""
    import subprocess
    import sys

    body = "import time\nfrom pipelines.services import names\n" + code + "\n    print('held', flush=True)\n    time.sleep(600)\n"
    proc = subprocess.Popen([sys.executable, "-c", body], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc

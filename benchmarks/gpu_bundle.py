"""Packs what a GPU machine needs to run ganpipe besides its own Python, PyTorch and the packages it
already has: ganpipe's dependencies as wheels for its Python, resolved here (a GPU machine may have no
package index), minus the packages listed as present (gpu_image_packages.txt: a CUDA image with
PyTorch, pandas, pyarrow, scikit-learn, ...), unpacked, trimmed of what ganpipe never imports (Ray's
Java jars, RLlib, Serve and its LLM library; MLflow's web UI), and compressed into one file:

    python benchmarks/gpu_bundle.py                  # -> .gpu/site.tar.xz (Python 3.12, x86-64)
    bash benchmarks/gpu_check.sh                     # on the GPU machine: unpacks it, then runs the check

`--python 3.11 --present none` packs every dependency but PyTorch for this machine's Python: the
bundle's own check (tests/test_gpu_bundle.py is its unit test; docs/benchmarks.md "On a GPU").
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESENT = Path(__file__).resolve().parent / "gpu_image_packages.txt"
ALWAYS_THERE = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*)$")  # the GPU's own stack
# Folders of the unpacked packages that ganpipe never imports, trimmed to keep the bundle small.
TRIM = ("ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client/build", "mlflow/server/js")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> list[str]:
    """ganpipe's own dependencies (pyproject.toml), but PyTorch's, which the GPU machine brings; each
    at the version installed here where it is (the versions the tests ran with)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, extras = re.match(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?", dep).groups()
        if ALWAYS_THERE.match(normalize(name)):
            continue
        try:
            out.append(f"{name}{extras or ''}=={version(name)}")
        except PackageNotFoundError:
            out.append(dep)
    return out


def present(path: str) -> set[str]:
    """The normalized names listed in `path` (one a line, # comments), or none for "none"."""
    if path == "none":
        return set()
    return {normalize(line.split("==")[0].strip()) for line in Path(path).read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def wheel_name(wheel: Path) -> str:
    return normalize(wheel.name.split("-")[0])


def keep(wheels: list[Path], there: set[str]) -> list[Path]:
    """The wheels of the packages the GPU machine lacks."""
    return [w for w in wheels if wheel_name(w) not in there and not ALWAYS_THERE.match(wheel_name(w))]


def trim(site: Path) -> None:
    for rel in TRIM:
        shutil.rmtree(site / rel, ignore_errors=True)


def unpack(wheel: Path, site: Path) -> None:
    """`wheel`'s files into `site` as pip installs them, executables kept executable (Ray's raylet and
    GCS server are programs inside the package)."""
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = Path(z.extract(info, site))
            mode = info.external_attr >> 16
            if mode and not info.is_dir():
                path.chmod(mode & 0o777)


def pack(wheels: list[Path], site: Path, out: Path, limit_mib: float) -> float:
    """`wheels` unpacked into `site`, trimmed, compressed to `out` (written whole or not at all); its MiB.
    A bundle over `limit_mib` is refused, naming the largest wheels."""
    for w in wheels:
        unpack(w, site)
    trim(site)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".part")
    with tarfile.open(part, "w:xz", preset=6) as tar:
        tar.add(site, arcname=".")
    size = part.stat().st_size / 2**20
    if size > limit_mib:
        part.unlink()
        sys.exit(f"gpu_bundle.py: the bundle would be {size:.1f} MiB, over --limit-mib {limit_mib:g}; its "
                 f"largest packages: " + ", ".join(f"{w.name} ({w.stat().st_size / 2**20:.0f} MiB)" for w in
                                                   sorted(wheels, key=lambda w: -w.stat().st_size)[:5]))
    part.replace(out)
    return size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default="3.12", help="the GPU machine's Python version")
    ap.add_argument("--present", default=str(PRESENT), help="file of the packages it has (or none)")
    ap.add_argument("--out", default=str(ROOT / ".gpu" / "site.tar.xz"))
    ap.add_argument("--limit-mib", type=float, default=56.0, help="refuse a bundle larger than this "
                                                                  "(what travels to the machine is limited)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ganpipe-bundle-"))
    wheels = work / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--dest", str(wheels), "--only-binary=:all:",
           "--python-version", a.python, "--implementation", "cp",
           *(x for p in PLATFORMS for x in ("--platform", p)), *requirements()]
    print("resolving and downloading:", " ".join(requirements()), flush=True)
    subprocess.run(cmd, check=True)
    chosen = keep(sorted(wheels.glob("*.whl")), present(a.present))
    size = pack(chosen, work / "site", Path(a.out), a.limit_mib)
    names = sorted(wheel_name(w) for w in chosen)
    print(f"{a.out}: {size:.1f} MiB, {len(names)} packages for Python {a.python}: {', '.join(names)}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

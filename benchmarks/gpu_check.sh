#!/usr/bin/env bash
# ganpipe on one GPU in one script of under 8 minutes (benchmarks/gpu_check.py: the step, one Ray
# Train worker, `ganpipe run` end to end with its quality bar, the batch stage on GPU actors), on a GPU
# machine whose Python has PyTorch but not ganpipe's other dependencies: those come packed by
# `python benchmarks/gpu_bundle.py` (.gpu/site.tar.xz, or the file named by GANPIPE_BUNDLE) and are
# unpacked here first. Results go to $OUT (or the working directory): gpu_results.md, gpu_results.json,
# the run's per-class grid and each part's log. Arguments go to gpu_check.py (--device cpu --quick
# checks the script on a CPU).
#     bash benchmarks/gpu_check.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${OUT:-$PWD}"
bundle="${GANPIPE_BUNDLE:-$root/.gpu/site.tar.xz}"
python="${PYTHON:-python3}"
if [ -f "$bundle" ]; then
  site="$(mktemp -d)/site"
  mkdir -p "$site"
  tar -xJf "$bundle" -C "$site"
  export PYTHONPATH="$root:$site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
fi
errors="$(mktemp)"
if ! "$python" -c "import ray, mlflow, pipelines.cli" 2>"$errors"; then
  echo "gpu_check.sh: ganpipe does not import here ($(tail -1 "$errors")); no bundle at" \
       "$bundle? make one with: python benchmarks/gpu_bundle.py" >&2
  exit 1
fi
"$python" -c "import torch, ray, mlflow; print('torch', torch.__version__, '| ray', ray.__version__, '| mlflow',
  mlflow.__version__, '| CUDA:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
exec "$python" "$here/gpu_check.py" --out "$out/gpu_results.md" --json "$out/gpu_results.json" "$@"

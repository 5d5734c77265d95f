#!/usr/bin/env bash
# The checks that need a GPU, as one script of under 10 minutes on a lent GPU machine:
#   1. the 64x64 DCGAN's step: fp32 / bf16 autocast, channels-last, torch.compile vs the plain loop;
#   2. gan_core's step on CPU and CUDA, with the sample grid and the metrics on the device;
#   3. `ganpipe train` on the GPU through Ray Train (NCCL), checkpoint, and a resume of the same run;
#   4. `ganpipe generate` from that run with GPU actors.
# 1 and 2 need torch only; 3 and 4 need ganpipe installed (pip install -e .), and are skipped with a
# message where it is not. Rows go to gpu_results.md in the working directory.
#     bash benchmarks/gpu_check.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$PWD}/gpu_results.md"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
timeout 300 python "$here/gpu_step.py" --iterations 200 --batch 128 --out "$out"
timeout 120 python "$here/game_step_devices.py" --iterations 100 --out "$out"
if ! python -c "import pipelines.cli, ray, mlflow" 2>/dev/null; then
  echo "ganpipe train/generate on the GPU: skipped, ganpipe is not installed here (pip install -e .)" | tee -a "$out"
  exit 0
fi
work="$(mktemp -d)"
common=(--set ray.use_gpu=true --set ray.num_workers=1 --set train.run_name=gpu-check --set train.time_budget_s=null
        --set "ray.storage_path=$work/runs" --set "mlflow.tracking_uri=sqlite:///$work/mlflow.db"
        --set "eval.cache_dir=$work/features" --set train.log_every=50 --set train.eval_every=100)
timeout 120 ganpipe train "${common[@]}" --set train.iterations=200 | tee "$work/first.log"
timeout 120 ganpipe train "${common[@]}" --set train.iterations=400 | tee "$work/resume.log"
run_id="$(grep -o 'MLflow run [0-9a-f]*' "$work/resume.log" | head -1 | awk '{print $3}')"
python - "$work" "$run_id" <<'PY' | tee -a "$out"
import sys
from mlflow.tracking import MlflowClient
work, run_id = sys.argv[1:]
steps = [m.value for m in MlflowClient(f"sqlite:///{work}/mlflow.db").get_metric_history(run_id, "resumed_from")]
assert 200 in steps, f"the second run did not resume from iteration 200: resumed_from {steps}"
print(f"ganpipe train on the GPU: resumed from iteration 200 (resumed_from {steps})")
PY
timeout 120 ganpipe generate --model "runs:/$run_id" --rows 20000 --out "$work/ds" \
  --set generate.gpus_per_actor=1 --set "mlflow.tracking_uri=sqlite:///$work/mlflow.db" \
  --set "eval.cache_dir=$work/features" | tee "$work/generate.log"
echo "ganpipe train (1 GPU worker, NCCL), resume, and generate with GPU actors: done, $(tail -1 "$work/generate.log")" | tee -a "$out"

#!/usr/bin/env bash
# The GPU checks, as one call on a lent GPU machine (its image has torch, Lightning and torchmetrics, and no
# network): throughput for docs/PERFORMANCE.md, then short runs that take lit-gan's device paths.
#
#   here, once:  echo /.whl/ >> .git/info/exclude; python3 -m pip download --no-deps --only-binary=:all: \
#                  --python-version 3.12 -d .whl jsonargparse==4.53.0 docstring_parser==0.18.0 \
#                  typeshed_client==2.15.0 torch-fidelity==0.4.0
#   there:       LIT_GAN_COMMIT='<python -c "from lit_gan.provenance import commit; print(commit())" here>' \
#                  bash scripts/gpu_check.sh
#                (device run with carry [".whl"], timeout_s 560; the copy there has no .git to name its commit)
#
# Writes into $OUT (default /tmp/gpu_check): gpu_throughput.json (after every case), PERFORMANCE.md (to copy
# over docs/PERFORMANCE.md here), log.txt. About 6 minutes: the throughput cases stop starting at 240 s.
set -u
OUT=${OUT:-/tmp/gpu_check}
ACCELERATOR=${ACCELERATOR:-gpu}  # cpu, with THROUGHPUT_ARGS="--device cpu --iterations 2 --warmup 1 --batches 8": a dry run
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=.:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__, 'torchmetrics', torchmetrics.__version__, 'cuda', torch.cuda.is_available())"

echo "== throughput (docs/PERFORMANCE.md)"
python3 -m benchmarks.gpu_throughput --deadline 240 --json "$OUT/gpu_throughput.json" --write ${THROUGHPUT_ARGS:-}
cp docs/PERFORMANCE.md "$OUT/PERFORMANCE.md"

echo "== device paths: stacked digits (the digit classifier on the GPU), bf16-mixed and 16-mixed on the grid"
common=(--trainer.accelerator=$ACCELERATOR --trainer.devices=1 --trainer.logger=false --trainer.enable_progress_bar=false)
python3 train.py --config configs/stacked_digits/nonsaturating_dcgan.yaml --generator_steps=100 \
    --evaluation.every_n_generator_steps=50 --evaluation.num_samples=500 --trainer.default_root_dir=/tmp/run_sd "${common[@]}"
for precision in bf16-mixed 16-mixed; do
    python3 train.py --config configs/quickstart.yaml --generator_steps=300 --evaluation.every_n_generator_steps=150 \
        --trainer.precision=$precision --trainer.default_root_dir=/tmp/run_$precision "${common[@]}"
done
echo "== done"
exec >&- 2>&-
wait $tee_pid  # the log whole before the call returns (its leftover processes are killed then)

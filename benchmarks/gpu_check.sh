#!/usr/bin/env bash
# One prepared run on a lent GPU machine (its image has torch; braindecode, mne and friends are carried in
# .gpu_site as pure-Python packages copied from the CPU venv). Writes results under $OUT.
set -u
export PYTHONPATH="$PWD/.gpu_site:$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, braindecode, mne; print('torch', torch.__version__, 'braindecode', braindecode.__version__, 'mne', mne.__version__, 'cuda', torch.cuda.is_available())" || exit 1
echo "== distillation core and cache tests on CUDA (trainer picks the GPU; bf16 autocast path)"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_distill_core.py tests/test_cache.py 2>&1 | tail -12
echo "== distillation throughput"
timeout 180 python3 benchmarks/bench_distill.py --device cuda --batches 12 --batch-size 64 --json "$OUT/distill_gpu.json"
echo "== FACED-size epoch: live teacher vs cache"
timeout 300 python3 benchmarks/bench_cache.py --device cuda --batch-size 64 --jobs 12 --work /tmp/faced 2>&1 | grep -v -i warn | tail -16

#!/usr/bin/env bash
# One prepared run on a lent GPU machine (its image has torch; braindecode, mne and friends are carried in
# .gpu_site as pure-Python packages copied from the CPU venv). Writes results under $OUT. About 8 minutes:
#   run with timeout_s=540, command: bash benchmarks/gpu_check.sh
set -u
export PYTHONPATH="$PWD/.gpu_site:$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, braindecode, mne; print('torch', torch.__version__, 'braindecode', braindecode.__version__, 'mne', mne.__version__, 'cuda', torch.cuda.is_available())" || exit 1
echo "== 1. the GPU path at FACED size: eager fp32 live teacher vs biokd default vs cache + bf16 + compile"
timeout 240 python3 benchmarks/bench_gpu.py --device cuda --batch-size 64 --steps 30 --warmup 5 --workers 4 \
    --json "$OUT/bench_gpu.json" 2>&1 | grep -v -i warn | tail -8
echo "== 2. the EEG pipeline end to end on the GPU (generated EEGMMIDB, CBraMod -> MiC, report)"
timeout 120 python3 -m biokd demo eeg --quick --out "$OUT/demo" 2>&1 | tail -6
echo "== 3. the glucose pipeline end to end on the GPU (simulated OhioT1DM, transformer -> GlucoNet)"
timeout 120 python3 -m biokd demo glucose --quick --out "$OUT/demo" 2>&1 | tail -6
ls "$OUT"/demo/*/ 2>/dev/null | head -20
echo "== 4. DDP on the GPU machine's CPU (two gloo processes) and tracking"
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_ddp.py 2>&1 | tail -3

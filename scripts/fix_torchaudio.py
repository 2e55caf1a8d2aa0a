"""Make torchaudio importable beside a CPU-only torch (braindecode imports it).

PyPI's torchaudio wheel links CUDA libraries; with a CPU torch its compiled extension fails to load
(``libc10_cuda.so``). Without the compiled libraries torchaudio falls back to pure-Python code, which is all
braindecode needs. Nothing is changed when torch has CUDA or torchaudio already imports.
"""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys


def _imports() -> bool:
    probe = "import torchaudio, braindecode"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def main() -> int:
    import torch

    spec = importlib.util.find_spec("torchaudio")
    if spec is None or torch.version.cuda is not None or _imports():
        return 0
    lib = pathlib.Path(spec.origin).parent / "lib"
    removed = [p for p in lib.glob("*.so*")]
    for path in removed:
        path.unlink()
    ok = _imports()
    print(f"torchaudio: removed {len(removed)} CUDA-linked libraries from {lib}; braindecode imports: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

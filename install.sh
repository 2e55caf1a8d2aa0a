#!/usr/bin/env bash
# Install biokd into a virtual environment (.venv by default).
#   bash install.sh            the package and its CLI
#   bash install.sh test       every extra (glucose, export, fmri, mri, scale, notebooks) and the test tools
#   bash install.sh glucose    (or export, notebooks, all) one extra
# A torch already in the venv is kept (GPU users install theirs first); otherwise the CPU build is taken.
set -euo pipefail
cd "$(dirname "$0")"
extras="${1:-}"
venv="${BIOKD_VENV:-.venv}"
python="${PYTHON:-python3}"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "${pip[@]}" install -q "torch==${BIOKD_TORCH_VERSION:-2.13.0}"
fi
# Freeze the installed torch so no dependency swaps it for another (CUDA) build.
"$venv/bin/python" -W ignore -c "import torch; print('torch==' + torch.__version__)" > "$venv/biokd-constraints.txt"
target="."
[ -n "$extras" ] && target=".[$extras]"
"${pip[@]}" install -q -c "$venv/biokd-constraints.txt" -e "$target"
"$venv/bin/python" scripts/fix_torchaudio.py
# ComBat site harmonisation (fmri): neuroHarmonize's metadata pins numpy<2 and pandas<3 although it runs with
# both, so it is installed without its dependencies (statsmodels comes with the fmri extra).
case ",$extras," in
  *,test,*|*,all,*|*,fmri,*) "${pip[@]}" install -q --no-deps "neuroHarmonize>=2.4" "neuroCombat>=0.2.12" ;;
esac
# With the notebooks extra: a Jupyter kernel that runs this venv's python (nbclient and Jupyter find it here).
if "$venv/bin/python" -c "import ipykernel" 2>/dev/null; then
  "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (biokd)" >/dev/null
fi
echo "biokd installed in $venv ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"

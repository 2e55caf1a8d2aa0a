"""``python -m biokd`` (and ``torchrun --nproc-per-node N -m biokd distill CONFIG ...``)."""

from .cli import main

main()

"""``biokd sys-info``: versions of biokd and the libraries it builds on."""

from __future__ import annotations


def sys_info() -> None:
    """Print the versions of biokd, Python and the key libraries, and whether a GPU is visible."""
    import importlib.metadata as md
    import platform

    from rich.console import Console
    from rich.table import Table

    table = Table("package", "version")
    table.add_row("python", platform.python_version())
    for name in (
        "biokd",
        "torch",
        "braindecode",
        "mne",
        "numpy",
        "scikit-learn",
        "onnxruntime",
        "executorch",
        "simglucose",
    ):
        try:
            table.add_row(name, md.version(name))
        except md.PackageNotFoundError:
            table.add_row(name, "[dim]not installed[/]")
    import torch

    table.add_row("cuda", str(torch.cuda.is_available()))
    Console().print(table)

"""Load a pickled numpy array without running anything else the pickle asks for.

Dataset releases such as FACED ship arrays as plain pickles, and ``pickle.load`` executes whatever callable a
file names. :class:`ArrayUnpickler` resolves only the handful of globals a pickled ``ndarray`` needs (for
files written by numpy 1.x, numpy 2.x and Python 2) and refuses every other one before it can be called.
Written here because neither numpy nor the standard library offers an allow-listed unpickler.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol 0–2 pickles use it for ``bytes``; any other codec is refused."""
    if str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"refused to load _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickled ndarray refers to, under every module path numpy has used for them."""
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for package in ("numpy.core", "numpy._core"):
        table[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that a numpy array does not need."""

    def __init__(self, module: str, name: str):
        self.qualified = f"{module}.{name}"
        super().__init__(f"refused to load {self.qualified}")


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else."""

    _table = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._table[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id: numpy arrays do not use them")


def load_numpy_pickle(path: str | Path) -> np.ndarray:
    """The ndarray pickled in ``path``; anything else (code, objects, lists of arrays) raises DataError.

    The file is read with the default string decoding first and, if that fails on Python 2 byte strings,
    again with ``encoding="latin1"`` (what numpy documents for Python 2 pickles).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read the file ({err.strerror or err})") from None
    result: Any = None
    for encoding in ("ASCII", "latin1"):
        try:
            result = ArrayUnpickler(io.BytesIO(data), encoding=encoding).load()
            break
        except RefusedGlobal as err:
            raise DataError(
                path,
                f"{err}: the pickle asks for a global a numpy array does not need, so it was not loaded "
                "(nothing in it was executed); expected a pickled numpy array",
            ) from None
        except UnicodeDecodeError:
            continue  # Python 2 byte strings: retry as latin1
        except MemoryError:
            raise DataError(path, "the pickle asks for more memory than is available") from None
        except Exception as err:  # pickle raises many types for damaged input
            raise DataError(path, f"not a readable pickle ({type(err).__name__}: {err})") from None
    else:
        raise DataError(path, "not a readable pickle (undecodable strings even as latin1)")
    if type(result) is not np.ndarray:
        raise DataError(path, f"the pickle holds a {type(result).__name__}, not a numpy array")
    if result.dtype.hasobject:
        raise DataError(path, f"the pickled array has dtype {result.dtype} (Python objects), not numbers")
    return result

"""Window-by-window inference on a continuous signal, as a wearable runs a model.

:class:`StreamingRunner` keeps the last ``window`` samples of each input in a ring buffer. Samples arrive in
chunks of any size (an EEG amplifier's packets, one CGM reading every 5 minutes); each time ``window``
samples have been seen and then every ``hop`` samples after that, the buffered window is passed to the
model and its output is returned with the sample range it covers. The windows are exactly those that
:func:`offline_windows` cuts from the whole recording, so streaming and offline predictions agree.

Chunks have the layout of one model input window without its batch axis, time along ``time_axis``
(default the last: EEG ``(n_channels, n)``, glucose inputs ``(n_channels, n)``); the window passed to the
model has that layout with ``window`` samples and a batch axis of 1. A model with several inputs takes a
dict ``{name: chunk}`` whose chunks hold the same number of samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .parity import as_predictor


@dataclass
class StreamPrediction:
    """Output of the model on the window of samples ``[start, stop)`` (``index``: 0 for the first window)."""

    index: int
    start: int
    stop: int
    output: np.ndarray


class _Ring:
    """The last ``size`` samples of one input, time first."""

    def __init__(self, size: int, sample_shape: tuple[int, ...], dtype: np.dtype):
        self.data = np.zeros((size, *sample_shape), dtype=dtype)
        self.pos = 0  # where the next sample goes (= the oldest sample once full)

    def write(self, samples: np.ndarray) -> None:
        size = len(self.data)
        if len(samples) >= size:  # only the newest `size` samples can matter
            self.data[:] = samples[-size:]
            self.pos = 0
            return
        first = min(len(samples), size - self.pos)
        self.data[self.pos : self.pos + first] = samples[:first]
        rest = len(samples) - first
        if rest:
            self.data[:rest] = samples[first:]
        self.pos = (self.pos + len(samples)) % size

    def window(self) -> np.ndarray:
        """The buffered samples, oldest first."""
        return np.concatenate([self.data[self.pos :], self.data[: self.pos]])


class StreamingRunner:
    """Feed a continuous signal to a model window by window (see the module docstring).

    ``model``: an ``nn.Module``, an onnxruntime ``InferenceSession``, a ``.onnx``/``.pte`` path, or any
    predictor of :func:`biokd.export.parity.as_predictor`. ``window``/``hop`` in samples.
    """

    def __init__(
        self,
        model: Any,
        window: int,
        hop: int,
        *,
        time_axis: int = -1,
        input_names: Sequence[str] | None = None,
        dtype: Any = np.float32,
    ):
        if window < 1 or hop < 1:
            raise ValueError(f"window and hop must be >= 1 sample; got window={window}, hop={hop}")
        self.predictor = as_predictor(model, input_names)
        self.input_names = tuple(input_names or getattr(self.predictor, "input_names", ()) or ("input",))
        self.window, self.hop, self.time_axis = int(window), int(hop), time_axis
        self.dtype = np.dtype(dtype)
        self.reset()

    def reset(self) -> None:
        """Forget all buffered samples (a new recording)."""
        self._rings: dict[str, _Ring] | None = None
        self.samples_seen = 0
        self.windows_emitted = 0

    @property
    def next_stop(self) -> int:
        """The sample count at which the next window is complete."""
        return self.window + self.windows_emitted * self.hop

    def push(self, chunk: np.ndarray | Mapping[str, np.ndarray]) -> list[StreamPrediction]:
        """Append ``chunk`` (time along ``time_axis``) and return the predictions of the windows it completes."""
        chunks = self._as_time_first(chunk)
        n = len(next(iter(chunks.values())))
        if self._rings is None:
            self._rings = {k: _Ring(self.window, v.shape[1:], self.dtype) for k, v in chunks.items()}
        out: list[StreamPrediction] = []
        done = 0
        while done < n:
            take = min(n - done, self.next_stop - self.samples_seen)
            for name, ring in self._rings.items():
                ring.write(chunks[name][done : done + take])
            done += take
            self.samples_seen += take
            if self.samples_seen == self.next_stop:
                out.append(self._predict())
        return out

    def run(self, chunks: Iterable[np.ndarray | Mapping[str, np.ndarray]]) -> Iterator[StreamPrediction]:
        """Predictions for a whole sequence of chunks, yielded as soon as each window is complete."""
        for chunk in chunks:
            yield from self.push(chunk)

    def _predict(self) -> StreamPrediction:
        assert self._rings is not None
        arrays = [np.moveaxis(self._rings[k].window(), 0, self.time_axis)[None] for k in self.input_names]
        output = np.asarray(self.predictor(*arrays))[0]
        stop = self.samples_seen
        prediction = StreamPrediction(self.windows_emitted, stop - self.window, stop, output)
        self.windows_emitted += 1
        return prediction

    def _as_time_first(self, chunk: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(chunk, Mapping):
            if len(self.input_names) != 1:
                raise ValueError(f"the model reads {list(self.input_names)}: push a dict of chunks")
            chunk = {self.input_names[0]: chunk}
        missing = [k for k in self.input_names if k not in chunk]
        if missing:
            raise ValueError(f"chunk lacks inputs {missing}; expected {list(self.input_names)}")
        arrays = {k: np.moveaxis(np.asarray(chunk[k], dtype=self.dtype), self.time_axis, 0) for k in self.input_names}
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"chunks of one push must hold the same number of samples; got {lengths}")
        if self._rings is not None:
            for k, v in arrays.items():
                if v.shape[1:] != self._rings[k].data.shape[1:]:
                    raise ValueError(
                        f"input {k!r}: chunk of shape {np.moveaxis(v, 0, self.time_axis).shape} does not match "
                        f"the earlier chunks (per-sample shape {self._rings[k].data.shape[1:]})"
                    )
        return arrays


def offline_windows(signal: np.ndarray, window: int, hop: int, time_axis: int = -1) -> np.ndarray:
    """All complete windows ``[k·hop, k·hop + window)`` of ``signal``, stacked on a new first axis."""
    x = np.moveaxis(np.asarray(signal), time_axis, 0)
    windows = [np.moveaxis(x[s : s + window], 0, time_axis) for s in range(0, len(x) - window + 1, hop)]
    if windows:
        return np.stack(windows)
    empty = np.zeros((window, *x.shape[1:]), dtype=x.dtype)
    return np.moveaxis(empty, 0, time_axis)[None][:0]

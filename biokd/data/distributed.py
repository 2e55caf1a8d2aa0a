"""Per-subject preprocessing on a Dask distributed cluster (``biokd preprocess ... --scheduler ADDRESS``).

The same function as the local pool runs on each worker: it writes its subject's shard (atomically) into the
output folder, which must be on a file system every worker shares, and returns ``(subject, error, n_items)``.
Dask retries a task whose worker died (``retries``); a subject whose preprocessing fails with a data error comes
back as its error and is named in the build report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import ConfigError

#: Times a subject is resubmitted after its worker died or the task raised an unexpected error.
RETRIES = 2


def run_on_dask(
    address: str, fn: Callable[..., Any], args: Sequence[tuple], *, retries: int = RETRIES
) -> Iterator[Any]:
    """``fn(*a)`` for every ``a`` of ``args`` on the cluster at ``address``; results as they complete.

    ``fn`` is :func:`biokd.data.store._run_one` (``a[1]`` is the subject): it returns ``(subject, error, n)``,
    and a task that still fails after ``retries`` comes back in that form, naming its subject.
    """
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise ConfigError("--scheduler needs dask.distributed: pip install 'biokd[scale]'") from None
    try:
        client = Client(address, timeout="20s", set_as_default=False)
    except OSError as err:
        raise ConfigError(f"--scheduler {address}: no Dask scheduler answers there ({err})") from None
    with client, client.as_current():
        # one task per subject, keyed by subject so the dashboard names it; pure=False: always run it
        futures = [
            client.submit(fn, *a, key=f"biokd-{a[1]}-{i}", retries=retries, pure=False) for i, a in enumerate(args)
        ]
        try:
            for future in as_completed(futures):
                if future.status == "error":  # still failing after its retries (e.g. its workers kept dying)
                    subject = args[futures.index(future)][1]
                    yield subject, f"subject {subject}: failed on the cluster ({future.exception()!r})", 0
                else:
                    yield future.result()
        finally:
            client.cancel(futures)  # an aborted build (an error, Ctrl-C) leaves nothing running

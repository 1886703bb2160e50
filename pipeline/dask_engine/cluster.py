"""The Dask client of `[dask]`: a LocalCluster started for one task and closed after it, or a running scheduler.

Workers of an existing cluster must see `[paths] data_dir` at the same path (a shared mount) and
run this package's version of the pipeline, since they import its functions by name.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile

from din_common.errors import InputError

CONNECT_TIMEOUT = "30s"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise InputError("[preprocess] engine = dask needs the dask and distributed packages, which this Python "
                         "lacks: install them with the constraints file of your stack (README, 'Install'), "
                         "or use --preprocess-engine local") from None
    return distributed


@contextlib.contextmanager
def cluster_client(dask_settings: dict):
    """A distributed.Client for the duration of the block."""
    distributed = _distributed()
    address = dask_settings["scheduler_address"]
    if address:
        try:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise InputError(f"[dask] scheduler_address = {address}: no scheduler answered within "
                             f"{CONNECT_TIMEOUT} ({error}); expected a running `dask scheduler` at that "
                             "address") from None
        with client:
            yield client
        return
    memory_limit = dask_settings["memory_limit"]
    with distributed.LocalCluster(n_workers=dask_settings["workers"],
                                  threads_per_worker=dask_settings["threads_per_worker"],
                                  memory_limit=0 if memory_limit == "0" else memory_limit,
                                  processes=True, dashboard_address=":0",
                                  # dask 2022.2 (Python 3.7) would put its worker space in the current directory.
                                  local_directory=tempfile.gettempdir(),
                                  silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster) as client:
            yield client

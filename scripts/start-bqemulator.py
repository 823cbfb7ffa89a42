"""Start bqemulator (a BigQuery API emulator from PyPI) fully offline.

bqemulator 1.4.0 downloads DuckDB's spatial extension when it starts; Weir's
tests run without the internet and need no GIS functions, so that step is
replaced by a no-op before handing over to the emulator's own command line.
Its Parquet loads are also made to ignore `key=value` folder names, as
BigQuery does.
Usage: python3 scripts/start-bqemulator.py start --rest-port 9050 --grpc-port 9060 --project test
"""

import sys

import bqemulator.jobs.executor as executor
import bqemulator.storage.engine as engine

engine.DuckDBEngine._load_spatial = lambda *args, **kwargs: None


def _load_parquet(path, target_ref, ctx):
    # The emulator reads Parquet with DuckDB's read_parquet, which by default
    # turns `key=value` folders (Weir's `run=<id>/`) into extra columns; real
    # BigQuery never does that without hivePartitioningOptions.
    ctx.engine.execute(
        f"INSERT INTO {target_ref} SELECT * FROM read_parquet(?, hive_partitioning = false)",
        [path],
    )


executor._load_parquet = _load_parquet
executor._LOAD_FORMAT_HANDLERS["PARQUET"] = _load_parquet

from bqemulator.cli import main  # noqa: E402  (after the patch, on purpose)

sys.exit(main())

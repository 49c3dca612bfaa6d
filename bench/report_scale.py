"""How long `castillo report` takes on a dataset of CASTILLO v1's size (140,000 prompt rows).

Imports v1's published test split (../shared/data/castillo-v1/results/test, 14,121 rows),
then makes a 140,000-row castillo output by resampling those rows with replacement (seed
0), keeping each row's model and dataset, so the report sees v1's 13 models x 7 datasets
and v1's length distributions at ten times the size. It builds the report of both, the
14,121-row import (A) and the 140,000-row resample (B), alternating A and B, and prints
the times, the ratio B/A (how the cost grows with rows) and, last, the median time of B
against the goal of under a minute.

    python bench/report_scale.py [--rows 140000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parent.parent
V1_TEST = REPO.parent / "shared" / "data" / "castillo-v1" / "results" / "test"
sys.path.insert(0, str(REPO))


def resample(source: Path, target: Path, rows: int, seed: int = 0) -> int:
    """Write ``rows`` rows drawn with replacement from ``source``'s prompts, per (model, dataset) part."""
    from castillo_core.engine.dataset import read_table
    from castillo_core.engine.schema import responses_schema
    from castillo_core.engine.store import Store

    table = read_table(source, "prompts")
    picks = np.sort(np.random.default_rng(seed).integers(0, table.num_rows, rows))
    sample = table.take(pa.array(picks))
    keys = pc.binary_join_element_wise(
        sample.column("model"), sample.column("dataset"), sample.column("config_hash"), "\x00"
    )
    store = Store(target)
    store.open()
    empty = responses_schema().empty_table()
    for key in sorted(set(keys.to_pylist())):
        model, dataset, config_hash = key.split("\x00")
        part = sample.filter(pc.equal(keys, key))
        store.write_part(model, dataset, config_hash, part, empty, {"config_hash": config_hash, "source": "resampled"})
    manifest = store.read_manifest()
    store.write_manifest(manifest)
    return sample.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=140_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if not V1_TEST.is_dir():
        print(f"RESULT report_scale skipped s (goal < 60 s): {V1_TEST} is not present")
        return
    from castillo_formats.v1_import import import_v1
    from castillo_report.report import build_report

    with tempfile.TemporaryDirectory(prefix="castillo-report-bench-") as tmp:
        base = Path(tmp)
        start = time.perf_counter()
        import_v1(V1_TEST, base / "v1")
        imported = time.perf_counter() - start
        start = time.perf_counter()
        rows = resample(base / "v1", base / "big", args.rows)
        made = time.perf_counter() - start
        print(f"import of v1's test split: {imported:.1f} s; resampled {rows:,} rows in {made:.1f} s")
        times: dict[str, list[float]] = {"A": [], "B": []}
        print(
            f"{'repeat':>6}  {'A: 14,121 rows s':>16}  {'B: ' + format(rows, ',') + ' rows s':>18}  "
            f"{'B/A':>5}  B read/stats/plots/pages s"
        )
        cpu: list[float] = []
        for repeat in range(args.repeats):
            a = build_report(base / "v1", base / f"report-a-{repeat}", progress=False)
            mark = time.process_time()
            b = build_report(base / "big", base / f"report-b-{repeat}", progress=False)
            cpu.append(time.process_time() - mark)
            times["A"].append(a.seconds)
            times["B"].append(b.seconds)
            parts = "/".join(f"{b.timings[k]:.1f}" for k in ("read", "statistics", "plots", "pages"))
            print(f"{repeat:>6}  {a.seconds:>16.1f}  {b.seconds:>18.1f}  {b.seconds / a.seconds:>5.2f}  {parts}")
    median_a, median_b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"median  {median_a:>16.1f}  {median_b:>18.1f}  {median_b / median_a:>5.2f}")
    print(f"B: CPU time of this process {statistics.median(cpu):.1f} s (wall time includes waiting for a shared CPU)")
    print(
        f"RESULT report_scale {median_b:.1f} s (goal < 60 s; {rows:,} rows, "
        f"{median_b / median_a:.2f}x the 14,121-row report)"
    )


if __name__ == "__main__":
    main()

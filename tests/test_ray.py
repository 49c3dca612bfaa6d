"""`castillo run --executor ray`: the same dataset as the local executor, resumable, kill-proof.

Ray runs on this machine only (a local single-node instance on loopback, 2 CPUs, no
dashboard), started by the tests or by the command itself, and always shut down. Starting
Ray takes 10-15 s here, so the Ray tests are ``slow`` and share one instance per module
where they run in-process; they skip cleanly where Ray is not installed. The 2x2 grid
runs the real llama.cpp backend on two tiny GGUFs (tests/fixtures/tiny_gguf.py); the
kill test uses the fake backend, slowed down, and SIGKILLs a real worker process.
"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from castillo_core.engine.dataset import read_table
from castillo_core.engine.engine import Engine
from castillo_core.engine.plan import load_spec
from castillo_core.engine.progress import Progress
from castillo_core.plugins import get_plugins
from tests.helpers import castillo, castillo_process

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'castillo[ray]')")
TIMING = ("gen_time", "latency")


def _canonical(out: Path, table: str) -> list[dict[str, Any]]:
    """A table's rows without timing columns, in a fixed order (parts may come in any order)."""
    rows = read_table(out, table).to_pylist()
    for row in rows:
        for key in TIMING:
            row.pop(key, None)
        for key, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[key] = "nan"
    return sorted(rows, key=lambda r: (r["model"], r["dataset"], r["prompt_id"], r.get("sample_index", -1)))


class _Recorder(Progress):
    """Keeps what the driver shows: messages and the combined count."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.done = 0

    def start_cell(self, label: str, total: int, done: int) -> None:
        self.done = done

    def advance(self, prompts: int, tokens: int) -> None:
        self.done += prompts

    def message(self, text: str, level: str = "info") -> None:
        self.messages.append(text)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray instance (2 CPUs, loopback, no dashboard) for the in-process tests."""
    if not HAS_RAY:
        pytest.skip("ray is not installed")
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 2**20,
        logging_level="WARNING",
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def _run(data: dict[str, Any], progress: Progress | None = None, **ray: Any) -> Any:
    """Run a spec in-process, locally or (with executor options) through Ray."""
    from castillo_ray.executor import RayExecutor

    executor = RayExecutor(**ray) if ray else None
    engine = Engine(load_spec(data, "test"), get_plugins(), progress=progress, flush_responses=6, executor=executor)
    return engine.run()


# -- without Ray, and flags that need it ------------------------------------------------------


def test_executor_ray_without_ray_says_how_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('ray is blocked for this test')\n")
    out = tmp_path / "out"
    # a fresh interpreter: the shim on PYTHONPATH must win over a ray this process may have imported
    proc = castillo_process(
        *("run", "--backend", "fake", "--corpus", "tiny", "--quiet", "--executor", "ray", "--out", str(out)),
        env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "blocked"), os.environ.get("PYTHONPATH", "")])},
        check=False,
    )
    assert proc.returncode == 2
    assert "needs Ray, which is not installed" in proc.stderr and "castillo[ray]" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists(), "nothing is written before Ray is found"


def test_ray_flags_need_the_ray_executor(tmp_path: Path) -> None:
    args = ("run", "--backend", "fake", "--corpus", "tiny", "--shard-size", "5", "--out", str(tmp_path))
    proc = castillo(*args, check=False)
    assert proc.returncode == 2 and "--shard-size only apply with a cluster executor" in proc.stderr


@needs_ray
def test_unreachable_cluster_is_a_clean_error_at_once(tmp_path: Path) -> None:
    args = ("run", "--backend", "fake", "--corpus", "tiny", "--quiet", "--out", str(tmp_path / "out"))
    started = time.monotonic()
    # a fresh interpreter: a failed ray.init must not leave Ray state behind in the test process
    proc = castillo_process(*args, "--executor", "ray", "--ray-address", "127.0.0.1:1", check=False)
    assert proc.returncode == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 60


# -- the 2x2 grid on llama.cpp: Ray equals local ----------------------------------------------


@pytest.fixture(scope="module")
def two_ggufs(request: pytest.FixtureRequest) -> list[Path]:
    """Two different tiny GGUFs (weights from different seeds), cached under the pytest cache."""
    pytest.importorskip("castillo_llamacpp")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed")
    from tests.fixtures.tiny_gguf import cached_tiny_gguf

    cache = Path(request.config.cache.mkdir("castillo-llamacpp-tiny"))
    return [cached_tiny_gguf(cache), cached_tiny_gguf(cache, seed=1)]


def _grid(out: Path, models: list[Path], limit: int) -> dict[str, Any]:
    return {
        "out": str(out),
        "models": [{"backend": "llamacpp", "model": str(m), "options": {"n_threads": 1}} for m in models],
        "corpora": [{"name": "tiny", "limit": limit}, {"name": "humaneval", "limit": limit}],
        "generation": {"n": 3, "max_new_tokens": 24, "seed": 5},
    }


@pytest.mark.slow
@needs_ray
def test_llamacpp_grid_through_ray_equals_local_and_resumes(
    ray_local: Any, two_ggufs: list[Path], tmp_path: Path
) -> None:
    if "humaneval" not in {e.name for e in get_plugins().entries("corpus") if e.available}:
        pytest.skip("the humaneval corpus (castillo-corpora) is not installed")
    reference = tmp_path / "local"
    _run(_grid(reference, two_ggufs, 4))

    # from scratch, each cell cut into shards of 3 prompts: 2 models x 2 corpora x 2 shards
    fresh = tmp_path / "ray"
    progress = _Recorder()
    summary = _run(_grid(fresh, two_ggufs, 4), progress, shard_size=3)
    assert summary.ok and not summary.failures
    assert [c.status for c in summary.cells] == ["done"] * 4
    assert progress.done == 16, "the combined display counts every prompt of the grid once"
    assert any("8 task(s) for 4 cell(s)" in m for m in progress.messages)

    # half stored by the local executor, the rest by Ray: finished prompts are skipped
    mixed = tmp_path / "mixed"
    _run(_grid(mixed, two_ggufs, 2))
    summary = _run(_grid(mixed, two_ggufs, 4), shard_size=3)
    assert [(c.already_done, c.written) for c in summary.cells] == [(2, 2)] * 4

    # and a finished output needs no cluster at all: every cell is skipped
    summary = _run(_grid(fresh, two_ggufs, 4), shard_size=3)
    assert [c.status for c in summary.cells] == ["skipped"] * 4

    for table in ("prompts", "responses"):
        expected = _canonical(reference, table)
        assert len(expected) == (16 if table == "prompts" else 48)
        assert _canonical(fresh, table) == expected, f"{table}: Ray differs from local"
        assert _canonical(mixed, table) == expected, f"{table}: local + Ray resume differs from local"


# -- failures: bounded retries, the others go on ----------------------------------------------


@pytest.mark.slow
@needs_ray
def test_failing_task_is_retried_a_bounded_number_of_times_and_others_finish(ray_local: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = {
        "out": str(out),
        "models": [
            {"backend": "fake", "model": "good"},
            {"backend": "fake", "model": "bad", "options": {"fail_after": 3}},
        ],
        "corpora": [{"name": "tiny"}],
        "generation": {"n": 2, "seed": 1},
    }
    progress = _Recorder()
    summary = _run(data, progress, max_retries=2)
    by_label = {c.label: c for c in summary.cells}
    assert by_label["good x Tiny"].status == "done" and by_label["good x Tiny"].written == 12
    bad = by_label["bad x Tiny"]
    assert bad.status == "failed" and "fail_after" in (bad.error or "")
    # three attempts, each stored its 3 finished prompts before failing, and each resumed after the last
    assert bad.written == 9
    assert len(summary.failures) == 1 and "attempt 3" in summary.failures[0]
    assert sum("retrying" in m for m in progress.messages) == 2
    assert progress.done == 12 + 9, "the display ends on what is stored"
    ids = [r["prompt_id"] for r in read_table(out, "prompts").to_pylist() if r["model"] == "bad"]
    assert len(ids) == len(set(ids)) == 9


# -- a worker SIGKILLed mid-task, through the real command ------------------------------------


def _descendants(root: int) -> list[int]:
    """Process ids below ``root`` (read from /proc: only processes this test started)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _task_workers(root: int) -> list[int]:
    """Ray worker processes below ``root`` that are running a castillo task right now."""
    pids = []
    for pid in _descendants(root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if title.startswith(b"ray::castillo:") or title.startswith(b"ray::run_task"):
            pids.append(pid)
    return pids


KILL_ARGS = (
    *("run", "--backend", "fake", "--corpus", "tiny", "-C", "size=90", "-n", "3", "--seed", "7"),
    *("--max-new-tokens", "60", "--flush-every", "9", "--quiet"),
)


RAY_ARGS = ("--executor", "ray", "--shard-size", "45", "--max-retries", "2")


@pytest.mark.slow
@needs_ray
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_worker_killed_mid_task_is_retried_and_every_prompt_is_stored_once(tmp_path: Path) -> None:
    reference = tmp_path / "local"
    castillo(*KILL_ARGS, "--out", str(reference))

    out = tmp_path / "ray"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the command starts its own local Ray
    proc = subprocess.Popen(
        [sys.executable, "-m", "castillo_core.cli", *KILL_ARGS, "-B", "delay=0.08", "--out", str(out), *RAY_ARGS],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            parts = list((out / "prompts").rglob("part-*.parquet")) if (out / "prompts").exists() else []
            workers = _task_workers(proc.pid)
            if parts and workers:  # mid-task: some prompts stored, the rest still to come
                # a second writer into the output the Ray run writes into is refused at once
                second = castillo(*KILL_ARGS, "--out", str(out), check=False)
                assert second.returncode == 2 and "another castillo process is writing into" in second.stderr
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed is not None, f"no worker was caught mid-task\n{stderr}"
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout}\n{stderr}"
    assert "worker died" in stderr and "retrying (1/2)" in stderr, stderr

    prompts = _canonical(out, "prompts")
    ids = [r["prompt_id"] for r in prompts]
    assert len(ids) == 90 == len(set(ids)), "every prompt exactly once"
    responses = _canonical(out, "responses")
    keys = [(r["prompt_id"], r["sample_index"]) for r in responses]
    assert len(keys) == 270 == len(set(keys)), "every response exactly once"
    assert prompts == _canonical(reference, "prompts")
    assert responses == _canonical(reference, "responses")
    assert castillo("verify", str(out)).returncode == 0, "the workers' parts are all in the ledger"

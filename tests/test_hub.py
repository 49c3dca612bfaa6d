"""Every Hugging Face Hub path castillo has, through a loopback stand-in of the Hub.

``tests/fixtures/hub_server.py`` serves the repositories, files, configs and splits that
castillo's corpora name (laid out as on the Hub, filled with v1's real prompts where
../shared is present) and CASTILLO v1's published dataset; ``HF_ENDPOINT`` points
``huggingface_hub`` and ``datasets`` at it. The libraries read ``HF_ENDPOINT`` once, at import,
so every hub command runs in a fresh ``castillo`` process (``castillo_process``) with its own
cache (``HF_HOME``) and ``HF_HUB_OFFLINE`` lifted for that process only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from castillo_corpora.corpora import V1_CORPORA
from castillo_corpora.hub import card_configs, chosen_config

from tests.fixtures.hub_server import HubStandIn, Served, corpora_repositories
from tests.helpers import SHARED_V1, castillo, castillo_process

pytest.importorskip("huggingface_hub", reason="pip install 'castillo[hub]'")
pytest.importorskip("datasets", reason="pip install 'castillo[hub]'")

HUB_CORPORA = [cls.name for cls in V1_CORPORA if cls.hub is not None]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Served]:
    """The corpora's repositories, with each one's records also written as a local native file."""
    return corpora_repositories(SHARED_V1 if SHARED_V1.is_dir() else None, tmp_path_factory.mktemp("native"))


def _stand_in(served: dict[str, Served]) -> HubStandIn:
    hub = HubStandIn()
    for repo in served.values():
        hub.add_dataset(repo.repo, repo.files)
    return hub


@pytest.fixture(scope="module")
def hub(served: dict[str, Served]) -> Iterator[HubStandIn]:
    with _stand_in(served) as stand_in:
        yield stand_in


def _prompts(*args: str, env: dict[str, str] | None = None, check: bool = True) -> list[dict[str, Any]]:
    """`castillo prompts --json` as (id, split, category, text) records; through the hub when ``env`` is given."""
    run = castillo_process if env is not None else castillo
    result = run("prompts", *args, "--json", env=env, check=check)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _error_line(result: Any) -> str:
    """The one `error:` line a failed command printed (and no traceback)."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# -- the corpora's default path ------------------------------------------------------------


def test_the_stand_in_serves_every_file_config_and_split_a_corpus_names(hub: HubStandIn) -> None:
    """A corpus that names a repository, file, config or split the Hub does not have fails here."""
    assert HUB_CORPORA == ["alpaca", "dolly", "sharegpt", "mbpp", "apps", "ds1000", "bigcodebench"]
    for cls in V1_CORPORA:
        source = cls.hub
        assert source is not None and source.repo in hub.repos, f"{cls.name}: {source}"
        files = hub.files(source.repo)
        if source.filename:
            assert source.filename in files, f"{cls.name}: {source.repo} has no {source.filename}"
            continue
        card = files["README.md"].decode().split("---\n")[1]
        import yaml

        data = yaml.safe_load(card)
        configs = card_configs(data)
        assert configs, f"{cls.name}: {source.repo}'s card declares no configs"
        config = chosen_config(data, source.config)
        assert config in configs, f"{cls.name}: {source.repo} has no config {config} ({list(configs)})"
        for split in source.splits:
            assert split in configs[config], f"{cls.name}: {source.repo} config {config} has no split {split}"


@pytest.mark.parametrize("corpus", HUB_CORPORA)
def test_each_corpus_without_source_reads_the_hub_like_its_local_file(
    hub: HubStandIn, served: dict[str, Served], corpus: str, tmp_path: Path
) -> None:
    hub.requests.clear()
    through_hub = _prompts("--corpus", corpus, env=hub.env(str(tmp_path / "hf")))
    local = _prompts("--corpus", corpus, "--source", str(served[corpus].local))
    assert through_hub and through_hub == local  # ids, splits, categories and texts, in v1's order
    repo = served[corpus].repo
    info = [p for p in hub.paths("GET") if p.startswith(f"/api/datasets/{repo}")]
    assert info, hub.paths()  # the revision was resolved before the download
    cls = next(c for c in V1_CORPORA if c.name == corpus)
    assert cls.hub is not None
    if cls.hub.filename:
        assert f"/datasets/{repo}/resolve/main/{cls.hub.filename}" in hub.paths("HEAD")


def test_the_generic_hf_corpus_reads_a_config_and_a_split_or_one_file(
    hub: HubStandIn, served: dict[str, Served], tmp_path: Path
) -> None:
    env = hub.env(str(tmp_path / "hf"))
    common = ("--corpus", "hf", "--source", "google-research-datasets/mbpp", "--split", "full")
    prompts = _prompts(*common, "-C", "config=sanitized", "-C", "hf_split=test", "-C", "prompt_field=prompt", env=env)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(
        pa.BufferReader(hub.files("google-research-datasets/mbpp")["sanitized/test-00000-of-00001.parquet"])
    )
    assert [p["prompt_text"] for p in prompts] == table.column("prompt").to_pylist()
    assert {p["dataset"] for p in prompts} == {"mbpp"}  # the repository's name, unless -C dataset=

    sha = hub.repos["codeparrot/apps"].head.sha
    one_file = _prompts(
        "--corpus", "hf", "--source", "codeparrot/apps", "--split", "full", "-C", "data_file=test.jsonl",
        "-C", "prompt_field=question", "-C", f"revision={sha}", "-C", "dataset=AppsTest", env=env,
    )  # fmt: skip
    questions = [json.loads(line)["question"] for line in hub.files("codeparrot/apps")["test.jsonl"].splitlines()]
    assert [p["prompt_text"] for p in one_file] == questions and {p["dataset"] for p in one_file} == {"AppsTest"}


def test_a_second_run_reads_the_cache_with_the_hub_gone(served: dict[str, Served], tmp_path: Path) -> None:
    home = str(tmp_path / "hf")
    hub = _stand_in(served).start()
    online = {c: _prompts("--corpus", c, env=hub.env(home)) for c in ("alpaca", "mbpp", "bigcodebench")}
    env = hub.env(home)
    hub.stop()
    for corpus, first in online.items():
        started = time.monotonic()
        result = castillo_process("prompts", "--corpus", corpus, "--json", env=env)
        again = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        assert again == first, corpus
        assert "unreachable" in result.stderr and "cache" in result.stderr  # said once, as a warning
        assert "Retrying" not in result.stderr and time.monotonic() - started < 20  # no backoff on a dead Hub


def test_an_unreachable_hub_a_missing_file_and_a_missing_split_are_one_line_each(
    served: dict[str, Served], tmp_path: Path
) -> None:
    with HubStandIn() as gone:
        env = gone.env(str(tmp_path / "empty"))
    line = _error_line(castillo_process("prompts", "--corpus", "alpaca", env=env, check=False))
    assert "unreachable" in line and "yahma/alpaca-cleaned/alpaca_data_cleaned.json" in line and "--source" in line

    moved = HubStandIn()
    alpaca = served["alpaca"].files
    moved.add_dataset("yahma/alpaca-cleaned", {"README.md": alpaca["README.md"], "alpaca_data.json": b"[]"})
    bigcodebench = {k: v for k, v in served["bigcodebench"].files.items() if "v0.1.4" not in k}
    bigcodebench["README.md"] = bigcodebench["README.md"].replace(b"  - split: v0.1.4\n    path: data/v0.1.4-*\n", b"")
    moved.add_dataset("bigcode/bigcodebench", bigcodebench)
    moved.add_dataset("google-research-datasets/mbpp", served["mbpp"].files)
    with moved:
        env = moved.env(str(tmp_path / "hf"))
        line = _error_line(castillo_process("prompts", "--corpus", "alpaca", env=env, check=False))
        assert "yahma/alpaca-cleaned" in line and "no file alpaca_data_cleaned.json" in line
        assert "it has: README.md, alpaca_data.json" in line and "--source" in line
        line = _error_line(castillo_process("prompts", "--corpus", "bigcodebench", env=env, check=False))
        assert "bigcode/bigcodebench" in line and "no split v0.1.4" in line and "v0.1.3" in line
        assert "--source" in line
        hf = ("prompts", "--corpus", "hf", "--source", "google-research-datasets/mbpp", "--split", "full")
        line = _error_line(castillo_process(*hf, "-C", "hf_split=dev", env=env, check=False))
        assert "google-research-datasets/mbpp" in line and "no split dev" in line and "-C hf_split=prompt" in line
        line = _error_line(castillo_process(*hf, "-C", "config=plus", env=env, check=False))
        assert "no config plus" in line and "-C config=" in line and "full, sanitized" in line
        line = _error_line(
            castillo_process("prompts", "--corpus", "hf", "--source", "nobody/nothing", env=env, check=False)
        )
        assert "no dataset nobody/nothing" in line and "--source" in line
        assert not moved.paths("PUT") and not [r for r in moved.requests if r.method == "POST"]  # reads only


@pytest.mark.slow  # a real model: a minute on two idle CPU cores (the cap keeps a loaded machine in bounds)
def test_castillo_run_alpaca_with_no_source_reads_the_hub(
    hub: HubStandIn, served: dict[str, Served], tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp", reason="pip install 'castillo[llamacpp]'")
    out = tmp_path / "run"
    env = hub.env(str(tmp_path / "hf"))
    castillo_process(
        "run", "--backend", "llamacpp", "--model", "smollm2-135m", "--corpus", "alpaca", "--limit", "2", "-n", "2",
        "--max-new-tokens", "32", "--out", str(out), "--quiet", env=env,
    )  # fmt: skip
    from castillo_core import read_table

    stored = read_table(out, "prompts").column("prompt_id").to_pylist()
    local = _prompts("--corpus", "alpaca", "--source", str(served["alpaca"].local), "--limit", "2")
    assert sorted(stored) == sorted(p["prompt_id"] for p in local) and len(stored) == 2


# -- exports pushed to the Hub -------------------------------------------------------------


def test_export_push_to_hub_then_the_cards_code_loads_it_from_the_hub(tmp_path: Path) -> None:
    from tests.test_export import card_code, run_card_code

    out, dest = tmp_path / "out", tmp_path / "hf"
    castillo("run", "--backend", "fake", "--corpus", "tiny", "--out", str(out), "--quiet", "-n", "4")
    with HubStandIn() as hub:
        env = hub.env(str(tmp_path / "hf-home"), token="hf_stand_in_token")
        pushed = castillo_process(
            "export", str(out), "--format", "hf", str(dest), "--push-to-hub", "lab/tiny-lengths", env=env
        )
        assert "pushed to the Hub dataset lab/tiny-lengths" in pushed.stdout
        assert "hf_stand_in_token" not in pushed.stdout + pushed.stderr
        files = hub.files("lab/tiny-lengths")
        written = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        assert sorted(files) == sorted({*written, ".gitattributes"} - {".castillo-export"})
        assert all(files[name] == (dest / name).read_bytes() for name in written if name != ".castillo-export")
        writes = [r for r in hub.requests if r.method in ("POST", "PUT") and not r.path.startswith("/upload/")]
        assert writes and all(r.authorization == "Bearer hf_stand_in_token" for r in writes)
        assert {"/api/repos/create", "/api/datasets/lab/tiny-lengths/preupload/main"} <= {r.path for r in writes}
        assert "/api/datasets/lab/tiny-lengths/commit/main" in hub.paths("POST")
        assert any(p.endswith(".git/info/lfs/objects/batch") for p in hub.paths("POST"))  # Parquet over LFS

        card = files["README.md"].decode()
        assert 'REPO = "lab/tiny-lengths"' in card
        code = card_code(card, "lab/tiny-lengths")  # as written: the card names the repository it was pushed to
        run_card_code(code, tmp_path, env={k: v for k, v in env.items() if k != "HF_HOME"})

        castillo_process(
            "export", str(out), "--format", "hf", str(dest), "--no-views", "--force", "--push-to-hub",
            "lab/tiny-lengths", env=env,
        )  # fmt: skip
        again = hub.files("lab/tiny-lengths")
        assert not [name for name in again if name.startswith("sanitized-")]  # the first push's views are gone
        assert len(hub.repos["lab/tiny-lengths"].commits) == 3  # created, pushed, pushed

        no_token = {**env, "HF_TOKEN": ""}
        refused = castillo_process(
            "export", str(out), "--format", "hf", str(tmp_path / "other"), "--push-to-hub", "lab/x", env=no_token,
            check=False,
        )  # fmt: skip
        line = _error_line(refused)
        assert "lab/x" in line and "HF_TOKEN" in line and "the export is written" in line
        assert (tmp_path / "other" / "README.md").is_file()


# -- CASTILLO v1 from the Hub --------------------------------------------------------------


def _v1_results(tmp_path: Path) -> dict[str, list[Path]]:
    """A few of v1's published result files for the test split (from ../shared), and a small train split."""
    from tests.test_v1_import import MODEL, v1_record, write_v1

    if SHARED_V1.is_dir():
        results = SHARED_V1 / "results" / "test"
        test = [results / f"preproc_{d}_test_{MODEL}.json" for d in ("Mbpp", "DS1000", "Alpaca")]
    else:
        records = [v1_record("Mbpp", MODEL, f"Task {i}.", [40 + i, 50, 60]) for i in range(5)]
        test = [write_v1(tmp_path / "v1-test", "Mbpp", "test", MODEL, records)]
    train = [write_v1(tmp_path / "v1-train", "Mbpp", "train", MODEL, [v1_record("Mbpp", MODEL, "Train.", [10, 12])])]
    return {"test": test, "train": train}


def test_import_castillo_v1_from_the_hub_downloads_only_the_split_asked_for(tmp_path: Path) -> None:
    from castillo_core import read_table
    from tests.fixtures.hub_server import V1_HUB_ID, castillo_v1_repository

    results = _v1_results(tmp_path)
    local = tmp_path / "local"
    for path in results["test"]:
        castillo("import", "castillo-v1", str(path), str(local))
    home = str(tmp_path / "hf-home")
    hub = HubStandIn()
    hub.add_dataset(V1_HUB_ID, castillo_v1_repository(results))
    with hub:
        env = hub.env(home)
        out = tmp_path / "from-hub"
        result = castillo_process("import", "castillo-v1", V1_HUB_ID, str(out), "--split", "test", env=env)
        rows = len(json.loads(hub.files(V1_HUB_ID)["original/original_test.json"]))
        assert f"imported {rows} row(s) from 1 file(s)" in result.stdout
        fetched = [p for p in hub.paths("HEAD") if "/resolve/" in p]
        assert [p.rsplit("/", 1)[-1] for p in fetched] == ["README.md", "original_test.json"]  # not the train file
        line = _error_line(
            castillo_process("import", "castillo-v1", V1_HUB_ID, str(out), "--split", "validate", env=env, check=False)
        )
        assert V1_HUB_ID in line and "no split validate" in line and "train, test" in line and "--split" in line
    mine, theirs = read_table(out, "prompts").to_pylist(), read_table(local, "prompts").to_pylist()
    columns = ("sample_id", "prompt_id", "model", "dataset", "split", "output_sizes", "output_mean", "n_length_capped")
    assert sorted(tuple(r[c] for c in columns) for r in mine) == sorted(tuple(r[c] for c in columns) for r in theirs)
    assert {r["config_hash"] for r in mine} == {r["config_hash"] for r in theirs}  # one cell: imports agree

    again = castillo_process("import", "castillo-v1", V1_HUB_ID, str(local), "--split", "test", env=env)
    assert "imported 0 row(s)" in again.stdout and f"{rows} already present" in again.stdout  # the Hub is gone
    assert "cache" in again.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["imports"][-1]["path"].startswith(f"hf://datasets/{V1_HUB_ID}@")

"""castillo-corpora: the CASTILLO v1 corpora, HumanEval, and generic file/hub corpora.

The entry point is :mod:`castillo_corpora.plugin`; importing this package loads no
heavy library (datasets, huggingface_hub and pyarrow.parquet load only when a corpus
reads from them).
"""

from importlib.metadata import PackageNotFoundError, version

try:  # the one version of castillo (VERSION at the repository root)
    __version__ = version("castillo-corpora")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0.0.0+local"

"""castillo-corpora: the CASTILLO v1 corpora, HumanEval, and generic file/hub corpora.

The entry point is :mod:`castillo_corpora.plugin`; importing this package loads no
heavy library (datasets, huggingface_hub and pyarrow.parquet load only when a corpus
reads from them).
"""

__version__ = "0.1.0"

"""The public face of castillo: what a plugin sees and implements.

Contracts (``Backend``, ``Corpus``, ``Metric``, ...), the records that cross plugin
boundaries, the hook specifications, the errors and the v1-compatible ids. Everything
here is re-exported by :mod:`castillo_core`, which is the one import surface plugins use.
"""

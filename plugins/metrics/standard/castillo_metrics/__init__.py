"""castillo's standard metrics, registered through the ``castillo`` entry-point group.

- ``length`` (:mod:`castillo_metrics.length`): characters, words and lines per response.
- ``degeneration`` (:mod:`castillo_metrics.degeneration`): the ``v1-length`` and
  ``repetition`` detectors, with a score and a flag per response.

Each module is its own entry point and imports only numpy, zlib and castillo's public
API, so registering them costs milliseconds. See docs/metrics.md.
"""

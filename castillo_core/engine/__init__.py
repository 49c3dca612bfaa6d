"""The measuring engine: plan -> prompts -> requests -> generate -> rows -> store.

Modules follow the data flow: :mod:`plan` (run specs, cells, config hashes),
:mod:`prompts` (a cell's selection), :mod:`requests` (per-prompt seeds),
:mod:`engine` (the public run API executors drive), :mod:`writer` (buffered parts),
:mod:`rows`/:mod:`stats`/:mod:`schema` (Arrow tables), :mod:`store` and
:mod:`manifest` (what is on disk), :mod:`dataset` (reading it back).
"""

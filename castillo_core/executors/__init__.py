"""Executors: where a run's pending cells are generated.

An executor is a plugin kind (:class:`castillo_core.Executor`, hook
``castillo_register_executors``). The core's own is :mod:`castillo_core.executors.local`,
registered as a built-in plugin exactly like a third party's; the ``castillo-ray`` plugin
ships the same work to a Ray cluster. Both drive the engine through its public API only
(see :mod:`castillo_core.engine.engine`).
"""

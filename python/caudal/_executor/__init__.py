"""The executor's Python half (private; users import from :mod:`caudal`).

- :mod:`.core`: ``ExecutorCore``: one execution's awaits (the run loop
  driven by the engine's ``Next`` verdicts), configuration, invalidation,
  lifecycle;
- :mod:`.batches`: ``execute_many``, ``map`` and their progress bar;
- :mod:`.readouts`: stats, recommendations, health, analysis, plots;
- :mod:`.flight`: waking single-flight followers on their own loop;
- :mod:`.stats`, :mod:`.tuner`: the monitor's conversions and the automatic
  optimization's scheduling (the rules themselves are native:
  cpp/caudal/monitor/);
- :mod:`.recorder`: ``LatencyRecorder``.

The decisions are the native engine's (``caudal._core.Engine`` over the C++
``caudal::Executor``): this package awaits, sleeps and does I/O.
"""

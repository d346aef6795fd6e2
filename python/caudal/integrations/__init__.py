"""Optional integrations, each imported only when used:

- :mod:`caudal.integrations.redis`: the shared (L2) cache tier in Redis
  (``pip install 'caudal[redis]'``);
- :mod:`caudal.integrations.postgres`: ``PostgresStore``, checkpoints in
  PostgreSQL (``caudal[postgres]``);
- :mod:`caudal.integrations.otel`: ``OpenTelemetryExporter``, spans into
  OpenTelemetry (``caudal[otel]``);
- :mod:`caudal.integrations.ray`: the Ray backend, ``backend="ray"``
  (``caudal[ray]``);
- :mod:`caudal.integrations.flujo`: flujo's steps with flujo's behaviour,
  their agent calls run by caudal, and an executor factory for flujo's
  runner (``caudal[flujo]``).

This package imports none of them: nothing in caudal imports an integration
until the feature that needs it is used, so an integration may import its
library at module level.
"""

"""YAML pipeline definitions: ``caudal.load_pipeline(path_or_text, registry)``.

- :mod:`caudal.pipeline.yaml.build`: ``load_pipeline`` (the fields of a
  definition, steps bound to the registry);
- :mod:`caudal.pipeline.yaml.document`: reading the document safely, every
  problem with its file, line and field;
- :mod:`caudal.pipeline.yaml.auto`: ``<AUTO>`` tags, resolved when a step
  runs.

PyYAML is imported when a definition is first loaded, not with caudal.
The full field reference is in docs/pipelines.md.
"""

from caudal.pipeline.yaml.auto import AutoTag, AutoTemplate, parse_auto_tags, resolve_value
from caudal.pipeline.yaml.build import load_pipeline

__all__ = ["AutoTag", "AutoTemplate", "load_pipeline", "parse_auto_tags", "resolve_value"]

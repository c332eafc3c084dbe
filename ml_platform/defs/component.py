"""``ml_platform.ModelComponent``: one model's whole chain as a Dagster Component in a `dg` project.

```yaml
# <project>/src/<package>/defs/churn/defs.yaml  (`dg scaffold defs ml_platform.ModelComponent churn`)
type: ml_platform.ModelComponent
attributes:
  name: churn
  target: churned
  features: {tenure_months: {type: numeric}, plan: {type: categorical}}
```

The attributes are the keys of ``models.<name>`` in ml_platform.yaml plus ``name``: the same
pydantic schema (``settings.ComponentAttributes``), so the same errors. Platform-wide settings
(storage_dir, serving, ui, scale_out) come from an optional ``ml_platform.yaml`` at the project root.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
from dagster.components.component_scaffolding import scaffold_component
from pydantic import BaseModel

from ml_platform.defs.definitions import build_model_definitions
from ml_platform.settings import ComponentAttributes, ConfigError, load_settings


class ModelScaffolder(dg.Scaffolder):
    """`dg scaffold defs ml_platform.ModelComponent <path>`: a defs.yaml with the required keys."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = re.sub(r"\W", "_", request.target_path.name) or "model"
        if not name[0].isalpha():
            name = f"m_{name}"
        scaffold_component(
            request,
            {
                "name": name,
                "landing_dir": f"data/landing/{name}",
                "target": "label",
                "task": "classification",
                "features": {"feature_1": {"type": "numeric"}, "feature_2": {"type": "categorical"}},
            },
        )


@dg.scaffold_with(ModelScaffolder)
class ModelComponent(dg.Component, dg.Resolvable):
    """One ml_platform model: raw batches -> validated -> candidate (gated) -> deployed endpoint,
    with drift/performance monitoring, retrain sensors and the evaluation gate."""

    def __init__(self, attributes: ComponentAttributes):
        self.attributes = attributes

    @classmethod
    def model(cls) -> type[BaseModel]:
        return ComponentAttributes

    @classmethod
    def resolve_from_model(cls, context, model: BaseModel) -> ModelComponent:
        del context  # the attributes are plain values: no templating
        return cls(ComponentAttributes.model_validate(model.model_dump(exclude_unset=True)))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        project = Path(context.project_root)
        try:
            settings = load_settings(project)
        except ConfigError as e:
            raise dg.DagsterInvalidDefinitionError(str(e)) from None
        name = self.attributes.name
        if name not in settings.models:  # built in Python, or a defs.yaml the discovery does not read
            settings = settings.with_model(name, self.attributes.model_config_only())
        return build_model_definitions(settings, name)

"""The server's own API page and OpenAPI document.

BentoML's stock page is titled "BentoML Prediction Service", loads Google Tag Manager from
every operator's browser, and its document offers one fixed example (64 zeros) that most
models refuse. This page and document carry loopline's title and version and the served
model and version, and the ``/predict`` example is a row of the served model's own
reference data (its training sample), so "Try it out" succeeds for every model. Swagger
UI's files are BentoML's bundled copy, from the server itself; nothing loads from another
host (the online validator badge is off too).
"""

from __future__ import annotations

import copy
import html
import math
from importlib import metadata

import numpy as np

from loopline.core.layout import REFERENCE

TITLE = "loopline prediction API"
JSON = "application/json"

PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>{title}</title>
    <link rel="stylesheet" type="text/css" href="./static_content/swagger-ui.css" />
    <link rel="icon" type="image/png" href="./static_content/favicon-light-32x32.png" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./static_content/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script>
      window.onload = function () {{
        window.ui = SwaggerUIBundle({{
          url: "./docs.json",
          dom_id: "#swagger-ui",
          deepLinking: true,
          validatorUrl: null,
          presets: [SwaggerUIBundle.presets.apis],
          layout: "BaseLayout",
        }});
      }};
    </script>
  </body>
</html>
"""


def page(model_name: str, model_version: str | None) -> str:
    served = f"{model_name} v{model_version}" if model_version else f"{model_name} (loading)"
    return PAGE.format(title=html.escape(f"{TITLE}: {served}"))


def document(spec: dict, model_name: str, model) -> dict:
    """BentoML's document of the routes, with loopline's title and version, the served
    model, and ``/predict``'s example from ``model`` (a served model, or None)."""
    spec = copy.deepcopy(spec)
    served = f"version {model.version}" if model is not None else "no version loaded yet"
    spec["info"] = {
        "title": TITLE,
        "version": metadata.version("loopline"),
        "description": f"Serving **{model_name}**, {served}. Predict with `POST /predict` "
        "(KServe v1 `instances`); label served predictions with `POST /feedback`.",
    }
    example = request_example(model) if model is not None else None
    body = spec.get("paths", {}).get("/predict", {}).get("post", {}).get("requestBody", {})
    if example is not None and JSON in body.get("content", {}):
        body["content"][JSON]["example"] = example
    return spec


def request_example(model) -> dict | None:
    """One instance the model takes: the first row of its reference data, as a list of
    features for loopline's own networks, as named columns for a signature's model."""
    # Imported when the page is asked for: the server's arbiter imports this module too.
    import pandas as pd

    from loopline.serving.champion import LoadedModel

    reference = model.folder / REFERENCE
    if not reference.exists():
        return None
    row = pd.read_parquet(reference).iloc[0]
    if isinstance(model, LoadedModel):
        return {"instances": [[_plain(row[f]) for f in model.schema.features]]}
    names = [c.name for c in model.model.card.contract.columns]
    return {"instances": [{name: _plain(row[name]) for name in names}]}


def _plain(value):
    """A JSON value: numpy scalars as Python's; a missing number as 0."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0
    return value

"""The HTML pages people read about a run: the evaluation, the curation (ingest), the gate (register) and the
search summary. Each is a jinja2 template on one shared layout and stylesheet (`templates/`, shipped as package
data), rendered with autoescaping on into one self-contained file: charts and pictures are embedded as data URIs,
so the page works alike from MLflow, the object store and the KFP UI.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("artlora.pages", "templates"),
        autoescape=True,  # every value is text until a template says otherwise; captions and names are user input
        undefined=jinja2.StrictUndefined,  # a misspelt field is an error, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    """The page `template` (a file under templates/) filled with `context`."""
    return _environment().get_template(template).render(**context)

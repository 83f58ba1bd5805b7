"""Documentation models for every surface, and the OpenAPI builder.

The routes read raw bodies (unknown fields pass through to llama-server, and no parsing sits
on the hot path), so these models only document: ``json_body`` and ``replies`` attach them to
the routes, and ``build_openapi`` puts the request models into the schema's components.
"""

from .anthropic import *  # noqa: F403
from .api_v2 import *  # noqa: F403
from .common import *  # noqa: F403
from .llama import *  # noqa: F403
from .myllm import *  # noqa: F403
from .native import *  # noqa: F403
from .openai import *  # noqa: F403
from .openapi import *  # noqa: F403
from .shared import *  # noqa: F403

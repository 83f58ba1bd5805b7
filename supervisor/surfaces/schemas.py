"""Documentation models for every surface, and the OpenAPI builder.

The routes read raw bodies (unknown fields pass through to llama-server, and no parsing sits
on the hot path), so these models only document: ``json_body`` and ``replies`` attach them to
the routes, and ``build_openapi`` puts the request models into the schema's components.
"""

from supervisor.surfaces.anthropic.schemas import *  # noqa: F403
from supervisor.surfaces.api.schemas import *  # noqa: F403
from supervisor.surfaces.api_v2.schemas import *  # noqa: F403
from supervisor.surfaces.common_schemas import *  # noqa: F403
from supervisor.surfaces.native.more_schemas import *  # noqa: F403
from supervisor.surfaces.native.schemas import *  # noqa: F403
from supervisor.surfaces.openai.schemas import *  # noqa: F403
from supervisor.surfaces.openapi import *  # noqa: F403
from supervisor.surfaces.pull_schemas import *  # noqa: F403
from supervisor.surfaces.root.schemas import *  # noqa: F403

"""The routing, outcomes and scale cores stand on plain Python: no grpc, no protobuf."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import CONFIG_DIR


def test_routing_core_imports_no_grpc_or_protobuf() -> None:
    code = (
        "import sys\n"
        "import orxaq_grpc.config.load, orxaq_grpc.routing.live, orxaq_grpc.routing.router\n"
        "import orxaq_grpc.outcomes.tracker, orxaq_grpc.scale.guardrails, orxaq_grpc.scale.validation\n"
        "from orxaq_grpc.routing.types import RouteRequest, Task\n"
        f"router = orxaq_grpc.routing.live.LiveRouter.from_directory({str(CONFIG_DIR)!r}).current\n"
        "router.route(RouteRequest(lane='codex', task=Task(title='x')))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'orxaq')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"

"""Which steps a geopush worker runs, in order of the flow."""

from __future__ import annotations

from streams.app import Registrar


def pipeline_registrars() -> list[Registrar]:
    """The registrars of the full worker pipeline."""
    from streams.agents.budget import register_budget
    from streams.agents.decide import register_decide
    from streams.agents.deliver import register_deliver
    from streams.web import register_web

    return [register_decide, register_budget, register_deliver, register_web]

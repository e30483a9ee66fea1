"""What every gateway route module depends on: the service object the lifespan built (`GatewayDep`).

Route modules (`api`, `ui`, `results`) import it from here, never from one another."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway_container.gateway import Gateway


def get_gateway(request: Request) -> Gateway:
    """The service object the lifespan built."""
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]

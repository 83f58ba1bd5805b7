"""Thin HTTP routes, one module per surface; the work happens in the gateway's services."""

from __future__ import annotations

from fastapi import Request

from ..gateway import Gateway


def gateway(request: Request) -> Gateway:
    state_gateway: Gateway = request.app.state.gateway
    return state_gateway

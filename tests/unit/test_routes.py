"""How the services' routes are laid out: each declares the shape of its answer, and route modules share their
dependencies through one `deps` module instead of importing one another."""

from __future__ import annotations

import ast
import types
import typing
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel

from flts.settings import GatewaySettings, InferenceSettings
from gateway_container.service import create_app as create_gateway
from inference_container.champions import Champions
from inference_container.service import create_app as create_inference

ROOT = Path(__file__).parents[2]
CONTAINERS = ("gateway_container", "inference_container")
# Routes whose answer is no JSON document, and what they answer instead (each documents it in `responses=`).
NOT_JSON = {
    "/objects/{bucket}/{key:path}": "an upload's bytes, streamed",
    "/download/{bucket}/{key:path}": "an upload's or a processed split's bytes, streamed",
    "/score/{claim_id}": "the scored claim's parquet file (a 202 while pending is ClaimPending)",
    "/v2/models/{name}/infer": "Open Inference Protocol tensors: JSON, or a JSON header and binary tensor data",
    "/ui": "the status pages: HTML for a browser, their script, style sheet and plot",
}
# FastAPI's own routes (the document and its renderings) and Prometheus' scrape.
NOT_OURS = ("/openapi.json", "/docs", "/redoc", "/metrics")


def _apps() -> dict[str, FastAPI]:
    return {
        "gateway": create_gateway(GatewaySettings(auth_enabled=False)),
        "inference": create_inference(InferenceSettings(auth_enabled=False), Champions(), follow_registry=False),
    }


def _is_declared(shape: object) -> bool:
    """A pydantic model, or a list or union of them."""
    if isinstance(shape, type):
        return issubclass(shape, BaseModel)
    arguments = typing.get_args(shape)
    is_list_or_union = typing.get_origin(shape) in (list, typing.Union, types.UnionType)
    return is_list_or_union and bool(arguments) and all(_is_declared(argument) for argument in arguments)


@pytest.mark.parametrize("service", ["gateway", "inference"])
def test_every_route_declares_the_shape_of_its_answer(service):
    app = _apps()[service]
    undeclared = []
    for route in iter_route_contexts(app.routes):
        path = route.path
        if path.startswith(NOT_OURS) or any(path == named or path.startswith(f"{named}/") for named in NOT_JSON):
            continue
        if not hasattr(route, "response_model"):
            continue  # a plain Starlette route: /predict's fast twin, documented by the FastAPI route beside it
        if not _is_declared(route.response_model):
            undeclared.append(f"{sorted(route.methods or [])} {path}: {route.response_model}")
    assert not undeclared, "routes answering JSON without a response model:\n" + "\n".join(undeclared)


def _route_modules(container: str) -> set[str]:
    """The container's modules that define a router (`router = APIRouter(...)`)."""
    modules = set()
    for path in (ROOT / container).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                called = node.value.func
                if isinstance(called, ast.Name) and called.id == "APIRouter":
                    modules.add(f"{container}.{path.stem}")
    return modules


def _imports(path: Path, package: str) -> set[str]:
    """The modules a file imports, `from package import module` named as package.module."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            if node.module == package:
                imported.update(f"{package}.{alias.name}" for alias in node.names)
    return imported


@pytest.mark.parametrize("container", CONTAINERS)
def test_a_route_module_never_imports_another_route_module(container):
    routes = _route_modules(container)
    assert len(routes) >= 2, routes
    crossing = {
        module: sorted(_imports(ROOT / f"{module.replace('.', '/')}.py", container) & (routes - {module}))
        for module in routes
    }
    assert not {module: others for module, others in crossing.items() if others}, (
        f"shared dependencies belong in {container}/deps.py"
    )

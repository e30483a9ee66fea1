"""A small HTTP client for the gateway and inference services: what the CLI, the demo and the e2e tests use."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from flts.records import Lineages, LineageStatus, LineageSummary


class PipelineTimeout(TimeoutError):
    """The pipeline did not reach the awaited stage in time; the message says where it stood."""


@dataclass
class FltsClient:
    """``api_key``: sent as a bearer token (default: the FLTS_API_KEY environment variable; none when unset)."""

    gateway_url: str
    inference_url: str
    timeout: float = 60.0
    api_key: str | None = field(default_factory=lambda: os.environ.get("FLTS_API_KEY") or None, repr=False)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def upload(
        self, train: Path, test: Path | None = None, identifier: str | None = None, force: bool = False
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"force": str(force).lower()}
        if identifier:
            params["identifier"] = identifier
        with train.open("rb") as train_file:
            files = {"train": (train.name, train_file, "text/csv")}
            test_file = test.open("rb") if test else None
            try:
                if test_file is not None and test is not None:
                    files["test"] = (test.name, test_file, "text/csv")
                response = httpx.post(
                    f"{self.gateway_url}/datasets",
                    files=files,
                    params=params,
                    headers=self.headers,
                    timeout=self.timeout,
                )
            finally:
                if test_file is not None:
                    test_file.close()
        _raise_for_status(response)
        return response.json()

    def lineage(self, config_hash: str, identifier: str = "global") -> LineageStatus | None:
        response = httpx.get(
            f"{self.gateway_url}/runs/{config_hash}",
            params={"identifier": identifier},
            headers=self.headers,
            timeout=30,
        )
        if response.status_code == 404:
            return None
        _raise_for_status(response)
        return LineageStatus.parse(response.json(), f"GET {response.url}")

    def lineages(self, identifier: str = "global") -> list[LineageSummary]:
        response = httpx.get(
            f"{self.gateway_url}/lineages", params={"identifier": identifier}, headers=self.headers, timeout=30
        )
        _raise_for_status(response)
        return Lineages.parse(response.json(), f"GET {response.url}").lineages

    def forecasts(self, identifier: str = "global", **query: Any) -> dict[str, Any]:
        """A model's test forecasts beside the actual values (`GET /forecasts/ID`; query: see `flts plot`)."""
        params = {key: value for key, value in query.items() if value is not None}
        response = httpx.get(
            f"{self.gateway_url}/forecasts/{identifier}", params=params, headers=self.headers, timeout=60
        )
        _raise_for_status(response)
        return response.json()

    def model_info(self, identifier: str = "global", missing_ok: bool = True) -> dict[str, Any] | None:
        """The champion /predict serves; None while there is none (or the service is not up), unless
        ``missing_ok`` is False: then the refusal or the connection error is raised."""
        try:
            response = httpx.get(
                f"{self.inference_url}/model-info", params={"identifier": identifier}, headers=self.headers, timeout=10
            )
        except httpx.TransportError:
            if missing_ok:
                return None
            raise
        if not missing_ok:
            _raise_for_status(response)
        return response.json() if response.status_code == 200 else None

    def predict(self, body: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.inference_url}/predict", json=body, headers=self.headers, timeout=30)
        _raise_for_status(response)
        return response.json()

    def wait_for_champion(
        self,
        config_hash: str,
        identifier: str = "global",
        timeout: float = 900.0,
        on_progress: Callable[[LineageStatus | None], None] | None = None,
        final: bool = True,
        on_served: Callable[[LineageStatus], None] | None = None,
        poll_seconds: float = 2.0,
    ) -> LineageStatus:
        """Poll until the lineage has a champion AND inference serves that very version; with ``final`` (the
        default) the decided one, not an interim champion served while other models still train.
        ``on_served`` hears every status whose champion, interim or final, inference serves."""
        deadline = time.monotonic() + timeout
        status: LineageStatus | None = None
        while time.monotonic() < deadline:
            try:
                status = self.lineage(config_hash, identifier)
            except httpx.TimeoutException:
                time.sleep(poll_seconds)  # a slow answer (a busy gateway or MLflow) is no verdict: ask again
                continue
            if on_progress:
                on_progress(status)
            champion = status.champion if status else None
            if status and champion:
                served = self.model_info(identifier)
                if served and served["model_version"] == champion.model_version:
                    if on_served:
                        on_served(status)
                    if not (final and champion.interim):
                        return status
            time.sleep(poll_seconds)
        raise PipelineTimeout(f"no champion served for {config_hash} within {timeout:.0f}s; last status: {status}")


def window_request(frame: pd.DataFrame, rows: int, identifier: str | None = None) -> dict[str, Any]:
    """A /predict body from the last ``rows`` rows of a raw measurements frame."""
    window = frame.tail(rows).copy()
    window = window.astype(object).where(window.notna(), None)
    body: dict[str, Any] = {"rows": window.to_dict(orient="records")}
    if identifier:
        body["identifier"] = identifier
    return body


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_error:
        raise httpx.HTTPStatusError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:2000]}",
            request=response.request,
            response=response,
        )

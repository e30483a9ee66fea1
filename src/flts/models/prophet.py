"""Prophet forecaster (the nonml model): one Prophet model per target, fitted in parallel.

Prophet forecasts from time alone, so `predict` ignores the input window and returns yhat at
the window's target times: scored on the same test windows and horizon as the neural models.
Models are stored with `prophet.serialize.model_to_json` (JSON, no pickles).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from flts.config import ProphetConfig
from flts.models.base import WindowLayout, frame_times, read_model_json, run_params, write_model_json

if TYPE_CHECKING:
    from flts.settings import NonmlSettings
    from flts.train import EpochCallback, LineageData

# Prophet logs an error when plotly is missing (we never plot), and cmdstanpy installs its own
# INFO handler for every Stan run unless its logger already has one: give it a silent one.
logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)
logging.getLogger("cmdstanpy").addHandler(logging.NullHandler())
for _name in ("prophet", "cmdstanpy"):
    logging.getLogger(_name).setLevel(logging.WARNING)

from prophet import Prophet  # noqa: E402  (after the logger set-up above, which its import already uses)
from prophet.serialize import model_from_json, model_to_json  # noqa: E402

_logger = logging.getLogger(__name__)


def _model_file(index: int) -> str:
    """One file per target, named by position so any target name is a safe file name."""
    return f"prophet_{index}.json"


def _fit_one(ds: np.ndarray, y: np.ndarray, config: ProphetConfig) -> Prophet:
    model = Prophet(
        daily_seasonality=config.daily_seasonality,
        weekly_seasonality=config.weekly_seasonality,
        yearly_seasonality=config.yearly_seasonality,
        changepoint_prior_scale=config.changepoint_prior_scale,
        seasonality_mode=config.seasonality_mode,
        uncertainty_samples=0,
    )
    return model.fit(pd.DataFrame({"ds": ds, "y": y}))


class ProphetForecaster:
    """One fitted Prophet model per target column."""

    model_type = "PROPHET"

    def __init__(self, layout: WindowLayout, models: Sequence[Prophet], params: dict[str, Any]) -> None:
        if len(models) != layout.n_targets:
            raise ValueError(f"{len(models)} Prophet models for {layout.n_targets} targets")
        self.layout = layout
        self.models = list(models)
        self.params = params

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        """yhat at each target time; one Prophet `predict` per target over the unique times."""
        if target_times.ndim != 2 or target_times.shape[0] != inputs.shape[0]:
            raise ValueError(f"target_times must be [{inputs.shape[0]}, H], got {list(target_times.shape)}")
        unique_times, positions = np.unique(target_times.astype("datetime64[ns]"), return_inverse=True)
        future = pd.DataFrame({"ds": unique_times})
        columns = [model.predict(future)["yhat"].to_numpy(dtype=np.float32) for model in self.models]
        return np.stack(columns, axis=-1)[positions.reshape(target_times.shape)]

    def save(self, directory: Path) -> None:
        write_model_json(directory, self.model_type, self.layout, self.params)
        for index, model in enumerate(self.models):
            (directory / _model_file(index)).write_text(model_to_json(model))

    @classmethod
    def load(cls, directory: Path) -> ProphetForecaster:
        _, layout, params = read_model_json(directory, [cls.model_type])
        models = [model_from_json((directory / _model_file(i)).read_text()) for i in range(layout.n_targets)]
        return cls(layout, models, params)


def fit_prophet(
    train_frame: pd.DataFrame,
    time_column: str,
    target_columns: Sequence[str],
    config: ProphetConfig,
    *,
    workers: int = 2,
    layout: WindowLayout | None = None,
) -> ProphetForecaster:
    """Fit one Prophet per target on the (scaled) train frame, `workers` at a time.

    The frame's times come from its time column, or its DatetimeIndex when the column is absent,
    as tz-naive UTC. `config.max_fit_rows` keeps the most recent rows. Threads are enough for
    parallelism: each fit spends its time in the CmdStan optimiser, a subprocess. `layout`
    records the windows the pipeline serves this model with (default: targets only, 1 in, 1 out).
    """
    missing = [column for column in target_columns if column not in train_frame.columns]
    if missing:
        raise ValueError(f"target columns {missing} are not in the training frame")
    times = frame_times(train_frame, time_column)
    order = np.argsort(times, kind="stable")
    if config.max_fit_rows is not None:
        order = order[-config.max_fit_rows :]
    if order.shape[0] < 2:
        raise ValueError("Prophet needs at least two training rows")
    ds = times[order]
    values = train_frame[list(target_columns)].to_numpy(dtype=np.float64)[order]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        models = list(pool.map(lambda k: _fit_one(ds, values[:, k], config), range(values.shape[1])))
    _logger.info("fitted %d Prophet models on %d rows", len(models), len(ds))
    params = {"config": config.model_dump(mode="json"), "fit_rows": len(ds)}
    return ProphetForecaster(layout or WindowLayout.targets_only(target_columns), models, params)


def fit_lineage(
    model_type: str, settings: NonmlSettings, data: LineageData, on_epoch: EpochCallback
) -> tuple[ProphetForecaster, dict[str, Any]]:
    """The nonML service's fit (flts.models.types): one Prophet per target column on the train and validation rows,
    `settings.prophet_workers` at a time."""
    hyper = data.config.models.prophet
    history = pd.concat([data.frames["train"], data.frames["validation"]], ignore_index=True)
    forecaster = fit_prophet(
        history,
        data.claim.time_column,
        data.claim.target_columns,
        hyper,
        workers=settings.prophet_workers,
        layout=data.layout,
    )
    return forecaster, run_params("prophet", hyper)

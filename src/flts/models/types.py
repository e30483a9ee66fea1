"""The one table of model types: each type's family, the service that trains it, whether inference serves it (and
why not), where a tie on the leaderboard puts it, and where its loader and its fit live.

Everything else reads this table: the config's Literals and defaults (flts.config), eval's tie-break and
not-servable reasons (flts.evaluate), loading a saved model (flts.models.base), the trainers (train_container,
nonML_container). Adding a model type is its module (a forecaster with `save` and a `load` classmethod, and a fit)
plus one entry here; tests/unit/test_model_types.py trains, saves, loads and forecasts every entry. One on by
default is also listed in config/pipeline.yaml's expected_model_types (the file every deployment reads), and a
network needs its trainer deployed (the local stack starts one per expected network; compose and the chart name
theirs).

A loader or fit is named by "module:attribute" and imported only when a process asks for it, so this module, and
flts.config which reads it, import no model's dependencies (torch, LightGBM, statsforecast, Prophet).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Family = Literal["network", "boosted", "statistical", "prophet", "baseline"]
# "train": a trainer process of its own per type (train_container with MODEL_TYPE=<name>); "nonml": the nonML
# service, which trains every one of its types the pipeline expects, in `fit_order`.
Trainer = Literal["train", "nonml"]


@dataclass(frozen=True)
class ModelTypeSpec:
    """One model type.

    `loader`: "module:Class" whose `load(directory)` classmethod reads a model of this type saved by its `save`.
    `fit`: "module:function" called as fit(model_type, settings, data, on_epoch) -> (forecaster, params): the
    trainer's settings, the lineage's data (flts.train.LineageData), a per-epoch callback; params are logged to the
    run. `tie_break`: a tie on the leaderboard goes to the lower (the simpler model). `fit_order`: the nonML service
    trains its types lowest first (fastest first: an interim champion soonest). `on_by_default`: in
    `evaluation.expected_model_types` by default. `not_servable_because`: None when inference can serve it (then it
    is in `evaluation.promotable_model_types` by default), else why it is ranked and never promoted.
    """

    name: str
    family: Family
    trainer: Trainer
    loader: str
    fit: str
    tie_break: int
    on_by_default: bool
    fit_order: int = 0
    not_servable_because: str | None = None

    @property
    def servable(self) -> bool:
        return self.not_servable_because is None

    def load(self, directory: Path) -> Any:
        """The model saved in `directory`, read by this type's own loader (its module imported now)."""
        return resolve(self.loader).load(Path(directory))

    def bind_fit(self, settings: Any) -> Callable[[Any, Any], tuple[Any, dict[str, Any]]]:
        """The trainer's fit for this type (flts.train.Fit: data, on_epoch -> forecaster, params) with the trainer's
        settings; its module is imported when it is first called, not now."""

        def fit(data: Any, on_epoch: Any) -> tuple[Any, dict[str, Any]]:
            return resolve(self.fit)(self.name, settings, data, on_epoch)

        return fit


def resolve(target: str) -> Any:
    """The attribute a "module:attribute" names, importing its module."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


_RECURRENT = ("flts.models.recurrent:RecurrentForecaster", "flts.models.recurrent:fit_lineage")
_STATISTICAL = ("flts.models.statistical:StatisticalForecaster", "flts.models.statistical:fit_lineage")

# In the order the config's Literals and default lists name them.
MODEL_TYPES: tuple[ModelTypeSpec, ...] = (
    ModelTypeSpec("GRU", "network", "train", *_RECURRENT, tie_break=7, on_by_default=True),
    ModelTypeSpec("LSTM", "network", "train", *_RECURRENT, tie_break=8, on_by_default=True),
    ModelTypeSpec("TCN", "network", "train", *_RECURRENT, tie_break=9, on_by_default=False),
    ModelTypeSpec("TRANSFORMER", "network", "train", *_RECURRENT, tie_break=10, on_by_default=False),
    ModelTypeSpec("SEQ2SEQ", "network", "train", *_RECURRENT, tie_break=11, on_by_default=False),
    ModelTypeSpec(
        "LIGHTGBM",
        "boosted",
        "nonml",
        "flts.models.boosted:BoostedForecaster",
        "flts.models.boosted:fit_lineage",
        tie_break=5,
        on_by_default=True,
        fit_order=4,
    ),
    ModelTypeSpec("AUTOETS", "statistical", "nonml", *_STATISTICAL, tie_break=2, on_by_default=True, fit_order=3),
    ModelTypeSpec("THETA", "statistical", "nonml", *_STATISTICAL, tie_break=3, on_by_default=True, fit_order=2),
    ModelTypeSpec("AUTOARIMA", "statistical", "nonml", *_STATISTICAL, tie_break=4, on_by_default=True, fit_order=5),
    ModelTypeSpec(
        "PROPHET",
        "prophet",
        "nonml",
        "flts.models.prophet:ProphetForecaster",
        "flts.models.prophet:fit_lineage",
        tie_break=6,
        on_by_default=False,
        fit_order=6,
        not_servable_because="the inference image carries no Prophet (its Stan backend and plotting stack would "
        "double the replica's memory), and Prophet forecasts from the calendar, not from the rows a /predict "
        "window sends",
    ),
    ModelTypeSpec(
        "PERSISTENCE",
        "baseline",
        "nonml",
        "flts.models.baselines:PersistenceForecaster",
        "flts.models.baselines:fit_persistence",
        tie_break=0,
        on_by_default=True,
        fit_order=0,
    ),
    ModelTypeSpec(
        "SEASONAL_NAIVE",
        "baseline",
        "nonml",
        "flts.models.baselines:SeasonalNaiveForecaster",
        "flts.models.baselines:fit_seasonal_naive",
        tie_break=1,
        on_by_default=True,
        fit_order=1,
        not_servable_because="it repeats the last season, and a /predict window carries only rows_needed rows, "
        "not a season of history",
    ),
)

BY_NAME: dict[str, ModelTypeSpec] = {spec.name: spec for spec in MODEL_TYPES}
MODEL_TYPE_NAMES: tuple[str, ...] = tuple(BY_NAME)


def names(family: Family | None = None, trainer: Trainer | None = None) -> tuple[str, ...]:
    """The table's type names (in table order), of one family and/or one trainer."""
    return tuple(
        spec.name
        for spec in MODEL_TYPES
        if (family is None or spec.family == family) and (trainer is None or spec.trainer == trainer)
    )


def model_type_spec(name: str) -> ModelTypeSpec:
    """The table's entry for `name` (a ValueError naming the known types when there is none)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown model type {name!r}: one of {', '.join(MODEL_TYPE_NAMES)}") from None


NETWORK_TYPES = names(family="network")
STATISTICAL_TYPES = names(family="statistical")
ON_BY_DEFAULT = tuple(spec.name for spec in MODEL_TYPES if spec.on_by_default)
SERVABLE_TYPES = tuple(spec.name for spec in MODEL_TYPES if spec.servable)
# A tie on the leaderboard goes to the simpler model: the earlier here.
TIE_BREAK_ORDER = tuple(spec.name for spec in sorted(MODEL_TYPES, key=lambda spec: spec.tie_break))
NOT_SERVABLE_BECAUSE = {spec.name: spec.not_servable_because for spec in MODEL_TYPES if spec.not_servable_because}


def _check(table: tuple[ModelTypeSpec, ...]) -> None:
    """Refuse a table that could not be read one way: two entries of one name, tie-break rank or nonML fit order."""
    for what, values in (
        ("name", [spec.name for spec in table]),
        ("tie_break", [spec.tie_break for spec in table]),
        ("fit_order", [spec.fit_order for spec in table if spec.trainer == "nonml"]),
    ):
        repeated = sorted({str(value) for value in values if values.count(value) > 1})
        if repeated:
            raise ValueError(f"flts.models.types: two model types share the {what} {', '.join(repeated)}")


_check(MODEL_TYPES)

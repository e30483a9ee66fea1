"""A champion that forecasts each target column with the model that won that column on validation.

Eval picks each target column's winner among the promotable models of a lineage (persistence included;
`column_wins` on the leaderboard). One model is promoted, but a network that drifts away from the last value
on one column (an uplink whose level moved since training) must not serve that column when persistence won
it. Inference assembles this composite from the lineage's runs: every member reads the same preprocessed
windows (one lineage, one layout), so the members' forecasts are stacked column by column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flts.models.base import Forecaster, WindowLayout


@dataclass(frozen=True)
class ColumnComposite:
    """``base`` (the promoted model) forecasts every column no other member won; ``members`` by model type."""

    base: Forecaster
    members: dict[str, Forecaster]
    winners: dict[str, str]  # target column -> model type

    def __post_init__(self) -> None:
        for model_type, member in self.members.items():
            if member.layout != self.base.layout:
                raise ValueError(f"{model_type} reads {member.layout}, the champion {self.base.layout}")
        unknown = {t for t in self.winners.values() if t not in self.members and t != self.base.model_type}
        if unknown:
            raise ValueError(f"column winners {sorted(unknown)} are not members of the composite")

    @property
    def model_type(self) -> str:
        return self.base.model_type

    @property
    def layout(self) -> WindowLayout:
        return self.base.layout

    @property
    def column_models(self) -> dict[str, str]:
        """Which model type forecasts each target column."""
        return {column: self.winners.get(column, self.base.model_type) for column in self.layout.target_columns}

    def predict(self, inputs: np.ndarray, target_times: np.ndarray) -> np.ndarray:
        forecast = np.array(self.base.predict(inputs, target_times), copy=True)
        served_by = self.column_models
        for model_type, member in self.members.items():
            columns = [i for i, column in enumerate(self.layout.target_columns) if served_by[column] == model_type]
            if columns and model_type != self.base.model_type:
                forecast[:, :, columns] = member.predict(inputs, target_times)[:, :, columns]
        return forecast

"""The pipeline config file (`config/pipeline.yaml`): preprocessing, models, evaluation and serving knobs, each
documented there. It is part of a lineage's hash; the services' environment settings are `flts.settings`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flts.models import types as model_types

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PIPELINE_CONFIG = REPO_ROOT / "config" / "pipeline.yaml"

# The model types are flts.models.types' table; these Literals are read from it (adding a type is one entry there).
# The neural model types (flts.models.recurrent): one trainer each (train_container, MODEL_TYPE).
NETWORK_MODEL_TYPES: tuple[str, ...] = model_types.NETWORK_TYPES
NetworkType = Literal[NETWORK_MODEL_TYPES]
# The statistical model types (flts.models.statistical): fitted by statsforecast, served without it.
STATISTICAL_MODEL_TYPES: tuple[str, ...] = model_types.STATISTICAL_TYPES
StatisticalType = Literal[STATISTICAL_MODEL_TYPES]
ModelType = Literal[model_types.MODEL_TYPE_NAMES]


# ---------------------------------------------------------------------------
# The pipeline config: preprocessing and model hyper-parameters, one YAML file.
# ---------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    time_column: str = "time"
    identifier_column: str | None = "identifier"
    feature_columns: list[str] | None = None
    target_columns: list[str] | None = None


class LimitsConfig(_Strict):
    """What one uploaded file may hold: checked at the gateway (and again by preprocess) before any work.

    They bound the cost of one tenant's upload for everyone: Prophet fits one model per column, windows
    grow with rows, and the text cells are parsed as timestamps.
    """

    max_columns: int = Field(64, ge=2)
    max_rows: int = Field(1_000_000, ge=1)
    max_header_bytes: int = Field(8192, ge=64)
    max_column_name_chars: int = Field(64, ge=1)
    max_cell_chars: int = Field(64, ge=8)


class OutlierConfig(_Strict):
    method: Literal["none", "iqr", "percentile"] = "none"
    iqr_k: float = 3.0
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5


class SplitConfig(_Strict):
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


class SampleConfig(_Strict):
    """Optional down-sampling, applied by preprocess only (trainers never re-sample)."""

    max_train_rows: int | None = None
    max_test_rows: int | None = None


class PreprocessingConfig(_Strict):
    frequency: str | None = None
    imputation: Literal["linear", "ffill", "zero", "mean"] = "linear"
    max_gap_fill_steps: int = 30
    outliers: OutlierConfig = OutlierConfig()
    scaler: Literal["minmax", "standard", "robust", "maxabs"] = "minmax"
    time_features: list[Literal["hour", "day_of_week"]] = ["hour", "day_of_week"]
    lag_features: list[int] = []
    split: SplitConfig = SplitConfig()
    sample: SampleConfig = SampleConfig()


class WindowConfig(_Strict):
    input_seq_len: int = Field(10, ge=1)
    output_seq_len: int = Field(1, ge=1)


class RecurrentConfig(_Strict):
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.0
    batch_size: int = 64
    epochs: int = 10
    learning_rate: float = 1e-3
    early_stopping_patience: int = 3
    seed: int = 42
    # direct | residual | relative: what the networks read and forecast (see flts.models.recurrent).
    form: Literal["direct", "residual", "relative"] = "relative"


class ProphetConfig(_Strict):
    daily_seasonality: bool = True
    weekly_seasonality: bool = True
    yearly_seasonality: bool = False
    changepoint_prior_scale: float = 0.05
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    max_fit_rows: int | None = None


class BoostedConfig(_Strict):
    """LightGBM on the window's lags (flts.models.boosted): one booster per target column and horizon step."""

    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0)
    max_rounds: int = Field(300, ge=1)
    early_stopping_rounds: int = Field(30, ge=0)  # on the validation windows; 0: all max_rounds
    feature_fraction: float = Field(0.8, gt=0, le=1)
    bagging_fraction: float = Field(0.8, gt=0, le=1)
    min_data_in_leaf: int = Field(20, ge=1)
    threads: int = Field(2, ge=1)
    seed: int = 42


class StatisticalConfig(_Strict):
    """AutoETS, AutoARIMA and Theta (flts.models.statistical), non-seasonal, one per target column."""

    # The most recent training rows each model is fitted on: the parameters settle long before the full
    # series, and AutoARIMA's search grows with it (13,600 rows: 5 s per column; 2,000: under 1 s).
    max_fit_rows: int = Field(2000, ge=10)


class BaselineConfig(_Strict):
    season_length_steps: int | None = None


class ModelsConfig(_Strict):
    recurrent: RecurrentConfig = RecurrentConfig()
    boosted: BoostedConfig = BoostedConfig()
    statistical: StatisticalConfig = StatisticalConfig()
    prophet: ProphetConfig = ProphetConfig()
    baselines: BaselineConfig = BaselineConfig()


class ScoreWeights(_Strict):
    rmse: float = 0.5
    mae: float = 0.3
    mse: float = 0.2


class EvaluationConfig(_Strict):
    # Each default is read from flts.models.types: the types on by default, and every type inference can serve
    # (SEASONAL_NAIVE and PROPHET are ranked, not served: their not_servable_because).
    expected_model_types: list[ModelType] = list(model_types.ON_BY_DEFAULT)
    promotable_model_types: list[ModelType] = list(model_types.SERVABLE_TYPES)
    decision_timeout_seconds: float = 900.0
    # While models still train, serve the best promotable one finished so far (persistence within seconds of
    # preprocessing), then upgrade as better ones finish; the final champion is the one eval would have waited
    # for. false: nothing is served until the lineage is decided.
    promote_interim: bool = True
    # A RUNNING run whose trainer has not beaten its heartbeat (every 30 s) for this long died with its
    # process (SIGKILL, OOM): eval marks it KILLED, so nothing stays RUNNING and eval need not wait for it.
    orphan_after_seconds: float = Field(180.0, gt=0)
    score_weights: ScoreWeights = ScoreWeights()


class InferenceConfig(_Strict):
    max_inference_length: int = Field(60, ge=1)
    max_batch_windows: int = Field(256, ge=1)
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    # The micro-batcher in front of the model (one forward pass for concurrent requests).
    micro_batch_requests: int = Field(32, ge=1)
    micro_batch_wait_ms: float = Field(2.0, ge=0, le=1000)
    queue_max_requests: int = Field(256, ge=1)
    request_timeout_seconds: float = Field(2.0, gt=0)
    # A request's work is its windows x the steps it asks for; a micro-batch's, the sum over its requests.
    # A batch holds at most max_batch_work (a request that would take it over waits for the next batch; one
    # over it alone is a 413). The default is max_batch_windows x max_inference_length: every request the
    # other limits admit is served, the largest alone (about 0.5 s for the default GRU on one core).
    max_batch_work: int = Field(256 * 60, ge=1)
    # A batch of at most this much work runs its forward pass on the event loop (no GIL hand-overs: faster on
    # a contended CPU); a heavier one on the model thread, so /healthz and the other requests are answered
    # meanwhile (256 window-steps: about 10 ms of the default GRU).
    loop_max_work: int = Field(256, ge=0)
    model_thread: bool = False  # true: every forward pass on the model thread, however light (loop_max_work 0)
    # Serve each target column with the model that won it on validation (eval's column_wins, persistence
    # included); false: the promoted model forecasts every column.
    serve_column_winners: bool = True
    # Every replica re-reads the registry's champion aliases this often and installs what differs (a lost
    # model-selected event, a failed download, an operator's rollback).
    champion_reconcile_seconds: float = Field(60.0, gt=0)
    # Champions a replica holds in memory (about 1-2 MiB each); beyond it the least recently used is dropped
    # and loaded again on its next request. 0: no limit.
    max_loaded_champions: int = Field(500, ge=0)
    # And at most this many bytes of model bundles (a column composite counts each member): the bound that holds
    # when champions differ in size. 0: no limit.
    max_loaded_champion_bytes: int = Field(1 << 30, ge=0)


class PipelineConfig(_Strict):
    data: DataConfig = DataConfig()
    limits: LimitsConfig = LimitsConfig()
    preprocessing: PreprocessingConfig = PreprocessingConfig()
    windows: WindowConfig = WindowConfig()
    models: ModelsConfig = ModelsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    inference: InferenceConfig = InferenceConfig()

    @field_validator("evaluation")
    @classmethod
    def _expected_types_unique(cls, value: EvaluationConfig) -> EvaluationConfig:
        if len(set(value.expected_model_types)) != len(value.expected_model_types):
            raise ValueError("evaluation.expected_model_types has duplicates")
        return value

    def lineage_part(self) -> dict[str, Any]:
        """The part of the config that defines a lineage (together with the data's content hash)."""
        return {
            "data": self.data.model_dump(mode="json"),
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "windows": self.windows.model_dump(mode="json"),
        }


def load_pipeline_config(path: Path | str | None = None) -> PipelineConfig:
    source = Path(path or os.environ.get("PIPELINE_CONFIG") or DEFAULT_PIPELINE_CONFIG)
    raw = yaml.safe_load(source.read_text()) or {}
    return PipelineConfig.model_validate(raw)

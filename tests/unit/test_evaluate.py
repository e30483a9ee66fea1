import math

import pytest

from flts.config import EvaluationConfig, ScoreWeights
from flts.evaluate import decide, latest_per_model_type, leaderboard
from flts.tracking import RunSummary

CONFIG = EvaluationConfig(expected_model_types=["GRU", "LSTM", "PROPHET", "PERSISTENCE"], decision_timeout_seconds=600)


def run(
    model_type: str, rmse: float, status: str = "FINISHED", start: int = 1_000, run_id: str | None = None
) -> RunSummary:
    metrics = {"test_rmse": rmse, "test_mae": rmse, "test_mse": rmse**2} if status == "FINISHED" else {}
    return RunSummary(
        run_id=run_id or f"{model_type.lower()}-{start}",
        model_type=model_type,
        identifier="global",
        status=status,
        metrics=metrics,
        start_time_ms=start,
        end_time_ms=start + 10 if status != "RUNNING" else None,
        error=None,
    )


def test_waits_until_every_expected_model_type_has_finished():
    runs = [run("GRU", 0.2), run("LSTM", 0.3, status="RUNNING"), run("PERSISTENCE", 0.4)]
    decision = decide(runs, CONFIG, now_ms=2_000)
    assert not decision.ready
    assert decision.reason == "waiting for LSTM, PROPHET"


def test_while_models_train_the_best_promotable_model_finished_so_far_is_the_interim_winner():
    runs = [run("GRU", 0.2), run("LSTM", 0.1, status="RUNNING"), run("PERSISTENCE", 0.4), run("PROPHET", 0.05)]
    decision = decide(runs, CONFIG, now_ms=2_000)
    assert not decision.ready and decision.winner is None
    assert decision.interim is not None and decision.interim.model_type == "GRU"  # Prophet ranks first, unservable


def test_no_interim_winner_before_a_promotable_model_finishes_and_none_once_decided():
    assert decide([run("GRU", 0.2, status="RUNNING"), run("PROPHET", 0.1)], CONFIG, now_ms=2_000).interim is None
    runs = [run("GRU", 0.2), run("LSTM", 0.3), run("PROPHET", 0.1), run("PERSISTENCE", 0.4)]
    decided = decide(runs, CONFIG, now_ms=2_000)
    assert decided.ready and decided.interim is None and decided.winner.model_type == "GRU"


def test_decides_on_what_it_has_after_the_timeout():
    runs = [run("GRU", 0.2), run("PERSISTENCE", 0.4)]
    decision = decide(runs, CONFIG, now_ms=1_000 + 600_000)
    assert decision.ready and decision.winner is not None
    assert decision.winner.model_type == "GRU"
    assert "timed out waiting for LSTM, PROPHET" in decision.reason


def test_the_lowest_composite_score_wins_and_failed_runs_count_as_done():
    runs = [run("GRU", 0.3), run("LSTM", 0.2), run("PROPHET", 0.0, status="FAILED"), run("PERSISTENCE", 0.4)]
    decision = decide(runs, CONFIG, now_ms=2_000)
    assert decision.ready
    assert [c.model_type for c in decision.leaderboard] == ["LSTM", "GRU", "PERSISTENCE"]
    expected = 0.5 * 0.2 + 0.3 * 0.2 + 0.2 * 0.04
    assert math.isclose(decision.winner.score, expected)


def test_score_weights_are_configurable():
    runs = [
        RunSummary("a", "GRU", "global", "FINISHED", {"test_rmse": 1.0, "test_mae": 0.0, "test_mse": 0.0}, 1, 2, None),
        RunSummary("b", "LSTM", "global", "FINISHED", {"test_rmse": 0.0, "test_mae": 1.0, "test_mse": 0.0}, 1, 2, None),
    ]
    rmse_only = EvaluationConfig(expected_model_types=["GRU", "LSTM"], score_weights=ScoreWeights(rmse=1, mae=0, mse=0))
    mae_only = EvaluationConfig(expected_model_types=["GRU", "LSTM"], score_weights=ScoreWeights(rmse=0, mae=1, mse=0))
    assert decide(runs, rmse_only, 3).winner.model_type == "LSTM"
    assert decide(runs, mae_only, 3).winner.model_type == "GRU"


def test_ties_break_deterministically_towards_the_simpler_model():
    runs = [run("LSTM", 0.2), run("GRU", 0.2), run("PERSISTENCE", 0.2), run("PROPHET", 0.2)]
    assert decide(runs, CONFIG, 2_000).winner.model_type == "PERSISTENCE"
    assert decide(list(reversed(runs)), CONFIG, 2_000).winner.model_type == "PERSISTENCE"


def test_models_with_nan_or_inf_metrics_are_excluded():
    runs = [run("GRU", float("nan")), run("LSTM", float("inf")), run("PROPHET", 0.5), run("PERSISTENCE", 0.6)]
    assert [c.model_type for c in leaderboard(runs, CONFIG)] == ["PROPHET", "PERSISTENCE"]


def test_seasonal_naive_is_ranked_but_never_promoted():
    config = EvaluationConfig(expected_model_types=["SEASONAL_NAIVE", "GRU"])
    decision = decide([run("SEASONAL_NAIVE", 0.1), run("GRU", 0.3)], config, 2_000)
    assert decision.leaderboard[0].model_type == "SEASONAL_NAIVE"
    assert decision.winner.model_type == "GRU"


def test_a_better_model_that_cannot_be_served_is_explained_in_the_reason_and_the_leaderboard():
    decision = decide([run("PROPHET", 0.1), run("GRU", 0.3), run("PERSISTENCE", 0.4)], CONFIG, 1_000 + 600_000)
    assert decision.winner.model_type == "GRU"
    assert "PROPHET ranked higher but cannot be served" in decision.reason
    assert "GRU is the best servable model" in decision.reason
    prophet, gru, persistence = decision.leaderboard_records()
    assert prophet.servable is False and "no Prophet" in prophet.not_servable_because
    assert gru.servable is True and "not_servable_because" not in gru.to_json()
    assert persistence.servable is True


def test_a_servable_winner_at_the_top_adds_nothing_to_the_reason():
    decision = decide([run("GRU", 0.1), run("PROPHET", 0.3)], CONFIG, 1_000 + 600_000)
    assert "cannot be served" not in decision.reason
    assert [r.servable for r in decision.leaderboard_records()] == [True, False]


def test_an_unknown_model_type_is_not_servable_until_configured():
    decision = decide([run("TFT", 0.1), run("GRU", 0.3)], EvaluationConfig(expected_model_types=["GRU"]), 2_000)
    assert decision.leaderboard_records()[0].not_servable_because == "not listed in evaluation.promotable_model_types"


def test_a_retrained_model_type_is_represented_by_its_newest_finished_run():
    runs = [run("GRU", 0.5, start=1), run("GRU", 0.1, start=5), run("GRU", 0.0, status="FAILED", start=9)]
    assert latest_per_model_type(runs)["GRU"].run_id == "gru-5"


def test_nothing_servable_is_a_decision_without_a_winner():
    decision = decide([run("GRU", float("nan"))], EvaluationConfig(expected_model_types=["GRU"]), 2_000)
    assert decision.ready and decision.winner is None
    assert "no promotable model" in decision.reason


def test_prophet_is_ranked_but_promoted_only_when_configured():
    runs = [run("PROPHET", 0.1), run("GRU", 0.3)]
    default = EvaluationConfig(expected_model_types=["PROPHET", "GRU"])
    assert decide(runs, default, 2_000).winner.model_type == "GRU"
    allowed = default.model_copy(update={"promotable_model_types": ["PROPHET", "GRU"]})
    assert decide(runs, allowed, 2_000).winner.model_type == "PROPHET"


def _per_column_run(model_type: str, validation: dict[str, float], test: dict[str, float]) -> RunSummary:
    """A finished run with per-column RMSE (MAE equal, MSE its square) on validation and test."""
    metrics: dict[str, float] = {}
    for prefix, values in (("validation", validation), ("test", test)):
        for name, power in (("rmse", 1), ("mae", 1), ("mse", 2)):
            metrics[f"{prefix}_{name}"] = sum(v**power for v in values.values()) / len(values)
            metrics |= {f"{prefix}_{name}__{column}": v**power for column, v in values.items()}
    return RunSummary(f"{model_type.lower()}-run", model_type, "global", "FINISHED", metrics, 1, 2, None)


PER_COLUMN_RUNS = [
    _per_column_run("GRU", {"down": 0.1, "up": 0.5}, {"down": 0.08, "up": 1.3}),
    _per_column_run("LSTM", {"down": 0.2, "up": 0.4}, {"down": 0.09, "up": 1.2}),
    _per_column_run("PERSISTENCE", {"down": 0.3, "up": 0.3}, {"down": 0.1, "up": 0.1}),
    _per_column_run("PROPHET", {"down": 0.01, "up": 0.01}, {"down": 0.01, "up": 0.01}),
]


def test_each_column_goes_to_the_promotable_model_that_wins_it_on_validation() -> None:
    decision = decide(PER_COLUMN_RUNS, CONFIG, now_ms=2_000)
    assert decision.column_winners == {"down": "GRU", "up": "PERSISTENCE"}
    assert decision.winner is not None and decision.winner.model_type == "PERSISTENCE"


def test_a_column_tie_goes_to_the_simpler_model() -> None:
    runs = [_per_column_run(t, {"down": 0.2}, {"down": 0.2}) for t in ("LSTM", "GRU", "PERSISTENCE")]
    assert decide(runs, CONFIG, now_ms=2_000).column_winners == {"down": "PERSISTENCE"}


def test_runs_without_validation_metrics_have_no_column_winners() -> None:
    assert decide([run("GRU", 0.2), run("PERSISTENCE", 0.3)], CONFIG, now_ms=2_000).column_winners == {}


def test_the_leaderboard_shows_column_wins_and_rmse_relative_to_persistence() -> None:
    records = {r.model_type: r for r in decide(PER_COLUMN_RUNS, CONFIG, now_ms=2_000).leaderboard_records()}
    assert records["GRU"].column_wins == ["down"]
    assert records["PERSISTENCE"].column_wins == ["up"]
    assert records["LSTM"].column_wins == records["PROPHET"].column_wins == []
    assert records["GRU"].rmse_vs_persistence == pytest.approx({"down": 0.8, "up": 13.0})
    assert records["PERSISTENCE"].rmse_vs_persistence == {"down": 1.0, "up": 1.0}


def test_the_column_composite_is_scored_on_test_from_each_columns_winner() -> None:
    """GRU serves `down` (test RMSE 0.08), persistence `up` (0.1): the composite beats persistence alone."""
    decision = decide(PER_COLUMN_RUNS, CONFIG, now_ms=2_000)
    served = decision.column_composite(CONFIG.score_weights)
    weights = CONFIG.score_weights
    rmse, mae, mse = (0.08 + 0.1) / 2, (0.08 + 0.1) / 2, (0.08**2 + 0.1**2) / 2
    assert served.column_models == {"down": "GRU", "up": "PERSISTENCE"}
    assert served.score == pytest.approx(weights.rmse * rmse + weights.mae * mae + weights.mse * mse)
    assert served.score_vs_persistence < 1.0
    assert served.score_vs_champion == pytest.approx(served.score_vs_persistence)  # persistence is champion


def test_no_column_composite_without_column_winners() -> None:
    decision = decide([run("GRU", 0.2), run("PERSISTENCE", 0.3)], CONFIG, now_ms=2_000)
    assert decision.column_composite(CONFIG.score_weights).to_json() == {}

"""Eval's decision, as pure functions of a lineage's MLflow runs (so a restarted eval decides the same).

A lineage is ready when every expected model type has finished (or failed), or when the
timeout since its first run has passed; then the finished runs are ranked by the composite
score on the scaled test set, lower is better, with a deterministic tie-break. Until then the
decision names the interim winner: the best promotable model finished so far, served meanwhile
(`evaluation.promote_interim`), so the first forecast does not wait for the slowest model.

Each target column is also chosen on its own: the promotable model type with the lowest composite
score of that column on the validation split (persistence included, so a column no model forecasts
better than "the last value" shows it). The leaderboard shows which columns each model wins and each
column's test RMSE relative to persistence's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from flts.config import EvaluationConfig, ScoreWeights
from flts.models import types as model_types
from flts.records import ColumnComposite, LeaderboardEntry
from flts.scoring import composite_score
from flts.tracking import RunSummary

TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
# A tie goes to the simpler model; why a type ranked on the leaderboard is not served, unless
# evaluation.promotable_model_types lists it: both from the table of model types.
TIE_BREAK_ORDER = model_types.TIE_BREAK_ORDER
NOT_SERVABLE_BECAUSE = model_types.NOT_SERVABLE_BECAUSE


def not_servable_because(model_type: str, config: EvaluationConfig) -> str | None:
    """Why `model_type` cannot become champion (None: it can), as the leaderboard and /model-info say it."""
    if model_type in config.promotable_model_types:
        return None
    return NOT_SERVABLE_BECAUSE.get(model_type, "not listed in evaluation.promotable_model_types")


@dataclass(frozen=True)
class Candidate:
    model_type: str
    run_id: str
    score: float
    metrics: dict[str, float]
    not_servable_because: str | None = None

    @property
    def rank_key(self) -> tuple[float, int, str]:
        order = TIE_BREAK_ORDER.index(self.model_type) if self.model_type in TIE_BREAK_ORDER else len(TIE_BREAK_ORDER)
        return (self.score, order, self.run_id)

    def target_score(self, target: str, weights: ScoreWeights, prefix: str) -> float:
        return composite_score(self.metrics, weights, prefix=prefix, target=target)


@dataclass(frozen=True)
class Decision:
    ready: bool
    reason: str
    leaderboard: list[Candidate]
    winner: Candidate | None
    column_winners: dict[str, str] = field(default_factory=dict)
    interim: Candidate | None = None  # not ready: the best promotable model finished so far

    def leaderboard_records(self) -> list[LeaderboardEntry]:
        """The leaderboard as eval records it and the gateway and /model-info show it, best first: model type,
        run, score, whether it can be served (why not, when not), the target columns it wins (validation) and
        each column's test RMSE over persistence's."""
        persistence = next((c.metrics for c in self.leaderboard if c.model_type == "PERSISTENCE"), {})
        return [
            LeaderboardEntry(
                model_type=c.model_type,
                run_id=c.run_id,
                score=c.score,
                servable=c.not_servable_because is None,
                **({"not_servable_because": c.not_servable_because} if c.not_servable_because else {}),
                column_wins=[column for column, winner in self.column_winners.items() if winner == c.model_type],
                rmse_vs_persistence=_relative_rmse(c.metrics, persistence),
            )
            for c in self.leaderboard
        ]

    def column_composite(self, weights: ScoreWeights) -> ColumnComposite:
        """What inference serves with `inference.serve_column_winners` (flts.models.composite), scored on the test
        split like every model: each column's metrics are its winner's, the overall ones their means over the
        columns (as flts.scoring averages them). Empty while a column has no winner or a winner no metrics."""
        by_type = {c.model_type: c.metrics for c in self.leaderboard}
        metrics: dict[str, float] = {}
        for column, model_type in self.column_winners.items():
            for name in ("rmse", "mae", "mse"):
                key = f"test_{name}__{column}"
                if key not in by_type.get(model_type, {}):
                    return ColumnComposite()
                metrics[key] = by_type[model_type][key]
        if not metrics:
            return ColumnComposite()
        for name in ("rmse", "mae", "mse"):
            per_column = [metrics[f"test_{name}__{column}"] for column in self.column_winners]
            metrics[f"test_{name}"] = sum(per_column) / len(per_column)
        score = composite_score(metrics, weights)
        persistence = next((c.score for c in self.leaderboard if c.model_type == "PERSISTENCE"), None)
        return ColumnComposite(
            column_models=dict(self.column_winners),
            score=score,
            **({"score_vs_persistence": score / persistence} if persistence else {}),
            **({"score_vs_champion": score / self.winner.score} if self.winner and self.winner.score else {}),
        )


def _relative_rmse(metrics: dict[str, float], persistence: dict[str, float]) -> dict[str, float]:
    """Test RMSE over persistence's, per target column both runs have (persistence's RMSE above 0)."""
    prefix = "test_rmse__"
    return {
        key.removeprefix(prefix): value / persistence[key]
        for key, value in metrics.items()
        if key.startswith(prefix) and persistence.get(key, 0.0) > 0
    }


def column_winners(board: list[Candidate], config: EvaluationConfig) -> dict[str, str]:
    """Each target column's promotable model type with the lowest composite score of that column on the
    validation split; a tie goes to the simpler model. Columns in name order."""
    promotable = [c for c in board if c.model_type in config.promotable_model_types]
    prefix = "validation_rmse__"
    columns = sorted({key.removeprefix(prefix) for c in promotable for key in c.metrics if key.startswith(prefix)})
    winners: dict[str, str] = {}
    for column in columns:
        scored = [(c.target_score(column, config.score_weights, "validation"), c.rank_key[1:], c) for c in promotable]
        finite = [entry for entry in scored if math.isfinite(entry[0])]
        if finite:
            winners[column] = min(finite, key=lambda entry: entry[:2])[2].model_type
    return winners


def latest_per_model_type(runs: list[RunSummary]) -> dict[str, RunSummary]:
    """The run that speaks for each model type: its newest finished run, else its newest run."""
    chosen: dict[str, RunSummary] = {}
    for run in sorted(runs, key=lambda r: r.start_time_ms, reverse=True):
        current = chosen.get(run.model_type)
        if current is None or (current.status != "FINISHED" and run.status == "FINISHED"):
            chosen[run.model_type] = run
    return chosen


def score_vs_persistence(run_id: str, leaderboard: list[LeaderboardEntry]) -> float | None:
    """A run's score over its lineage's persistence score, from a recorded leaderboard: comparable across lineages
    (whose data and scales differ); None when either is not on it."""
    scores = {entry.run_id: entry.score for entry in leaderboard}
    persistence = next((entry.score for entry in leaderboard if entry.model_type == "PERSISTENCE"), None)
    if run_id not in scores or not persistence:
        return None
    return scores[run_id] / persistence


def leaderboard(runs: list[RunSummary], config: EvaluationConfig) -> list[Candidate]:
    """Finished runs with finite scores, best first; runs with NaN/inf metrics are left out."""
    candidates = [
        Candidate(
            run.model_type,
            run.run_id,
            composite_score(run.metrics, config.score_weights),
            run.metrics,
            not_servable_because(run.model_type, config),
        )
        for run in latest_per_model_type(runs).values()
        if run.status == "FINISHED"
    ]
    return sorted((c for c in candidates if math.isfinite(c.score)), key=lambda c: c.rank_key)


def decide(runs: list[RunSummary], config: EvaluationConfig, now_ms: int) -> Decision:
    latest = latest_per_model_type(runs)
    pending = sorted(
        t for t in config.expected_model_types if latest.get(t) is None or latest[t].status not in TERMINAL
    )
    board = leaderboard(runs, config)
    started_ms = min((r.start_time_ms for r in runs), default=now_ms)
    timed_out = (now_ms - started_ms) / 1000 >= config.decision_timeout_seconds
    columns = column_winners(board, config)
    winner = next((c for c in board if c.not_servable_because is None), None)
    if pending and not timed_out:
        return Decision(False, f"waiting for {', '.join(pending)}", board, None, columns, interim=winner)
    reason = "every expected model type finished" if not pending else f"timed out waiting for {', '.join(pending)}"
    if winner is None:
        reason += "; no promotable model finished with finite metrics"
    passed_over = [c.model_type for c in board[: board.index(winner) if winner else len(board)]]
    if passed_over:
        reason += f"; {', '.join(passed_over)} ranked higher but cannot be served (see the leaderboard)"
        if winner is not None:
            reason += f": {winner.model_type} is the best servable model"
    return Decision(True, reason, board, winner, columns)

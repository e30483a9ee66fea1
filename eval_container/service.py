"""Eval: consumes `model-training`, decides each lineage from its MLflow runs, promotes the winner.

Nothing is held in memory that MLflow and the promotion bucket do not already say: a sweep
thread re-derives every undecided lineage, so a restarted eval, or one that missed a message,
still promotes once the expected model types have finished or the timeout has passed.
Promotion = registry alias `champion` + history entry + `model-selected` + lineage pointer.
While expected models still train, the best promotable model finished so far is promoted as the interim
champion (its pointer says `interim`; no decision is recorded), so the first forecast is served seconds
after preprocessing (persistence) and upgraded as better models finish (`evaluation.promote_interim`).
Every decision is recorded in the lineage's `decision.json` (written last: its presence means the
lineage is decided, so a sweep neither repeats it nor logs it again). Promoting the same winner twice
is a no-op, and promotions are monotonic per identifier: the champion only moves to a lineage whose
data was uploaded later than the one it holds (a late run of an older lineage re-decides that lineage's
leaderboard but does not take the alias back).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

from flts.config import PipelineConfig, load_pipeline_config
from flts.evaluate import Candidate, Decision, decide, score_vs_persistence
from flts.kafka import MessageProducer
from flts.layout import champion_pointer_uri, decision_uri, history_prefix, history_uri
from flts.messages import ModelSelected, ModelTraining
from flts.observability import log_context
from flts.records import RECORD_VERSION, EvalDecision, Outcome, Promotion
from flts.runtime import run_consumer
from flts.settings import EvalSettings
from flts.storage import ObjectStore
from flts.tracking import RunSummary, Tracker, registered_model_name

log = logging.getLogger(__name__)


class Evaluator:
    def __init__(self, settings: EvalSettings, config: PipelineConfig) -> None:
        self.settings = settings
        self.config = config.evaluation
        self.tracker = Tracker(settings)
        self.store = ObjectStore(settings)
        self.producer = MessageProducer(settings)
        self._lock = threading.Lock()

    def pointer_uri(self, identifier: str, config_hash: str) -> str:
        return champion_pointer_uri(self.settings, identifier, config_hash)

    def decision_uri(self, identifier: str, config_hash: str) -> str:
        return decision_uri(self.settings, identifier, config_hash)

    def _pointer(self, identifier: str, config_hash: str) -> Promotion | None:
        uri = self.pointer_uri(identifier, config_hash)
        return Promotion.parse(self.store.get_json(uri), uri) if self.store.exists(uri) else None

    def _decision(self, identifier: str, config_hash: str) -> EvalDecision | None:
        uri = self.decision_uri(identifier, config_hash)
        return EvalDecision.parse(self.store.get_json(uri), uri) if self.store.exists(uri) else None

    def _record(self, identifier: str, config_hash: str, outcome: Outcome, decision: Decision, **extra: str) -> None:
        record = EvalDecision(
            version=RECORD_VERSION,
            outcome=outcome,
            reason=decision.reason,
            decided_at_ms=int(time.time() * 1000),
            **extra,
        )
        self.store.put_json(self.decision_uri(identifier, config_hash), record.to_json())

    def handle(self, event: ModelTraining) -> None:
        self.evaluate(event.config_hash, event.identifier)

    def evaluate(self, config_hash: str, identifier: str, runs: list[RunSummary] | None = None) -> Decision | None:
        with self._lock, log_context(config_hash=config_hash, identifier=identifier):
            runs = self._close_orphans(runs if runs is not None else self.tracker.lineage_runs(config_hash))
            previous = self._pointer(identifier, config_hash)
            final = previous if previous is not None and not previous.interim else None
            decided = self._decision(identifier, config_hash) or final
            if decided and all((r.end_time_ms or r.start_time_ms) <= decided.decided_at_ms for r in runs):
                return None
            decision = decide(runs, self.config, int(time.time() * 1000))
            if not decision.ready:
                log.debug("lineage not ready", extra={"reason": decision.reason})
                if decision.interim is not None and self.config.promote_interim:
                    self._promote_interim(config_hash, identifier, decision, decision.interim, previous)
                return decision
            if decision.winner is None:
                log.error("no model to promote", extra={"reason": decision.reason})
                self._record(identifier, config_hash, "no_winner", decision)
                return decision
            holder = self._newer_champion(identifier, decision.winner.run_id)
            if holder is not None:
                log.warning(
                    "not promoted: the champion belongs to a lineage uploaded later",
                    extra={"champion_config_hash": holder.config_hash, "champion_run_id": holder.run_id},
                )
                self._record(identifier, config_hash, "superseded", decision, champion_config_hash=holder.config_hash)
                return decision
            self._promote(config_hash, identifier, decision, decision.winner, previous)
            self._record(identifier, config_hash, "promoted", decision, run_id=decision.winner.run_id)
            return decision

    def _close_orphans(self, runs: list[RunSummary]) -> list[RunSummary]:
        """RUNNING runs whose trainer stopped beating (killed with its process) become KILLED.

        `runs` may be a snapshot taken long before (a sweep reads every lineage first): a run that looks orphaned is
        read again just before it is closed, and one that finished or beat meanwhile is left as it now is."""
        limit_ms = self.config.orphan_after_seconds * 1000
        closed = []
        for run in runs:
            if run.status == "RUNNING" and _silent_ms(run) > limit_ms:
                run = self.tracker.run_summary(run.run_id)
            if run.status == "RUNNING" and (silent_ms := _silent_ms(run)) > limit_ms:
                now_ms = int(time.time() * 1000)
                reason = f"orphaned: no trainer heartbeat for {silent_ms / 1000:.0f} s (its process died)"
                self.tracker.fail_run(run.run_id, reason, status="KILLED")
                log.warning("closed an orphaned run", extra={"run_id": run.run_id, "model_type": run.model_type})
                run = replace(run, status="KILLED", error=reason, end_time_ms=now_ms)
            closed.append(run)
        return closed

    def _newer_champion(self, identifier: str, winner_run_id: str) -> RunSummary | None:
        """The current champion's run, when its lineage's data was uploaded after the winner's."""
        current = self.tracker.champion(identifier)
        if current is None or current.run_id == winner_run_id:
            return None
        holder, winner = self.tracker.run_summary(current.run_id), self.tracker.run_summary(winner_run_id)
        if holder.config_hash != winner.config_hash and holder.lineage_order > winner.lineage_order:
            return holder
        return None

    def _promote_interim(
        self, config_hash: str, identifier: str, decision: Decision, interim: Candidate, previous: Promotion | None
    ) -> None:
        """Serve the best model finished so far, unless it is served already or a later lineage holds the alias."""
        if previous is not None and previous.run_id == interim.run_id:
            return
        if self._newer_champion(identifier, interim.run_id) is not None:
            return  # the final decision records it as superseded
        if self._better_final_champion(identifier, interim, decision) is not None:
            return  # served until this lineage's own final decision
        self._promote(config_hash, identifier, decision, interim, previous, interim=True)

    def _better_final_champion(self, identifier: str, interim: Candidate, decision: Decision) -> Promotion | None:
        """The record of the identifier's champion when it is another lineage's final choice that scored as well as
        `interim` or better, each relative to its own lineage's persistence (the lineages' data differ). A re-upload
        must not serve a worse model until its own decision: only a final decision replaces a final champion."""
        current = self.tracker.champion(identifier)
        if current is None or current.run_id == interim.run_id:
            return None
        holder = self.tracker.run_summary(current.run_id)
        record = self._pointer(identifier, holder.config_hash)
        if record is None or record.interim or record.run_id != current.run_id:
            return None
        served = score_vs_persistence(current.run_id, record.leaderboard)
        candidate = score_vs_persistence(interim.run_id, decision.leaderboard_records())
        return record if served is None or candidate is None or served <= candidate else None

    def _promote(
        self,
        config_hash: str,
        identifier: str,
        decision: Decision,
        winner: Candidate,
        previous: Promotion | None,
        interim: bool = False,
    ) -> None:
        version = self.tracker.model_version_of_run(identifier, winner.run_id)
        if version is None:
            raise RuntimeError(f"run {winner.run_id} has no registered model version")
        current = self.tracker.champion(identifier)
        already = current is not None and str(current.version) == version
        settled = previous is not None and not previous.interim
        if already and settled and previous.model_version == version:
            log.info("the winner is already this lineage's promoted champion", extra={"model_version": version})
            return
        if not already:
            self.tracker.set_champion(identifier, version)
        now = datetime.now(UTC)
        record = Promotion(
            version=RECORD_VERSION,
            config_hash=config_hash,
            identifier=identifier,
            model_type=winner.model_type,
            run_id=winner.run_id,
            registered_model=registered_model_name(self.settings, identifier),
            model_version=version,
            score=winner.score,
            reason=f"interim, the best model finished so far ({decision.reason})" if interim else decision.reason,
            **({"interim": True} if interim else {}),
            decided_at=now.isoformat(),
            decided_at_ms=int(now.timestamp() * 1000),
            leaderboard=decision.leaderboard_records(),
            column_winners=decision.column_winners,
            column_composite=decision.column_composite(self.config.score_weights),
        )
        if not self._in_history(identifier, config_hash, record):
            self.store.put_json(history_uri(self.settings, identifier, now, config_hash), record.to_json())
        pointer = self.pointer_uri(identifier, config_hash)
        self.store.put_json(pointer, record.to_json())  # before the event: a replica that hears it reads this record
        self.producer.publish(
            self.settings.topic_model_selected,
            ModelSelected(
                config_hash=config_hash,
                identifier=identifier,
                model_type=winner.model_type,
                run_id=winner.run_id,
                registered_model=record.registered_model,
                model_version=version,
                score=winner.score,
                pointer=pointer,
            ),
        )
        log.info(
            "interim champion promoted" if interim else "champion promoted",
            extra={"model_type": winner.model_type, "model_version": version, "run_id": winner.run_id},
        )

    def _in_history(self, identifier: str, config_hash: str, record: Promotion) -> bool:
        """Whether the lineage's latest history entry is this very promotion (a retry after the pointer or the event
        failed writes it once): same run, version and interim flag."""
        suffix = f"-{config_hash[:12]}.json"
        keys = sorted(
            o["Key"]
            for o in self.store.list(self.settings.bucket_promotion, history_prefix(identifier))
            if o["Key"].endswith(suffix)
        )
        if not keys:
            return False
        uri = f"s3://{self.settings.bucket_promotion}/{keys[-1]}"
        latest = Promotion.parse(self.store.get_json(uri), uri)
        return (latest.run_id, latest.model_version, latest.interim) == (
            record.run_id,
            record.model_version,
            record.interim,
        )

    def sweep(self) -> None:
        """Decide every undecided lineage MLflow knows of (restarts, missed messages, timeouts)."""
        for config_hash, runs in self.tracker.recent_lineages().items():
            try:
                self.evaluate(config_hash, runs[0].identifier, runs)
            except Exception:
                log.exception("sweep failed for a lineage", extra={"config_hash": config_hash})

    def sweep_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.decision_poll_seconds):
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed")


def _silent_ms(run: RunSummary) -> int:
    """How long the run's trainer has not beaten (since it started, if it never did)."""
    return int(time.time() * 1000) - (run.heartbeat_ms or run.start_time_ms)


def main() -> None:
    settings = EvalSettings()
    stop = threading.Event()

    def make_handler():
        evaluator = Evaluator(settings, load_pipeline_config(settings.pipeline_config))
        threading.Thread(target=evaluator.sweep_forever, args=(stop,), name="eval-sweep", daemon=True).start()
        return evaluator.handle

    try:
        run_consumer(settings, settings.topic_model_training, ModelTraining, make_handler)
    finally:
        stop.set()


if __name__ == "__main__":
    main()

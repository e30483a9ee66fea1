"""The champion follower: every inference replica hears of every promotion on `model-selected`.

Each replica follows the topic in a consumer group of its own, from its end (older promotions are found by reading
the registry's aliases, `champions.ChampionLoader.reconcile`); a new group at each start, so a follower started
again after a stall never resumes the stalled member's offsets. What an event installs is the loader's to decide.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable

from flts.consumers import Supervisor
from flts.kafka import ConsumerLoop
from flts.messages import ModelSelected
from flts.settings import InferenceSettings


class ChampionFollower(Supervisor):
    """Hands each `model-selected` event to ``on_selected`` until ``stop``; started again when it stalls or fails."""

    def __init__(
        self, settings: InferenceSettings, on_selected: Callable[[ModelSelected], None], stop: threading.Event
    ) -> None:
        super().__init__("champion follower", self.follow, stop)
        self.settings = settings
        self.on_selected = on_selected
        self.loop: ConsumerLoop[ModelSelected] | None = None

    def follow(self, stop: threading.Event) -> None:
        group = f"{self.settings.consumer_group}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.loop = ConsumerLoop(
            self.settings,
            self.settings.topic_model_selected,
            ModelSelected,
            self.on_selected,
            group_id=group,
            consumer_overrides={"auto.offset.reset": "latest"},
            until=stop,
        )
        self.loop.run()

    def reassigned(self) -> bool:
        """Whether the follower was (re)assigned its partition since the last call (it started, the broker came
        back): a promotion published while it was not following is found only in the registry."""
        loop = self.loop
        if loop is None or not loop.assigned.is_set():
            return False
        loop.assigned.clear()
        return True

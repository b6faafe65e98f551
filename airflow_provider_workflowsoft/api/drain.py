"""The stop rules of a drain: how many new integration instances one sensor, trigger or batch run takes.

Pure code, no I/O and no Airflow, so the sensor (and every DAG file importing it) stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_provider_workflowsoft.api.protocol import instance_key


class Drain:
    """The stop rules of one drain, shared by the sensor, the trigger and the batch worker.

    A drain takes instances until ``limit`` is reached, the server answers "nothing new", or the server
    repeats an instance this drain already has (a server that hands out the oldest open instance
    until it is completed would otherwise make the drain loop). Ids in ``skip`` (instances another run
    is working on) also end the drain, without being taken.

    :param limit: the most instances to take (already-taken instances passed in ``taken`` count)
    :param taken: instances already taken (for example claims re-offered from the ledger)
    :param skip: instance ids not to take
    :param keep: which answers this poller keeps (the claims' routing rule, ``ClaimsLedger.keeps``); an answer it
        does not keep is not taken, goes to :attr:`passed` (the caller records it as put back before the next
        poll) and the drain polls on. ``None``: every answer is kept
    """

    def __init__(self, limit: int, taken: Iterable[dict[str, Any]] = (), skip: Iterable[Any] = (),
                 keep: Callable[[Mapping[str, Any]], bool] | None = None) -> None:
        self.limit = max(1, int(limit))
        self.instances: list[dict[str, Any]] = list(taken)
        self.seen = {instance_key(i) for i in self.instances}
        self.skip = {instance_key(i) for i in skip}
        self.keep = keep
        #: answers received and not kept (``keep``), waiting to be passed on by the caller
        self.passed: list[dict[str, Any]] = []
        self.finished = len(self.instances) >= self.limit
        self.reason = "limit" if self.finished else ""

    def offer(self, instance: dict[str, Any] | None) -> bool:
        """Take a poll answer; ``True`` when it was taken (and the drain may poll again if not finished)."""
        if instance is None:
            if not self.finished:
                self.finished, self.reason = True, "empty"
            return False
        if self.finished:
            # Concurrent pollers: an answer that arrives after another poller ended the drain was still
            # handed out by the server, so it is taken (never dropped) unless already seen or held elsewhere.
            iid = instance_key(instance)
            if iid in self.seen or iid in self.skip:
                return False
            self.seen.add(iid)
            if self.keep is not None and not self.keep(instance):
                self.passed.append(dict(instance))
                return False
            self.instances.append(dict(instance))
            return True
        if instance is None:
            self.finished, self.reason = True, "empty"
            return False
        iid = instance_key(instance)
        if iid in self.seen:
            self.finished, self.reason = True, "repeated"
            return False
        if iid in self.skip:
            self.finished, self.reason = True, "held elsewhere"
            return False
        self.seen.add(iid)
        if self.keep is not None and not self.keep(instance):
            self.passed.append(dict(instance))  # someone else's: put back by the caller, and poll on
            return False
        self.instances.append(dict(instance))
        if len(self.instances) >= self.limit:
            self.finished, self.reason = True, "limit"
        return True

    def take_passed(self) -> list[dict[str, Any]]:
        """Return the answers not kept since the last call (to pass on), and forget them."""
        passed, self.passed = self.passed, []
        return passed

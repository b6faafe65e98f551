"""Claims: which integration instances a task instance received and has not completed yet.

A poll hands an instance out (on some servers only once), so whoever polls records it as *claimed* before
doing anything else with it, and records it *done* once its step is completed. A later run offers again
every claim that is not done and older than a lease (``reclaim_after``), and leaves alone the claims
other runs hold within their lease.

Layout: **one record per task instance** (its owner), in one Airflow Variable
``workflowsoft.claims.<conn id>.<dag>.<task>.<map index>.<hash>``::

    {"owner": "dag/run/task/-1", "updated_at": "...", "closed": false,
     "claims": {"5001": {"step": 11, "process_instance_id": 91, "claimed_at": "...",
                         "first_claimed_at": "...", "offers": 1}},
     "done": {"5002": {"completed_at": "..."}}}

Why this shape:

* a record has a single writer (its task instance, whose tries run one after the other), so the lack of a
  compare-and-set in Airflow's stores never loses an update;
* the instances polled in the same moment are claimed in one write of that record (group commit), and
  done marks ride along with the next write: far fewer round trips than one Variable per instance;
* readers list the records by prefix (``Variable.keys``) and see every claim of the connection;
* a record with nothing open is deleted by its owner, and a *closed* record (its owner will not write it
  again) or one older than the lease is tidied by the next reader: the Variables page holds a few
  records per integration step, not one per instance. A done mark that no visible claim needs any more is
  kept for one lease after its completion (an asset watcher, whose record lives in its Asset's state store,
  reads it within its poll interval).

``done`` holds an instance only while another record (the sensor's, for example) still claims it; an
instance this record claimed itself simply leaves ``claims``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_provider_workflowsoft.api.protocol import coerce_id
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.stores import KeyValueStore, VariableStore

log = logging.getLogger(__name__)

CLAIMED = "claimed"
DONE = "done"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _record(raw: Any, owner: str = "") -> dict[str, Any]:
    """A record read from the store, in shape (anything else read as empty)."""
    record = raw if isinstance(raw, dict) else {}
    claims: dict[str, Any] = record["claims"] if isinstance(record.get("claims"), dict) else {}
    done: dict[str, Any] = record["done"] if isinstance(record.get("done"), dict) else {}
    return {
        "owner": record.get("owner", owner),
        "updated_at": record.get("updated_at"),
        "closed": bool(record.get("closed", False)),
        "claims": {str(k): dict(v) for k, v in claims.items() if isinstance(v, dict)},
        "done": {str(k): dict(v) if isinstance(v, dict) else {} for k, v in done.items()},
    }


def _id(value: Any) -> int | str:
    return coerce_id(value)


def _instance(iid: str, claim: Mapping[str, Any], *, reclaimed: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"IntegrationInstanceId": _id(iid), "ProcessInstanceId": claim.get("process_instance_id")}
    if reclaimed:
        item["reclaimed"] = True
    return item


class ClaimsLedger:
    """The claims of one task instance (``owner``) on one Workflowsoft connection, and what it sees of the
    others. Thread-safe: a batch run's pollers and workers share one ledger.

    :param conn_id: the Workflowsoft connection id (instance ids are unique per tenant)
    :param store: where records live (Airflow Variables by default)
    :param owner: the task instance writing (see :func:`~.naming.owner_from_context`)
    :param clock: the current time (tests inject one)
    :param own_store: where this owner's own record lives when not among the others' (an asset watcher keeps
        it in its Asset's state store); the others' records are always read from ``store``
    """

    def __init__(
        self,
        conn_id: str,
        store: KeyValueStore | None = None,
        *,
        owner: str = "",
        clock: Callable[[], dt.datetime] = _now,
        own_store: KeyValueStore | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.store: KeyValueStore = store if store is not None else VariableStore()
        self.own_store: KeyValueStore = own_store if own_store is not None else self.store
        self.owner = owner
        self.clock = clock
        self.prefix = naming.claims_prefix(conn_id)
        self.key = naming.claims_key(conn_id, owner)
        self._mine: dict[str, Any] | None = None
        self._stored = False  # whether our record exists in the store
        self._lock = threading.RLock()

    # -- our own record ----------------------------------------------------------------------------

    def _own(self) -> dict[str, Any]:
        if self._mine is None:
            raw = self.own_store.get(self.key)
            self._stored = isinstance(raw, dict)
            self._mine = _record(raw, self.owner)
            self._mine["owner"] = self.owner
            self._mine["closed"] = False
        return self._mine

    def _write(self) -> None:
        """One round trip: the whole record (or its deletion once nothing in it matters any more)."""
        mine = self._own()
        if not mine["claims"] and not mine["done"]:
            if self._stored:
                self.own_store.delete(self.key)
                self._stored = False
            return
        mine["updated_at"] = _iso(self.clock())
        self.own_store.set(self.key, mine)
        self._stored = True

    def own_claim(self, instance_id: Any) -> dict[str, Any] | None:
        """This task instance's open claim of an instance (read once per ledger object)."""
        with self._lock:
            claim = self._own()["claims"].get(str(_id(instance_id)))
            return dict(claim) if claim else None

    def own_state(self, instance_id: Any) -> str | None:
        """``"claimed"``, ``"done"`` (as recorded by this task instance) or ``None``."""
        with self._lock:
            iid = str(_id(instance_id))
            mine = self._own()
            if iid in mine["claims"]:
                return CLAIMED
            return DONE if iid in mine["done"] else None

    def claim(self, integration_diagram_id: Any, instances: Iterable[Mapping[str, Any]]) -> None:
        """Record ``instances`` (poll answers) as claimed by this task instance: one write for all of them."""
        instances = list(instances)
        if not instances:
            return
        with self._lock:
            mine = self._own()
            now = _iso(self.clock())
            for instance in instances:
                iid = str(_id(instance))
                previous = mine["claims"].get(iid, {})
                mine["claims"][iid] = {
                    "step": integration_diagram_id,
                    "process_instance_id": instance.get("ProcessInstanceId", previous.get("process_instance_id")),
                    "claimed_at": now,
                    "first_claimed_at": instance.get("first_claimed_at") or previous.get("first_claimed_at", now),
                    "offers": int(instance.get("offers") or previous.get("offers", 0)) + 1,
                }
                if instance.get("shared") or previous.get("shared"):
                    # another record may still claim it: its completion must leave a done mark
                    mine["claims"][iid]["shared"] = True
            self._write()

    def mark_done(self, completed: Mapping[Any, Any] | Iterable[Any], *, write: bool = True) -> None:
        """Record instances as completed. ``write=False`` keeps the marks for the next write (a lost done
        mark costs only a re-offer, which the completion answers as "already completed")."""
        ids = list(completed.keys() if isinstance(completed, Mapping) else completed)
        if not ids:
            return
        with self._lock:
            mine = self._own()
            now = _iso(self.clock())
            for instance_id in ids:
                iid = str(_id(instance_id))
                claim = mine["claims"].pop(iid, None)
                if claim is None or claim.get("shared"):
                    mine["done"][iid] = {"completed_at": now}  # another record claims it too: tell its readers
            if write:
                self._write()

    def flush(self) -> None:
        """Write what :meth:`mark_done` kept back."""
        with self._lock:
            if self._mine is not None:
                self._write()

    def close(self) -> None:
        """This task instance will not write its record again: readers may tidy it as soon as it is
        resolved. Deletes the record when nothing in it matters any more."""
        with self._lock:
            mine = self._own()
            mine["closed"] = True
            self._write()

    # -- what everyone holds -----------------------------------------------------------------------

    def claimed_steps(self, instance_ids: Iterable[Any]) -> dict[int | str, Any]:
        """The integration step of each instance's newest open claim, whoever holds it (for instances handed
        over without their step, so that their new claim is offered again like the old one)."""
        wanted = {str(_id(i)) for i in instance_ids}
        newest: dict[str, tuple[str, Any]] = {}
        with self._lock:
            for record in self.read_all().values():
                for iid, claim in record["claims"].items():
                    at = str(claim.get("claimed_at") or "")
                    if iid in wanted and claim.get("step") is not None and (iid not in newest or at > newest[iid][0]):
                        newest[iid] = (at, claim["step"])
        return {_id(iid): step for iid, (_at, step) in newest.items()}

    def read_all(self) -> dict[str, dict[str, Any]]:
        """Every claims record of this connection: one listing, then one read per record."""
        records: dict[str, dict[str, Any]] = {}
        for key in self.store.keys(self.prefix):
            if key == self.key:
                records[key] = self._own()
                continue
            raw = self.store.get(key)
            if isinstance(raw, dict):
                records[key] = _record(raw)
        if self.own_store is not self.store:  # our record is not among the listed ones
            records[self.key] = self._own()
        return records

    def prepare_drain(
        self, integration_diagram_id: Any, reclaim_after: dt.timedelta | None, limit: int,
        *, own_at_once: bool = True,
    ) -> tuple[list[dict[str, Any]], list[int | str]]:
        """Before polling a step: the instances to offer again and the ids to leave alone.

        Offered again (up to ``limit``): this task instance's own open claims (an earlier try died), then
        other records' open claims older than ``reclaim_after``; they are claimed by this task instance in
        one write before this returns. Left alone: open claims other runs hold within their lease. Records
        whose claims are all resolved are tidied on the way.

        ``own_at_once=False`` (an asset watcher, whose own claims are handed to DAG runs it cannot see): its
        own open claims are offered again only once their lease is over, like anyone else's, and are left
        alone until then.
        """
        with self._lock:
            records = self.read_all()
            mine = records[self.key] = self._own()  # also when it is not stored yet (tidy sees our claims)
            done = {iid for record in records.values() for iid in record["done"]}
            now = self.clock()
            # An instance's lease runs from its newest claim, whoever holds it: a stale claim in one
            # record does not make an instance another run took over (within its lease) free again.
            latest: dict[str, dt.datetime] = {}
            for record in records.values():
                for iid, claim in record["claims"].items():
                    at = parse_time(claim.get("claimed_at")) or now
                    if iid not in latest or at > latest[iid]:
                        latest[iid] = at
            offered: list[dict[str, Any]] = []
            skip: list[int | str] = []
            step = str(integration_diagram_id)
            for iid, claim in mine["claims"].items():
                if str(claim.get("step")) != step or iid in done:
                    continue
                if not own_at_once and not (reclaim_after is not None and now - latest[iid] >= reclaim_after):
                    skip.append(_id(iid))  # handed to a run within its lease
                elif len(offered) < limit:
                    offered.append({**_instance(iid, claim, reclaimed=True), "offers": claim.get("offers", 1),
                                    "first_claimed_at": claim.get("first_claimed_at")})
            held = {i["IntegrationInstanceId"] for i in offered}
            for key, record in records.items():
                if key == self.key:
                    continue
                for iid, claim in record["claims"].items():
                    if str(claim.get("step")) != step or iid in done or _id(iid) in held or iid in mine["claims"]:
                        continue
                    expired = reclaim_after is not None and now - latest[iid] >= reclaim_after
                    if expired and len(offered) < limit:
                        offered.append({**_instance(iid, claim, reclaimed=True), "offers": claim.get("offers", 1),
                                        "first_claimed_at": claim.get("first_claimed_at"), "shared": True})
                        held.add(_id(iid))
                        log.warning("Re-offering integration instance %s: claimed by %s at %s and not completed",
                                    iid, record.get("owner"), claim.get("claimed_at"))
                    elif not expired and _id(iid) not in skip:
                        skip.append(_id(iid))
            if offered:
                self.claim(integration_diagram_id, offered)
            self._tidy(records, done, reclaim_after)
            return [{k: v for k, v in i.items() if k not in ("offers", "first_claimed_at", "shared")}
                    for i in offered], skip

    def _tidy(self, records: dict[str, dict[str, Any]], done: set[str], lease: dt.timedelta | None) -> None:
        """Drop what no longer matters from records whose owners will not write them again.

        A record may be rewritten or deleted by another task instance only when it is *closed* or
        older than the lease: its owner then writes it no more, so no claim can be lost."""
        now = self.clock()
        mine = self._own()

        def quiet(record: dict[str, Any]) -> bool:
            if record["closed"]:
                return True
            updated = parse_time(record.get("updated_at"))
            return lease is not None and updated is not None and now - updated >= lease

        # Our own claims that someone else completed are resolved: dropped and written first, so that the
        # done marks they rested on can go without ever leaving the claim unresolved in between.
        resolved_own = [iid for iid in mine["claims"] if iid in done]
        if resolved_own:
            for iid in resolved_own:
                mine["claims"].pop(iid)
            self._write()
        # A claim is resolved when some record has it done, or when a newer claim of it exists elsewhere.
        newest: dict[str, tuple[str, str]] = {}
        for key, record in records.items():
            for iid, claim in record["claims"].items():
                at = str(claim.get("claimed_at") or "")
                if iid not in newest or at > newest[iid][1]:
                    newest[iid] = (key, at)
        still_claimed: set[str] = set()
        for key, record in records.items():
            if key == self.key:
                still_claimed.update(i for i in record["claims"] if i not in done)
                continue
            kept = {i: c for i, c in record["claims"].items() if i not in done and newest[i][0] == key}
            if quiet(record) and kept != record["claims"]:
                record["claims"] = kept
                self._rewrite(key, record)
            still_claimed.update(record["claims"])  # a record we may not touch keeps its claims
        def stale(mark: Mapping[str, Any]) -> bool:
            # A done mark no visible record needs is kept for one lease after the completion: its reader may be
            # an asset watcher, whose claims record (in its Asset's state store) no Variables reader can see.
            done_at = parse_time(mark.get("completed_at"))
            return lease is None or done_at is None or now - done_at >= lease

        for key, record in records.items():
            unneeded = [i for i in record["done"] if i not in still_claimed and stale(record["done"][i])]
            if not unneeded:
                continue
            if key == self.key:
                for iid in unneeded:  # persisted with our next write
                    mine["done"].pop(iid, None)
            elif quiet(record):
                for iid in unneeded:
                    record["done"].pop(iid, None)
                self._rewrite(key, record)
        # A claim taken over from a record that no longer holds it is ours alone: its completion needs no
        # done mark for others to read (persisted with our next write).
        held_elsewhere = {i for key, record in records.items() if key != self.key for i in record["claims"]}
        for iid, claim in mine["claims"].items():
            if claim.get("shared") and iid not in held_elsewhere:
                claim.pop("shared")

    def _rewrite(self, key: str, record: dict[str, Any]) -> None:
        if record["claims"] or record["done"]:
            self.store.set(key, record)
        else:
            self.store.delete(key)

    def list_claims(self, integration_diagram_id: Any = None, *, include_done: bool = False) -> list[dict[str, Any]]:
        """Open claims (and, with ``include_done``, done marks) of one step or of every step, newest
        claim per instance, each as ``{"integration_instance_id", "state", "owner", "step", ...}``."""
        with self._lock:
            records = self.read_all()
        done = {iid: (record["owner"], mark) for record in records.values() for iid, mark in record["done"].items()}
        out: dict[str, dict[str, Any]] = {}
        for record in records.values():
            for iid, claim in record["claims"].items():
                if integration_diagram_id is not None and str(claim.get("step")) != str(integration_diagram_id):
                    continue
                if iid in done and not include_done:
                    continue
                entry = {"integration_instance_id": _id(iid), "state": DONE if iid in done else CLAIMED,
                         "owner": record["owner"], "integration_diagram_id": claim.get("step"), **claim}
                entry.pop("step", None)
                if iid not in out or str(entry.get("claimed_at")) > str(out[iid].get("claimed_at")):
                    out[iid] = entry
        if include_done:
            for iid, (owner, mark) in done.items():
                out.setdefault(iid, {"integration_instance_id": _id(iid), "state": DONE, "owner": owner, **mark})
        return sorted(out.values(), key=lambda e: str(e["integration_instance_id"]))

    def release(self, instance_ids: Iterable[Any]) -> list[int | str]:
        """Forget claims (the instances will not be offered again), whoever holds them. Returns the ids
        released. A user's decision: it rewrites other task instances' records."""
        wanted = {str(_id(i)) for i in instance_ids}
        released: set[str] = set()
        with self._lock:
            records = self.read_all()
            for key, record in records.items():
                hit = wanted & set(record["claims"])
                if not hit:
                    continue
                for iid in hit:
                    record["claims"].pop(iid)
                released |= hit
                if key == self.key:
                    self._write()
                else:
                    self._rewrite(key, record)
        return sorted((_id(i) for i in released), key=str)


__all__ = ["CLAIMED", "DONE", "ClaimsLedger", "parse_time"]

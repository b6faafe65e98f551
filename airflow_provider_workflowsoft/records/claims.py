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

**Claims before hand-over** (several pollers of one step, mapped batch workers): after its claim write, and before
anything works on an instance, a poller reads the other records and leaves to them whatever they hold (claimed
within the lease, or done) (:meth:`ClaimsLedger.contested`, :meth:`ClaimsLedger.yield_claims`). With no
compare-and-set, this read after every claim write is what makes it safe: of two pollers that claimed one instance,
the second to write reads the first one's claim; when both wrote before either read, both step back and the
instance is offered again. Skipping the read when the last listing showed no other record is not safe (a record
written after that listing would go unseen), so its cost stays one listing per group commit.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.api.protocol import blank, coerce_id, id_value
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.stores import KeyValueStore, VariableStore

log = logging.getLogger(__name__)

CLAIMED = "claimed"
DONE = "done"
PARKED = "parked"
#: The key of a record's waits: ``{"<step>:<process instance>": {"step", "process_instance_id", "since", "seen_at"}}``
WAITS = "waits"


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


def read_record(raw: Any, owner: str = "") -> dict[str, Any]:
    """Return a record read from the store, in shape (anything else read as empty)."""
    record = raw if isinstance(raw, dict) else {}
    claims: dict[str, Any] = record["claims"] if isinstance(record.get("claims"), dict) else {}
    done: dict[str, Any] = record["done"] if isinstance(record.get("done"), dict) else {}
    parked: dict[str, Any] = record["parked"] if isinstance(record.get("parked"), dict) else {}
    record_out: dict[str, Any] = {
        "owner": record.get("owner", owner),
        "updated_at": record.get("updated_at"),
        "closed": bool(record.get("closed", False)),
        "claims": {str(k): dict(v) for k, v in claims.items() if isinstance(v, dict)},
        "done": {str(k): dict(v) if isinstance(v, dict) else {} for k, v in done.items()},
        "parked": {str(k): dict(v) for k, v in parked.items() if isinstance(v, dict)},
    }
    if isinstance(record.get("polling"), dict):
        record_out["polling"] = dict(record["polling"])
    if isinstance(record.get(WAITS), dict):
        record_out[WAITS] = {str(k): dict(v) for k, v in record[WAITS].items() if isinstance(v, dict)}
    return record_out


def lease_start(claim: Mapping[str, Any]) -> dt.datetime | None:
    """When a claim's lease runs from: its claim, or its last renewal by a live holder (:meth:`ClaimsLedger.renew`)."""
    times = [t for t in (parse_time(claim.get("claimed_at")), parse_time(claim.get("renewed_at"))) if t is not None]
    return max(times) if times else None


def _instance(iid: str, claim: Mapping[str, Any], *, reclaimed: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"IntegrationInstanceId": coerce_id(iid),
                            "ProcessInstanceId": claim.get("process_instance_id")}
    if reclaimed:
        item["reclaimed"] = True
    return item


class ClaimsLedger:
    """The claims of one task instance (``owner``) on one Workflowsoft connection, and what it sees of the others.

    Thread-safe: a batch run's pollers and workers share one ledger.

    :param conn_id: the Workflowsoft connection id (instance ids are unique per tenant)
    :param store: where records live (Airflow Variables by default)
    :param owner: the task instance writing (see :func:`~.naming.owner_from_context`)
    :param clock: the current time (tests inject one)
    :param own_store: where this owner's own record lives when not among the others' (an asset watcher keeps
        it in its Asset's state store); the others' records are always read from ``store``
    :param ack: the ack slot this owner's new claims name (an asset watcher where its triggerer lists no Variables:
        the slot of the event being drained, see :func:`~.naming.ack_key`)
    """

    def __init__(
        self,
        conn_id: str,
        store: KeyValueStore | None = None,
        *,
        owner: str = "",
        clock: Callable[[], dt.datetime] = _now,
        own_store: KeyValueStore | None = None,
        ack: str | None = None,
    ) -> None:
        self.conn_id = conn_id
        self.ack = ack
        self._mirrored: set[str] = set()  # the ack slots this ledger wrote (see _mirror)
        self.store: KeyValueStore = store if store is not None else VariableStore()
        self.own_store: KeyValueStore = own_store if own_store is not None else self.store
        self.owner = owner
        self.clock = clock
        self.prefix = naming.claims_prefix(conn_id)
        self.key = naming.claims_key(conn_id, owner)
        self._mine: dict[str, Any] | None = None
        self._stored = False  # whether our record exists in the store
        self._lock = threading.RLock()
        #: ids parked by the last :meth:`prepare_drain`
        self.parked: list[int | str] = []
        #: ids the last :meth:`prepare_drain` took over and then left to another drain that took them too
        self.yielded: list[int | str] = []
        #: traces of drains killed while polling, found (and cleared) by the last :meth:`prepare_drain`
        self.interrupted: list[dict[str, Any]] = []
        self._last_records: dict[str, dict[str, Any]] | None = None  # what the last prepare_drain read
        #: the step's live waits read by the last :meth:`prepare_drain` (process instance -> waiting owner)
        self.waits: dict[str, str] = {}
        self._waiting_for: str | None = None

    # -- our own record ----------------------------------------------------------------------------

    def _own(self) -> dict[str, Any]:
        if self._mine is None:
            raw = self.own_store.get(self.key)
            self._stored = isinstance(raw, dict)
            self._mine = read_record(raw, self.owner)
            self._mine["owner"] = self.owner
            self._mine["closed"] = False
        return self._mine

    def _write(self) -> None:
        """One round trip: the whole record (or its deletion once nothing in it matters any more)."""
        mine = self._own()
        if not (mine["claims"] or mine["done"] or mine["parked"] or mine.get("polling") or mine.get(WAITS)):
            if self._stored:
                self.own_store.delete(self.key)
                self._stored = False
            self._mirror(mine)  # the slots it mirrored into go with it
            return
        mine["updated_at"] = _iso(self.clock())
        self.own_store.set(self.key, mine)
        self._stored = True
        self._mirror(mine)

    def _mirror(self, mine: dict[str, Any]) -> None:
        """Copy this record's claims and done marks of instances an event named an ack slot for into that slot.

        **The acknowledgement rule** (an asset watcher whose triggerer lists no Variables, Airflow 3.1): the watcher
        names one ack slot per event (``"ack"`` in each instance it hands out); a run that takes them over claims them
        with it, and every write of its record (claims, renewals, done marks, hand-backs, its close) is mirrored into
        the slot, one write per slot, in the shape of a record of this owner. The watcher reads the slot by key as if
        it had listed this record. A slot left with nothing of this record is deleted. The watcher itself writes no
        slot: it only reads them.
        """
        if naming.is_watcher(self.owner):
            return
        slots: dict[str, dict[str, dict[str, Any]]] = {key: {"claims": {}, "done": {}} for key in self._mirrored}
        for part in ("claims", "done"):
            for iid, entry in mine[part].items():
                if entry.get("ack"):
                    slots.setdefault(str(entry["ack"]), {"claims": {}, "done": {}})[part][iid] = entry
        for key, held in slots.items():
            if held["claims"] or held["done"]:
                self.store.set(key, {"owner": self.owner, "updated_at": mine.get("updated_at"),
                                     "closed": mine["closed"], **held})
                self._mirrored.add(key)
            else:
                self.store.delete(key)
                self._mirrored.discard(key)

    def own_claim(self, instance_id: Any) -> dict[str, Any] | None:
        """Return this task instance's open claim of an instance (read once per ledger object)."""
        with self._lock:
            claim = self._own()["claims"].get(str(coerce_id(instance_id)))
            return dict(claim) if claim else None

    def own_state(self, instance_id: Any) -> str | None:
        """``"claimed"``, ``"done"`` (as recorded by this task instance) or ``None``."""
        with self._lock:
            iid = str(coerce_id(instance_id))
            mine = self._own()
            if iid in mine["claims"]:
                return CLAIMED
            return DONE if iid in mine["done"] else None

    def claim(self, integration_step_id: Any, instances: Iterable[Mapping[str, Any]]) -> None:
        """Record ``instances`` (poll answers) as claimed by this task instance: one write for all of them."""
        instances = list(instances)
        if not instances:
            return
        with self._lock:
            mine = self._own()
            now = _iso(self.clock())
            for instance in instances:
                iid = str(coerce_id(instance))
                previous = mine["claims"].get(iid, {})
                mine["claims"][iid] = {
                    "step": integration_step_id,
                    "process_instance_id": instance.get("ProcessInstanceId", previous.get("process_instance_id")),
                    "claimed_at": now,
                    "first_claimed_at": instance.get("first_claimed_at") or previous.get("first_claimed_at", now),
                    "offers": int(instance.get("offers") or previous.get("offers", 0)) + 1,
                }
                if instance.get("shared") or previous.get("shared"):
                    # another record may still claim it: its completion must leave a done mark
                    mine["claims"][iid]["shared"] = True
                ack = self.ack or instance.get("ack") or previous.get("ack")
                if ack:  # the event's ack slot (see _mirror)
                    mine["claims"][iid]["ack"] = ack
                mine["parked"].pop(iid, None)
            self._write()

    def mark_done(self, completed: Mapping[Any, Any] | Iterable[Any], *, write: bool = True,
                  ack: str | None = None) -> None:
        """Record instances as completed.

        ``write=False`` keeps the marks for the next write (a lost done mark costs only a re-offer, which the completion
        answers as "already completed"). ``ack``: the ack slot of the event that handed them over, when this record
        never claimed them (a completion operator given an event's instance; see :meth:`_mirror`).
        """
        ids = list(completed.keys() if isinstance(completed, Mapping) else completed)
        if not ids:
            return
        with self._lock:
            mine = self._own()
            now = _iso(self.clock())
            for instance_id in ids:
                iid = str(coerce_id(instance_id))
                claim = mine["claims"].pop(iid, None)
                if claim is None or claim.get("shared"):
                    mine["done"][iid] = {"completed_at": now}  # another record claims it too: tell its readers
                    slot = (claim or {}).get("ack") or ack
                    if slot:
                        mine["done"][iid]["ack"] = slot  # its ack slot carries the mark to the watcher
            if write:
                self._write()

    def flush(self) -> None:
        """Write what :meth:`mark_done` kept back."""
        with self._lock:
            if self._mine is not None:
                self._write()

    def close(self) -> None:
        """Close this task instance's record: it is not written again, and readers may tidy it once resolved.

        Deletes the record when nothing in it matters any more.
        """
        with self._lock:
            mine = self._own()
            mine["closed"] = True
            mine.pop("polling", None)
            mine.pop(WAITS, None)  # a closed record waits for nothing
            self._write()

    # -- leases kept alive, claims handed back ---------------------------------------------------------

    def renew(self, instance_ids: Iterable[Any] | None = None, *, write: bool = True) -> int:
        """Renew the lease of this task instance's open claims (all of them, or ``instance_ids``): one write.

        The holder is alive and still working on them (a heartbeat, see :class:`~.leases.LeaseKeeper`): their lease
        (``reclaim_after``) runs again from now, so no other run offers them again meanwhile. A claim put back
        (released, handed back) is not renewed. ``write=False`` keeps the renewal for the next write (a resumed sensor
        renews what its trigger claimed with the write that closes its record). Returns how many claims were renewed
        (``0``: nothing written).
        """
        with self._lock:
            mine = self._own()
            wanted = None if instance_ids is None else {str(coerce_id(i)) for i in instance_ids}
            at = _iso(self.clock())
            renewed = 0
            for iid, claim in mine["claims"].items():
                if (wanted is None or iid in wanted) and not claim.get("released"):
                    claim["renewed_at"] = at
                    renewed += 1
            if renewed and write:
                self._write()
            return renewed

    def hand_back(self, instance_ids: Iterable[Any]) -> list[int | str]:
        """Put back claims this task instance took and never started (a graceful stop): one write.

        The next drain of their step offers them again at once, whatever the lease, like a person's release; their
        ``offers`` count this offer out (it never reached the callable). Returns the ids handed back.
        """
        with self._lock:
            mine = self._own()
            at = _iso(self.clock())
            back: list[int | str] = []
            for instance_id in instance_ids:
                iid = str(coerce_id(instance_id))
                claim = mine["claims"].get(iid)
                if claim is None:
                    continue
                claim.pop("renewed_at", None)
                claim.update({"released": True, "released_at": at, "claimed_at": at, "handed_back": True,
                              "offers": max(int(claim.get("offers") or 1) - 1, 0)})
                back.append(coerce_id(iid))
            if back:
                self._write()
            return back

    # -- claims before hand-over: two pollers of one step never both work on an instance ---------------

    def contested(self, instance_ids: Iterable[Any], reclaim_after: dt.timedelta | None) -> dict[int | str, str]:
        """Return which of ``instance_ids`` (claimed by this record) another record also holds: id -> that owner.

        **The hand-over rule** (several pollers of one step: mapped batch workers spread over Celery workers, a
        sensor beside them): call it *after* this record's claim write and *before* handing the instances to the
        callable. Another record *holds* an instance when it claims it (not put back, and within the lease:
        ``reclaim_after``, ``None``: always) or has it done. Airflow's stores have no compare-and-set, so the rule
        needs only ordered writes and reads: of two pollers that claimed one instance, the one whose claim was
        written second reads the first one's claim, so at least one of them yields (:meth:`yield_claims`); when
        both wrote before either read, both yield, and the instance comes back as described there. One listing,
        then one read per other record.
        """
        wanted = {str(coerce_id(i)) for i in instance_ids}
        if not wanted:
            return {}
        now = self.clock()
        held: dict[int | str, str] = {}
        with self._lock:
            records = self.read_all()
        for key, record in records.items():
            if key == self.key:
                continue
            owner = str(record.get("owner") or key)
            for iid in wanted & set(record["done"]):
                held[coerce_id(iid)] = owner
            for iid in wanted & set(record["claims"]):
                claim = record["claims"][iid]
                start = lease_start(claim)
                if claim.get("released") or start is None:
                    continue
                if reclaim_after is None or now - start < reclaim_after:
                    held[coerce_id(iid)] = owner
        return held

    def yield_claims(self, held: Mapping[Any, str]) -> list[int | str]:
        """Drop this record's claims of instances another record holds (:meth:`contested`): one write.

        The instance is that record's: this poller never starts it. When two pollers yield the same instance to each
        other (both claimed it before either read), nobody works on it in that moment and nothing is lost: a server
        that hands an instance out until completed hands it out again, and a claim taken over from a dead run stays
        in that run's record (:meth:`prepare_drain` checks before it tidies), so the next drain offers it again.
        Returns the ids dropped.
        """
        dropped: list[int | str] = []
        with self._lock:
            mine = self._own()
            for instance_id, owner in held.items():
                iid = str(coerce_id(instance_id))
                if mine["claims"].pop(iid, None) is not None:
                    dropped.append(coerce_id(iid))
                    log.info("Leaving integration instance %s to %s, which claims it too (claims before hand-over)",
                             iid, owner)
            if dropped:
                self._write()
        return dropped

    # -- the trace of polls in flight --------------------------------------------------------------

    def start_polling(self, integration_step_id: Any, up_to: int) -> None:
        """Record, before the first poll of a drain, that this task instance polls a step (one write).

        The trace names ``integration_step_id`` and ``up_to``, the most answers unclaimed at any moment. Claim
        writes keep it (the record's ``updated_at`` then dates the last durable claim);
        :meth:`stop_polling` (or :meth:`close`) clears it. A run killed in between leaves the trace, and the next reader
        reports it (:attr:`interrupted`): what a person looks for in Workflowsoft when the server hands instances out
        once.
        """
        with self._lock:
            mine = self._own()
            mine["polling"] = {"step": integration_step_id, "since": _iso(self.clock()), "up_to": int(up_to)}
            self._write()

    def stop_polling(self) -> None:
        """Clear the polling trace: the drain ended and everything it received is claimed (one write, if set)."""
        with self._lock:
            mine = self._own()
            if mine.pop("polling", None) is not None:
                self._write()

    # -- what everyone holds -----------------------------------------------------------------------

    def claimed_steps(self, instance_ids: Iterable[Any]) -> dict[int | str, Any]:
        """Return the integration step of each instance's newest open claim.

        Whoever holds it: for instances handed over without their step, so that their new claim is offered again like
        the old one.
        """
        wanted = {str(coerce_id(i)) for i in instance_ids}
        newest: dict[str, tuple[str, Any]] = {}
        with self._lock:
            for record in self.read_all().values():
                for iid, claim in record["claims"].items():
                    at = str(claim.get("claimed_at") or "")
                    if iid in wanted and claim.get("step") is not None and (iid not in newest or at > newest[iid][0]):
                        newest[iid] = (at, claim["step"])
        return {coerce_id(iid): step for iid, (_at, step) in newest.items()}

    def read_all(self) -> dict[str, dict[str, Any]]:
        """Every claims record of this connection: one listing, then one read per record."""
        return self._read_listing()[0]

    def _read_listing(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Return the records, and the commands (see :meth:`command`) listed with them in the same listing."""
        records: dict[str, dict[str, Any]] = {}
        commands: dict[str, dict[str, Any]] = {}
        command_prefix = naming.claims_command_prefix(self.conn_id)
        for key in self.store.keys(self.prefix):
            if key == self.key:
                records[key] = self._own()
                continue
            raw = self.store.get(key)
            if key.startswith(command_prefix):
                if isinstance(raw, dict):
                    commands[key] = raw
            elif isinstance(raw, dict):
                records[key] = read_record(raw)
        if self.own_store is not self.store:  # our record is not among the listed ones
            records[self.key] = self._own()
        return records, commands

    def awaiting_run(self, integration_step_id: Any, reclaim_after: dt.timedelta | None,
                     among: Iterable[Any] | None = None) -> list[int | str]:
        """Return the instances an asset watcher handed over that still wait for a run, or ``[]`` once a run took them.

        ``among``: the instances of the watcher's last event (``None``, after a restart: its open claims of the step).
        They are *taken* once any of them is claimed by another record at or after this owner's claim (the run's
        batch worker takes what it was given over), marked done or parked anywhere, or no longer claimed here: one run
        consumes an event whole. Claims put back by hand or older than ``reclaim_after`` do not wait (the next
        :meth:`prepare_drain` offers them again). Reads the records :meth:`prepare_drain` just read, or lists them.
        """
        step = str(integration_step_id)
        with self._lock:
            records = self._last_records if self._last_records is not None else self.read_all()
            mine = self._own()
            now = self.clock()
            settled = {iid for record in records.values() for iid in (*record["done"], *record["parked"])}
            taken: dict[str, dt.datetime] = {}
            for key, record in records.items():
                for iid, claim in record["claims"].items():
                    at = parse_time(claim.get("claimed_at"))
                    if key != self.key and at is not None and (iid not in taken or at > taken[iid]):
                        taken[iid] = at

            def pending(iid: str) -> bool:
                claim = mine["claims"].get(iid)
                at = parse_time(claim.get("claimed_at")) if claim else None
                if claim is None or at is None or claim.get("released") or str(claim.get("step")) != step:
                    return False
                if reclaim_after is not None and now - at >= reclaim_after:
                    return False  # due: offered again by the next drain
                return iid not in settled and not (iid in taken and taken[iid] >= at)

            def handed_over(iid: str, claim: Mapping[str, Any]) -> bool:  # after a restart: what may wait for a run
                at = parse_time(claim.get("claimed_at"))
                return (str(claim.get("step")) == step and not claim.get("released") and at is not None
                        and (reclaim_after is None or now - at < reclaim_after))

            wanted = ([str(coerce_id(i)) for i in among] if among is not None
                      else [i for i, c in mine["claims"].items() if handed_over(i, c)])
            waiting = [i for i in wanted if pending(i)]
            if len(waiting) < len(wanted):
                return []  # a run took (some of) them: the event was consumed
            return [coerce_id(i) for i in waiting]

    def prepare_drain(
        self, integration_step_id: Any, reclaim_after: dt.timedelta | None, limit: int,
        *, own_at_once: bool = True, max_offers: int | None = None, process_instance_id: Any = None,
    ) -> tuple[list[dict[str, Any]], list[int | str]]:
        """Before polling a step: the instances to offer again and the ids to leave alone.

        Offered again (up to ``limit``): this task instance's own open claims (an earlier try died), then
        other records' open claims older than ``reclaim_after``, and claims put back by hand (at once); they
        are claimed by this task instance in one write before this returns. Left alone: open claims other
        runs hold within their lease, and parked instances. Records whose claims are all resolved are tidied
        on the way.

        **Parking** (the one rule, for every poller): a claim that would be offered again after it was
        offered ``max_offers`` times (``offers``) without being completed is *parked* instead, in this task
        instance's record: never offered again until a person releases it (:meth:`release`). The ids parked
        by this call are in :attr:`parked`. ``None`` or ``0``: never park.

        Commands addressed to this record (:meth:`command`: a person's release, park or forget of an
        instance this record holds) are applied first. Traces of drains killed while polling
        (:meth:`start_polling`) are reported in :attr:`interrupted` and logged.

        ``own_at_once=False`` (an asset watcher, whose own claims are handed to DAG runs it cannot see): its
        own open claims are offered again only once their lease is over, like anyone else's, and are left
        alone until then.

        ``process_instance_id`` (a waiter: a sensor waiting for that one process instance at this step): its wait is
        recorded first, and what it is offered and what it polls follow :meth:`route` (also for every other
        poller, whose drain leaves alone what a waiter wants).
        """
        poison = checked_max_offers(max_offers)
        with self._lock:
            records, commands = self._read_listing()
            mine = records[self.key] = self._own()  # also when it is not stored yet (tidy sees our claims)
            self._last_records = records
            self._apply_commands(commands)
            self.interrupted = self._interrupted(records, reclaim_after)
            self._route_for(records, integration_step_id, process_instance_id, reclaim_after)
            done = {iid for record in records.values() for iid in record["done"]}
            parked_anywhere = {iid for record in records.values() for iid in record["parked"]}
            now = self.clock()
            # An instance's lease runs from its newest claim, whoever holds it: a stale claim in one
            # record does not make an instance another run took over (within its lease) free again.
            latest: dict[str, dt.datetime] = {}
            for record in records.values():
                for iid, claim in record["claims"].items():
                    at = lease_start(claim) or now
                    if iid not in latest or at > latest[iid]:
                        latest[iid] = at

            def due(iid: str, claim: Mapping[str, Any]) -> bool:
                # put back by hand: offered at once, unless someone claimed it again since
                if claim.get("released") and (parse_time(claim.get("claimed_at")) or now) >= latest[iid]:
                    return True
                return reclaim_after is not None and now - latest[iid] >= reclaim_after

            def exhausted(claim: Mapping[str, Any]) -> bool:
                # a released claim is put back to be offered at once, whatever its count (set to 0 by the release)
                return poison is not None and not claim.get("released") and int(claim.get("offers") or 1) >= poison

            offered: list[dict[str, Any]] = []
            skip: list[int | str] = []
            parked_now: list[int | str] = []
            step = str(integration_step_id)
            for iid, claim in list(mine["claims"].items()):
                if str(claim.get("step")) != step or iid in done:
                    continue
                if iid in parked_anywhere and not claim.get("released"):
                    continue  # parked elsewhere (left alone below)
                if not self.keeps(claim):  # passed on: it goes to a waiter, or to the step's other pollers
                    skip.append(coerce_id(iid))
                    continue
                if not (own_at_once or due(iid, claim)):
                    skip.append(coerce_id(iid))  # handed to a run within its lease
                elif exhausted(claim):
                    mine["parked"][iid] = self._parked_entry(mine["claims"].pop(iid), "offered", poison)
                    parked_now.append(coerce_id(iid))
                elif len(offered) < limit:
                    offered.append({**_instance(iid, claim, reclaimed=True), "offers": claim.get("offers", 1),
                                    "first_claimed_at": claim.get("first_claimed_at")})
            held = {i["IntegrationInstanceId"] for i in offered}
            for key, record in records.items():
                if key == self.key:
                    continue
                watcher = naming.is_watcher(record.get("owner"))  # its claims are its runs': it alone offers them again
                for iid, claim in record["claims"].items():
                    if watcher and str(claim.get("step")) == step:
                        if coerce_id(iid) not in skip:
                            skip.append(coerce_id(iid))
                        continue
                    if (str(claim.get("step")) != step or iid in done or coerce_id(iid) in held or iid in mine["claims"]
                            or iid in mine["parked"]):
                        continue
                    if not self.keeps(claim):  # a waiter's (or, for a waiter, another process's): left alone
                        if coerce_id(iid) not in skip:
                            skip.append(coerce_id(iid))
                        continue
                    expired = due(iid, claim)
                    if expired and iid not in parked_anywhere and exhausted(claim):
                        mine["parked"][iid] = self._parked_entry(claim, "offered", poison)
                        parked_now.append(coerce_id(iid))
                    elif expired and iid not in parked_anywhere and len(offered) < limit:
                        passed_on = bool(claim.get("passed_on"))  # put back by a poller that did not keep it
                        offered.append({**_instance(iid, claim, reclaimed=not passed_on),
                                        "offers": claim.get("offers", 1),
                                        "first_claimed_at": claim.get("first_claimed_at"), "shared": True})
                        held.add(coerce_id(iid))
                        if passed_on:
                            log.info("Taking integration instance %s (process instance %s), passed on by %s",
                                     iid, claim.get("process_instance_id"), record.get("owner"))
                            continue
                        log.warning("Re-offering integration instance %s (reclaimed): claimed by %s at %s and not "
                                    "completed (offer %s of %s)", iid, record.get("owner"), claim.get("claimed_at"),
                                    int(claim.get("offers", 1) or 0) + 1, poison or "unlimited")
                    elif not expired and coerce_id(iid) not in skip:
                        skip.append(coerce_id(iid))
            for record in records.values():  # parked instances of this step: never taken again
                for iid, entry in record["parked"].items():
                    if str(entry.get("step")) == step and coerce_id(iid) not in skip:
                        skip.append(coerce_id(iid))
            for iid in parked_now:
                if iid not in skip:
                    skip.append(iid)
            self.parked = parked_now
            if parked_now:
                log.warning(
                    "Parked integration instance(s) %s of step %s: offered %s times without being completed; they "
                    "are not offered again until released (WorkflowsoftReleaseClaimsOperator, or "
                    "`workflowsoft-claims release <id>` on the command line)", parked_now, step, poison)
            own_again = [i["IntegrationInstanceId"] for i in offered if not i.get("shared")]
            if own_again:
                log.warning("Re-offering integration instance(s) %s (reclaimed): claimed by this task instance (%s) "
                            "and not completed", own_again, self.owner)
            if offered:
                self.claim(integration_step_id, offered)
            elif parked_now:
                self._write()
            self.yielded = []
            if offered:
                # claims before hand-over: another drain of the step may have taken the same claims over meanwhile.
                # Checked before tidying, so a claim taken over from a dead run stays there when every taker yields.
                self.yielded = self.yield_claims(self.contested(held, reclaim_after))
                offered = [i for i in offered if i["IntegrationInstanceId"] not in set(self.yielded)]
            self._tidy(records, done, reclaim_after)
            return [{k: v for k, v in i.items() if k not in ("offers", "first_claimed_at", "shared")}
                    for i in offered], skip

    def _parked_entry(self, claim: Mapping[str, Any], why: str, max_offers: int | None) -> dict[str, Any]:
        kept = ("step", "process_instance_id", "first_claimed_at", "offers", "ack")
        entry = {k: claim[k] for k in kept if k in claim}
        entry["parked_at"] = _iso(self.clock())
        entry["reason"] = (f"offered {claim.get('offers', 1)} times without being completed (max_offers="
                           f"{max_offers})" if why == "offered" else why)
        return entry

    def _interrupted(self, records: dict[str, dict[str, Any]], lease: dt.timedelta | None) -> list[dict[str, Any]]:
        """Traces of drains whose poller died while polling.

        Our own record's (an earlier try) and those of records whose owner will not write again. Each is logged once and
        cleared.
        """
        found: list[dict[str, Any]] = []
        now = self.clock()
        for key, record in records.items():
            trace = record.get("polling")
            if not isinstance(trace, dict):
                continue
            if key != self.key:
                updated = parse_time(record.get("updated_at"))
                # a live poller rewrites its record with every claim: one silent for a lease (an hour without a
                # lease) has stopped
                silent = lease if lease is not None else dt.timedelta(hours=1)
                if updated is None or now - updated < silent:
                    continue
            item = {"owner": record["owner"], "step": trace.get("step"), "since": trace.get("since"),
                    "until": record.get("updated_at") or trace.get("since"), "up_to": trace.get("up_to")}
            found.append(item)
            log.warning(
                "A drain of integration step %s by %s was interrupted while polling (polling since %s, last claim "
                "written at %s): up to %s instance(s) handed out around then may never have been claimed. If "
                "Workflowsoft hands instances out once, look there for instances of step %s handed out from %s on "
                "that are not completed.", item["step"], item["owner"], item["since"], item["until"], item["up_to"],
                item["step"], item["since"])
            record.pop("polling", None)
            if key == self.key:
                self._write()
            else:
                self._rewrite(key, record)
        return found

    def _tidy(self, records: dict[str, dict[str, Any]], done: set[str], lease: dt.timedelta | None) -> None:
        """Drop what no longer matters from records whose owners will not write them again.

        A record may be rewritten or deleted by another task instance only when it is *closed* or
        older than the lease: its owner then writes it no more, so no claim can be lost. What such a record
        still holds besides open claims (done marks kept for one lease, parked instances) is carried over into
        this task instance's record (when it lives among the others), so the records stay few: one carrier
        instead of one record per run.
        """
        now = self.clock()
        mine = self._own()

        def quiet(record: dict[str, Any]) -> bool:
            if naming.is_watcher(record.get("owner")):
                return False  # a running watcher may be silent for longer than a lease: only it writes its record
            if record["closed"]:
                return True
            updated = parse_time(record.get("updated_at"))
            return lease is not None and updated is not None and now - updated >= lease

        parked = {iid for record in records.values() for iid in record["parked"]}
        carry = self.own_store is self.store  # our record is listed with the others: it can carry theirs
        # Our own claims that someone else completed are resolved: dropped and written first, so that the
        # done marks they rested on can go without ever leaving the claim unresolved in between. A reader
        # whose record is not among the others (an asset watcher) is the one reader those marks were kept
        # for: it resolves a claim once the record holding its mark is quiet, and drops that mark with it.
        quiet_done = {i for key, record in records.items() if key == self.key or quiet(record) for i in record["done"]}
        resolved_own = [iid for iid in mine["claims"] if iid in done and (carry or iid in quiet_done)]
        served = set() if carry else set(resolved_own)
        if resolved_own:
            for iid in resolved_own:
                mine["claims"].pop(iid)
            self._write()
        # A claim is resolved when some record has it done (or parked), or when a newer claim exists elsewhere.
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
            kept = {i: c for i, c in record["claims"].items()
                    if i not in done and (i not in parked or c.get("released")) and newest[i][0] == key}
            if quiet(record) and kept != record["claims"]:
                record["claims"] = kept
                self._rewrite(key, record)
            still_claimed.update(record["claims"])  # a record we may not touch keeps its claims
        def stale(mark: Mapping[str, Any]) -> bool:
            # A done mark no visible record needs is kept for one lease after the completion: its reader may be
            # an asset watcher, whose claims record (in its Asset's state store) no Variables reader can see.
            done_at = parse_time(mark.get("completed_at"))
            return lease is None or done_at is None or now - done_at >= lease

        carried: list[str] = []
        for key, record in records.items():
            unneeded = [i for i in record["done"]
                        if i not in still_claimed and (i in served or stale(record["done"][i]))]
            if key == self.key:
                for iid in unneeded:  # persisted with our next write
                    mine["done"].pop(iid, None)
                continue
            if not quiet(record):
                continue
            changed = bool(unneeded)
            for iid in unneeded:
                record["done"].pop(iid, None)
            if carry and (record["done"] or record["parked"]):
                for iid, mark in record["done"].items():
                    mine["done"].setdefault(iid, mark)
                for iid, entry in record["parked"].items():
                    mine["parked"].setdefault(iid, {"by": record["owner"], **entry})
                record["done"], record["parked"] = {}, {}
                carried.append(key)
                changed = True
            if changed and key not in carried:
                self._rewrite(key, record)
        if carried:
            self._write()  # ours first: what is carried is never only in memory
            for key in carried:
                self._rewrite(key, records[key])
        # A claim taken over from a record that no longer holds it is ours alone: its completion needs no
        # done mark for others to read (persisted with our next write).
        held_elsewhere = {i for key, record in records.items() if key != self.key for i in record["claims"]}
        for iid, claim in mine["claims"].items():
            if claim.get("shared") and iid not in held_elsewhere:
                claim.pop("shared")

    def _rewrite(self, key: str, record: dict[str, Any]) -> None:
        if record["claims"] or record["done"] or record["parked"] or record.get("polling") or record.get(WAITS):
            self.store.set(key, record)
        else:
            self.store.delete(key)

    def list_claims(self, integration_step_id: Any = None, *, include_done: bool = False,
                    records: Mapping[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Open claims, parked instances (and, with ``include_done``, done marks) of one step or of every step.

        Newest entry per instance, each as ``{"integration_instance_id", "state", "owner", "integration_step_id",
        "record", ...}`` (``state``: ``"claimed"``, ``"parked"`` or ``"done"``; ``record``: the key holding it;
        ``integration_diagram_id``, the 0.1 key, holds the step too).

        :param records: read these records (key -> record) instead of this connection's Variables (the command
            line adds the asset watchers' records)
        """
        with self._lock:
            if records is None:
                records = self.read_all()
        done = {iid: (key, record["owner"], mark) for key, record in records.items()
                for iid, mark in record["done"].items()}
        out: dict[str, dict[str, Any]] = {}

        def wanted(entry: Mapping[str, Any]) -> bool:
            return integration_step_id is None or str(entry.get("step")) == str(integration_step_id)

        for key, record in records.items():
            for iid, claim in record["claims"].items():
                if not wanted(claim) or (iid in done and not include_done):
                    continue
                entry = {"integration_instance_id": coerce_id(iid), "state": DONE if iid in done else CLAIMED,
                         "owner": record["owner"], "integration_step_id": claim.get("step"),
                         "integration_diagram_id": claim.get("step"), "record": key, **claim}
                entry.pop("step", None)
                if iid not in out or str(entry.get("claimed_at")) > str(out[iid].get("claimed_at")):
                    out[iid] = entry
        for key, record in records.items():
            for iid, parked in record["parked"].items():
                if wanted(parked) and not (iid in out and out[iid].get("released")):
                    entry = {"integration_instance_id": coerce_id(iid), "state": PARKED, "owner": record["owner"],
                             "integration_step_id": parked.get("step"),
                             "integration_diagram_id": parked.get("step"), "record": key, **parked}
                    entry.pop("step", None)
                    out[iid] = entry
        if include_done:
            for iid, (key, owner, mark) in done.items():
                out.setdefault(iid, {"integration_instance_id": coerce_id(iid), "state": DONE, "owner": owner,
                                     "record": key, **mark})
        return sorted(out.values(), key=lambda e: str(e["integration_instance_id"]))

    # -- waiting for one process instance at a step ------------------------------------------------

    def wait_for(self, integration_step_id: Any, process_instance_id: Any, lease: dt.timedelta | None) -> bool:
        """Record that this task instance waits for ``process_instance_id`` to reach ``integration_step_id``.

        The wait lives in this task instance's record (``"waits"``) and is *live* while the record is open and the
        wait was seen within the lease (``lease``; ``None``: an hour): a waiter refreshes it when a third of the
        lease has gone by (one write), so a waiter that is killed stops wanting its instance one lease later.
        Returns whether it was written.
        """
        pid = process_key(process_instance_id)
        if pid is None:
            raise ValueError(f"process_instance_id must be an id, got {process_instance_id!r}")
        life = lease if lease is not None else DEFAULT_WAIT_LIFE
        with self._lock:
            mine = self._own()
            waits = mine.setdefault(WAITS, {})
            key = f"{integration_step_id}:{pid}"
            entry = waits.get(key) or {}
            now = self.clock()
            seen = parse_time(entry.get("seen_at"))
            if seen is not None and now - seen < life / 3:
                return False
            waits[key] = {"step": integration_step_id, "process_instance_id": id_value(process_instance_id),
                          "since": entry.get("since") or _iso(now), "seen_at": _iso(now)}
            self._write()
            return True

    def stop_waiting(self) -> None:
        """Drop this task instance's waits (a waiter that timed out): what it wanted goes to the others at once."""
        with self._lock:
            mine = self._own()
            if mine.pop(WAITS, None):
                self._write()

    def live_waits(self, records: Mapping[str, dict[str, Any]], integration_step_id: Any,
                   lease: dt.timedelta | None) -> dict[str, str]:
        """Return the live waits of a step in ``records``: process instance (:func:`process_key`) -> its waiter."""
        life = lease if lease is not None else DEFAULT_WAIT_LIFE
        now = self.clock()
        out: dict[str, str] = {}
        for record in records.values():
            if record["closed"]:
                continue
            for wait in (record.get(WAITS) or {}).values():
                seen = parse_time(wait.get("seen_at"))
                pid = process_key(wait.get("process_instance_id"))
                if (str(wait.get("step")) == str(integration_step_id) and pid is not None and seen is not None
                        and now - seen < life):
                    out[pid] = str(record.get("owner") or "")
        return out

    def _route_for(self, records: Mapping[str, dict[str, Any]], integration_step_id: Any, process_instance_id: Any,
                   lease: dt.timedelta | None) -> None:
        """Record (or refresh) our wait, then read the step's live waits: what :meth:`keeps` decides by."""
        self._waiting_for = None
        if process_instance_id is not None:
            self.wait_for(integration_step_id, process_instance_id, lease)
            self._waiting_for = process_key(process_instance_id)
        self.waits = self.live_waits(records, integration_step_id, lease)
        if self._waiting_for is not None:
            self.waits[self._waiting_for] = self.owner

    def keeps(self, instance: Mapping[str, Any]) -> bool:
        """Tell whether this poller keeps ``instance``: **the routing rule** of a step, the same for every poller.

        Every poller (sensor, trigger, batch worker, asset watcher) asks it of each answer.

        ``instance`` is a poll answer (``ProcessInstanceId``) or a claim (``process_instance_id``). A waiter (its last
        :meth:`prepare_drain` got a ``process_instance_id``) keeps only instances of that process; every other poller
        keeps every instance except those of a process a live waiter waits for. What is not kept is passed on
        (:meth:`pass_on`), never dropped. An answer without a process instance id is no waiter's: a waiter passes it
        on, the others keep it. Ids are compared as :func:`~..api.protocol.id_value` reads them (``"1001"`` is
        ``1001``).
        """
        pid = process_key(instance.get("ProcessInstanceId", instance.get("process_instance_id")))
        if self._waiting_for is not None:
            return pid == self._waiting_for
        return pid is None or pid not in self.waits

    def pass_on(self, integration_step_id: Any, instances: Iterable[Mapping[str, Any]], *, write: bool = True) -> None:
        """Record poll answers this poller does not keep (:meth:`keeps`) as put back, in one write.

        Each becomes a claim of this record marked ``released`` and ``passed_on``: the next drain of the step by a
        poller that keeps it (its waiter, or, when no live waiter wants it, any sensor, batch worker or watcher of the
        step) is offered it at once, whatever the lease, as after a person's release. Its offers are not counted (no
        one worked on it). ``write=False`` keeps it for the next write (the batch worker's group commit).
        """
        instances = list(instances)
        if not instances:
            return
        with self._lock:
            mine = self._own()
            now = _iso(self.clock())
            for instance in instances:
                iid = str(coerce_id(instance))
                previous = mine["claims"].get(iid, {})
                pid = instance.get("ProcessInstanceId", previous.get("process_instance_id"))
                mine["claims"][iid] = {
                    "step": integration_step_id, "process_instance_id": pid, "claimed_at": now,
                    "first_claimed_at": previous.get("first_claimed_at", now),
                    "offers": int(previous.get("offers") or 0), "released": True, "released_at": now,
                    "passed_on": True,
                }
                wanted_by = self.waits.get(process_key(pid) or "")
                log.info("Passed integration instance %s (process instance %s) of step %s on to %s", iid, pid,
                         integration_step_id, f"its waiter {wanted_by}" if wanted_by and wanted_by != self.owner
                         else "the step's other pollers")
            if write:
                self._write()

    # -- a person's decisions ----------------------------------------------------------------------

    def release(self, instance_ids: Iterable[Any], *, forget: bool = False) -> list[int | str]:
        """Put instances back (claimed or parked, whoever holds them).

        The next drain of their step offers them again at once, whatever the lease, with their offers counted from 0.
        ``forget=True`` drops them instead (they are not offered again: on a server that hands instances out once they
        are then lost to Airflow; complete or handle them in Workflowsoft). Returns the ids found.

        Records in the Variables are rewritten here (a user's decision: it rewrites other task instances'
        records; a record whose owner is still running may write its own copy back). An asset watcher's record
        is changed through a command the watcher applies at its next round (:meth:`command`).
        """
        return self._decide(FORGET if forget else RELEASE, instance_ids)

    def forget(self, instance_ids: Iterable[Any]) -> list[int | str]:
        """Drop claims and parked entries of these instances: they are not offered again (see :meth:`release`)."""
        return self._decide(FORGET, instance_ids)

    def park(self, instance_ids: Iterable[Any]) -> list[int | str]:
        """Park claimed instances by hand: not offered again until released. Returns the ids found."""
        return self._decide(PARK, instance_ids)

    def act(self, action: str, instance_ids: Iterable[Any],
            watchers: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[list[int | str], dict[str, list[str]]]:
        """Apply a person's ``release``, ``park`` or ``forget`` of instances wherever they are claimed.

        In the records among the Variables (rewritten at once) and in the given asset watchers' records (key -> record,
        read from their Assets' state stores: each gets a :meth:`command`). Returns the ids found in the Variables, and
        the ids asked of each watcher's record.
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        ids = [coerce_id(i) for i in instance_ids]
        found = self._decide(action, ids)
        asked: dict[str, list[str]] = {}
        wanted = {str(i) for i in ids}
        for key, record in (watchers or {}).items():
            held = sorted(wanted & (set(record.get("claims") or {}) | set(record.get("parked") or {})))
            if held:
                self.command(key, action, held)
                asked[key] = held
        return found, asked

    def _decide(self, action: str, instance_ids: Iterable[Any]) -> list[int | str]:
        wanted = {str(coerce_id(i)) for i in instance_ids}
        with self._lock:
            records = self.read_all()
            found: set[str] = set()
            for key, record in records.items():
                hit = apply_action(record, action, wanted, self.clock())
                if not hit:
                    continue
                found |= hit
                if key == self.key:
                    self._write()
                else:
                    self._rewrite(key, record)
        return sorted((coerce_id(i) for i in found), key=str)

    def command(self, target_key: str, action: str, instance_ids: Iterable[Any], *, by: str = "") -> str:
        """Ask the owner of the record ``target_key`` to release, park or forget instances.

        The owner is an asset watcher, whose record only it may write: one Variable under this connection's claims
        prefix, applied and deleted by that owner at its next :meth:`prepare_drain` (a watcher's next round). Returns
        its key.
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        ids = sorted({str(coerce_id(i)) for i in instance_ids})
        key = naming.claims_command_key(self.conn_id)
        self.store.set(key, {"target": target_key, "action": action, "ids": ids, "by": by or self.owner,
                             "at": _iso(self.clock())})
        return key

    def _apply_commands(self, commands: Mapping[str, Mapping[str, Any]]) -> None:
        """Apply the commands addressed to our record (one write), then delete them."""
        ours = {key: c for key, c in commands.items() if c.get("target") == self.key}
        if not ours:
            return
        mine = self._own()
        for command in sorted(ours.values(), key=lambda c: str(c.get("at"))):
            action = str(command.get("action"))
            ids = {str(i) for i in command.get("ids") or []}
            if action in ACTIONS:
                hit = apply_action(mine, action, ids, self.clock())
                log.warning("Applied %s of integration instance(s) %s asked by %s at %s (%s found here)",
                            action, sorted(ids), command.get("by"), command.get("at"), sorted(hit) or "none")
        self._write()
        for key in ours:
            self.store.delete(key)


RELEASE = "release"
PARK = "park"
FORGET = "forget"
ACTIONS = (RELEASE, PARK, FORGET)


def apply_action(record: dict[str, Any], action: str, ids: set[str], now: dt.datetime) -> set[str]:
    """Apply a person's ``release``, ``park`` or ``forget`` of ``ids`` to one record (in memory); the ids it held."""
    hit = ids & (set(record["claims"]) | set(record["parked"]))
    at = _iso(now)
    for iid in hit:
        claim = record["claims"].pop(iid, None)
        parked = record["parked"].pop(iid, None)
        if action == FORGET:
            continue
        entry = dict(claim or parked or {})
        if action == RELEASE:
            for k in ("parked_at", "reason", "by", "shared"):
                entry.pop(k, None)
            # its claimed_at is the release: a claim made after it (the re-offer) is newer
            entry.update({"released": True, "released_at": at, "offers": 0, "claimed_at": at})
            record["claims"][iid] = entry
        else:
            entry.pop("released", None)
            entry.update({"parked_at": at, "reason": "parked by hand"})
            record["parked"][iid] = entry
    return hit


def checked_max_offers(value: Any) -> int | None:
    """``max_offers`` checked: a whole number (``None`` or ``0``: never park)."""
    value = id_value(value)  # a numeric string (a rendered template) or a whole Decimal as an int
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise WorkflowsoftInputError(
            f"max_offers must be a whole number of 1 or more (0 or None: never park), got {value!r}")
    return value or None


#: How long a wait stays live without being seen again when no lease is given.
DEFAULT_WAIT_LIFE = dt.timedelta(hours=1)


def process_key(value: Any) -> str | None:
    """Return a process instance id as waits and routing compare it (:func:`id_value`, as text), ``None`` if none."""
    value = id_value(value)
    return None if blank(value) else str(value)


#: The default of ``max_offers`` everywhere: an instance handed out 5 times without being completed is parked.
DEFAULT_MAX_OFFERS = 5


__all__ = ["ACTIONS", "CLAIMED", "DEFAULT_MAX_OFFERS", "DONE", "FORGET", "PARK", "PARKED", "RELEASE", "WAITS",
           "ClaimsLedger", "apply_action", "checked_max_offers", "lease_start", "parse_time", "process_key",
           "read_record"]

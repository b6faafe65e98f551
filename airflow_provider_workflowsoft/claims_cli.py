"""``workflowsoft-claims``: see, release, park or forget the claims of one integration instance, on call.

Runs where the ``airflow`` command runs (it reads the metadata database): the claims records in Airflow
Variables and, on Airflow 3.3, the asset watchers' records in their Assets' state stores.

.. code-block:: console

    $ workflowsoft-claims list                  # every claim and parked instance of workflowsoft_default
    $ workflowsoft-claims list --step 11 --json
    $ workflowsoft-claims release 5001          # put back: the next drain offers it again at once
    $ workflowsoft-claims park 5001             # never offered again until released
    $ workflowsoft-claims forget 5001           # dropped: handle it in Workflowsoft
    $ workflowsoft-claims --conn wfs_eu release 5001 5002

Records in Variables are rewritten at once. A running watcher rewrites its own record every round, so its
record is never written from outside: the command leaves a request (a Variable under the connection's claims
prefix) that the watcher applies at its next round, within its poll interval, without pausing any DAG.
Same as ``python -m airflow_provider_workflowsoft.claims_cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from airflow_provider_workflowsoft import defaults
from airflow_provider_workflowsoft.api.errors import WorkflowsoftInputError
from airflow_provider_workflowsoft.api.protocol import coerce_id
from airflow_provider_workflowsoft.records import naming
from airflow_provider_workflowsoft.records.claims import ACTIONS, ClaimsLedger, read_record
from airflow_provider_workflowsoft.records.stores import KeyValueStore, MetadataVariableStore, asset_state_entries


def watcher_records(conn_id: str) -> dict[str, dict[str, Any]]:
    """Return the asset watchers' claims records of a connection (key -> record; the Asset's URI in ``asset_uri``)."""
    out: dict[str, dict[str, Any]] = {}
    for uri, key, value in asset_state_entries(naming.claims_prefix(conn_id)):
        if isinstance(value, dict):
            out[key] = {**read_record(value), "asset_uri": uri}
    return out


def _ids(values: Sequence[str]) -> list[int | str]:
    ids = []
    for value in values:
        try:
            ids.append(coerce_id(value, "instance id"))
        except (WorkflowsoftInputError, ValueError):
            raise SystemExit(f"error: instance ids are whole numbers, got {value!r}") from None
    return ids


def run(argv: Sequence[str] | None = None, *, store: KeyValueStore | None = None,
        watchers: dict[str, dict[str, Any]] | None = None, out: Any = None) -> int:
    """Run the command line; ``store`` and ``watchers`` replace the metadata database (tests)."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="workflowsoft-claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("--conn", default=defaults.DEFAULT_CONN_ID, help="the Workflowsoft connection id")
    # --conn also after the command (``workflowsoft-claims list --conn X``), as people type it; SUPPRESS keeps
    # the value given before the command when it is not repeated.
    conn_after = argparse.ArgumentParser(add_help=False)
    conn_after.add_argument("--conn", default=argparse.SUPPRESS, help="the Workflowsoft connection id")
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", parents=[conn_after],
                             help="claims and parked instances (Variables and asset watchers)")
    listing.add_argument("--step", help="only this integration step")
    listing.add_argument("--done", action="store_true", help="also instances marked done")
    listing.add_argument("--json", action="store_true", help="one JSON list")
    for action, what in zip(ACTIONS, ("put back: offered again at once by the next drain",
                                      "not offered again until released",
                                      "dropped: not offered again (handle it in Workflowsoft)"), strict=True):
        one = sub.add_parser(action, parents=[conn_after], help=what)
        one.add_argument("ids", nargs="+", help="integration instance ids")
    args = parser.parse_args(argv)

    store = store if store is not None else MetadataVariableStore()
    watchers = watchers if watchers is not None else watcher_records(args.conn)
    ledger = ClaimsLedger(args.conn, store, owner="workflowsoft-claims")
    if args.command == "list":
        records = {**ledger.read_all(), **watchers}
        entries = ledger.list_claims(args.step, include_done=args.done, records=records)
        for entry in entries:
            if entry["record"] in watchers:
                entry["asset_uri"] = watchers[entry["record"]]["asset_uri"]
        if args.json:
            print(json.dumps(entries, default=str), file=out)
        else:
            for e in entries:
                where = f"asset watcher of {e['asset_uri']}" if e.get("asset_uri") else e["owner"]
                extra = f" released at {e['released_at']}" if e.get("released") else ""
                extra += f" parked at {e['parked_at']} ({e.get('reason')})" if e["state"] == "parked" else ""
                print(f"{e['integration_instance_id']}\t{e['state']}\tstep {e.get('integration_step_id')}\t"
                      f"offers {e.get('offers', '-')}\t{where}{extra}", file=out)
            print(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", file=out)
        return 0
    ids = _ids(args.ids)
    in_variables, asked = ledger.act(args.command, ids, watchers)
    found = set(in_variables)
    for iid in sorted(in_variables, key=str):
        print(f"{args.command}: {iid} (claims records in the Variables)", file=out)
    for key, held in asked.items():
        found |= {coerce_id(i) for i in held}
        print(f"{args.command}: {', '.join(held)} asked of the asset watcher of {watchers[key]['asset_uri']} (applied "
              "at its next round, within its poll interval)", file=out)
    missing = [i for i in ids if i not in found]
    if missing:
        print(f"not claimed anywhere (Variables, asset watchers) on connection {args.conn!r}: "
              f"{', '.join(str(i) for i in missing)}", file=out)
    return 0 if found else 1


def main() -> None:
    """Run the console script."""
    raise SystemExit(run())


if __name__ == "__main__":
    main()

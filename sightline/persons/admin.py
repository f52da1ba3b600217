"""Data-protection and identity repair: delete a person (GDPR), undo a merge, split a person.

These are the core functions behind ``DELETE /api/projects/<id>/persons/<id>/``,
``POST .../persons/<id>/unmerge/`` and ``.../split/``, and ``sightline persons delete|unmerge``.
Each runs in the writer thread through :meth:`Writer.run_exclusive`, so the in-memory identity
graph and the store change together and nothing is ingested meanwhile. Every operation is
appended to the metadata store's ``audit_log`` with a salted hash of the person id, never the
id, its distinct ids or its properties.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sightline.errors import InvalidInput, NotFound, SightlineError
from sightline.persons.identity import Changes, IdentityState, Person, apply_set, apply_set_once, \
    apply_unset, change_rows, person_uuid

if TYPE_CHECKING:
    from sightline.core import Sightline

UTC = timezone.utc


class Conflict(SightlineError):
    status = 409
    type = "invalid_request"
    code = "conflict"


# -- helpers -----------------------------------------------------------------------------------
def subject_hash(core: "Sightline", project_id: int, person_id: str) -> str:
    """The audit log's name for a person: SHA-256 of a per-data-directory secret salt and the id.
    Whoever holds the data directory can check whether a given person id was deleted; the log
    alone does not reveal who it was."""
    salt = core.meta.audit_salt()
    return hashlib.sha256(f"{salt}:{project_id}:{person_id}".encode()).hexdigest()


def _audit(core: "Sightline", actor: str, action: str, project_id: int, person_id: str | None,
           details: dict[str, Any]) -> int:
    return core.meta.append_audit(actor=actor, action=action, project_id=project_id,
                                  subject_hash=subject_hash(core, project_id, person_id) if person_id else None,
                                  details=details)


def _find_person(identity: IdentityState, project_id: int, *, person_id: str | None,
                 distinct_id: str | None) -> Person:
    if (person_id is None) == (distinct_id is None):
        raise InvalidInput("Name the person by its id or by one of its distinct ids.", code="invalid_person")
    if distinct_id is not None:
        person = identity.person_for(project_id, distinct_id)
        if person is None:
            raise NotFound(f"No person has the distinct id {distinct_id!r}.")
        return person
    pid = str(person_id).strip().lower()
    person = identity.persons.get(pid)
    if person is None:  # an id merged away resolves to the person it became
        person = identity.persons.get(identity.overrides.get((project_id, pid), ""))
    if person is None or person.project_id != project_id:
        raise NotFound("Person not found.")
    return person


def _family(identity: IdentityState, project_id: int, person: Person) -> set[str]:
    """Every person id the events of ``person`` may carry: its own, the ids derived from its
    distinct ids (persons merged into it were created with those) and the ids overridden to it."""
    ids = {person.id}
    ids |= {person_uuid(project_id, d) for d in person.distinct_ids}
    ids |= identity._override_sources.get((project_id, person.id), set())
    return {i for i in ids if i == person.id or i not in identity.persons}


def _move_override(identity: IdentityState, project_id: int, old: str, new: str | None) -> None:
    """Point ``old`` at ``new`` in memory (``None``: drop the override) and keep the reverse index."""
    key = (project_id, old)
    current = identity.overrides.pop(key, None)
    if current is not None:
        sources = identity._override_sources.get((project_id, current))
        if sources is not None:
            sources.discard(old)
            if not sources:
                identity._override_sources.pop((project_id, current), None)
    if new is not None and new != old:
        identity.overrides[key] = new
        identity._override_sources.setdefault((project_id, new), set()).add(old)


def _actor(actor: str | None) -> str:
    return actor or "python"


# -- GDPR deletion -------------------------------------------------------------------------------
def delete_person(core: "Sightline", project_id: int, *, person_id: str | None = None,
                  distinct_id: str | None = None, with_events: bool = False,
                  actor: str | None = None) -> dict[str, Any]:
    """Delete a person: its row, every distinct id, the overrides and merge-log rows that name
    it, its ingestion warnings and, with ``with_events``, every event of its distinct ids.
    The data is physically removed (Parquet parts rewritten, the database file rebuilt, the
    ingestion log purged). Returns counts; the audit log gets the same counts."""

    def job(identity: IdentityState) -> tuple[dict[str, int], str, list[str]]:
        person = _find_person(identity, project_id, person_id=person_id, distinct_id=distinct_id)
        dids = list(person.distinct_ids)
        family = _family(identity, project_id, person)
        counts = core.storage.delete_person_data(project_id, sorted(family), dids, with_events)
        for d in dids:
            identity.distinct_ids.pop((project_id, d), None)
        identity.persons.pop(person.id, None)
        for old in family:
            _move_override(identity, project_id, old, None)
        for old in list(identity._override_sources.get((project_id, person.id), ())):
            _move_override(identity, project_id, old, None)
        return counts, person.id, dids

    counts, pid, dids = core.writer.run_exclusive(job, purge_log=True)
    counts["flag_and_cohort_rows"] = core.meta.forget_distinct_ids(project_id, dids)
    audit_id = _audit(core, _actor(actor), "person_deleted_with_events" if with_events else "person_deleted",
                      project_id, pid, {**counts, "with_events": with_events})
    return {"deleted": True, "with_events": with_events, "counts": counts, "audit_id": audit_id}


# -- unmerge ---------------------------------------------------------------------------------------
def merges(core: "Sightline", project_id: int, *, person_id: str | None = None,
           distinct_id: str | None = None, merge_id: int | None = None) -> list[dict[str, Any]]:
    """The merge log (newest first): each merge with the source person's snapshot and ``undone``."""
    core.sync()
    return core.storage.person_merge_rows(project_id, person_id=person_id, distinct_id=distinct_id,
                                          merge_id=merge_id)


def _pick_merge(core: "Sightline", project_id: int, merge_id: int | None, distinct_id: str | None,
                person_id: str | None) -> dict[str, Any]:
    if merge_id is None and distinct_id is None:
        raise InvalidInput("Say which merge to undo: `merge_id`, or a `distinct_id` it brought in.",
                           code="invalid_unmerge")
    rows = core.storage.person_merge_rows(project_id, merge_id=merge_id, distinct_id=distinct_id)
    if merge_id is not None and not rows:
        raise NotFound(f"Merge {merge_id} not found.")
    live = [r for r in rows if not r["undone"]]
    if not live:
        if merge_id is not None:
            raise Conflict(f"Merge {merge_id} was already undone.", code="already_unmerged")
        raise NotFound(f"No merge that is not undone brought in the distinct id {distinct_id!r}.")
    return live[0]


def _keys_written(core: "Sightline", project_id: int, distinct_ids: list[str]) -> set[str]:
    """Person-property keys that events of these distinct ids wrote with $set or $set_once."""
    if not distinct_ids:
        return set()
    res = core.storage.execute(
        "SELECT DISTINCT k FROM (SELECT unnest(json_keys(json_extract(properties, '$.\"$set\"'))) AS k "
        "FROM events WHERE project_id = $project AND list_contains($dids, distinct_id) "
        "UNION ALL SELECT unnest(json_keys(json_extract(properties, '$.\"$set_once\"'))) "
        "FROM events WHERE project_id = $project AND list_contains($dids, distinct_id))",
        {"project": project_id, "dids": distinct_ids})
    return {r[0] for r in res.rows}


def _updates_since(core: "Sightline", project_id: int, distinct_ids: list[str],
                   since: datetime) -> list[tuple[datetime, Any]]:
    """Person updates sent by these distinct ids at or after ``since``, in timestamp order."""
    res = core.storage.execute(
        "SELECT timestamp, properties FROM events WHERE project_id = $project "
        "AND list_contains($dids, distinct_id) AND timestamp >= $since "
        "AND (json_exists(properties, '$.\"$set\"') OR json_exists(properties, '$.\"$set_once\"') "
        "OR json_exists(properties, '$.\"$unset\"')) "
        "AND coalesce(json_extract(properties, '$.\"$process_person_profile\"')::VARCHAR, '') <> 'false' "
        "ORDER BY timestamp", {"project": project_id, "dids": distinct_ids, "since": since})
    return [(r[0], r[1]) for r in res.rows]


def unmerge(core: "Sightline", project_id: int, *, merge_id: int | None = None,
            distinct_id: str | None = None, person_id: str | None = None,
            actor: str | None = None) -> dict[str, Any]:
    """Undo a merge: recreate the source person with its distinct ids and properties as the
    merge log recorded them (plus person updates its ids sent since), take those ids and the
    properties only they brought off the person that holds them now, and attribute their
    events to the restored person again. ``merge_id`` names the merge; or ``distinct_id`` picks
    the latest merge that brought that distinct id in. ``person_id`` optionally checks that the
    merge concerns that (current) person."""
    import orjson

    core.sync()
    m = _pick_merge(core, project_id, merge_id, distinct_id, person_id)
    source_id = m["source_person_id"]

    def job(identity: IdentityState) -> dict[str, Any]:
        if source_id in identity.persons:
            raise Conflict(f"Person {source_id} exists: merge {m['id']} was already undone.",
                           code="already_unmerged")
        dids = [d for d in m["source_distinct_ids"] if (project_id, d) in identity.distinct_ids]
        if not dids:
            raise Conflict("None of the merged person's distinct ids exists any more (deleted?).",
                           code="nothing_to_unmerge")
        holders = {identity.distinct_ids[(project_id, d)] for d in dids}
        if len(holders) != 1:
            raise Conflict("The merged person's distinct ids now belong to different persons; "
                           "undo the later merges first.", code="unmerge_conflict")
        holder = identity.persons[holders.pop()]
        if person_id is not None and person_id not in (holder.id, m["target_person_id"]):
            raise InvalidInput(f"Merge {m['id']} did not merge into person {person_id}.",
                               code="invalid_unmerge")
        remaining = [d for d in holder.distinct_ids if d not in set(dids)]
        if not remaining:
            raise Conflict("Undoing this merge would leave the other person without distinct ids.",
                           code="unmerge_conflict")
        merged_at: datetime = m["merged_at"].astimezone(UTC)
        merged_ts = merged_at.timestamp()
        props = dict(m["source_properties"])
        restored = Person(id=source_id, project_id=project_id, created_at=m["source_created_at"].astimezone(UTC),
                          properties=props,
                          properties_ts={k: min(holder.properties_ts.get(k, merged_ts), merged_ts) for k in props},
                          once_keys={k for k in props if k in holder.once_keys},
                          is_identified=bool(m["source_is_identified"]), version=1, distinct_ids=list(dids))
        brought = dict(m["source_properties"])  # what the source's side gave the holder
        for ts, raw in _updates_since(core, project_id, dids, merged_at):
            p = orjson.loads(raw) if isinstance(raw, str) else (raw or {})
            t = ts.timestamp()
            if isinstance(p.get("$set"), dict):
                apply_set(restored, p["$set"], t)
                brought.update(p["$set"])
            if isinstance(p.get("$set_once"), dict):
                apply_set_once(restored, p["$set_once"], t)
                for k, v in p["$set_once"].items():
                    brought.setdefault(k, v)
            unset = p.get("$unset")
            if isinstance(unset, (list, dict)):
                apply_unset(restored, [k for k in unset if isinstance(k, str)], t)
        # the holder loses keys only the source brought (none of its own ids' events wrote them)
        own_keys = _keys_written(core, project_id, remaining)
        removed_keys = []
        for key, value in brought.items():
            if key in holder.properties and key not in own_keys and \
                    holder.properties[key] in (value, restored.properties.get(key, value)):
                del holder.properties[key]
                holder.properties_ts.pop(key, None)
                holder.once_keys.discard(key)
                removed_keys.append(key)
        holder.distinct_ids = remaining
        holder.version += 1

        changes = Changes()
        changes.touch(restored)
        changes.touch(holder)
        for d in dids:
            identity.distinct_ids[(project_id, d)] = source_id
            changes.distinct_ids[(project_id, d)] = source_id
        family = {person_uuid(project_id, d) for d in dids} | {source_id}
        family = {f for f in family if f not in identity.persons}
        for old in family:
            target = None if old == source_id else source_id
            _move_override(identity, project_id, old, target)
            changes.overrides[(project_id, old)] = target or old  # identity mapping: drop the row
        identity.persons[source_id] = restored
        moved = core.storage.reassign_events(
            project_id, dict.fromkeys(dids, source_id), dict.fromkeys(family, source_id),
            changes=change_rows(changes),
            unmerge_row={"merge_id": m["id"], "restored_person_id": source_id, "from_person_id": holder.id,
                         "distinct_ids": dids, "actor": _actor(actor)})
        return {"merge_id": m["id"], "restored_person_id": source_id, "from_person_id": holder.id,
                "distinct_ids": dids, "events_reassigned": moved, "properties_removed": len(removed_keys)}

    result = core.writer.run_exclusive(job)
    _audit(core, _actor(actor), "person_unmerged", project_id, result["restored_person_id"],
           {"merge_id": result["merge_id"], "distinct_ids": len(result["distinct_ids"]),
            "events_reassigned": result["events_reassigned"]})
    return result


def split(core: "Sightline", project_id: int, *, person_id: str | None = None,
          distinct_id: str | None = None, main_distinct_id: str | None = None,
          actor: str | None = None) -> dict[str, Any]:
    """PostHog's split: every distinct id of the person becomes a person of its own (with the
    id derived from it and no properties), except ``main_distinct_id`` (by default the one the
    person was created for), which keeps the person and its properties."""
    core.sync()

    def job(identity: IdentityState) -> dict[str, Any]:
        person = _find_person(identity, project_id, person_id=person_id, distinct_id=distinct_id)
        if main_distinct_id is not None and main_distinct_id not in person.distinct_ids:
            raise InvalidInput(f"{main_distinct_id!r} is not a distinct id of this person.",
                               attr="main_distinct_id")
        main = main_distinct_id or next((d for d in person.distinct_ids
                                         if person_uuid(project_id, d) == person.id), person.distinct_ids[0])
        others = [d for d in person.distinct_ids if d != main]
        if not others:
            raise Conflict("The person has a single distinct id: nothing to split.", code="nothing_to_split")
        changes = Changes()
        new_ids: dict[str, str] = {}
        for d in others:
            new_id = person_uuid(project_id, d)
            if new_id == person.id or new_id in identity.persons:  # the main person keeps its own id
                raise Conflict(f"Cannot give {d!r} a person of its own: its id is taken.", code="split_conflict")
            new_ids[d] = new_id
        for d, new_id in new_ids.items():
            p = Person(id=new_id, project_id=project_id, created_at=person.created_at, distinct_ids=[d], version=1)
            identity.persons[new_id] = p
            identity.distinct_ids[(project_id, d)] = new_id
            changes.touch(p)
            changes.distinct_ids[(project_id, d)] = new_id
            _move_override(identity, project_id, new_id, None)
            changes.overrides[(project_id, new_id)] = new_id  # a live person needs no override
        person.distinct_ids = [main]
        person.version += 1
        changes.touch(person)
        moved = core.storage.reassign_events(project_id, new_ids, {}, changes=change_rows(changes))
        return {"person_id": person.id, "kept_distinct_id": main, "new_person_ids": new_ids,
                "events_reassigned": moved}

    result = core.writer.run_exclusive(job)
    _audit(core, _actor(actor), "person_split", project_id, result["person_id"],
           {"new_persons": len(result["new_person_ids"]), "events_reassigned": result["events_reassigned"]})
    return result


def audit_log(core: "Sightline", project_id: int, *, action: str | None = None, person_id: str | None = None,
              limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
    """The audit trail, newest first; ``person_id`` finds the entries of that person by its hash."""
    h = subject_hash(core, project_id, str(person_id).strip().lower()) if person_id else None
    return core.meta.audit_rows(project_id, action=action, subject_hash=h, limit=limit, before_id=before_id)

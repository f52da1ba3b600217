"""Persons and identity: which person each distinct_id belongs to, and what we know of them.

PostHog's rules (spec analytics §7), applied by the single ingestion writer in arrival order:

* an unknown distinct_id gets a new person whose id is derived from the project and the
  distinct_id (uuid5), so personless events and later profiles agree on the id;
* ``$identify`` / ``$create_alias`` join the anonymous id to the identified one, merging two
  persons unless the *source* person is already identified (``cannot_merge_already_identified``);
  ``$merge_dangerously`` merges without that guard;
* ``$set`` / ``$set_once`` / ``$unset`` update person properties. Sightline orders updates by
  **event timestamp**: a value only replaces one written by an older event, so back-filled
  imports never overwrite newer values (``$set_once`` keeps the earliest value);
* every merge appends a :class:`MergeRecord` (the merge log) and an override ``old → new``
  that queries apply, so events keep the person id they were ingested with.

The state lives in memory (:class:`IdentityState`) and every mutation is also recorded in a
:class:`Changes` object that the writer persists in the same transaction as the events.
"""

from __future__ import annotations

import uuid as _uuid
from hashlib import sha1 as _sha1
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping, Sequence

from sightline.ingest.normalize import IDENTITY_EVENTS, Event

PERSON_NAMESPACE = _uuid.UUID("6f1f9a54-6a43-4c1e-9a61-7d5b1f0e2c11")
MAX_GROUP_TYPES = 5

ILLEGAL_IDS_CI = frozenset({"anonymous", "guest", "distinctid", "distinct_id", "id", "not_authenticated",
                            "email", "undefined", "true", "false"})
ILLEGAL_IDS_CS = frozenset({"[object Object]", "NaN", "None", "none", "null", "0"})


_NAMESPACE_BYTES = PERSON_NAMESPACE.bytes


def person_uuid(project_id: int, distinct_id: str) -> str:
    """The id of the person first created for ``distinct_id`` (and of its personless events).

    ``str(uuid.uuid5(PERSON_NAMESPACE, f"{project_id}:{distinct_id}"))``, computed without the
    UUID object (a third of the cost: imports create a person per new distinct_id)."""
    digest = _sha1(_NAMESPACE_BYTES + f"{project_id}:{distinct_id}".encode()).digest()
    h = (digest[:6] + bytes(((digest[6] & 0x0F) | 0x50,)) + digest[7:8]
         + bytes(((digest[8] & 0x3F) | 0x80,)) + digest[9:16]).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_illegal_id(distinct_id: str | None) -> bool:
    if distinct_id is None or not distinct_id.strip():
        return True
    return distinct_id.lower() in ILLEGAL_IDS_CI or distinct_id in ILLEGAL_IDS_CS


@dataclass(slots=True)
class Person:
    id: str
    project_id: int
    created_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    # epoch seconds of the event that last wrote each key; unset keys keep a tombstone here
    properties_ts: dict[str, float] = field(default_factory=dict)
    # keys whose current value came from $set_once (an earlier $set_once may replace them)
    once_keys: set[str] = field(default_factory=set)
    is_identified: bool = False
    version: int = 0
    distinct_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Group:
    project_id: int
    group_type_index: int
    group_key: str
    created_at: datetime
    properties: dict[str, Any] = field(default_factory=dict)
    properties_ts: dict[str, float] = field(default_factory=dict)
    version: int = 0


@dataclass(slots=True)
class MergeRecord:
    project_id: int
    merged_at: datetime
    source_person_id: str
    target_person_id: str
    source_distinct_ids: list[str]
    source_properties: dict[str, Any]
    source_is_identified: bool
    source_created_at: datetime
    reason: str  # the event that caused it: $identify, $create_alias, $merge_dangerously


@dataclass(slots=True)
class Warning:
    project_id: int
    type: str
    details: dict[str, Any]
    timestamp: datetime


@dataclass
class Changes:
    """Everything one write transaction must persist besides the events themselves."""

    persons: dict[str, Person] = field(default_factory=dict)          # upserts by id
    deleted_persons: set[str] = field(default_factory=set)
    distinct_ids: dict[tuple[int, str], str] = field(default_factory=dict)  # → person id
    overrides: dict[tuple[int, str], str] = field(default_factory=dict)     # old → new
    merges: list[MergeRecord] = field(default_factory=list)
    groups: dict[tuple[int, int, str], Group] = field(default_factory=dict)
    group_types: list[tuple[int, str, int]] = field(default_factory=list)
    warnings: list[Warning] = field(default_factory=list)

    def touch(self, person: Person) -> None:
        self.persons[person.id] = person
        self.deleted_persons.discard(person.id)

    def __bool__(self) -> bool:
        return bool(self.persons or self.deleted_persons or self.distinct_ids or self.overrides
                    or self.merges or self.groups or self.group_types or self.warnings)


def _ts(event: Event) -> float:
    return event.timestamp.timestamp()


def apply_set(target: Person | Group, values: dict[str, Any], ts: float) -> bool:
    """``$set``: a key is written unless an event newer than ``ts`` already wrote it."""
    changed = False
    once = target.once_keys if isinstance(target, Person) else ()
    for key, value in values.items():
        # a value from $set_once yields to any $set: in timestamp order the $set either came
        # first (so the $set_once did nothing) or came later (so it overwrites)
        if key in once or target.properties_ts.get(key, float("-inf")) <= ts:
            if target.properties.get(key, _MISSING) != value or key not in target.properties:
                target.properties[key] = value
                changed = True
            target.properties_ts[key] = ts
            if isinstance(target, Person):
                target.once_keys.discard(key)
    return changed


def apply_set_once(person: Person, values: dict[str, Any], ts: float) -> bool:
    """``$set_once``: write absent keys; an earlier event's ``$set_once`` beats a later one's."""
    changed = False
    for key, value in values.items():
        present = key in person.properties
        if not present and key not in person.properties_ts:
            pass
        elif not present:
            # a tombstone from $unset: only an event after the unset may set it again
            if person.properties_ts[key] > ts:
                continue
        elif not (key in person.once_keys and person.properties_ts.get(key, 0.0) > ts):
            continue
        person.properties[key] = value
        person.properties_ts[key] = ts
        person.once_keys.add(key)
        changed = True
    return changed


def apply_unset(person: Person, keys: Iterable[str], ts: float) -> bool:
    changed = False
    for key in keys:
        if person.properties_ts.get(key, float("-inf")) <= ts:
            if key in person.properties:
                del person.properties[key]
                changed = True
            person.properties_ts[key] = ts
            person.once_keys.discard(key)
    return changed


_MISSING = object()
_SPECIAL_EVENTS = IDENTITY_EVENTS
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def needs_full_process(event: Event) -> bool:
    """False for the everyday event whose only identity effect is its distinct_id's person
    (and that person's ``created_at``): no identity event, groups, person updates or
    ``$process_person_profile``. :meth:`IdentityState.process_columns` needs only its
    distinct_id and timestamp."""
    props = event.properties
    return not (event.set is None and event.set_once is None and event.unset is None
                and event.event not in _SPECIAL_EVENTS and "$groups" not in props
                and "$process_person_profile" not in props)


class IdentityState:
    """The identity graph of every project, owned by one writer thread."""

    def __init__(self) -> None:
        self.persons: dict[str, Person] = {}
        self.distinct_ids: dict[tuple[int, str], str] = {}
        self.overrides: dict[tuple[int, str], str] = {}
        self._override_sources: dict[tuple[int, str], set[str]] = {}
        self.groups: dict[tuple[int, int, str], Group] = {}
        self.group_types: dict[int, dict[str, int]] = {}

    # -- loading -------------------------------------------------------------------------
    def add_loaded_person(self, person: Person) -> None:
        self.persons[person.id] = person

    def add_loaded_distinct_id(self, project_id: int, distinct_id: str, person_id: str) -> None:
        self.distinct_ids[(project_id, distinct_id)] = person_id
        person = self.persons.get(person_id)
        if person is not None:
            person.distinct_ids.append(distinct_id)

    def add_loaded_override(self, project_id: int, old: str, new: str) -> None:
        self.overrides[(project_id, old)] = new
        self._override_sources.setdefault((project_id, new), set()).add(old)

    # -- lookups -------------------------------------------------------------------------
    def person_for(self, project_id: int, distinct_id: str) -> Person | None:
        pid = self.distinct_ids.get((project_id, distinct_id))
        return self.persons.get(pid) if pid else None

    def group_type_index(self, project_id: int, group_type: str, changes: Changes) -> int | None:
        mapping = self.group_types.setdefault(project_id, {})
        index = mapping.get(group_type)
        if index is None:
            if len(mapping) >= MAX_GROUP_TYPES:
                return None
            index = len(mapping)
            mapping[group_type] = index
            changes.group_types.append((project_id, group_type, index))
        return index

    # -- the write path --------------------------------------------------------------------
    def process_batch(self, project_id: int, events: Iterable[Event], changes: Changes) -> None:
        """:meth:`process` for each event in order. The everyday event (no identity event, no
        groups, person updates or ``$process_person_profile``, of a distinct_id already known)
        is handled inline with exactly process()'s effect; every other goes through it."""
        lookup, persons, process = self.distinct_ids.get, self.persons, self.process
        for event in events:
            # event.plain: normalize already found what the rest of the test checks
            if event.plain or (event.set is None and event.set_once is None and event.unset is None
                               and event.event not in _SPECIAL_EVENTS and "$groups" not in event.properties
                               and "$process_person_profile" not in event.properties):
                pid = lookup((project_id, event.distinct_id))
                person = persons.get(pid) if pid else None
                if person is not None:
                    event.person_id = person.id
                    if event.timestamp < person.created_at:
                        person.created_at = event.timestamp
                        person.version += 1
                        changes.touch(person)
                    continue
            process(project_id, event, changes)

    def process_columns(self, project_id: int, distinct_ids: Sequence[str], timestamps_us: Sequence[int],
                        specials: Mapping[int, Event], changes: Changes) -> tuple[list[str], dict[int, dict]]:
        """:meth:`process` for each event of a columnar batch, in order, with the same effects.

        Row ``i`` is ``specials[i]`` when present (a whole :class:`Event`, see
        :func:`needs_full_process`), else an everyday event known only by ``distinct_ids[i]``
        and its exact epoch microseconds ``timestamps_us[i]``. Returns each row's person id and
        ``{row: groups}`` for the rows that have groups."""
        lookup, persons = self.distinct_ids.get, self.persons
        person_ids: list[str] = []
        append = person_ids.append
        groups: dict[int, dict] = {}
        for i, distinct_id in enumerate(distinct_ids):
            if specials:
                event = specials.get(i)
                if event is not None:
                    self.process(project_id, event, changes)
                    append(event.person_id)
                    if event.groups:
                        groups[i] = event.groups
                    continue
            ts = _EPOCH + timedelta(microseconds=timestamps_us[i])
            pid = lookup((project_id, distinct_id))
            person = persons.get(pid) if pid else None
            if person is None:
                person = self.get_or_create(project_id, distinct_id, ts, changes)
            append(person.id)
            if ts < person.created_at:
                person.created_at = ts
                person.version += 1
                changes.touch(person)
        return person_ids, groups

    def process(self, project_id: int, event: Event, changes: Changes) -> None:
        """Resolve ``event.person_id`` and ``event.groups`` and apply its person updates."""
        props = event.properties
        self._resolve_groups(project_id, event, changes)
        name = event.event
        if name == "$groupidentify":
            self._group_identify(project_id, event, changes)

        if props.get("$process_person_profile") is False:
            pid = self.distinct_ids.get((project_id, event.distinct_id))
            event.person_id = pid or person_uuid(project_id, event.distinct_id)
            return

        if name == "$identify":
            anon = props.get("$anon_distinct_id")
            person = self._join(project_id, event, anon if isinstance(anon, str) else None,
                                guarded=True, changes=changes)
        elif name in ("$create_alias", "$merge_dangerously"):
            alias = props.get("alias")
            alias_id = alias if isinstance(alias, str) else (str(alias) if alias is not None else None)
            person = self._join(project_id, event, alias_id, guarded=name == "$create_alias",
                                changes=changes)
        else:
            person = self.get_or_create(project_id, event.distinct_id, event.timestamp, changes)

        event.person_id = person.id
        changed = False
        if event.set or event.set_once or event.unset:
            ts = _ts(event)
            if event.set:
                changed |= apply_set(person, event.set, ts)
            if event.set_once:
                changed |= apply_set_once(person, event.set_once, ts)
            if event.unset:
                changed |= apply_unset(person, event.unset, ts)
        if event.timestamp < person.created_at:
            person.created_at = event.timestamp
            changed = True
        if changed:
            person.version += 1
            changes.touch(person)

    def get_or_create(self, project_id: int, distinct_id: str, ts: datetime,
                       changes: Changes) -> Person:
        person = self.person_for(project_id, distinct_id)
        if person is not None:
            return person
        pid = person_uuid(project_id, distinct_id)
        person = self.persons.get(pid)
        if person is None:
            person = Person(id=pid, project_id=project_id, created_at=ts)
            self.persons[pid] = person
        self._attach(project_id, distinct_id, person, changes, derived=pid)
        changes.touch(person)
        return person

    def _attach(self, project_id: int, distinct_id: str, person: Person, changes: Changes,
                derived: str | None = None) -> None:
        self.distinct_ids[(project_id, distinct_id)] = person.id
        person.distinct_ids.append(distinct_id)
        changes.distinct_ids[(project_id, distinct_id)] = person.id
        # Personless events sent before this id had a profile carry its derived id.
        if derived is None:
            derived = person_uuid(project_id, distinct_id)
        if derived != person.id and derived not in self.persons:
            self._set_override(project_id, derived, person.id, changes)

    def _join(self, project_id: int, event: Event, other_id: str | None, *, guarded: bool,
              changes: Changes) -> Person:
        """$identify / $create_alias / $merge_dangerously: put ``other_id`` with event.distinct_id."""
        target_id = event.distinct_id
        if other_id is None or other_id == target_id:
            person = self.get_or_create(project_id, target_id, event.timestamp, changes)
            self._mark_identified(person, changes)
            return person
        if is_illegal_id(other_id) or is_illegal_id(target_id):
            self._warn(project_id, "cannot_merge_with_illegal_distinct_id",
                       {"distinct_id": target_id, "other_distinct_id": other_id}, event, changes)
            person = self.get_or_create(project_id, target_id, event.timestamp, changes)
            if not is_illegal_id(target_id):
                self._mark_identified(person, changes)
            return person

        target = self.person_for(project_id, target_id)
        source = self.person_for(project_id, other_id)
        if target is None and source is None:
            # The anonymous id's derived uuid keeps its earlier personless events attached.
            person = self.get_or_create(project_id, other_id, event.timestamp, changes)
            self._attach(project_id, target_id, person, changes)
        elif target is None and guarded and source.is_identified and event.event == "$identify":
            # identify('A') then identify('C') on one device: C is someone else, not A again.
            # ($create_alias may add a new id to an identified person: that is what alias is for.)
            self._warn(project_id, "cannot_merge_already_identified",
                       {"source_person_id": source.id, "source_distinct_id": other_id,
                        "target_distinct_id": target_id}, event, changes)
            person = self.get_or_create(project_id, target_id, event.timestamp, changes)
        elif target is None:
            person = source
            self._attach(project_id, target_id, person, changes)
        elif source is None:
            person = target
            self._attach(project_id, other_id, person, changes)
        elif source.id == target.id:
            person = target
        elif guarded and source.is_identified:
            self._warn(project_id, "cannot_merge_already_identified",
                       {"source_person_id": source.id, "target_person_id": target.id,
                        "source_distinct_id": other_id, "target_distinct_id": target_id},
                       event, changes)
            return target
        else:
            person = self.merge(project_id, source, target, event.timestamp, event.event, changes)
        self._mark_identified(person, changes)
        changes.touch(person)
        return person

    def _mark_identified(self, person: Person, changes: Changes) -> None:
        if not person.is_identified:
            person.is_identified = True
            person.version += 1
            changes.touch(person)

    def merge(self, project_id: int, source: Person, target: Person, when: datetime, reason: str,
              changes: Changes) -> Person:
        """Merge ``source`` into ``target``: the target's properties win on conflicts."""
        changes.merges.append(MergeRecord(
            project_id=project_id, merged_at=when, source_person_id=source.id,
            target_person_id=target.id, source_distinct_ids=list(source.distinct_ids),
            source_properties=dict(source.properties), source_is_identified=source.is_identified,
            source_created_at=source.created_at, reason=reason))
        for key, value in source.properties.items():
            # the target wins; a key the target removed stays removed unless the source set it later
            if key not in target.properties and \
                    target.properties_ts.get(key, float("-inf")) < source.properties_ts.get(key, 0.0):
                target.properties[key] = value
                target.properties_ts[key] = source.properties_ts.get(key, 0.0)
                if key in source.once_keys:
                    target.once_keys.add(key)
        for did in source.distinct_ids:
            self.distinct_ids[(project_id, did)] = target.id
            changes.distinct_ids[(project_id, did)] = target.id
            target.distinct_ids.append(did)
        target.created_at = min(target.created_at, source.created_at)
        target.version += 1
        del self.persons[source.id]
        changes.persons.pop(source.id, None)
        changes.deleted_persons.add(source.id)
        self._set_override(project_id, source.id, target.id, changes)
        changes.touch(target)
        return target

    def _set_override(self, project_id: int, old: str, new: str, changes: Changes) -> None:
        # Keep the mapping flat: everything that pointed at ``old`` now points at ``new``.
        moved = self._override_sources.pop((project_id, old), set())
        sources = self._override_sources.setdefault((project_id, new), set())
        for earlier in moved | {old}:
            if earlier == new:
                self.overrides.pop((project_id, earlier), None)
                changes.overrides[(project_id, earlier)] = earlier  # identity: drop on persist
                continue
            self.overrides[(project_id, earlier)] = new
            changes.overrides[(project_id, earlier)] = new
            sources.add(earlier)

    def _resolve_groups(self, project_id: int, event: Event, changes: Changes) -> None:
        groups = event.properties.get("$groups")
        if not isinstance(groups, dict):
            return
        for group_type, key in groups.items():
            if key is None or key == "":
                continue
            index = self.group_type_index(project_id, str(group_type), changes)
            if index is None:
                self._warn(project_id, "too_many_group_types", {"group_type": str(group_type)},
                           event, changes)
                continue
            event.groups[index] = key if isinstance(key, str) else str(key)

    def _group_identify(self, project_id: int, event: Event, changes: Changes) -> None:
        props = event.properties
        group_type, key = props.get("$group_type"), props.get("$group_key")
        if not isinstance(group_type, str) or key in (None, ""):
            self._warn(project_id, "invalid_groupidentify", {"$group_type": str(group_type),
                                                              "$group_key": str(key)}, event, changes)
            return
        index = self.group_type_index(project_id, group_type, changes)
        if index is None:
            self._warn(project_id, "too_many_group_types", {"group_type": group_type}, event, changes)
            return
        key = key if isinstance(key, str) else str(key)
        event.groups.setdefault(index, key)
        gkey = (project_id, index, key)
        group = self.groups.get(gkey)
        if group is None:
            group = Group(project_id, index, key, created_at=event.timestamp)
            self.groups[gkey] = group
        values = props.get("$group_set")
        if isinstance(values, dict):
            apply_set(group, values, _ts(event))
        group.created_at = min(group.created_at, event.timestamp)
        group.version += 1
        changes.groups[gkey] = group

    def _warn(self, project_id: int, kind: str, details: dict, event: Event, changes: Changes) -> None:
        details = {**details, "event_uuid": event.uuid, "event": event.event}
        changes.warnings.append(Warning(project_id, kind, details, event.timestamp))


def _us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


@dataclass
class ChangeRows:
    """A frozen, plain-data copy of :class:`Changes`, ready to log or to store.

    Timestamps are epoch microseconds; JSON values are already serialised. Copies from
    consecutive batches combine with :meth:`merge` (the later state of a row wins).
    """

    persons: dict[str, tuple] = field(default_factory=dict)  # id → (project, created_us, props, meta, identified, version)
    deleted_persons: set[str] = field(default_factory=set)
    distinct_ids: dict[tuple[int, str], str] = field(default_factory=dict)
    overrides: dict[tuple[int, str], str] = field(default_factory=dict)
    merges: list[tuple] = field(default_factory=list)
    groups: dict[tuple[int, int, str], tuple] = field(default_factory=dict)  # → (created_us, props, meta, version)
    group_types: list[tuple[int, str, int]] = field(default_factory=list)
    warnings: list[tuple] = field(default_factory=list)  # (project, type, details json, ts_us)

    def __bool__(self) -> bool:
        return bool(self.persons or self.deleted_persons or self.distinct_ids or self.overrides or self.merges
                    or self.groups or self.group_types or self.warnings)

    def merge(self, later: "ChangeRows") -> None:
        for pid in later.deleted_persons:
            self.persons.pop(pid, None)
        self.deleted_persons -= set(later.persons)
        self.deleted_persons |= later.deleted_persons
        self.persons.update(later.persons)
        self.distinct_ids.update(later.distinct_ids)
        self.overrides.update(later.overrides)
        self.merges.extend(later.merges)
        self.groups.update(later.groups)
        self.group_types.extend(later.group_types)
        self.warnings.extend(later.warnings)

    def to_json(self) -> bytes:
        import orjson

        return orjson.dumps({
            "p": [[k, *v] for k, v in self.persons.items()], "d": sorted(self.deleted_persons),
            "i": [[k[0], k[1], v] for k, v in self.distinct_ids.items()],
            "o": [[k[0], k[1], v] for k, v in self.overrides.items()], "m": self.merges,
            "g": [[*k, *v] for k, v in self.groups.items()], "t": self.group_types, "w": self.warnings})

    @classmethod
    def from_json(cls, data: bytes) -> "ChangeRows":
        import orjson

        raw = orjson.loads(data)
        return cls(persons={r[0]: tuple(r[1:]) for r in raw["p"]}, deleted_persons=set(raw["d"]),
                   distinct_ids={(r[0], r[1]): r[2] for r in raw["i"]},
                   overrides={(r[0], r[1]): r[2] for r in raw["o"]}, merges=[tuple(m) for m in raw["m"]],
                   groups={(r[0], r[1], r[2]): tuple(r[3:]) for r in raw["g"]},
                   group_types=[tuple(t) for t in raw["t"]], warnings=[tuple(w) for w in raw["w"]])


def change_rows(ch: Changes) -> ChangeRows:
    """Freeze ``ch`` (the live objects it points at keep changing after this)."""
    import orjson

    def dumps(v: Any) -> str:
        return orjson.dumps(v, option=orjson.OPT_NON_STR_KEYS).decode()

    return ChangeRows(
        persons={p.id: (p.project_id, _us(p.created_at), dumps(p.properties),
                        dumps({"ts": p.properties_ts, "once": sorted(p.once_keys)}), p.is_identified, p.version)
                 for p in ch.persons.values()},
        deleted_persons=set(ch.deleted_persons),
        distinct_ids=dict(ch.distinct_ids),
        overrides=dict(ch.overrides),
        merges=[(m.project_id, _us(m.merged_at), m.source_person_id, m.target_person_id,
                 dumps(m.source_distinct_ids), dumps(m.source_properties), m.source_is_identified,
                 _us(m.source_created_at), m.reason) for m in ch.merges],
        groups={k: (_us(g.created_at), dumps(g.properties), dumps({"ts": g.properties_ts}), g.version)
                for k, g in ch.groups.items()},
        group_types=list(ch.group_types),
        warnings=[(w.project_id, w.type, dumps(w.details), _us(w.timestamp)) for w in ch.warnings],
    )

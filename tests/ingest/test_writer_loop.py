"""Group commits made by an event loop's thread (`Writer.submit(..., in_loop=True)`): one group per
pass of the loop, answered on the loop; never blocking the loop while a job holds the writer."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone

import duckdb
import pyarrow as pa

import sightline
from sightline.errors import Unavailable
from sightline.ingest.normalize import normalize_batch

UTC = timezone.utc


def _events(prefix: str, n: int):
    raw = [{"event": "e", "distinct_id": f"{prefix}-{i % 3}", "uuid": None, "properties": {"i": i}}
           for i in range(n)]
    return normalize_batch(raw, now=datetime.now(UTC)).events


def _fail_next_append(log) -> None:
    """The log's next append fails as a full disk does; later ones work."""
    real_append = log.append
    fail = {"n": 1}

    def flaky_append(payload):
        if fail["n"]:
            fail["n"] -= 1
            raise OSError(28, "No space left on device")
        return real_append(payload)

    log.append = flaky_append


def test_requests_in_one_pass_of_the_loop_share_one_commit(tmp_path):
    core = sightline.open(tmp_path / "d")
    try:
        writer, pid = core.writer, core.bootstrap_info.project.id
        before = writer.stats.batches

        async def main():
            futures = [writer.submit(pid, _events(f"r{k}", 10), in_loop=True) for k in range(5)]
            assert all(isinstance(f, asyncio.Future) for f in futures)
            return await asyncio.gather(*futures)

        results = asyncio.run(main())
        assert [(r.stored, r.duplicates) for r in results] == [(10, 0)] * 5
        assert writer.stats.batches == before + 1  # one group, one log record, one fsync
        core.sync()
        assert core.storage.execute("select count(*) from events").rows[0][0] == 50
        assert writer.pending_events == 0
    finally:
        core.close()


def test_a_job_holding_the_writer_does_not_block_the_loop(tmp_path):
    core = sightline.open(tmp_path / "d")
    try:
        writer, pid = core.writer, core.bootstrap_info.project.id
        started, release = threading.Event(), threading.Event()

        def job(identity):
            started.set()
            release.wait(10)
            return "done"

        runner = threading.Thread(target=lambda: writer.run_exclusive(job))
        runner.start()
        assert started.wait(10)

        async def main():
            fut = writer.submit(pid, _events("busy", 4), in_loop=True)
            t0 = time.monotonic()
            await asyncio.sleep(0.2)  # the loop keeps running: the commit went to the writer thread
            assert time.monotonic() - t0 < 5 and not fut.done()
            release.set()
            return await asyncio.wait_for(fut, 30)

        result = asyncio.run(main())
        runner.join(10)
        assert (result.stored, result.duplicates) == (4, 0)
        core.sync()
        assert core.storage.execute("select count(*) from events where distinct_id like 'busy-%'").rows[0][0] == 4
    finally:
        core.close()


def test_after_stop_the_loop_gets_an_error_not_a_hang(tmp_path):
    core = sightline.open(tmp_path / "d")
    writer, pid = core.writer, core.bootstrap_info.project.id
    core.close()

    async def main():
        fut = writer.submit(pid, _events("late", 2), in_loop=True)
        try:
            await asyncio.wait_for(fut, 5)
        except Unavailable as exc:
            return exc
        return None

    assert isinstance(asyncio.run(main()), Unavailable)


def test_a_record_the_log_cannot_take_fails_its_group_and_the_identity_is_reloaded(tmp_path):
    """The syncer thread appends the records (off the event loop). When an append fails, that
    group gets 503 storage_error and nothing of it is stored, the identity changes it made are
    dropped (the next commit reloads the state), later groups still work, and a job that waits
    for every committed group does not hang."""
    core = sightline.open(tmp_path / "d")
    try:
        writer, pid = core.writer, core.bootstrap_info.project.id
        assert writer.write(pid, _events("ok", 6)).stored == 6
        _fail_next_append(writer.log)
        failed = writer.submit(pid, _events("lost", 6))
        try:
            failed.result(10)
            raise AssertionError("the group should have failed")
        except Unavailable as exc:
            assert exc.code == "storage_error" and "No space left" in exc.detail
        # its new persons were never stored: the next commit starts from the stored identity
        assert writer.write(pid, _events("after", 6)).stored == 6
        assert writer.identity.person_for(pid, "lost-0") is None
        assert writer.identity.person_for(pid, "after-0") is not None
        assert writer.run_exclusive(lambda identity: "job ran") == "job ran"
        core.sync()
        stored = core.storage.execute("select distinct_id from events order by distinct_id").rows
        assert sorted({r[0].split("-")[0] for r in stored}) == ["after", "ok"]
        assert len(stored) == 12
        assert writer.pending_events == 0
    finally:
        core.close()


def test_groups_resolved_against_a_lost_record_fail_too(tmp_path):
    """A group committed after a group whose record is then lost (same epoch) must not be logged:
    its persons may be the lost group's. The syncer fails it; the following one succeeds."""
    core = sightline.open(tmp_path / "d")
    try:
        writer, pid = core.writer, core.bootstrap_info.project.id
        log = writer.log
        real_append = log.append
        gate, entered = threading.Event(), threading.Event()
        calls = {"n": 0}

        def slow_failing_append(payload):
            calls["n"] += 1
            if calls["n"] == 1:  # hold the syncer until the second group is committed, then fail
                entered.set()
                gate.wait(10)
                raise OSError(5, "I/O error")
            return real_append(payload)

        log.append = slow_failing_append

        async def main():
            first = writer.submit(pid, _events("a", 3), in_loop=True)
            await asyncio.sleep(0)  # first group committed by this pass of the loop
            assert await asyncio.to_thread(entered.wait, 10)
            second = writer.submit(pid, _events("a", 3), in_loop=True)  # same persons as the first
            await asyncio.sleep(0.05)
            gate.set()
            return await asyncio.gather(first, second, return_exceptions=True)

        first, second = asyncio.run(main())
        assert isinstance(first, Unavailable) and isinstance(second, Unavailable)
        assert calls["n"] == 1  # the second record was never appended
        assert writer.write(pid, _events("b", 3)).stored == 3
        core.sync()
        assert core.storage.execute("select count(*) from events").rows[0][0] == 3
        assert writer.identity.person_for(pid, "a-0") is None
    finally:
        core.close()


def test_a_retry_after_a_failed_group_is_stored_not_taken_for_a_duplicate(tmp_path):
    """The dedup window must not remember the uuids of a group the log did not take."""
    core = sightline.open(tmp_path / "d")
    try:
        writer, pid = core.writer, core.bootstrap_info.project.id
        raw = [{"event": "e", "distinct_id": f"r-{i}", "uuid": f"0190a8c2-0000-7000-8000-{i:012d}",
                "properties": {"i": i}} for i in range(5)]
        _fail_next_append(writer.log)
        try:
            writer.write(pid, normalize_batch(raw, now=datetime.now(UTC)).events, timeout=10)
            raise AssertionError("the group should have failed")
        except Unavailable:
            pass
        retry = writer.write(pid, normalize_batch(raw, now=datetime.now(UTC)).events, timeout=10)
        assert (retry.stored, retry.duplicates) == (5, 0)
        again = writer.write(pid, normalize_batch(raw, now=datetime.now(UTC)).events, timeout=10)
        assert (again.stored, again.duplicates) == (0, 5)  # now they are remembered
        core.sync()
        assert core.storage.execute("select count(*) from events").rows[0][0] == 5
    finally:
        core.close()


def test_recent_uuids_window_is_fifo_across_projects():
    from sightline.ingest.writer import RecentUuids

    r = RecentUuids(4)
    r.add_many([(1, "a"), (2, "a"), (1, "b"), (1, "a")])  # the repeat is ignored
    assert len(r) == 3 and (1, "a") in r and (2, "a") in r and (2, "b") not in r
    r.add_new(2, {"c"})
    r.add((1, "d"))  # capacity 4: the oldest, (1, "a"), goes
    assert (1, "a") not in r and (2, "a") in r and (1, "d") in r and len(r) == 4
    r.discard(2, ["c"])
    assert (2, "c") not in r and len(r) == 3
    r.add_many([(3, "x"), (3, "y")])  # evicts (2, "a") then (1, "b")
    assert (2, "a") not in r and (1, "b") not in r and (3, "y") in r


def test_an_fsync_that_fails_fails_every_group_resolved_before_it(tmp_path, monkeypatch):
    """No request is answered before its record's fsync returns; when that fsync fails, its group
    and every group committed before the failure was known (maybe resolved against the lost
    persons) fail, the identity is reloaded, retries are stored, and jobs do not hang."""
    from sightline.ingest import writer as writer_mod

    core = sightline.open(tmp_path / "d")
    try:
        writer, pid = core.writer, core.bootstrap_info.project.id
        real_fsync = writer_mod.os.fsync
        gate, entered = threading.Event(), threading.Event()
        calls = {"n": 0}

        def held_failing_fsync(fd):
            calls["n"] += 1
            if calls["n"] == 1:  # the first round's fsync: hold it, then fail as a broken disk does
                entered.set()
                gate.wait(10)
                raise OSError(5, "I/O error")
            return real_fsync(fd)

        monkeypatch.setattr(writer_mod.os, "fsync", held_failing_fsync)
        raw_a = [{"event": "e", "distinct_id": f"a-{i % 2}", "uuid": f"0190a8c2-0000-7000-8000-{i:012d}",
                  "properties": {"i": i}} for i in range(4)]
        raw_b = [{"event": "e", "distinct_id": f"a-{i % 2}", "uuid": f"0190a8c2-0000-7000-9000-{i:012d}",
                  "properties": {"i": i}} for i in range(4)]

        async def main():
            first = writer.submit(pid, normalize_batch(raw_a, now=datetime.now(UTC)).events, in_loop=True)
            await asyncio.sleep(0)  # committed by this pass of the loop
            assert await asyncio.to_thread(entered.wait, 10)
            second = writer.submit(pid, normalize_batch(raw_b, now=datetime.now(UTC)).events, in_loop=True)
            await asyncio.sleep(0.1)
            assert not first.done() and not second.done()  # nothing answered before its fsync
            gate.set()
            return await asyncio.gather(first, second, return_exceptions=True)

        first, second = asyncio.run(main())
        assert isinstance(first, Unavailable) and first.code == "storage_error" and "I/O error" in first.detail
        assert isinstance(second, Unavailable) and second.code == "storage_error"
        assert writer.run_exclusive(lambda identity: "job ran") == "job ran"
        assert writer.identity.person_for(pid, "a-0") is None  # reloaded: the lost persons are gone
        for raw in (raw_a, raw_b):  # retries are stored, not taken for duplicates
            retry = writer.write(pid, normalize_batch(raw, now=datetime.now(UTC)).events, timeout=10)
            assert (retry.stored, retry.duplicates) == (4, 0)
        core.sync()
        rows = core.storage.execute("select CAST(uuid AS VARCHAR) from events").rows
        assert sorted(r[0] for r in rows) == sorted(r["uuid"] for r in raw_a + raw_b)
        assert writer.identity.person_for(pid, "a-0") is not None
        assert writer.pending_events == 0
    finally:
        core.close()


def test_serial_appends_store_the_same_rows_and_leave_the_thread_setting(tmp_path):
    """The flusher's appends insert on one DuckDB thread (``serial``: one Arrow batch): the same
    rows and derived columns as a parallel append, and the database's thread setting (which
    concurrent queries use) is never changed, a failing append included."""
    from sightline.storage.schema import events_to_arrow

    core = sightline.open(tmp_path / "d")
    try:
        storage, pid = core.storage, core.bootstrap_info.project.id
        assert core.writer._flush_options == {"serial": True}  # the live flushes use it
        threads = storage._con.execute("SELECT current_setting('threads')").fetchone()[0]
        raw = [{"event": ["$pageview", "click"][i % 2], "distinct_id": f"s-{i % 7}",
                "properties": {"$current_url": f"https://x.test/{i}", "$browser": ["Chrome", "Firefox"][i % 2],
                               "$session_id": f"sess-{i % 3}", "utm_source": None if i % 4 else "news", "n": i}}
               for i in range(3000)]
        now = datetime.now(UTC)
        tables = []
        for _ in range(2):
            events = normalize_batch(raw, now=now).events
            for e in events:
                e.person_id = "0190a8c2-0000-7000-8000-000000000001"
            tables.append(events_to_arrow(events, [pid] * len(events), now))
        storage.append(tables[0], {}, serial=False)
        several = pa.concat_tables([tables[1].slice(0, 1000), tables[1].slice(1000)])  # as a flush's groups
        assert several.column(0).num_chunks == 2
        storage.append(several, {}, serial=True)
        assert storage._con.execute("SELECT current_setting('threads')").fetchone()[0] == threads
        cols = "event, distinct_id, person_id, timestamp, properties, session_id, mat_current_url, mat_browser, mat_utm_source"
        first, second = (sorted(storage.execute(
            f"SELECT {cols} FROM events WHERE uuid IN (SELECT CAST(unnest($u) AS UUID))",
            {"u": t.column("uuid").to_pylist()}).rows) for t in tables)
        assert len(first) == 3000 and first == second
        broken = tables[0].set_column(0, "uuid", pa.array(["not a uuid"] * tables[0].num_rows, pa.string()))
        try:
            storage.append(broken, {}, serial=True)
            raise AssertionError("the append should have failed")
        except duckdb.Error:
            pass
        assert storage._con.execute("SELECT current_setting('threads')").fetchone()[0] == threads
        assert storage.execute("SELECT count(*) FROM events").rows[0][0] == 6000
    finally:
        core.close()


def test_duplicates_in_one_group_against_a_plain_reference(tmp_path):
    """Requests without duplicates take the set-based check, the others the per-event one: the
    stored and duplicate counts of every request match a plain-Python replay of the rule (first
    occurrence of a uuid in arrival order wins, against earlier groups too)."""
    import random

    core = sightline.open(tmp_path / "d")
    try:
        writer, pid = core.writer, core.bootstrap_info.project.id
        r = random.Random(7)
        pool = [f"0190a8c2-0000-7000-8000-{i:012d}" for i in range(60)]
        requests = []
        for k in range(12):
            if k % 3 == 0:  # fresh uuids only
                uuids = [f"0190a8c2-0000-7000-9000-{k:04d}{i:08d}" for i in range(5)]
            else:  # drawn from a small pool: repeats within and across requests
                uuids = [r.choice(pool) for _ in range(6)]
            requests.append(uuids)
        held: set[str] = set()
        expected = []
        for uuids in requests:
            stored = 0
            for u in uuids:
                if u not in held:
                    held.add(u)
                    stored += 1
            expected.append((stored, len(uuids) - stored))

        def events(uuids):
            raw = [{"event": "e", "distinct_id": f"d-{i % 4}", "uuid": u, "properties": {"i": i}}
                   for i, u in enumerate(uuids)]
            return normalize_batch(raw, now=datetime.now(UTC)).events

        async def main(batch):
            return await asyncio.gather(*[writer.submit(pid, events(u), in_loop=True) for u in batch])

        results = asyncio.run(main(requests[:6])) + asyncio.run(main(requests[6:]))  # two groups
        assert [(x.stored, x.duplicates) for x in results] == expected
        core.sync()
        assert core.storage.execute("select count(*) from events").rows[0][0] == len(held)
    finally:
        core.close()

"""Group commits made by an event loop's thread (`Writer.submit(..., in_loop=True)`): one group per
pass of the loop, answered on the loop; never blocking the loop while a job holds the writer."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone

import sightline
from sightline.errors import Unavailable
from sightline.ingest.normalize import normalize_batch

UTC = timezone.utc


def _events(prefix: str, n: int):
    raw = [{"event": "e", "distinct_id": f"{prefix}-{i % 3}", "uuid": None, "properties": {"i": i}}
           for i in range(n)]
    return normalize_batch(raw, now=datetime.now(UTC)).events


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

"""Several dispatchers on one database (trustcam processes sharing PostgreSQL) deliver each alert once: a claim
takes due rows for one worker alone, skips rows another claim holds, and hands rows back after a crash."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text

from trustcam.alerts.model import Alert, Severity
from trustcam.alerts.outbox import Outbox
from trustcam.storage.database import open_database

SINK = "webhook:hook"


def queue(outbox: Outbox, n: int) -> list[int]:
    for i in range(n):
        outbox.add(Alert(kind="rule", severity=Severity.warning, camera="front", message=f"alert {i}"), [SINK])
    return [row.id for row in outbox.rows()]


def test_concurrent_dispatchers_claim_each_alert_once(database_url: str) -> None:
    ids = queue(Outbox(open_database(database_url)), 60)
    outboxes = [Outbox(open_database(database_url)) for _ in range(4)]  # own engine each, like own process
    claimed: list[list[int]] = [[] for _ in outboxes]
    errors: list[BaseException] = []
    start = threading.Barrier(len(outboxes))

    def work(n: int) -> None:
        try:
            start.wait()
            while rows := outboxes[n].claim(SINK, time.time(), limit=3):
                for row in rows:  # "delivered", as the dispatcher records it
                    claimed[n].append(row.id)
                    outboxes[n].delivered(row.id, 1, 0.01)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(outboxes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    every = [row_id for rows in claimed for row_id in rows]
    assert sorted(every) == ids  # each alert delivered exactly once: none twice, none left behind
    assert Outbox(open_database(database_url)).counts() == {(SINK, "delivered"): 60}


def test_a_claim_skips_rows_another_claim_holds_instead_of_waiting(postgres_url: str) -> None:
    """PostgreSQL: while one worker's claim transaction holds rows 1-5, another worker takes the next ones at once."""
    outbox = Outbox(open_database(postgres_url))
    ids = queue(outbox, 8)
    holder = open_database(postgres_url).connect()
    transaction = holder.begin()
    held = holder.execute(text("SELECT id FROM alert_outbox ORDER BY id LIMIT 5 FOR UPDATE")).scalars().all()
    try:
        result: list[list[int]] = []
        other = threading.Thread(target=lambda: result.append([r.id for r in outbox.claim(SINK, time.time())]))
        other.start()
        other.join(10)
        assert not other.is_alive(), "the claim waited for the other worker's row locks"
        assert result == [ids[5:]] and list(held) == ids[:5]
    finally:
        transaction.rollback()
        holder.close()
    assert [r.id for r in outbox.claim(SINK, time.time())] == ids[:5]  # free again: the holder ended


def test_claimed_rows_come_back_when_released_or_when_the_lease_runs_out(database_url: str) -> None:
    outbox = Outbox(open_database(database_url))
    ids = queue(outbox, 3)
    first = outbox.claim(SINK, time.time(), lease_s=60)
    assert [r.id for r in first] == ids and outbox.claim(SINK, time.time()) == []  # leased: nobody else takes them
    outbox.release(first[:1])  # not attempted (the sink went away): due again at once
    assert [r.id for r in outbox.claim(SINK, time.time(), lease_s=0.2)] == ids[:1]
    time.sleep(0.3)  # that worker died mid-delivery: after its lease another one takes the row
    assert [r.id for r in outbox.claim(SINK, time.time())] == ids[:1]

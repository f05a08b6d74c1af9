"""Several processes share one database (PostgreSQL: several trustcam servers behind a load balancer) and append
to the one audit log at the same moment: every entry lands, in one chain, with no gap and no duplicate seq."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trustcam.security.audit import CHECKPOINT_EVERY, AuditLog
from trustcam.security.tables import AuditCheckpointRow, AuditRow
from trustcam.storage.database import open_database

WRITERS, EACH = 3, 40

# One writer: waits for the start signal (so the writers really overlap), then appends EACH entries as fast as it can.
WRITER = """
import sys, time
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from trustcam.security.audit import AuditLog
from trustcam.storage.database import open_database

url, key, go, name, each = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
log = AuditLog(open_database(url), Ed25519PrivateKey.from_private_bytes(key.read_bytes()))
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
for i in range(each):
    log.append("test.concurrent", user=name, client="127.0.0.1", target=f"{name}-{i}")
"""


def test_processes_appending_at_once_keep_one_unbroken_chain(database_url: str, tmp_path: Path) -> None:
    engine = open_database(database_url)  # migrated once, before the writers start
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "signing.key"
    key_file.write_bytes(key.private_bytes_raw())
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, database_url, str(key_file), str(go), f"w{n}",
                                 str(EACH)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(WRITERS)]
    for writer in writers:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready", writer.communicate()
    go.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err

    with Session(engine) as session:
        seqs = list(session.scalars(select(AuditRow.seq).order_by(AuditRow.seq)))
        targets = set(session.scalars(select(AuditRow.target)))
        signed = sorted(session.scalars(select(AuditCheckpointRow.seq)))
        writers_seen = session.scalar(select(func.count(func.distinct(AuditRow.user))))
    total = WRITERS * EACH
    assert seqs == list(range(1, total + 1))  # no gap, no duplicate
    assert targets == {f"w{n}-{i}" for n in range(WRITERS) for i in range(EACH)}  # no entry lost
    assert writers_seen == WRITERS
    assert signed == list(range(CHECKPOINT_EVERY, total + 1, CHECKPOINT_EVERY))  # each due checkpoint, once
    result = AuditLog(engine, key).verify(now=time.time())
    assert result.ok, result.describe()
    assert result.entries == total

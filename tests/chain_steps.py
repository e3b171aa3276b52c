"""What the tests of captures and chains do around the library: the DAG's publish step, SQL on a source, a restore."""

from __future__ import annotations

from pgbackup.model.catalog import Catalog
from pgbackup.model.layout import BackupLayout
from pgbackup.restore.chain import ChainRestore, choose_chain

LAYOUT = BackupLayout("database")


def publish(captured, client, layout: BackupLayout = LAYOUT):
    """What the DAG's upload → verify → commit_manifest tasks do; returns the committed manifest."""
    client.upload(captured.path, captured.object_path)
    method = client.verify(captured.object_path, size=captured.bytes, sha256=captured.sha256)
    manifest = captured.manifest(verified_method=method)
    client.put_bytes(manifest.to_json(), layout.manifest_path(manifest.kind, manifest.id))
    return manifest


def execute(target, *statements: str) -> None:
    """Run the statements on ``target`` in one committed transaction."""
    conn = target.connect()
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.commit()
    conn.close()


def restore(client, backup_id, make_database, layout: BackupLayout = LAYOUT, **kwargs):
    """Restore the chain of ``backup_id`` into a new database; returns it."""
    target = make_database("restored")
    ChainRestore(client, layout).run(choose_chain(Catalog.load(client, layout), backup_id=backup_id), target, **kwargs)
    return target


def state_file_lines(path) -> list[bytes]:
    """Every line of a row-key state's bucket file, frame after frame, read without its listing."""
    from pgbackup.capture.rowstate import decode_frames

    return [line for _, content in decode_frames(path.read_bytes(), path) for line in content.split(b"\n") if line]

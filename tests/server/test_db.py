"""server/db.py: new SQLite files are private; database names shown without passwords."""

import os
import stat

from callboard.server.store import migrate
from callboard.server.store.db import Database, describe_database


def test_new_sqlite_database_files_are_readable_by_their_owner_only(tmp_path):
    path = tmp_path / "private.db"
    url = f"sqlite:///{path}"
    old_umask = os.umask(0o022)  # the usual umask, under which SQLite makes 0644 files
    try:
        migrate.upgrade(url)
        database = Database(url)
        with database.engine.connect() as connection:  # WAL mode: -wal and -shm files appear
            connection.exec_driver_sql("CREATE TABLE probe (x)")
            files = sorted(tmp_path.glob("private.db*"))
            modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in files}
        database.dispose()
    finally:
        os.umask(old_umask)
    assert {"private.db", "private.db-wal", "private.db-shm"} <= set(modes), modes
    assert set(modes.values()) == {0o600}, {name: oct(mode) for name, mode in modes.items()}


def test_database_description_names_the_file_or_hides_the_password(tmp_path):
    assert describe_database(f"sqlite:///{tmp_path / 'a.db'}") == f"SQLite file {tmp_path}/a.db"
    described = describe_database("postgresql://cb:s3cret@db.example/cb")
    assert "s3cret" not in described and described.endswith("@db.example/cb")

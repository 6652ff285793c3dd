"""Storage: the tables, migrations, and every read and write of the database."""

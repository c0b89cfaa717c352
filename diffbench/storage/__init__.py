"""Results storage: SQLAlchemy tables, queries, migrations and the offline spool."""

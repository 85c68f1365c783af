"""The ops schema. Its one table, ``actions`` (replays and redrives), became part of the
audit trail ``auth.audit`` (migration 0002 moves its rows there); the schema stays for its
migration history."""

from sqlalchemy import MetaData

SCHEMA = "ops"
metadata = MetaData(schema=SCHEMA)

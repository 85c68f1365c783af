"""Local infrastructure (Kafka, PostgreSQL) started from the project itself, without Docker."""

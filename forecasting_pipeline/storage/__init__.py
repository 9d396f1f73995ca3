"""Domain tables in PostgreSQL: migrations, the embedded server, and typed writes/reads."""

"""What survives a restart: the SQLite data file, the group-commit journal, the lock."""

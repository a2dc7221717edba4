"""Physical-trigger trials: protocols, the SQLite trial log, the recorder and the report."""

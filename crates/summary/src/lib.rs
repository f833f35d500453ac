//! WAL summary files (`pg_wal/summaries/*.summary`): block reference tables.

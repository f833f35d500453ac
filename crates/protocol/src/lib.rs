//! The PostgreSQL frontend/backend and replication protocols, spoken natively.

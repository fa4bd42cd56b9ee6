//! The embedded SQLite backend (being written).

//! Local network orchestration (placeholder, being written).

//! govmx policy model and decision engine (placeholder, being written).

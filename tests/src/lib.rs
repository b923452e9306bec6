//! Test-side helpers for the end-to-end suite: matrix-sdk clients against a running govmx stack.

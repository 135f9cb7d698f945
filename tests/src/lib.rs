//! Shared harness for the cross-crate integration tests.

//! Shared HTTP plumbing for providers (placeholder).

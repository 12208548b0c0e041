//! Exoscale API v2: the provider (placeholder until the client lands).
pub mod sign;

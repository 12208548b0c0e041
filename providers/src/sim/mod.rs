//! Simulated cloud (placeholder).

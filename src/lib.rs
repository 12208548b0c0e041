//! exoip: failover agent for cloud elastic IPs.

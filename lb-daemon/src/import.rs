//! Converting other load balancers' configurations to lbd's.

pub mod keepalived;

pub mod config;
pub mod maglev;
pub mod reconcile;

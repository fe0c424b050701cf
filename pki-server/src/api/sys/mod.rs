//! `/v1/sys/*`: seal lifecycle, health, leader, key rotation, auth methods.

pub mod audit;
pub mod auth;
pub mod health;
pub mod init;
pub mod mounts;
pub mod policy;
pub mod rotate;
pub mod seal;

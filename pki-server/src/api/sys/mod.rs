//! `/v1/sys/*`: seal lifecycle, health, leader, key rotation.

pub mod audit;
pub mod health;
pub mod init;
pub mod mounts;
pub mod policy;
pub mod rotate;
pub mod seal;

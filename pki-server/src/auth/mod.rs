//! Authentication and authorisation: the token store and ACL policies.

pub mod policy;
pub mod token;

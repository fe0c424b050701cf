//! Authentication: the token store. (ACL policies come with the auth issue.)

pub mod token;

//! provisioner: builds the cluster on AWS, or on one machine with `--local`.

pub mod local;

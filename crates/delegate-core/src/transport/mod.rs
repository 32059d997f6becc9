//! How a brother is reached: the russh client (`ssh`: routes, authentication, the system ssh
//! for `transport = "ssh"`), the per-host connection `pool`, and the `warm` daemon that holds
//! connections across processes.

pub mod pool;
pub mod ssh;
pub mod warm;

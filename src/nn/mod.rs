//! Layers with explicit forward and backward passes. They use only [`crate::engine`].

pub mod activation;
pub mod init;
pub mod loss;
pub mod norm;

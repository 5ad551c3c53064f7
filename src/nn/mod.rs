//! Layers with explicit forward and backward passes. They use only [`crate::engine`].

pub mod activation;
pub mod attention;
pub mod channel;
pub mod conv;
pub mod embedding;
pub mod init;
pub mod linear;
pub mod loss;
pub mod norm;
pub mod parametrization;
pub mod resample;
pub mod seg_loss;

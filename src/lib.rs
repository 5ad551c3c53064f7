//! cloudchamber: a laboratory for the physics of AI.
//!
//! Data flows one way: experiment file → [`spec`] → ([`task`], [`model`], [`optim`]) →
//! [`train`] loop → [`observe`]rs → [`store`] → [`export`]. The numeric core is [`engine`]; layers
//! with explicit backward passes are in [`nn`].

pub mod bench;
pub mod bench_gpt;
pub mod bench_sampler;
pub mod bench_unet;
pub mod checkpoint;
pub mod coordcheck;
pub mod engine;
pub mod error;
pub mod export;
pub mod fit;
pub mod generative;
pub mod interop;
pub mod interrupt;
pub mod model;
pub mod names;
pub mod nn;
pub mod observe;
pub mod optim;
pub mod os;
pub mod plot;
pub mod report;
pub mod runner;
pub mod spec;
pub mod store;
pub mod sweep;
pub mod task;
pub mod theory;
pub mod train;

pub use error::Error;

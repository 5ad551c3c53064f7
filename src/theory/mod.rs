//! Theory beside measurement: the infinite-width predictions the experiments are compared with.
//!
//! - [`gauss`]: Gaussian expectations (Gauss–Hermite, and a kink-splitting composite rule);
//! - [`meanfield`]: mean-field signal propagation (Poole et al. 2016; Schoenholz et al. 2017);
//! - [`calibrate`]: self-normalizing shift and scale, NF-Net gains, the SELU constants;
//! - [`curvature`]: Hessian-vector products and sharpness (the top Hessian eigenvalue);
//! - [`eigen`]: eigenvalues of small non-symmetric matrices (a head's OV circuit);
//! - [`icl`]: in-context regression's function classes and the algorithms a transformer is
//!   compared with (least squares, ridge, averaging, nearest neighbours, LASSO);
//! - [`quanta`]: the quantization model of scaling (Michaud et al. 2023): loss from the number
//!   of quanta learned, and the exponents it predicts from their Zipf exponent.

pub mod calibrate;
pub mod curvature;
pub mod eigen;
pub mod gauss;
pub mod icl;
pub mod meanfield;
pub mod quanta;

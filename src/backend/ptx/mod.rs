//! Host launch code for the hand-written PTX in `kernels/`, written once against the
//! [`driver::Driver`] surface: the CUDA backend and the PTX simulator both run it.
pub mod driver;

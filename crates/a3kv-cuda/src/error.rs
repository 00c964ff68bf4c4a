//! The device backend's error type.

use thiserror::Error;

/// Errors of the device backend.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// A malformed `engine.device` value.
    #[error("engine.device = {value:?}: expected cpu, auto, cuda or cuda:N")]
    BadDeviceName {
        /// The value given.
        value: String,
    },
    /// A CUDA device was asked for and cannot be had (no driver, no such ordinal, or a
    /// binary built without the `cuda` feature); the message says which.
    #[error("engine.device = {requested:?}: {reason}")]
    Unavailable {
        /// The value asked for.
        requested: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Shapes or arguments that a kernel cannot take (the message names them).
    #[error("bad kernel arguments: {0}")]
    BadArgument(String),
    /// NVRTC could not be loaded or rejected a kernel file (the log is included).
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    /// A CUDA driver call failed.
    #[error("CUDA driver: {0}")]
    Driver(String),
}

/// Result alias of this crate.
pub type Result<T, E = DeviceError> = std::result::Result<T, E>;

//! a3kv's device backend: the CUDA kernels of the fused prefill (`kernels/*.cu`, compiled by
//! NVRTC at start-up), a plain-Rust reference twin of each, and the host-side logic around
//! them — launch layouts, dtype conversion for upload, the layer-by-layer copy plan that
//! overlaps chunk transfer with compute, the byte-budgeted LRU of the device chunk tier, and
//! the `engine.device` choice (`cpu`, `cuda:N`, `auto`).
//!
//! Everything except the `cuda` feature's modules builds and is tested on any machine. With
//! the `cuda` feature, [`backend::CudaBackend`] runs the kernels through cudarc, which loads
//! the driver (`libcuda`) and NVRTC (`libnvrtc`) at run time: no CUDA toolkit is needed to
//! build, and [`device::probe_driver`] checks for the driver before any CUDA call.

pub mod copy_plan;
pub mod device;
pub mod dtype;
pub mod error;
pub mod kernels;
pub mod layout;
pub mod lru;
pub mod reference;

#[cfg(feature = "cuda")]
pub mod backend;
#[cfg(feature = "cuda")]
pub mod bench;
#[cfg(feature = "cuda")]
pub mod device_tier;
#[cfg(feature = "cuda")]
pub mod nvrtc;
#[cfg(feature = "cuda")]
pub mod parity;
#[cfg(feature = "cuda")]
pub mod transfer;

pub use device::{probe_driver, resolve_device, DeviceChoice, DeviceRequest, DriverProbe};
pub use dtype::StorageDtype;
pub use error::{DeviceError, Result};

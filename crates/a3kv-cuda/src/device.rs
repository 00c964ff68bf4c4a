//! `engine.device`: what was asked for (`cpu`, `cuda:N`, `auto`), what the machine has
//! (a driver probe that makes no CUDA call when no driver library loads), and the choice —
//! pure, so every combination is unit-tested on a machine without a GPU.

use std::fmt;
use std::str::FromStr;

use crate::{DeviceError, Result};

/// The value of `engine.device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// The CPU path.
    Cpu,
    /// CUDA device `N` (`cuda` means `cuda:0`); the server refuses to start without it.
    Cuda(usize),
    /// CUDA device 0 when a driver and a device are present, else the CPU (logged).
    Auto,
}

impl FromStr for DeviceRequest {
    type Err = DeviceError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceError::BadDeviceName { value: s.into() }),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Auto => f.write_str("auto"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// What the machine and this build offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverProbe {
    /// No CUDA driver library could be loaded (`searched`: the names tried).
    NoDriver {
        /// Library names tried.
        searched: Vec<String>,
    },
    /// A driver loads but this binary was built without the `cuda` feature.
    NotCompiled,
    /// The driver loaded but initialising it or counting devices failed.
    DriverError(String),
    /// The driver works and sees `devices` devices (possibly 0).
    Present {
        /// Device count.
        devices: usize,
    },
}

/// Where the engine runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU; `fallback` says why when `auto` found no usable GPU (to be logged).
    Cpu {
        /// Why `auto` fell back, if it did.
        fallback: Option<String>,
    },
    /// CUDA device `N`.
    Cuda(usize),
}

/// Library names of the CUDA driver, in the order tried (Linux, then Windows).
pub fn driver_library_names() -> Vec<String> {
    let mut names = vec!["libcuda.so.1".to_string(), "libcuda.so".to_string()];
    if cfg!(windows) {
        names.push("nvcuda.dll".into());
    }
    names
}

/// Whether a CUDA driver library can be loaded. Loading it runs no CUDA call.
pub fn driver_library_present() -> bool {
    driver_library_names().iter().any(|name| {
        // SAFETY: loading libcuda runs its ELF initialisers only, which have no
        // preconditions; the handle is dropped at once.
        unsafe { libloading::Library::new(name) }.is_ok()
    })
}

/// Probes the machine: the driver library first (no CUDA call is made without it), then,
/// with the `cuda` feature, the driver's device count.
pub fn probe_driver() -> DriverProbe {
    if !driver_library_present() {
        return DriverProbe::NoDriver {
            searched: driver_library_names(),
        };
    }
    probe_with_driver()
}

#[cfg(not(feature = "cuda"))]
fn probe_with_driver() -> DriverProbe {
    DriverProbe::NotCompiled
}

#[cfg(feature = "cuda")]
fn probe_with_driver() -> DriverProbe {
    // SAFETY: only asks whether cudarc's own library search finds the driver.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return DriverProbe::NoDriver {
            searched: driver_library_names(),
        };
    }
    if let Err(e) = cudarc::driver::result::init() {
        return DriverProbe::DriverError(format!("cuInit failed: {e}"));
    }
    match cudarc::driver::CudaContext::device_count() {
        Ok(n) => DriverProbe::Present {
            devices: n.max(0) as usize,
        },
        Err(e) => DriverProbe::DriverError(format!("cuDeviceGetCount failed: {e}")),
    }
}

/// Chooses the device for `request` given `probe`. `cuda:N` without a usable device N is an
/// error whose message says what is missing; `auto` then falls back to the CPU with the
/// reason.
pub fn resolve_device(request: DeviceRequest, probe: &DriverProbe) -> Result<DeviceChoice> {
    let missing = match (probe, request) {
        (_, DeviceRequest::Cpu) => return Ok(DeviceChoice::Cpu { fallback: None }),
        (DriverProbe::Present { devices }, DeviceRequest::Cuda(n)) if n < *devices => {
            return Ok(DeviceChoice::Cuda(n))
        }
        (DriverProbe::Present { devices }, DeviceRequest::Auto) if *devices > 0 => {
            return Ok(DeviceChoice::Cuda(0))
        }
        (DriverProbe::Present { devices }, _) => {
            format!("the CUDA driver sees {devices} device(s)")
        }
        (DriverProbe::NoDriver { searched }, _) => format!(
            "no CUDA driver on this machine ({} not found); use engine.device = \"cpu\" or \"auto\"",
            searched.join(", ")
        ),
        (DriverProbe::NotCompiled, _) => "a CUDA driver is present but this a3kv binary was built \
             without the `cuda` feature (cargo build --release -p a3kv-cli --features cuda)"
            .to_string(),
        (DriverProbe::DriverError(e), _) => format!("the CUDA driver is not usable: {e}"),
    };
    match request {
        DeviceRequest::Auto => Ok(DeviceChoice::Cpu {
            fallback: Some(missing),
        }),
        _ => Err(DeviceError::Unavailable {
            requested: request.to_string(),
            reason: missing,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print() {
        assert_eq!("cpu".parse::<DeviceRequest>().unwrap(), DeviceRequest::Cpu);
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        assert_eq!(
            "cuda".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", ""] {
            assert!(bad.parse::<DeviceRequest>().is_err(), "{bad}");
        }
        assert_eq!(DeviceRequest::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn every_request_and_probe_resolves_as_documented() {
        let none = DriverProbe::NoDriver {
            searched: vec!["libcuda.so.1".into()],
        };
        let two = DriverProbe::Present { devices: 2 };
        let zero = DriverProbe::Present { devices: 0 };
        let cpu = DeviceChoice::Cpu { fallback: None };
        for p in [&none, &two, &zero, &DriverProbe::NotCompiled] {
            assert_eq!(resolve_device(DeviceRequest::Cpu, p).unwrap(), cpu);
        }
        assert_eq!(
            resolve_device(DeviceRequest::Cuda(1), &two).unwrap(),
            DeviceChoice::Cuda(1)
        );
        assert_eq!(
            resolve_device(DeviceRequest::Auto, &two).unwrap(),
            DeviceChoice::Cuda(0)
        );
        let e = resolve_device(DeviceRequest::Cuda(0), &none)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("engine.device = \"cuda:0\"") && e.contains("no CUDA driver"),
            "{e}"
        );
        assert!(e.contains("libcuda.so.1"), "{e}");
        let e = resolve_device(DeviceRequest::Cuda(2), &two)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sees 2 device(s)"), "{e}");
        let e = resolve_device(DeviceRequest::Cuda(0), &DriverProbe::NotCompiled).unwrap_err();
        assert!(e.to_string().contains("`cuda` feature"), "{e}");
        let e = resolve_device(
            DeviceRequest::Cuda(0),
            &DriverProbe::DriverError("x".into()),
        );
        assert!(e.unwrap_err().to_string().contains("not usable: x"));
        for p in [&none, &zero, &DriverProbe::NotCompiled] {
            match resolve_device(DeviceRequest::Auto, p).unwrap() {
                DeviceChoice::Cpu {
                    fallback: Some(why),
                } => assert!(!why.is_empty()),
                other => panic!("{other:?}"),
            }
        }
    }
}

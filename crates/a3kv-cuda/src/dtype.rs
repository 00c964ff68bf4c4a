//! Storage dtypes of device tensors (f16, bf16) and the host conversions used for upload and
//! download. Kernels store 16-bit patterns and compute in f32; both directions round to
//! nearest even, on the host (`half`) and on the device (`kernels/common.cuh`).

use half::{bf16, f16};

/// A 16-bit storage type of device tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageDtype {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl StorageDtype {
    /// Both dtypes, in the order the kernels are instantiated.
    pub const ALL: [StorageDtype; 2] = [StorageDtype::F16, StorageDtype::BF16];

    /// Suffix of the kernel names instantiated for this dtype (`rope_f16`, `rope_bf16`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        2
    }

    /// Rounds an f32 to this dtype's bit pattern.
    pub fn from_f32(self, x: f32) -> u16 {
        match self {
            Self::F16 => f16::from_f32(x).to_bits(),
            Self::BF16 => bf16::from_f32(x).to_bits(),
        }
    }

    /// Widens a bit pattern of this dtype to f32 (exact).
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            Self::F16 => f16::from_bits(bits).to_f32(),
            Self::BF16 => bf16::from_bits(bits).to_f32(),
        }
    }

    /// Converts a host f32 buffer for upload.
    pub fn encode(self, xs: &[f32]) -> Vec<u16> {
        xs.iter().map(|&x| self.from_f32(x)).collect()
    }

    /// Converts a downloaded buffer to f32.
    pub fn decode(self, bits: &[u16]) -> Vec<f32> {
        bits.iter().map(|&b| self.to_f32(b)).collect()
    }

    /// `xs` rounded through this dtype: what the device sees after an upload.
    pub fn round(self, xs: &[f32]) -> Vec<f32> {
        self.decode(&self.encode(xs))
    }

    /// Relative rounding step (unit roundoff) of this dtype: the scale of its errors.
    pub fn epsilon(self) -> f32 {
        match self {
            Self::F16 => f16::EPSILON.to_f32(),
            Self::BF16 => bf16::EPSILON.to_f32(),
        }
    }
}

impl std::fmt::Display for StorageDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exact_for_representable_values_and_rounds_to_nearest_even() {
        for dt in StorageDtype::ALL {
            for x in [0.0f32, -0.0, 1.0, -2.5, 0.15625, 65504.0f32.min(1024.0)] {
                assert_eq!(dt.to_f32(dt.from_f32(x)), x, "{dt} {x}");
            }
        }
        // 1 + 2^-8 sits exactly between two bf16 values (1 and 1 + 2^-7): ties to even -> 1.
        assert_eq!(
            StorageDtype::BF16.to_f32(StorageDtype::BF16.from_f32(1.0 + 1.0 / 256.0)),
            1.0
        );
        // f16: 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even -> 1.
        assert_eq!(
            StorageDtype::F16.to_f32(StorageDtype::F16.from_f32(1.0 + 1.0 / 2048.0)),
            1.0
        );
        assert_eq!(StorageDtype::F16.from_f32(1.0), 0x3c00);
        assert_eq!(StorageDtype::BF16.from_f32(1.0), 0x3f80);
        assert!(StorageDtype::F16
            .to_f32(StorageDtype::F16.from_f32(1e6))
            .is_infinite());
        let xs = [0.1f32, -3.7, 1e-3];
        for dt in StorageDtype::ALL {
            for (a, b) in xs.iter().zip(dt.round(&xs)) {
                assert!((a - b).abs() <= a.abs() * dt.epsilon(), "{dt} {a} {b}");
            }
        }
    }
}

//! Element types a KV cache may be stored in (f32, f16, bf16) as the decode attention kernel
//! reads them: widened to f32 one value at a time (branch-free, so loops over a row
//! vectorise) or sixteen at a time on AVX-512. Math is always f32; 16-bit storage halves
//! the bytes a decode step streams from the cache.

use half::{bf16, f16};

/// A stored K/V element, read as f32.
pub trait KvElem: Copy + Send + Sync + 'static {
    /// The value as f32 (exact: every f16 and bf16 value is an f32 value).
    fn to_f32(self) -> f32;

    /// Sixteen consecutive values at `p` as one AVX-512 register.
    ///
    /// # Safety
    /// `p` must point at 16 readable values, and the caller must run with AVX-512 F/BW/VL
    /// enabled (it is always inlined into such a function).
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

impl KvElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }
}

impl KvElem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bf16 is the top half of an f32.
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let h = _mm256_loadu_si256(p.cast());
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
}

impl KvElem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16_bits_to_f32(self.to_bits())
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
}

/// IEEE half → single without branches: the exponent and mantissa bits moved into f32's
/// place and re-biased by a multiply with 2^112 (which also turns half subnormals into f32
/// normals), infinities and NaNs given f32's all-ones exponent by a select.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let scaled = (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits(); // × 2^112
    let special = (em << 13) | 0x7f80_0000;
    let bits = if em >= 0x7c00 { special } else { scaled };
    f32::from_bits(bits | sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_matches_half_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = f16_bits_to_f32(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[test]
    fn bf16_widening_matches_half_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = bf16::from_bits(bits).to_f32();
            let got = <bf16 as KvElem>::to_f32(bf16::from_bits(bits));
            if want.is_nan() {
                // half quiets signalling NaNs; the kernel keeps the bits (a NaN either way).
                assert!(got.is_nan(), "{bits:#06x}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_loads_match_the_scalar_widening() {
        if !super::super::avx512::available() {
            return;
        }
        let xs: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) * 0.37).collect();
        let h: Vec<f16> = xs.iter().map(|&x| f16::from_f32(x)).collect();
        let b: Vec<bf16> = xs.iter().map(|&x| bf16::from_f32(x)).collect();
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn store<T: KvElem>(p: &[T]) -> [f32; 16] {
            let mut out = [0f32; 16];
            std::arch::x86_64::_mm512_storeu_ps(out.as_mut_ptr(), T::load16(p.as_ptr()));
            out
        }
        // SAFETY: AVX-512 checked above; each slice holds 16 values.
        let (gh, gb) = unsafe { (store(&h), store(&b)) };
        for i in 0..16 {
            assert_eq!(gh[i], h[i].to_f32());
            assert_eq!(gb[i], b[i].to_f32());
        }
    }
}

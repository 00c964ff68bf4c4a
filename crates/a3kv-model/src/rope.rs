//! Rotary position embedding at arbitrary global positions.
//!
//! Keys are cached *before* RoPE, so one cached chunk serves any offset: re-positioning
//! a chunk is just [`Rope::apply`] with its new global positions.

use candle_core::{DType, Device, Tensor};

use crate::{ModelError, Result};

/// Precomputed cos/sin tables for positions `0..max_position`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    interleaved: bool,
    max_position: usize,
}

impl Rope {
    /// Builds tables `[max_position, d/2]` for base `theta`.
    pub fn new(
        head_dim: usize,
        theta: f64,
        max_position: usize,
        interleaved: bool,
        device: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32)
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let t = Tensor::arange(0u32, max_position as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_position, 1))?;
        let freqs = t.broadcast_mul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
            interleaved,
            max_position,
        })
    }

    /// Rotates `x` of shape `[heads, n, d]` so that row `i` sits at `positions[i]`.
    ///
    /// Errors if `positions.len() != n` or a position is past the context window.
    pub fn apply(&self, x: &Tensor, positions: &[u32]) -> Result<Tensor> {
        let (_, n, _) = x.dims3()?;
        if positions.len() != n {
            return Err(ModelError::BadArgument(format!(
                "rope: {} positions for {} rows",
                positions.len(),
                n
            )));
        }
        if let Some(&p) = positions.iter().max() {
            if p as usize >= self.max_position {
                return Err(ModelError::ContextOverflow {
                    tokens: p as usize + 1,
                    limit: self.max_position,
                });
            }
        }
        let idx = Tensor::from_slice(positions, n, x.device())?;
        let cos = self.cos.index_select(&idx, 0)?;
        let sin = self.sin.index_select(&idx, 0)?;
        let x4 = x.contiguous()?.unsqueeze(0)?;
        let y = if self.interleaved {
            candle_nn::rotary_emb::rope_i(&x4, &cos, &sin)?
        } else {
            candle_nn::rotary_emb::rope(&x4, &cos, &sin)?
        };
        Ok(y.squeeze(0)?)
    }

    /// Reference twin of [`Rope::apply`] built from plain tensor ops.
    pub fn apply_reference(&self, x: &Tensor, positions: &[u32]) -> Result<Tensor> {
        let (_, n, _) = x.dims3()?;
        let idx = Tensor::from_slice(positions, n, x.device())?;
        let cos = self.cos.index_select(&idx, 0)?;
        let sin = self.sin.index_select(&idx, 0)?;
        let x4 = x.contiguous()?.unsqueeze(0)?;
        let y = if self.interleaved {
            candle_nn::rotary_emb::rope_i_slow(&x4, &cos, &sin)?
        } else {
            candle_nn::rotary_emb::rope_slow(&x4, &cos, &sin)?
        };
        Ok(y.squeeze(0)?)
    }

    /// Largest position + 1 the tables cover.
    pub fn max_position(&self) -> usize {
        self.max_position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_reference_and_rotation_composes() {
        let dev = Device::Cpu;
        for interleaved in [false, true] {
            let rope = Rope::new(8, 10000.0, 64, interleaved, &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (2, 5, 8), &dev).unwrap();
            let pos = [3u32, 9, 10, 40, 63];
            let a = rope.apply(&x, &pos).unwrap();
            let b = rope.apply_reference(&x, &pos).unwrap();
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        }
    }

    #[test]
    fn position_past_window_is_an_error() {
        let rope = Rope::new(8, 10000.0, 16, true, &Device::Cpu).unwrap();
        let x = Tensor::zeros((1, 1, 8), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            rope.apply(&x, &[16]),
            Err(ModelError::ContextOverflow { .. })
        ));
        assert!(rope.apply(&x, &[1, 2]).is_err());
    }
}

//! The copy schedule that hides chunk transfer behind compute (DESIGN.md §2, ChunkLoader):
//! a request's chunk KV sits in pinned host memory (or already in the device tier); it is
//! copied to the device layer by layer on a *copy stream*, while the *compute stream* runs
//! the layers. The copy stream records "layer ℓ copied" after ℓ's copies; the compute stream
//! waits for it before layer ℓ. Copies land in a ring of `slots` staging buffers (pre-RoPE
//! keys and values, re-positioned into the fused cache by layer ℓ's first kernel), so a slot
//! is reused only after the compute stream records "layer ℓ computed" for its previous
//! occupant. Layers before `first_needed` (A^3: layers 0–1) read no cached KV, so their
//! compute hides the first copies.
//!
//! This module is pure: [`plan`] orders the operations of both streams, [`simulate`] runs a
//! plan under given durations with the streams' event semantics (in-order streams, waits
//! block until the matching record). [`crate::transfer`] executes a plan with cudarc.

use crate::{DeviceError, Result};

/// One chunk of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkCopy {
    /// Bytes of its KV at one layer (K and V, all KV heads).
    pub layer_bytes: u64,
    /// Already in the device tier: nothing to copy.
    pub resident: bool,
}

/// What to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    /// Layers of the model.
    pub layers: usize,
    /// First layer whose compute reads cached KV (A^3: 2; CacheBlend: 1; reuse: 0).
    pub first_needed: usize,
    /// The request's chunks, in prompt order.
    pub chunks: Vec<ChunkCopy>,
    /// Staging buffers in the ring (>= 1): layers whose copies may be in flight at once.
    pub slots: usize,
}

/// An operation of the copy stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOp {
    /// Wait until the compute stream recorded [`ComputeOp::RecordComputed`] for `layer`
    /// (the previous user of the slot about to be filled).
    WaitComputed {
        /// That layer.
        layer: usize,
    },
    /// Host-to-device copy of one chunk's KV at `layer` into staging `slot` at `offset_bytes`.
    Copy {
        /// Layer.
        layer: usize,
        /// Chunk index in the request.
        chunk: usize,
        /// Staging slot.
        slot: usize,
        /// Offset within the slot.
        offset_bytes: u64,
        /// Size.
        bytes: u64,
    },
    /// Record the event "`layer` copied".
    RecordCopied {
        /// Layer.
        layer: usize,
    },
}

/// An operation of the compute stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputeOp {
    /// Wait for "`layer` copied".
    WaitCopied {
        /// Layer.
        layer: usize,
    },
    /// Run `layer` (reading its staging slot, if it has one).
    Compute {
        /// Layer.
        layer: usize,
        /// Its staging slot, when it has copies.
        slot: Option<usize>,
    },
    /// Record the event "`layer` computed" (its slot may be refilled).
    RecordComputed {
        /// Layer.
        layer: usize,
    },
}

/// Both streams' operations, in issue order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// The copy stream.
    pub copy: Vec<CopyOp>,
    /// The compute stream.
    pub compute: Vec<ComputeOp>,
    /// Size of each staging slot (the largest layer's copies).
    pub slot_bytes: u64,
    /// Slots used (at most the input's `slots`).
    pub slots: usize,
}

/// Plans the copies and compute of one request (see the module doc).
pub fn plan(input: &PlanInput) -> Result<CopyPlan> {
    if input.slots == 0 {
        return Err(DeviceError::BadArgument(
            "copy plan: 0 staging slots".into(),
        ));
    }
    let copied: Vec<(usize, u64)> = input
        .chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.resident && c.layer_bytes > 0)
        .map(|(i, c)| (i, c.layer_bytes))
        .collect();
    let slot_bytes: u64 = copied.iter().map(|(_, b)| b).sum();
    let copy_layers: Vec<usize> = if copied.is_empty() {
        Vec::new()
    } else {
        (input.first_needed.min(input.layers)..input.layers).collect()
    };
    let slots = input.slots.min(copy_layers.len()).max(1);
    let slot_of = |layer: usize| {
        copy_layers
            .iter()
            .position(|&l| l == layer)
            .map(|c| c % slots)
    };
    let mut copy = Vec::new();
    for (c, &layer) in copy_layers.iter().enumerate() {
        if c >= slots {
            copy.push(CopyOp::WaitComputed {
                layer: copy_layers[c - slots],
            });
        }
        let mut offset = 0;
        for &(chunk, bytes) in &copied {
            copy.push(CopyOp::Copy {
                layer,
                chunk,
                slot: c % slots,
                offset_bytes: offset,
                bytes,
            });
            offset += bytes;
        }
        copy.push(CopyOp::RecordCopied { layer });
    }
    let mut compute = Vec::new();
    for layer in 0..input.layers {
        let slot = slot_of(layer);
        if slot.is_some() {
            compute.push(ComputeOp::WaitCopied { layer });
        }
        compute.push(ComputeOp::Compute { layer, slot });
        if slot.is_some() {
            compute.push(ComputeOp::RecordComputed { layer });
        }
    }
    Ok(CopyPlan {
        copy,
        compute,
        slot_bytes,
        slots,
    })
}

/// When each thing happened in a [`simulate`] run (seconds from 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// Start and end of each layer's compute.
    pub compute: Vec<(f64, f64)>,
    /// Start and end of each copy: `(layer, chunk, start, end)`.
    pub copies: Vec<(usize, usize, f64, f64)>,
    /// When the last operation ended.
    pub makespan: f64,
}

/// Runs `plan` on two in-order streams: a copy takes `bytes * copy_secs_per_byte`, layer `l`
/// takes `compute_secs[l]`, waits block until the matching record. Errors if the plan
/// deadlocks (a wait whose record never comes).
pub fn simulate(
    plan: &CopyPlan,
    copy_secs_per_byte: f64,
    compute_secs: &[f64],
) -> Result<Timeline> {
    let layers = compute_secs.len();
    let mut copied_at: Vec<Option<f64>> = vec![None; layers];
    let mut computed_at: Vec<Option<f64>> = vec![None; layers];
    let (mut ci, mut ki) = (0usize, 0usize);
    let (mut copy_t, mut comp_t) = (0f64, 0f64);
    let mut tl = Timeline {
        compute: vec![(0.0, 0.0); layers],
        copies: Vec::new(),
        makespan: 0.0,
    };
    let layer_ok = |l: usize| {
        if l < layers {
            Ok(l)
        } else {
            Err(DeviceError::BadArgument(format!(
                "plan names layer {l} of {layers}"
            )))
        }
    };
    while ci < plan.copy.len() || ki < plan.compute.len() {
        let mut progressed = false;
        while let Some(op) = plan.copy.get(ci) {
            match *op {
                CopyOp::WaitComputed { layer } => match computed_at[layer_ok(layer)?] {
                    Some(t) => copy_t = copy_t.max(t),
                    None => break,
                },
                CopyOp::Copy {
                    layer,
                    chunk,
                    bytes,
                    ..
                } => {
                    let end = copy_t + bytes as f64 * copy_secs_per_byte;
                    tl.copies.push((layer, chunk, copy_t, end));
                    copy_t = end;
                }
                CopyOp::RecordCopied { layer } => copied_at[layer_ok(layer)?] = Some(copy_t),
            }
            ci += 1;
            progressed = true;
        }
        while let Some(op) = plan.compute.get(ki) {
            match *op {
                ComputeOp::WaitCopied { layer } => match copied_at[layer_ok(layer)?] {
                    Some(t) => comp_t = comp_t.max(t),
                    None => break,
                },
                ComputeOp::Compute { layer, .. } => {
                    let end = comp_t + compute_secs[layer_ok(layer)?];
                    tl.compute[layer] = (comp_t, end);
                    comp_t = end;
                }
                ComputeOp::RecordComputed { layer } => computed_at[layer_ok(layer)?] = Some(comp_t),
            }
            ki += 1;
            progressed = true;
        }
        if !progressed {
            return Err(DeviceError::BadArgument(format!(
                "copy plan deadlocks at copy op {ci} and compute op {ki}"
            )));
        }
    }
    tl.makespan = copy_t.max(comp_t);
    Ok(tl)
}

/// One operation as the host issues it, on its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    /// A copy-stream operation.
    Copy(CopyOp),
    /// A compute-stream operation.
    Compute(ComputeOp),
}

/// The order in which one host thread issues both streams' operations: a stream's wait on
/// an event takes effect only if the matching record was issued before it (CUDA waits on
/// the event's latest record), so every record is issued before its wait. Errors if that
/// is impossible (the plan deadlocks).
pub fn issue_order(plan: &CopyPlan) -> Result<Vec<Issued>> {
    let mut copied = std::collections::HashSet::new();
    let mut computed = std::collections::HashSet::new();
    let (mut ci, mut ki) = (0usize, 0usize);
    let mut out = Vec::with_capacity(plan.copy.len() + plan.compute.len());
    while ci < plan.copy.len() || ki < plan.compute.len() {
        let mut progressed = false;
        while let Some(&op) = plan.copy.get(ci) {
            match op {
                CopyOp::WaitComputed { layer } if !computed.contains(&layer) => break,
                CopyOp::RecordCopied { layer } => {
                    copied.insert(layer);
                }
                _ => {}
            }
            out.push(Issued::Copy(op));
            ci += 1;
            progressed = true;
        }
        while let Some(&op) = plan.compute.get(ki) {
            match op {
                ComputeOp::WaitCopied { layer } if !copied.contains(&layer) => break,
                ComputeOp::RecordComputed { layer } => {
                    computed.insert(layer);
                }
                _ => {}
            }
            out.push(Issued::Compute(op));
            ki += 1;
            progressed = true;
        }
        if !progressed {
            return Err(DeviceError::BadArgument(format!(
                "copy plan cannot be issued: stuck at copy op {ci} and compute op {ki}"
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn chunks(bytes: &[u64], resident: &[bool]) -> Vec<ChunkCopy> {
        bytes
            .iter()
            .zip(resident)
            .map(|(&layer_bytes, &resident)| ChunkCopy {
                layer_bytes,
                resident,
            })
            .collect()
    }

    #[test]
    fn a3_plan_copies_from_layer_two_into_a_ring() {
        let p = plan(&PlanInput {
            layers: 5,
            first_needed: 2,
            chunks: chunks(&[100, 50, 70], &[false, true, false]),
            slots: 2,
        })
        .unwrap();
        assert_eq!((p.slot_bytes, p.slots), (170, 2));
        use CopyOp::*;
        let c = |layer, chunk, slot, offset_bytes, bytes| Copy {
            layer,
            chunk,
            slot,
            offset_bytes,
            bytes,
        };
        assert_eq!(
            p.copy,
            vec![
                c(2, 0, 0, 0, 100),
                c(2, 2, 0, 100, 70),
                RecordCopied { layer: 2 },
                c(3, 0, 1, 0, 100),
                c(3, 2, 1, 100, 70),
                RecordCopied { layer: 3 },
                WaitComputed { layer: 2 },
                c(4, 0, 0, 0, 100),
                c(4, 2, 0, 100, 70),
                RecordCopied { layer: 4 },
            ]
        );
        assert_eq!(
            p.compute[0],
            ComputeOp::Compute {
                layer: 0,
                slot: None
            }
        );
        assert_eq!(
            &p.compute[2..5],
            &[
                ComputeOp::WaitCopied { layer: 2 },
                ComputeOp::Compute {
                    layer: 2,
                    slot: Some(0)
                },
                ComputeOp::RecordComputed { layer: 2 },
            ]
        );
    }

    #[test]
    fn every_record_is_issued_before_its_wait() {
        let p = plan(&PlanInput {
            layers: 8,
            first_needed: 2,
            chunks: chunks(&[10, 20], &[false, false]),
            slots: 2,
        })
        .unwrap();
        let order = issue_order(&p).unwrap();
        assert_eq!(order.len(), p.copy.len() + p.compute.len());
        let at = |x: Issued| order.iter().position(|&o| o == x).unwrap();
        for l in 2..8 {
            assert!(
                at(Issued::Copy(CopyOp::RecordCopied { layer: l }))
                    < at(Issued::Compute(ComputeOp::WaitCopied { layer: l }))
            );
        }
        for l in 4..8 {
            assert!(
                at(Issued::Compute(ComputeOp::RecordComputed { layer: l - 2 }))
                    < at(Issued::Copy(CopyOp::WaitComputed { layer: l - 2 }))
            );
        }
        // A hand-made plan that waits for a record that never comes cannot be issued.
        let bad = CopyPlan {
            copy: vec![CopyOp::WaitComputed { layer: 0 }],
            compute: vec![ComputeOp::WaitCopied { layer: 0 }],
            slot_bytes: 0,
            slots: 1,
        };
        assert!(issue_order(&bad).is_err());
        assert!(simulate(&bad, 0.0, &[1.0]).is_err());
    }

    #[test]
    fn resident_chunks_need_no_copies_and_no_waits() {
        let p = plan(&PlanInput {
            layers: 4,
            first_needed: 0,
            chunks: chunks(&[100, 100], &[true, true]),
            slots: 3,
        })
        .unwrap();
        assert!(p.copy.is_empty());
        assert!(p
            .compute
            .iter()
            .all(|op| matches!(op, ComputeOp::Compute { slot: None, .. })));
        assert!(plan(&PlanInput {
            slots: 0,
            ..PlanInput {
                layers: 1,
                first_needed: 0,
                chunks: vec![],
                slots: 1
            }
        })
        .is_err());
    }

    #[test]
    fn overlap_hides_copies_that_are_no_slower_than_compute() {
        // 30 layers of 1 ms; each layer's copies take 0.9 ms; A^3 reads cache from layer 2.
        let input = PlanInput {
            layers: 30,
            first_needed: 2,
            chunks: chunks(&[900, 0], &[false, false]),
            slots: 2,
        };
        let p = plan(&input).unwrap();
        let compute = vec![1e-3; 30];
        let t = simulate(&p, 1e-6, &compute).unwrap();
        // Cold costs nothing over warm: the copies finish before each layer starts.
        assert!((t.makespan - 30e-3).abs() < 1e-9, "{}", t.makespan);
        // Serialised (one slot, copies only after the previous layer) would cost more.
        let serial: f64 = 30e-3 + 28.0 * 0.9e-3;
        assert!(t.makespan < serial);
        // Copies slower than compute: the makespan is bounded by the copies, not their sum
        // with compute.
        let slow = simulate(&p, 2e-6, &compute).unwrap();
        assert!(
            slow.makespan <= 2e-3 + 28.0 * 1.8e-3 + 1e-3 + 1e-9,
            "{}",
            slow.makespan
        );
    }

    #[test]
    fn random_plans_never_deadlock_and_respect_every_dependency() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let layers = rng.gen_range(1..12);
            let n = rng.gen_range(0..5);
            let input = PlanInput {
                layers,
                first_needed: rng.gen_range(0..layers + 2),
                chunks: (0..n)
                    .map(|_| ChunkCopy {
                        layer_bytes: rng.gen_range(0..1000),
                        resident: rng.gen_bool(0.3),
                    })
                    .collect(),
                slots: rng.gen_range(1..4),
            };
            let p = plan(&input).unwrap();
            let compute: Vec<f64> = (0..layers).map(|_| rng.gen_range(0.1..2.0)).collect();
            let t = simulate(&p, rng.gen_range(0.0..0.01), &compute).unwrap();
            for &(layer, _, _, end) in &t.copies {
                // A layer computes only after its copies ended.
                assert!(t.compute[layer].0 >= end - 1e-12);
                // Its slot's previous occupant finished computing before the copy started.
                if let Some(prev) = layer
                    .checked_sub(p.slots)
                    .filter(|&l| l >= input.first_needed)
                {
                    let start = t.copies.iter().find(|c| c.0 == layer).unwrap().2;
                    assert!(start >= t.compute[prev].1 - 1e-12);
                }
            }
            // Compute runs in layer order.
            assert!(t.compute.windows(2).all(|w| w[1].0 >= w[0].1 - 1e-12));
        }
    }
}

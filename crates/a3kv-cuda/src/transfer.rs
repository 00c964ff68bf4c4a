//! Executes a [`crate::copy_plan::CopyPlan`] with cudarc: chunk KV in pinned (page-locked)
//! host memory, copied layer by layer on a copy stream into a ring of device staging
//! buffers, with one event per layer for "copied" (the compute stream waits on it) and one
//! for "computed" (the copy stream waits on it before refilling that layer's slot). Host
//! issue order comes from [`crate::copy_plan::issue_order`], so every record precedes its
//! wait.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, PinnedHostSlice};

use crate::copy_plan::{issue_order, ComputeOp, CopyOp, CopyPlan, Issued};
use crate::{DeviceError, Result};

fn drv(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> DeviceError {
    move |e| DeviceError::Driver(format!("{what}: {e}"))
}

/// Enqueues one layer's kernels given its staging slot (see [`execute`]).
pub type ComputeLayer<'a> = dyn FnMut(usize, Option<&CudaSlice<u16>>) -> Result<()> + 'a;

/// One chunk's KV in pinned host memory, one buffer per layer (16-bit elements).
pub struct PinnedChunk {
    /// Per layer.
    pub layers: Vec<PinnedHostSlice<u16>>,
}

impl PinnedChunk {
    /// Copies `layers` (one host buffer per layer) into pinned memory.
    pub fn new(ctx: &Arc<CudaContext>, layers: &[Vec<u16>]) -> Result<Self> {
        let mut out = Vec::with_capacity(layers.len());
        for l in layers {
            // SAFETY: the memory is fully written below before any read.
            if l.is_empty() {
                return Err(DeviceError::BadArgument(
                    "pinned chunk: an empty layer".into(),
                ));
            }
            let mut p = unsafe { ctx.alloc_pinned::<u16>(l.len()) }.map_err(drv("pinned alloc"))?;
            p.as_mut_slice()
                .map_err(drv("pinned map"))?
                .copy_from_slice(l);
            out.push(p);
        }
        Ok(Self { layers: out })
    }
}

/// The device staging ring.
pub struct Staging {
    /// One buffer per slot, each `slot_bytes / 2` elements.
    pub slots: Vec<CudaSlice<u16>>,
}

impl Staging {
    /// Allocates the ring `plan` needs.
    pub fn for_plan(stream: &Arc<CudaStream>, plan: &CopyPlan) -> Result<Self> {
        let elems = (plan.slot_bytes as usize).div_ceil(2).max(1);
        let slots = (0..plan.slots)
            .map(|_| {
                stream
                    .alloc_zeros::<u16>(elems)
                    .map_err(drv("staging alloc"))
            })
            .collect::<Result<_>>()?;
        Ok(Self { slots })
    }
}

/// Issues `plan` on `copy` and `compute`; `compute_layer(layer, slot)` enqueues layer
/// `layer`'s kernels on `compute` (reading the staging slot when it has one). Returns after
/// issuing; synchronise `compute` to wait.
pub fn execute(
    copy: &Arc<CudaStream>,
    compute: &Arc<CudaStream>,
    plan: &CopyPlan,
    chunks: &[&PinnedChunk],
    staging: &mut Staging,
    compute_layer: &mut ComputeLayer<'_>,
) -> Result<()> {
    let ctx = compute.context().clone();
    let layers = plan
        .compute
        .iter()
        .filter_map(|op| match op {
            ComputeOp::Compute { layer, .. } => Some(layer + 1),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let events = |what| -> Result<Vec<CudaEvent>> {
        (0..layers)
            .map(|_| ctx.new_event(None).map_err(drv(what)))
            .collect()
    };
    let copied = events("event")?;
    let computed = events("event")?;
    let ev = |v: &[CudaEvent], l: usize| -> Result<()> {
        if l < v.len() {
            Ok(())
        } else {
            Err(DeviceError::BadArgument(format!(
                "plan names layer {l} of {}",
                v.len()
            )))
        }
    };
    for op in issue_order(plan)? {
        match op {
            Issued::Copy(CopyOp::WaitComputed { layer }) => {
                ev(&computed, layer)?;
                copy.wait(&computed[layer]).map_err(drv("wait"))?;
            }
            Issued::Copy(CopyOp::Copy {
                layer,
                chunk,
                slot,
                offset_bytes,
                bytes,
            }) => {
                let src = chunks
                    .get(chunk)
                    .and_then(|c| c.layers.get(layer))
                    .ok_or_else(|| {
                        DeviceError::BadArgument(format!(
                            "no pinned KV for chunk {chunk} layer {layer}"
                        ))
                    })?;
                let dst = staging
                    .slots
                    .get_mut(slot)
                    .ok_or_else(|| DeviceError::BadArgument(format!("no staging slot {slot}")))?;
                let (at, len) = (offset_bytes as usize / 2, bytes as usize / 2);
                // The whole pinned buffer is copied: passing the `PinnedHostSlice` itself
                // makes cudarc order the copy with an event; a plain `&[u16]` would make it
                // synchronise the copy stream after every copy and lose the overlap.
                if src.len() != len || dst.len() < at + len {
                    return Err(DeviceError::BadArgument(format!(
                        "copy of {len} elements at {at}: pinned buffer {}, slot {}",
                        src.len(),
                        dst.len()
                    )));
                }
                copy.memcpy_htod(src, &mut dst.slice_mut(at..at + len))
                    .map_err(drv("copy"))?;
            }
            Issued::Copy(CopyOp::RecordCopied { layer }) => {
                ev(&copied, layer)?;
                copied[layer].record(copy).map_err(drv("record"))?;
            }
            Issued::Compute(ComputeOp::WaitCopied { layer }) => {
                ev(&copied, layer)?;
                compute.wait(&copied[layer]).map_err(drv("wait"))?;
            }
            Issued::Compute(ComputeOp::Compute { layer, slot }) => {
                compute_layer(layer, slot.and_then(|s| staging.slots.get(s)))?;
            }
            Issued::Compute(ComputeOp::RecordComputed { layer }) => {
                ev(&computed, layer)?;
                computed[layer].record(compute).map_err(drv("record"))?;
            }
        }
    }
    Ok(())
}

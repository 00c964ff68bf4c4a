//! `LayerStream`: a chunk's layers delivered in order as each is read, so fusion can start on
//! layer 0 while later layers load.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::data::{KvMeta, LayerKv};
use crate::error::StoreError;
use crate::stats::Tier;

/// One stream item: the layer index and its K/V, or the error that ended the stream.
pub type LayerItem = Result<(usize, Arc<LayerKv>), StoreError>;

/// Layers of one chunk, in order `0..meta.n_layers`.
///
/// From memory every layer is ready at once; from disk each layer arrives after its read and
/// checksum check. If a later layer turns out corrupt, the stream yields one
/// [`StoreError::Corrupt`] and ends (the file is removed and counted): the caller must drop
/// what it received and recompute the chunk.
#[derive(Debug)]
pub struct LayerStream {
    /// The chunk's meta (validated header), available before any layer.
    pub meta: KvMeta,
    /// The tier the layers come from.
    pub tier: Tier,
    rx: mpsc::Receiver<LayerItem>,
}

impl LayerStream {
    pub(crate) fn new(meta: KvMeta, tier: Tier, rx: mpsc::Receiver<LayerItem>) -> Self {
        Self { meta, tier, rx }
    }

    /// The next layer, `None` after the last one (or after an error item).
    pub async fn next(&mut self) -> Option<LayerItem> {
        self.rx.recv().await
    }

    /// The underlying channel, for `select!` loops.
    pub fn into_receiver(self) -> mpsc::Receiver<LayerItem> {
        self.rx
    }
}

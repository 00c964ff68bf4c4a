//! Whole-chunk loads split over a few threads: each thread reads and verifies a contiguous
//! run of layers with positioned reads, so a load uses more than one core's copy and hash
//! bandwidth. (The layer stream stays sequential: its consumer needs layers in order and
//! overlaps its own compute with the reads.)

use std::sync::Arc;

use crate::data::{ChunkKvData, LayerKv};
use crate::format::{ChunkReader, ReadFailure};

/// Threads per whole-chunk load (the calling thread included). Two already hide the
/// checksum and page-fault cost on top of the kernel copy; more would compete with compute.
pub(crate) const LOAD_THREADS: usize = 2;

/// Reads and verifies every layer of `reader` using up to `threads` threads. On failure
/// returns the failure of the lowest failing layer range.
pub(crate) fn read_all(reader: &ChunkReader, threads: usize) -> Result<ChunkKvData, ReadFailure> {
    let n = reader.header().layers.len();
    let threads = threads.clamp(1, n.max(1));
    let per = n.div_ceil(threads).max(1);
    let run = |t: usize| -> Result<Vec<Arc<LayerKv>>, ReadFailure> {
        (t * per..((t + 1) * per).min(n))
            .map(|l| reader.read_layer(l).map(Arc::new))
            .collect()
    };
    let parts: Vec<Result<Vec<Arc<LayerKv>>, ReadFailure>> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .map(|t| {
                let spawned = std::thread::Builder::new()
                    .name("a3kv-store-load".into())
                    .spawn_scoped(s, move || run(t));
                (t, spawned)
            })
            .collect();
        let mut parts = vec![run(0)];
        for (t, spawned) in helpers {
            parts.push(match spawned {
                Ok(handle) => handle.join().unwrap_or_else(|_| {
                    Err(ReadFailure::Io(std::io::Error::other(
                        "load thread panicked",
                    )))
                }),
                // No thread available: read that range here.
                Err(_) => run(t),
            });
        }
        parts
    });
    let mut layers = Vec::with_capacity(n);
    for part in parts {
        layers.extend(part?);
    }
    Ok(ChunkKvData {
        meta: reader.header().meta.clone(),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::{bit_equal, sample_chunk};
    use crate::error::CorruptReason;
    use crate::format::write_chunk;
    use a3kv_fusion::ChunkId;

    #[test]
    fn parallel_load_equals_sequential_and_reports_lowest_failure() {
        let dir = tempfile::tempdir().unwrap();
        let fp = [1u8; 32];
        let id = ChunkId([2u8; 32]);
        for n_layers in [0, 1, 5, 7] {
            let data = sample_chunk(fp, 3, n_layers, 9);
            let path = dir.path().join(format!("{n_layers}.a3kv"));
            write_chunk(&std::fs::File::create(&path).unwrap(), &id, &data).unwrap();
            let r = ChunkReader::open(&path, &id, &fp).unwrap();
            for threads in [1, 2, 3, 16] {
                assert!(bit_equal(&read_all(&r, threads).unwrap(), &data));
            }
        }
        let path = dir.path().join("7.a3kv");
        let r = ChunkReader::open(&path, &id, &fp).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        for l in [1, 6] {
            let e = r.header().layers[l];
            bytes[e.offset as usize] ^= 0x80;
        }
        std::fs::write(&path, &bytes).unwrap();
        let r = ChunkReader::open(&path, &id, &fp).unwrap();
        match read_all(&r, 2) {
            Err(ReadFailure::Corrupt(CorruptReason::LayerChecksum { layer })) => {
                assert_eq!(layer, 1)
            }
            other => panic!("expected a layer checksum failure, got {other:?}"),
        }
    }
}

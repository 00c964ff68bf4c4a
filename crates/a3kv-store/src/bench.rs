//! Disk-tier load benchmark: loading a chunk through the disk tier (header validation,
//! per-layer reads and checksums) versus a plain `std::fs::read` of the same file, cold (page
//! cache dropped with `posix_fadvise(DONTNEED)`) and warm. `a3kv bench store` prints the result.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::config::DiskConfig;
use crate::data::{ChunkKvData, KvDtype, KvMeta, LayerKv};
use crate::disk::DiskTier;
use crate::error::StoreError;
use a3kv_fusion::ChunkId;

/// Benchmark parameters. Defaults: SmolLM2-135M's KV shape (30 layers, 3 KV heads, head
/// dim 64, f32) and a 512-token chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchConfig {
    /// Directory for the benchmark's disk tier (a subdirectory is created and cleaned up).
    /// Use the disk the real cache lives on.
    pub dir: PathBuf,
    /// Layers `L`.
    pub n_layers: u32,
    /// KV heads `H_kv`.
    pub n_kv_heads: u32,
    /// Head dim `d`.
    pub head_dim: u32,
    /// Tokens in the chunk.
    pub n_tokens: u32,
    /// Timed repetitions per measurement (the median is reported).
    pub iterations: u32,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            dir: std::env::temp_dir().join("a3kv-store-bench"),
            n_layers: 30,
            n_kv_heads: 3,
            head_dim: 64,
            n_tokens: 512,
            iterations: 15,
        }
    }
}

/// Median load times of one cache state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadTimes {
    /// Disk tier whole-chunk load as `get` does it: open, validate, read and checksum every
    /// layer, layers split over `LOAD_THREADS` threads (seconds).
    pub store_secs: f64,
    /// Disk tier layer-by-layer on one thread, as the layer stream reads (seconds).
    pub store_sequential_secs: f64,
    /// `std::fs::read` of the same file (seconds).
    pub plain_read_secs: f64,
    /// Disk tier throughput, GB/s (1e9 bytes).
    pub store_gb_per_s: f64,
    /// Plain read throughput, GB/s.
    pub plain_gb_per_s: f64,
    /// `store_gb_per_s / plain_gb_per_s` (target ≥ 0.8).
    pub ratio: f64,
    /// `plain_read_secs / store_sequential_secs`: the one-thread stream path's ratio.
    pub sequential_ratio: f64,
}

/// Result of [`run`].
#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// The configuration measured.
    pub config: BenchConfig,
    /// KV bytes per token: `L * 2 * H_kv * d * 4`.
    pub kv_bytes_per_token: u64,
    /// Size of the chunk file (header included).
    pub file_bytes: u64,
    /// Page-cache-warm loads.
    pub warm: LoadTimes,
    /// Cold loads (page cache dropped first); `None` where `posix_fadvise` is unavailable.
    pub cold: Option<LoadTimes>,
    /// Warm time to the first verified layer (open + header + layer 0), seconds.
    pub first_layer_warm_secs: f64,
}

/// Writes one synthetic chunk and times loading it.
///
/// # Errors
/// [`StoreError::Io`] if the benchmark directory cannot be used or the chunk cannot be
/// written or read back.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, StoreError> {
    let fingerprint = [0xbe; 32];
    let disk_cfg = DiskConfig {
        dir: cfg.dir.clone(),
        budget_bytes: u64::MAX,
    };
    let (tier, _) = DiskTier::open(&disk_cfg, fingerprint)?;
    let id = ChunkId([0x5a; 32]);
    let data = synthetic_chunk(cfg, fingerprint);
    if !tier.write(&id, &data) {
        return Err(StoreError::io(
            tier.path_for(&id),
            std::io::Error::other("benchmark chunk write failed"),
        ));
    }
    let path = tier.path_for(&id);
    let result = measure(cfg, &tier, &id, &path, &data);
    let _ = tier.remove(&id);
    let _ = std::fs::remove_dir_all(tier.root());
    result
}

fn synthetic_chunk(cfg: &BenchConfig, fingerprint: [u8; 32]) -> ChunkKvData {
    let elems = (cfg.n_kv_heads as usize) * (cfg.n_tokens as usize) * (cfg.head_dim as usize);
    let layers = (0..cfg.n_layers)
        .map(|l| {
            let gen = |s: f32| {
                (0..elems)
                    .map(|i| (i as f32 * 0.001 + s).sin())
                    .collect::<Vec<f32>>()
                    .into()
            };
            Arc::new(LayerKv {
                k: gen(l as f32),
                v: gen(-(l as f32)),
            })
        })
        .collect();
    ChunkKvData {
        meta: KvMeta {
            fingerprint,
            dtype: KvDtype::F32,
            n_layers: cfg.n_layers,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
            n_tokens: cfg.n_tokens,
            token_ids: (0..cfg.n_tokens).collect(),
        },
        layers,
    }
}

fn measure(
    cfg: &BenchConfig,
    tier: &DiskTier,
    id: &ChunkId,
    path: &std::path::Path,
    data: &ChunkKvData,
) -> Result<BenchReport, StoreError> {
    let file_bytes = std::fs::metadata(path)
        .map_err(|e| StoreError::io(path, e))?
        .len();
    let load = || -> Result<f64, StoreError> {
        let t = Instant::now();
        let got = tier.read(id);
        let secs = t.elapsed().as_secs_f64();
        match got {
            Some(d) if d.layers.len() == data.layers.len() => Ok(secs),
            _ => Err(StoreError::io(
                path,
                std::io::Error::other("benchmark read-back failed"),
            )),
        }
    };
    let sequential = || -> Result<f64, StoreError> {
        let t = Instant::now();
        // Keep every layer, as a real load does (dropping each would recycle one buffer).
        let layers = tier.open_chunk(id).map(|o| {
            (0..o.reader.header().layers.len())
                .map(|l| o.reader.read_layer(l))
                .collect::<Vec<_>>()
        });
        let secs = t.elapsed().as_secs_f64();
        match layers {
            Some(ls) if ls.len() == data.layers.len() && ls.iter().all(Result::is_ok) => Ok(secs),
            _ => Err(StoreError::io(
                path,
                std::io::Error::other("benchmark layer read failed"),
            )),
        }
    };
    let plain = || -> Result<f64, StoreError> {
        let t = Instant::now();
        let bytes = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
        let secs = t.elapsed().as_secs_f64();
        std::hint::black_box(bytes);
        Ok(secs)
    };
    let iters = cfg.iterations.max(1);
    // Warm: one untimed pass each fills the page cache; alternate to share conditions.
    load()?;
    plain()?;
    let (mut s, mut q, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iters {
        s.push(load()?);
        q.push(sequential()?);
        p.push(plain()?);
    }
    let warm = times(file_bytes, &mut s, &mut q, &mut p);
    let first_layer_warm_secs = {
        let t = Instant::now();
        let open = tier.open_chunk(id);
        let layer0 = open.as_ref().map(|o| o.reader.read_layer(0).is_ok());
        let secs = t.elapsed().as_secs_f64();
        if layer0 != Some(true) {
            return Err(StoreError::io(
                path,
                std::io::Error::other("layer 0 read failed"),
            ));
        }
        secs
    };
    let cold = if drop_page_cache(path) {
        let (mut s, mut q, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..iters {
            drop_page_cache(path);
            s.push(load()?);
            drop_page_cache(path);
            q.push(sequential()?);
            drop_page_cache(path);
            p.push(plain()?);
        }
        Some(times(file_bytes, &mut s, &mut q, &mut p))
    } else {
        None
    };
    Ok(BenchReport {
        config: cfg.clone(),
        kv_bytes_per_token: data.meta.kv_bytes_per_token(),
        file_bytes,
        warm,
        cold,
        first_layer_warm_secs,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn times(bytes: u64, store: &mut [f64], sequential: &mut [f64], plain: &mut [f64]) -> LoadTimes {
    let (s, q, p) = (median(store), median(sequential), median(plain));
    let gbps = |secs: f64| bytes as f64 / secs / 1e9;
    LoadTimes {
        store_secs: s,
        store_sequential_secs: q,
        plain_read_secs: p,
        store_gb_per_s: gbps(s),
        plain_gb_per_s: gbps(p),
        ratio: p / s,
        sequential_ratio: p / q,
    }
}

/// Asks the kernel to drop the file's cached pages; false where unsupported.
fn drop_page_cache(path: &std::path::Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let Ok(f) = std::fs::File::open(path) else {
            return false;
        };
        // SAFETY: fadvise on a valid, owned descriptor; no memory is passed.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        false
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "chunk: {} tokens, L={} H_kv={} d={} f32; KV {} bytes/token; file {:.2} MB",
            c.n_tokens,
            c.n_layers,
            c.n_kv_heads,
            c.head_dim,
            self.kv_bytes_per_token,
            self.file_bytes as f64 / 1e6
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, t: &LoadTimes| {
            writeln!(
                f,
                "{name:>5}: store {:.2} ms ({:.2} GB/s) vs plain read {:.2} ms ({:.2} GB/s): {:.2}x; \
                 one-thread layer-wise {:.2} ms: {:.2}x",
                t.store_secs * 1e3,
                t.store_gb_per_s,
                t.plain_read_secs * 1e3,
                t.plain_gb_per_s,
                t.ratio,
                t.store_sequential_secs * 1e3,
                t.sequential_ratio
            )
        };
        row(f, "warm", &self.warm)?;
        match &self.cold {
            Some(t) => row(f, "cold", t)?,
            None => writeln!(f, " cold: not measured (no posix_fadvise)")?,
        }
        write!(
            f,
            "first layer (warm): {:.3} ms",
            self.first_layer_warm_secs * 1e3
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bench_runs_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BenchConfig {
            dir: dir.path().to_path_buf(),
            n_layers: 3,
            n_tokens: 16,
            iterations: 2,
            ..BenchConfig::default()
        };
        let r = run(&cfg).unwrap();
        assert_eq!(r.kv_bytes_per_token, 3 * 2 * 3 * 64 * 4);
        assert!(r.warm.store_secs > 0.0 && r.warm.plain_read_secs > 0.0);
        assert!(r.to_string().contains("bytes/token"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

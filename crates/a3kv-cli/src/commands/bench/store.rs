//! `a3kv bench store`: loading a chunk from the chunk store's disk tier (header validation,
//! per-layer reads and checksums) versus a plain `std::fs::read` of the same file, cold (page
//! cache dropped with `posix_fadvise(DONTNEED)`) and warm.
//!
//! The store is a `ChunkStore` with a disk tier and no memory budget, so every load reads the
//! file: `get` (the whole chunk, layers split over the disk tier's load threads) and
//! `stream_layers` (layer by layer on one thread, as a request's ChunkLoader reads).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use a3kv_store::{
    ChunkId, ChunkKvData, ChunkStore, DiskConfig, KvDtype, KvMeta, LayerKv, StoreConfig, Tier,
};
use anyhow::{bail, Context};
use clap::Args;

/// `a3kv bench store`. The default shape is SmolLM2-135M's (30 layers, 3 KV heads, d 64).
#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Directory on the disk to measure (a temporary subdirectory is created and removed).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("a3kv-store-bench"))]
    pub dir: PathBuf,
    /// Tokens in the chunk.
    #[arg(long, default_value_t = 512)]
    pub tokens: u32,
    /// Layers.
    #[arg(long, default_value_t = 30)]
    pub layers: u32,
    /// KV heads.
    #[arg(long, default_value_t = 3)]
    pub kv_heads: u32,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    pub head_dim: u32,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 15)]
    pub iterations: u32,
}

/// Runs `a3kv bench store`.
pub fn run(a: StoreArgs) -> anyhow::Result<()> {
    if a.tokens == 0 || a.layers == 0 || a.kv_heads == 0 || a.head_dim == 0 {
        bail!("--tokens, --layers, --kv-heads and --head-dim must be >= 1");
    }
    let cfg = BenchConfig {
        dir: a.dir,
        n_layers: a.layers,
        n_kv_heads: a.kv_heads,
        head_dim: a.head_dim,
        n_tokens: a.tokens,
        iterations: a.iterations,
    };
    println!("{}", bench(&cfg)?);
    Ok(())
}

/// Benchmark parameters: the chunk's KV shape (f32) and the repetitions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BenchConfig {
    /// Directory for the benchmark's disk tier (a subdirectory is created and cleaned up).
    /// Use the disk the real cache lives on.
    dir: PathBuf,
    /// Layers `L`.
    n_layers: u32,
    /// KV heads `H_kv`.
    n_kv_heads: u32,
    /// Head dim `d`.
    head_dim: u32,
    /// Tokens in the chunk.
    n_tokens: u32,
    /// Timed repetitions per measurement (the median is reported).
    iterations: u32,
}

/// Median load times of one cache state.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LoadTimes {
    /// Whole-chunk load through `ChunkStore::get`: open, validate, read and checksum every
    /// layer, layers split over the disk tier's load threads (seconds).
    store_secs: f64,
    /// Layer by layer through `ChunkStore::stream_layers`, one reading thread (seconds).
    store_sequential_secs: f64,
    /// `std::fs::read` of the same file (seconds).
    plain_read_secs: f64,
    /// Store throughput, GB/s (1e9 bytes).
    store_gb_per_s: f64,
    /// Plain read throughput, GB/s.
    plain_gb_per_s: f64,
    /// `store_gb_per_s / plain_gb_per_s` (target ≥ 0.8).
    ratio: f64,
    /// `plain_read_secs / store_sequential_secs`: the one-thread stream path's ratio.
    sequential_ratio: f64,
}

/// Result of [`bench`].
#[derive(Debug, Clone, PartialEq)]
struct BenchReport {
    /// The configuration measured.
    config: BenchConfig,
    /// KV bytes per token: `L * 2 * H_kv * d * 4`.
    kv_bytes_per_token: u64,
    /// Size of the chunk file (header included).
    file_bytes: u64,
    /// Page-cache-warm loads.
    warm: LoadTimes,
    /// Cold loads (page cache dropped first); `None` where `posix_fadvise` is unavailable.
    cold: Option<LoadTimes>,
    /// Warm time to the first verified layer (open + header + layer 0), seconds.
    first_layer_warm_secs: f64,
}

/// Writes one synthetic chunk through a disk-only store, times loading it, and removes the
/// store's directory.
fn bench(cfg: &BenchConfig) -> anyhow::Result<BenchReport> {
    let fingerprint = [0xbe; 32];
    let store_cfg = StoreConfig {
        // No memory tier: every load reads the disk tier.
        memory_budget_bytes: 0,
        disk: Some(DiskConfig {
            dir: cfg.dir.clone(),
            budget_bytes: u64::MAX,
        }),
        remote: None,
    };
    let id = ChunkId::new([0x5a; 32]);
    let data = Arc::new(synthetic_chunk(cfg, fingerprint));
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = ChunkStore::open(&store_cfg, fingerprint)
            .await
            .with_context(|| format!("opening a disk tier in {}", cfg.dir.display()))?;
        // This model's directory: `<dir>/<fingerprint hex>`, one `<chunk id hex>.a3kv` each.
        let root = store
            .disk_dir()
            .context("the store has no disk tier")?
            .to_path_buf();
        let path = root.join(format!("{id}.a3kv"));
        let written = store.put(id, data.clone(), false).await?;
        let result = if written.disk && path.is_file() {
            measure(cfg, &store, &id, &path, &data).await
        } else {
            Err(anyhow::anyhow!(
                "benchmark chunk write to {} failed",
                path.display()
            ))
        };
        let _ = store.remove(&id).await;
        drop(store);
        let _ = std::fs::remove_dir_all(&root);
        result
    })
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

/// Seconds of one whole-chunk load from the disk tier.
async fn load(store: &ChunkStore, id: &ChunkId, layers: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let got = store.get(id).await?;
    let secs = t.elapsed().as_secs_f64();
    match got {
        Some((d, Tier::Disk)) if d.layers.len() == layers => Ok(secs),
        other => bail!(
            "benchmark read-back failed: {:?}",
            other.map(|(d, tier)| (d.layers.len(), tier))
        ),
    }
}

/// Seconds to stream the disk tier's layers `0..upto` (every layer is kept, as a real load
/// keeps them: dropping each would recycle one buffer).
async fn stream(store: &ChunkStore, id: &ChunkId, upto: usize) -> anyhow::Result<f64> {
    let t = Instant::now();
    let Some(mut s) = store.stream_layers(id).await? else {
        bail!("benchmark chunk not found");
    };
    if s.tier != Tier::Disk {
        bail!("benchmark chunk streamed from {:?}, not disk", s.tier);
    }
    let mut layers = Vec::with_capacity(upto);
    while layers.len() < upto {
        match s.next().await {
            Some(Ok((_, layer))) => layers.push(layer),
            Some(Err(e)) => return Err(e).context("benchmark layer read failed"),
            None => bail!("benchmark stream ended after {} layers", layers.len()),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(layers);
    Ok(secs)
}

/// Seconds of a plain read of the file.
fn plain(path: &Path) -> anyhow::Result<f64> {
    let t = Instant::now();
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok(secs)
}

async fn measure(
    cfg: &BenchConfig,
    store: &ChunkStore,
    id: &ChunkId,
    path: &Path,
    data: &ChunkKvData,
) -> anyhow::Result<BenchReport> {
    let file_bytes = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let n = data.layers.len();
    let iters = cfg.iterations.max(1);
    // Warm: one untimed pass each fills the page cache; alternate to share conditions.
    load(store, id, n).await?;
    plain(path)?;
    let (mut s, mut q, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iters {
        s.push(load(store, id, n).await?);
        q.push(stream(store, id, n).await?);
        p.push(plain(path)?);
    }
    let warm = times(file_bytes, &mut s, &mut q, &mut p);
    let first_layer_warm_secs = stream(store, id, 1).await?;
    let cold = if drop_page_cache(path) {
        let (mut s, mut q, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..iters {
            drop_page_cache(path);
            s.push(load(store, id, n).await?);
            drop_page_cache(path);
            q.push(stream(store, id, n).await?);
            drop_page_cache(path);
            p.push(plain(path)?);
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
fn drop_page_cache(path: &Path) -> bool {
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
            n_kv_heads: 3,
            head_dim: 64,
            n_tokens: 16,
            iterations: 2,
        };
        let r = bench(&cfg).unwrap();
        assert_eq!(r.kv_bytes_per_token, 3 * 2 * 3 * 64 * 4);
        assert!(r.warm.store_secs > 0.0 && r.warm.plain_read_secs > 0.0);
        assert!(r.warm.store_sequential_secs > 0.0 && r.first_layer_warm_secs > 0.0);
        assert!(r.to_string().contains("bytes/token"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

//! `RedisTier`: a [`ChunkTier`] on Redis, shared by every replica of a fleet.
//!
//! Layout (LMCache's shape: one key per value, data before metadata, a size mismatch is a
//! miss). For model fingerprint `F` and chunk `C` (hex), keys under `a3kv:v1:F:C:`:
//! - `l{n}`: layer `n`, K then V as f32 little-endian (the chunk file's layer bytes);
//! - `h`: the chunk file header (shape, tokens, per-layer length and xxh3, header checksum);
//!   written after the layers, so a reader that finds it finds a complete chunk unless Redis
//!   evicted a layer since — then the layer is missing or short, counted as corrupt, the keys
//!   are deleted and the chunk is recomputed and written again;
//! - `doc:<key>` (under `a3kv:v1:F:`): a document's chunk list (`documents.rs`), no expiry;
//! - `lease`: the fleet-wide single flight (`SET NX PX`, holder's token, released by a
//!   compare-and-delete script).
//!
//! Reads stream: the header first, then one `GET` per layer, each verified before it is
//! handed out, so fusion starts on layer 0 while later layers are still on the wire.
//!
//! Failure policy: every call has a connect/read/write timeout; an error or timeout is a miss
//! (reads) or a skipped write, never a failed request. After `breaker_failures` consecutive
//! failures a circuit breaker skips Redis for `breaker_cooldown_ms`, then lets one probe call
//! through; its success closes the breaker. The store's calls run on blocking threads, so the
//! tier uses the crate's synchronous connections from a small pool (one trait shape for disk
//! and network tiers; no async runtime inside the store's blocking sections).
//!
//! Metrics recorded here: `a3kv:remote_get_seconds`, `a3kv:remote_put_seconds` (histograms),
//! `a3kv:remote_errors_total{op}` and the `a3kv:remote_breaker_open` gauge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, RedisResult};

use crate::config::RemoteConfig;
use crate::data::{ChunkKvData, KvMeta, LayerKv};
use crate::error::{CorruptReason, StoreError};
use crate::format::{self, Header};
use crate::stats::{Tier, TierStats};
use crate::tier::{millis, ChunkTier, Found, Lease, TierReader, TierSnapshot};
use a3kv_fusion::chunk_id::{to_hex, ChunkId};

/// Histogram: one Redis `GET` (a header or one layer), seconds.
pub const REMOTE_GET_SECONDS: &str = "a3kv:remote_get_seconds";
/// Histogram: one chunk written to Redis (layers then header, one pipeline), seconds.
pub const REMOTE_PUT_SECONDS: &str = "a3kv:remote_put_seconds";
/// Counter, label `op` (get, put, lease, delete, connect): Redis calls that failed or timed out.
pub const REMOTE_ERRORS: &str = "a3kv:remote_errors_total";
/// Gauge: 1 while the circuit breaker skips Redis, else 0.
pub const REMOTE_BREAKER_OPEN: &str = "a3kv:remote_breaker_open";

/// Layers deleted blindly when a header is unreadable (more than any supported model has).
const MAX_LAYERS_BLIND_DELETE: usize = 256;

/// Releases a lease only if this process still holds it.
const RELEASE_SCRIPT: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    /// Calls go through; `failures` consecutive ones have failed.
    Closed { failures: u32 },
    /// Calls are skipped until `until`.
    Open { until: Instant },
    /// One probe call is in flight; others are skipped.
    Probing,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    fingerprint_mismatches: AtomicU64,
    read_errors: AtomicU64,
    write_errors: AtomicU64,
    rejected_writes: AtomicU64,
    skipped_calls: AtomicU64,
    lease_waits_hit: AtomicU64,
    lease_waits_timeout: AtomicU64,
    bytes_written: AtomicU64,
    chunks_written: AtomicU64,
}

/// Why a call did not return a value.
#[derive(Debug)]
enum CallError {
    /// The breaker is open: Redis was not asked.
    Skipped,
    /// Connect, I/O, timeout or a Redis error reply.
    Failed(::redis::RedisError),
}

/// The Redis tier of one model.
pub(crate) struct RedisTier {
    client: Client,
    cfg: RemoteConfig,
    fingerprint: [u8; 32],
    /// `a3kv:v1:<fingerprint hex>:`.
    prefix: String,
    /// This process's lease token.
    token: String,
    pool: Mutex<Vec<Connection>>,
    breaker: Mutex<Breaker>,
    counters: Counters,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("url", &self.cfg.url)
            .field("prefix", &self.prefix)
            .field("breaker", &*lock(&self.breaker))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RedisTier {
    /// Creates the tier. Redis need not be reachable yet (the first calls find out).
    ///
    /// # Errors
    /// [`StoreError::InvalidData`] if the URL cannot be parsed.
    pub(crate) fn new(cfg: &RemoteConfig, fingerprint: [u8; 32]) -> Result<Self, StoreError> {
        let client = Client::open(cfg.url.as_str()).map_err(|e| {
            StoreError::InvalidData(format!("engine.store.remote.url {:?}: {e}", cfg.url))
        })?;
        let token = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        metrics::gauge!(REMOTE_BREAKER_OPEN).set(0.0);
        Ok(Self {
            client,
            cfg: cfg.clone(),
            fingerprint,
            prefix: format!("a3kv:v1:{}:", to_hex(&fingerprint)),
            token,
            pool: Mutex::new(Vec::new()),
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            counters: Counters::default(),
        })
    }

    fn key(&self, id: &ChunkId, suffix: &str) -> String {
        format!("{}{id}:{suffix}", self.prefix)
    }

    fn layer_key(&self, id: &ChunkId, l: usize) -> String {
        self.key(id, &format!("l{l}"))
    }

    /// Whether the breaker lets a call through now (turning an expired open state into one
    /// probe).
    fn allow(&self) -> bool {
        let mut b = lock(&self.breaker);
        match *b {
            Breaker::Closed { .. } => true,
            Breaker::Open { until } if Instant::now() >= until => {
                *b = Breaker::Probing;
                true
            }
            Breaker::Open { .. } | Breaker::Probing => false,
        }
    }

    fn succeeded(&self) {
        let mut b = lock(&self.breaker);
        if !matches!(*b, Breaker::Closed { .. }) {
            tracing::info!(url = %self.cfg.url, "remote chunk tier reachable again; circuit breaker closed");
            metrics::gauge!(REMOTE_BREAKER_OPEN).set(0.0);
        }
        *b = Breaker::Closed { failures: 0 };
    }

    fn failed(&self, op: &'static str, e: &::redis::RedisError) {
        metrics::counter!(REMOTE_ERRORS, "op" => op).increment(1);
        let mut b = lock(&self.breaker);
        let open = match *b {
            Breaker::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.cfg.breaker_failures.max(1) {
                    tracing::warn!(url = %self.cfg.url, op, error = %e, failures, cooldown_ms = self.cfg.breaker_cooldown_ms,
                        "remote chunk tier failing; circuit breaker open (requests compute locally)");
                    true
                } else {
                    tracing::debug!(url = %self.cfg.url, op, error = %e, "remote chunk tier call failed");
                    *b = Breaker::Closed { failures };
                    false
                }
            }
            Breaker::Probing => {
                tracing::debug!(url = %self.cfg.url, op, error = %e, "remote chunk tier probe failed");
                true
            }
            Breaker::Open { .. } => true,
        };
        if open {
            *b = Breaker::Open {
                until: Instant::now() + millis(self.cfg.breaker_cooldown_ms),
            };
            metrics::gauge!(REMOTE_BREAKER_OPEN).set(1.0);
        }
    }

    fn connect(&self) -> RedisResult<Connection> {
        let t = millis(self.cfg.timeout_ms);
        let con = self.client.get_connection_with_timeout(t)?;
        con.set_read_timeout(Some(t))?;
        con.set_write_timeout(Some(t))?;
        Ok(con)
    }

    /// Runs one call on a pooled connection under the breaker; a failed connection is dropped.
    fn call<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, CallError> {
        if !self.allow() {
            self.counters.skipped_calls.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::Skipped);
        }
        let pooled = lock(&self.pool).pop();
        let mut con = match pooled {
            Some(c) => c,
            None => match self.connect() {
                Ok(c) => c,
                Err(e) => {
                    self.failed("connect", &e);
                    return Err(CallError::Failed(e));
                }
            },
        };
        match f(&mut con) {
            Ok(v) => {
                self.succeeded();
                let mut pool = lock(&self.pool);
                if pool.len() < self.cfg.pool_size as usize {
                    pool.push(con);
                }
                Ok(v)
            }
            Err(e) => {
                self.failed(op, &e);
                Err(CallError::Failed(e))
            }
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CallError> {
        let t0 = Instant::now();
        let r = self.call("get", |c| {
            ::redis::cmd("GET").arg(key).query::<Option<Vec<u8>>>(c)
        });
        metrics::histogram!(REMOTE_GET_SECONDS).record(t0.elapsed().as_secs_f64());
        r
    }

    /// Deletes every key of `id` (best effort): the chunk is then simply absent.
    fn delete_chunk(&self, id: &ChunkId, n_layers: usize) -> Result<u64, CallError> {
        let mut keys = vec![self.key(id, "h")];
        keys.extend((0..n_layers).map(|l| self.layer_key(id, l)));
        self.call("delete", |c| ::redis::cmd("DEL").arg(&keys).query::<u64>(c))
    }

    /// Counts a bad value and deletes the chunk so the recompute's write replaces it.
    fn reject(&self, id: &ChunkId, n_layers: usize, reason: &CorruptReason) {
        if *reason == CorruptReason::FingerprintMismatch {
            self.counters
                .fingerprint_mismatches
                .fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(chunk = %id, reason = %reason, "bad chunk in the remote tier, treated as a miss and deleted");
        let _ = self.delete_chunk(id, n_layers);
    }

    fn read_error(&self) {
        self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads and verifies `id`'s header (counted).
    fn open_header(&self, id: &ChunkId) -> Found<Header> {
        let bytes = match self.get(&self.key(id, "h")) {
            Ok(Some(b)) => b,
            Ok(None) => {
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                return Found::Miss;
            }
            Err(_) => {
                self.read_error();
                return Found::Unavailable;
            }
        };
        match format::parse_header_value(&bytes, id, &self.fingerprint) {
            Ok(h) => Found::Hit(h),
            Err(reason) => {
                self.reject(id, MAX_LAYERS_BLIND_DELETE, &reason);
                Found::Miss
            }
        }
    }

    /// The breaker is open now (no calls go out).
    fn breaker_open(&self) -> bool {
        !matches!(*lock(&self.breaker), Breaker::Closed { .. })
    }
}

/// A chunk being read from Redis, layer by layer.
struct RedisReader {
    tier: Arc<RedisTier>,
    id: ChunkId,
    header: Header,
}

impl TierReader for RedisReader {
    fn meta(&self) -> &KvMeta {
        &self.header.meta
    }

    fn read_layer(&mut self, l: usize) -> Result<LayerKv, StoreError> {
        let key = self.tier.layer_key(&self.id, l);
        let n_layers = self.header.layers.len();
        let bytes = match self.tier.get(&key) {
            Ok(Some(b)) => b,
            // Evicted by Redis since the header was read: the chunk is incomplete.
            Ok(None) => {
                let reason = CorruptReason::Read(format!("layer {l} missing"));
                self.tier.reject(&self.id, n_layers, &reason);
                return Err(StoreError::Corrupt {
                    path: key.into(),
                    reason,
                });
            }
            Err(e) => {
                self.tier.read_error();
                let msg = match e {
                    CallError::Skipped => "remote tier circuit breaker open".to_string(),
                    CallError::Failed(e) => e.to_string(),
                };
                return Err(StoreError::io(key, std::io::Error::other(msg)));
            }
        };
        format::parse_layer_value(&bytes, &self.header, l).map_err(|reason| {
            self.tier.reject(&self.id, n_layers, &reason);
            StoreError::Corrupt {
                path: key.into(),
                reason,
            }
        })
    }

    fn finish(self: Box<Self>) {
        self.tier.counters.hits.fetch_add(1, Ordering::Relaxed);
    }
}

impl ChunkTier for RedisTier {
    fn tier(&self) -> Tier {
        Tier::Remote
    }

    fn open(self: Arc<Self>, id: &ChunkId) -> Found<Box<dyn TierReader>> {
        match self.open_header(id) {
            Found::Hit(header) => Found::Hit(Box::new(RedisReader {
                tier: self,
                id: *id,
                header,
            })),
            Found::Miss => Found::Miss,
            Found::Unavailable => Found::Unavailable,
        }
    }

    fn write(&self, id: &ChunkId, data: &ChunkKvData) -> bool {
        let header = match format::header_value(id, data) {
            Ok(h) => h,
            Err(_) => {
                self.counters
                    .rejected_writes
                    .fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let layer_bytes = data.meta.layer_bytes().unwrap_or(u64::MAX);
        if layer_bytes.max(header.len() as u64) > self.cfg.max_value_bytes {
            self.counters
                .rejected_writes
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(chunk = %id, layer_bytes, max = self.cfg.max_value_bytes, "chunk larger than the remote value cap; kept local");
            return false;
        }
        let t0 = Instant::now();
        let mut pipe = ::redis::pipe();
        let mut total = header.len() as u64;
        let set = |pipe: &mut ::redis::Pipeline, key: String, value: Vec<u8>| {
            let cmd = pipe.cmd("SET").arg(key).arg(value);
            if self.cfg.ttl_secs > 0 {
                cmd.arg("EX").arg(self.cfg.ttl_secs);
            }
            cmd.ignore();
        };
        // Layers first, the header last: a reader that sees the header sees every layer.
        for (l, layer) in data.layers.iter().enumerate() {
            let v = format::layer_value(layer);
            total += v.len() as u64;
            set(&mut pipe, self.layer_key(id, l), v);
        }
        set(&mut pipe, self.key(id, "h"), header);
        match self.call("put", |c| pipe.query::<()>(c)) {
            Ok(()) => {
                metrics::histogram!(REMOTE_PUT_SECONDS).record(t0.elapsed().as_secs_f64());
                self.counters
                    .bytes_written
                    .fetch_add(total, Ordering::Relaxed);
                self.counters.chunks_written.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn remove(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let n = self
            .get(&self.key(id, "h"))
            .ok()
            .flatten()
            .and_then(|b| format::parse_header_value(&b, id, &self.fingerprint).ok())
            .map_or(MAX_LAYERS_BLIND_DELETE, |h| h.layers.len());
        match self.delete_chunk(id, n) {
            Ok(deleted) => Ok(deleted > 0),
            Err(_) => {
                tracing::warn!(chunk = %id, "cannot delete chunk from the remote tier (unreachable)");
                Ok(false)
            }
        }
    }

    fn snapshot(&self) -> TierSnapshot {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TierSnapshot {
            stats: TierStats {
                hits: get(&c.hits),
                misses: get(&c.misses),
                evictions: 0,
                bytes: get(&c.bytes_written),
                entries: get(&c.chunks_written),
                budget_bytes: 0,
            },
            corrupt: get(&c.corrupt),
            fingerprint_mismatches: get(&c.fingerprint_mismatches),
            read_errors: get(&c.read_errors),
            write_errors: get(&c.write_errors),
            rejected_writes: get(&c.rejected_writes),
            skipped_calls: get(&c.skipped_calls),
            breaker_open: self.breaker_open(),
            lease_waits_hit: get(&c.lease_waits_hit),
            lease_waits_timeout: get(&c.lease_waits_timeout),
        }
    }

    fn put_record(&self, key: &str, value: &[u8]) -> bool {
        let k = format!("{}doc:{key}", self.prefix);
        // No expiry: a record is tiny and names chunks by their tokens, so it stays useful
        // after the chunks themselves expire (they are recomputed).
        self.call("put", |c| {
            ::redis::cmd("SET").arg(&k).arg(value).query::<()>(c)
        })
        .is_ok()
    }

    fn get_record(&self, key: &str) -> Found<Vec<u8>> {
        match self.get(&format!("{}doc:{key}", self.prefix)) {
            Ok(Some(b)) => Found::Hit(b),
            Ok(None) => Found::Miss,
            Err(_) => Found::Unavailable,
        }
    }

    fn remove_record(&self, key: &str) -> bool {
        let k = format!("{}doc:{key}", self.prefix);
        self.call("delete", |c| ::redis::cmd("DEL").arg(&k).query::<u64>(c))
            .is_ok_and(|n| n > 0)
    }

    fn lease(&self, id: &ChunkId) -> Lease {
        let key = self.key(id, "lease");
        let got = self.call("lease", |c| {
            ::redis::cmd("SET")
                .arg(&key)
                .arg(&self.token)
                .arg("NX")
                .arg("PX")
                .arg(self.cfg.lease_ms.max(1))
                .query::<Option<String>>(c)
        });
        match got {
            Ok(Some(_)) => Lease::Granted,
            Ok(None) => Lease::HeldElsewhere,
            Err(_) => Lease::Unavailable,
        }
    }

    fn release(&self, id: &ChunkId) {
        let key = self.key(id, "lease");
        let _ = self.call("lease", |c| {
            ::redis::cmd("EVAL")
                .arg(RELEASE_SCRIPT)
                .arg(1)
                .arg(&key)
                .arg(&self.token)
                .query::<i64>(c)
        });
    }

    fn wait_and_open(self: Arc<Self>, id: &ChunkId) -> Found<Box<dyn TierReader>> {
        let deadline = Instant::now() + millis(self.cfg.lease_wait_ms);
        let (h, lease) = (self.key(id, "h"), self.key(id, "lease"));
        let mut pause = Duration::from_millis(10);
        loop {
            // (header present, lease still held)
            let state = self.call("get", |c| {
                ::redis::pipe()
                    .cmd("EXISTS")
                    .arg(&h)
                    .cmd("EXISTS")
                    .arg(&lease)
                    .query::<(bool, bool)>(c)
            });
            match state {
                Ok((true, _)) => {
                    self.counters
                        .lease_waits_hit
                        .fetch_add(1, Ordering::Relaxed);
                    return self.open(id);
                }
                // The holder gave up (failed or died and the lease expired): compute here.
                Ok((false, false)) => return Found::Miss,
                Ok((false, true)) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Ok(_) => {
                    self.counters
                        .lease_waits_timeout
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(chunk = %id, wait_ms = self.cfg.lease_wait_ms, "another replica's chunk computation did not finish in time; computing here");
                    return Found::Miss;
                }
                Err(_) => return Found::Unavailable,
            }
        }
    }
}

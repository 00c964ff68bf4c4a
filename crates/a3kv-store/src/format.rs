//! The chunk file format (version 1): writing one chunk file and reading it back layer by layer
//! with per-layer checksums.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! off  size          field
//! 0    8             magic "A3KVCHNK"
//! 8    4             format version (1)
//! 12   4             header_len: bytes from 0 through the header checksum
//! 16   32            model fingerprint
//! 48   32            chunk id (must equal the file name)
//! 80   4             dtype code (0 = f32, 1 = f16, 2 = bf16)
//! 84   4             n_layers L
//! 88   4             n_kv_heads H_kv
//! 92   4             head_dim d
//! 96   4             n_tokens n
//! 100  4             reserved (0)
//! 104  8             data_offset: start of layer 0 (header padded with zeros to 4096)
//! 112  8             file_len: total file length (detects truncation and appended junk)
//! 120  4*n           token ids
//! ..   24*L          layer table: {offset u64, len u64, xxh3_64 u64} per layer
//! ..   8             xxh3_64 of every header byte before it
//! data_offset..      layer l at table[l].offset: K [H_kv, n, d] then V [H_kv, n, d], LE
//!                    elements of the dtype
//! ```
//!
//! A reader validates the header (magic, version, checksum, fingerprint, id, dtype, layout,
//! file length) on open, then reads layer `l` with one positioned read and checks its hash,
//! without touching other layers.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use std::hash::Hasher;

use twox_hash::XxHash3_64 as Xxh3;

use half::{bf16, f16};

use crate::data::{ChunkKvData, KvDtype, KvMeta, KvVec, LayerKv};
use crate::error::CorruptReason;
use a3kv_fusion::ChunkId;

/// First 8 bytes of every chunk file.
pub(crate) const MAGIC: [u8; 8] = *b"A3KVCHNK";
/// The only format version this build writes and reads.
pub(crate) const VERSION: u32 = 1;
/// Bytes of the fixed header part (before token ids).
const FIXED_LEN: usize = 120;
/// Layer data starts at a multiple of this (page size; keeps O_DIRECT/mmap possible later).
const DATA_ALIGN: u64 = 4096;
/// Upper bound on header bytes a reader accepts (16M tokens); guards allocation.
const MAX_HEADER_BYTES: u64 = 64 << 20;
/// Reads are issued and hashed in pieces of this size (well under L2) so the hash reads
/// cache-hot bytes instead of a second pass over DRAM.
const READ_PIECE_BYTES: usize = 256 << 10;

/// One row of the layer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LayerEntry {
    /// Byte offset of the layer's K in the file.
    pub offset: u64,
    /// Bytes of K plus V.
    pub len: u64,
    /// xxh3_64 of the layer's bytes (K then V).
    pub checksum: u64,
}

/// A parsed, validated header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// Shape, model and tokens.
    pub meta: KvMeta,
    /// Expected file length.
    pub file_len: u64,
    /// Per-layer offsets and checksums.
    pub layers: Vec<LayerEntry>,
}

/// Why a read did not produce data.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The file does not exist (a stale index entry, not corruption).
    NotFound,
    /// An I/O error that says nothing about the file's contents (permission, EIO..).
    Io(io::Error),
    /// The file is bad: never use it.
    Corrupt(CorruptReason),
}

impl From<CorruptReason> for ReadFailure {
    fn from(r: CorruptReason) -> Self {
        Self::Corrupt(r)
    }
}

/// Maps a read error: a short read means the file is shorter than its header said.
pub(crate) fn read_err(e: io::Error) -> ReadFailure {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadFailure::Corrupt(CorruptReason::Read(e.to_string())),
        io::ErrorKind::NotFound => ReadFailure::NotFound,
        _ => ReadFailure::Io(e),
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Header length for `n_tokens` tokens and `n_layers` layers.
fn header_len(n_tokens: u64, n_layers: u64) -> u64 {
    FIXED_LEN as u64 + 4 * n_tokens + 24 * n_layers + 8
}

/// Checksum of one layer's bytes, K then V.
pub(crate) fn layer_checksum(k: &KvVec, v: &KvVec) -> u64 {
    let mut h = Xxh3::new();
    h.write(&le_bytes(k));
    h.write(&le_bytes(v));
    h.finish()
}

/// Little-endian bytes of stored elements (borrowed on little-endian targets).
fn le_bytes(v: &KvVec) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(v.as_bytes())
    } else {
        let n = v.dtype().size_bytes();
        std::borrow::Cow::Owned(
            v.as_bytes()
                .chunks_exact(n)
                .flat_map(|c| c.iter().rev().copied())
                .collect(),
        )
    }
}

/// Elements of `dtype` from their little-endian bytes.
fn kv_from_le(dtype: KvDtype, b: &[u8]) -> KvVec {
    let u16s = || b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    match dtype {
        KvDtype::F32 => KvVec::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        KvDtype::F16 => KvVec::F16(u16s().map(f16::from_bits).collect()),
        KvDtype::BF16 => KvVec::BF16(u16s().map(bf16::from_bits).collect()),
    }
}

/// Total file length for a chunk with this meta, `None` if it overflows or the header would
/// exceed what readers accept.
pub(crate) fn file_len(meta: &KvMeta) -> Option<u64> {
    let hlen = header_len(u64::from(meta.n_tokens), u64::from(meta.n_layers));
    if hlen > MAX_HEADER_BYTES {
        return None;
    }
    let layers = meta.layer_bytes()?.checked_mul(u64::from(meta.n_layers))?;
    align_up(hlen, DATA_ALIGN).checked_add(layers)
}

/// Builds the header bytes, zero-padded to the data offset, and the file length.
fn encode_header(id: &ChunkId, data: &ChunkKvData) -> io::Result<(Vec<u8>, u64)> {
    let m = &data.meta;
    let file_len = file_len(m).ok_or_else(|| io::Error::other("chunk too large for the format"))?;
    let layer_len = m
        .layer_bytes()
        .ok_or_else(|| io::Error::other("layer size overflows"))?;
    let hlen = header_len(u64::from(m.n_tokens), u64::from(m.n_layers));
    let hlen32 = u32::try_from(hlen).map_err(|_| io::Error::other("header too large"))?;
    let data_offset = align_up(hlen, DATA_ALIGN);
    let mut h = Vec::with_capacity(hlen as usize);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&hlen32.to_le_bytes());
    h.extend_from_slice(&m.fingerprint);
    h.extend_from_slice(id.as_bytes());
    for x in [
        m.dtype.code(),
        m.n_layers,
        m.n_kv_heads,
        m.head_dim,
        m.n_tokens,
        0,
    ] {
        h.extend_from_slice(&x.to_le_bytes());
    }
    h.extend_from_slice(&data_offset.to_le_bytes());
    h.extend_from_slice(&file_len.to_le_bytes());
    for t in &m.token_ids {
        h.extend_from_slice(&t.to_le_bytes());
    }
    for (l, layer) in data.layers.iter().enumerate() {
        h.extend_from_slice(&(data_offset + l as u64 * layer_len).to_le_bytes());
        h.extend_from_slice(&layer_len.to_le_bytes());
        h.extend_from_slice(&layer_checksum(&layer.k, &layer.v).to_le_bytes());
    }
    let sum = Xxh3::oneshot(&h);
    h.extend_from_slice(&sum.to_le_bytes());
    h.resize(data_offset as usize, 0);
    Ok((h, file_len))
}

/// Writes a whole chunk file to `file` (positioned at 0) and returns its length. The caller
/// validated `data` and owns atomicity (temp file, fsync, rename).
pub(crate) fn write_chunk(file: &File, id: &ChunkId, data: &ChunkKvData) -> io::Result<u64> {
    use io::Write;
    let (header, file_len) = encode_header(id, data)?;
    let mut w = io::BufWriter::with_capacity(1 << 16, file);
    w.write_all(&header)?;
    for layer in &data.layers {
        w.write_all(&le_bytes(&layer.k))?;
        w.write_all(&le_bytes(&layer.v))?;
    }
    w.flush()?;
    Ok(file_len)
}

/// The header as one value of a key-value tier (Redis): the file header without its padding,
/// so the same checksum and layout checks apply (`data_offset`/`file_len` describe the file
/// form and are only checked for consistency).
pub(crate) fn header_value(id: &ChunkId, data: &ChunkKvData) -> io::Result<Vec<u8>> {
    let (mut h, _) = encode_header(id, data)?;
    let m = &data.meta;
    h.truncate(header_len(u64::from(m.n_tokens), u64::from(m.n_layers)) as usize);
    Ok(h)
}

/// Parses and verifies a header value written by [`header_value`].
pub(crate) fn parse_header_value(
    h: &[u8],
    id: &ChunkId,
    fingerprint: &[u8; 32],
) -> Result<Header, CorruptReason> {
    if h.len() < FIXED_LEN + 8 {
        return Err(CorruptReason::Length {
            expected: FIXED_LEN as u64 + 8,
            actual: h.len() as u64,
        });
    }
    if h[0..8] != MAGIC {
        return Err(CorruptReason::BadMagic);
    }
    let version = u32_at(h, 8);
    if version != VERSION {
        return Err(CorruptReason::UnsupportedVersion(version));
    }
    if u64::from(u32_at(h, 12)) != h.len() as u64 {
        return Err(CorruptReason::InvalidHeader("header length out of range"));
    }
    let body = h.len() - 8;
    if Xxh3::oneshot(&h[..body]) != u64_at(h, body) {
        return Err(CorruptReason::HeaderChecksum);
    }
    parse_header(h, u64_at(h, 112), id, fingerprint)
}

/// One layer as one value of a key-value tier: K then V, little-endian elements (the bytes a
/// chunk file holds for the layer).
pub(crate) fn layer_value(layer: &LayerKv) -> Vec<u8> {
    let mut out = Vec::with_capacity(layer.k.as_bytes().len() + layer.v.as_bytes().len());
    out.extend_from_slice(&le_bytes(&layer.k));
    out.extend_from_slice(&le_bytes(&layer.v));
    out
}

/// Verifies a layer value against the header's table (size and xxh3) and decodes it.
pub(crate) fn parse_layer_value(
    bytes: &[u8],
    header: &Header,
    l: usize,
) -> Result<LayerKv, CorruptReason> {
    let entry = header
        .layers
        .get(l)
        .ok_or(CorruptReason::InvalidHeader("layer index out of range"))?;
    if bytes.len() as u64 != entry.len {
        return Err(CorruptReason::Length {
            expected: entry.len,
            actual: bytes.len() as u64,
        });
    }
    if Xxh3::oneshot(bytes) != entry.checksum {
        return Err(CorruptReason::LayerChecksum { layer: l });
    }
    let half = bytes.len() / 2;
    let dtype = header.meta.dtype;
    Ok(LayerKv {
        k: kv_from_le(dtype, &bytes[..half]),
        v: kv_from_le(dtype, &bytes[half..]),
    })
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(x)
}

fn arr32_at(b: &[u8], off: usize) -> [u8; 32] {
    let mut x = [0u8; 32];
    x.copy_from_slice(&b[off..off + 32]);
    x
}

/// Positioned read of exactly `buf.len()` bytes.
fn pread_exact(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(not(unix))]
    {
        use io::{Read, Seek};
        let mut f = file;
        f.seek(io::SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

/// An open, header-validated chunk file.
#[derive(Debug)]
pub(crate) struct ChunkReader {
    file: File,
    header: Header,
    path: PathBuf,
}

impl ChunkReader {
    /// Opens `path` and validates its header against the expected id and model fingerprint.
    pub(crate) fn open(
        path: &Path,
        id: &ChunkId,
        fingerprint: &[u8; 32],
    ) -> Result<Self, ReadFailure> {
        let file = File::open(path).map_err(read_err)?;
        Self::from_file(file, path, id, fingerprint)
    }

    /// Validates the header of an already open file.
    pub(crate) fn from_file(
        file: File,
        path: &Path,
        id: &ChunkId,
        fingerprint: &[u8; 32],
    ) -> Result<Self, ReadFailure> {
        let actual_len = file.metadata().map_err(read_err)?.len();
        let header = read_header(&file, actual_len, id, fingerprint)?;
        Ok(Self {
            file,
            header,
            path: path.to_path_buf(),
        })
    }

    /// The validated header.
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (for touching its access time).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Reads layer `l` and checks its checksum; reads nothing of other layers.
    pub(crate) fn read_layer(&self, l: usize) -> Result<LayerKv, ReadFailure> {
        self.read_layer_with(l, false)
    }

    /// Reference twin of [`ChunkReader::read_layer`]: zero-initialised buffers and plain
    /// `read_exact_at`, no unsafe. The fast path must return the same bits.
    #[cfg(test)]
    pub(crate) fn read_layer_reference(&self, l: usize) -> Result<LayerKv, ReadFailure> {
        self.read_layer_with(l, true)
    }

    fn read_layer_with(&self, l: usize, reference: bool) -> Result<LayerKv, ReadFailure> {
        let entry = *self
            .header
            .layers
            .get(l)
            .ok_or(CorruptReason::InvalidHeader("layer index out of range"))?;
        let elems = self
            .header
            .meta
            .elems_per_tensor()
            .ok_or(CorruptReason::InvalidHeader("shape overflows"))?;
        let dtype = self.header.meta.dtype;
        let mut h = Xxh3::new();
        let k_bytes = (elems * dtype.size_bytes()) as u64;
        let (file, off) = (&self.file, entry.offset);
        let (k, v) = match dtype {
            KvDtype::F32 => (
                KvVec::F32(read_elems(file, elems, off, &mut h, reference)?),
                KvVec::F32(read_elems(file, elems, off + k_bytes, &mut h, reference)?),
            ),
            KvDtype::F16 => (
                KvVec::F16(read_elems(file, elems, off, &mut h, reference)?),
                KvVec::F16(read_elems(file, elems, off + k_bytes, &mut h, reference)?),
            ),
            KvDtype::BF16 => (
                KvVec::BF16(read_elems(file, elems, off, &mut h, reference)?),
                KvVec::BF16(read_elems(file, elems, off + k_bytes, &mut h, reference)?),
            ),
        };
        if h.finish() != entry.checksum {
            return Err(CorruptReason::LayerChecksum { layer: l }.into());
        }
        if cfg!(target_endian = "big") {
            // The bytes are little-endian: decode them as such.
            return Ok(LayerKv {
                k: kv_from_le(dtype, k.as_bytes()),
                v: kv_from_le(dtype, v.as_bytes()),
            });
        }
        Ok(LayerKv { k, v })
    }
}

/// Reads `elems` values of `T` at `offset` (file bytes, host order), feeding the bytes to the
/// hasher: the fast path, or with `reference` its twin.
fn read_elems<T: bytemuck::Pod>(
    file: &File,
    elems: usize,
    offset: u64,
    h: &mut Xxh3,
    reference: bool,
) -> Result<Vec<T>, ReadFailure> {
    #[cfg(unix)]
    if !reference {
        return read_elems_fast(file, elems, offset, h);
    }
    let _ = reference;
    read_elems_reference(file, elems, offset, h)
}

/// Reads in pieces of [`READ_PIECE_BYTES`] into a zeroed buffer, hashing each piece.
fn read_elems_reference<T: bytemuck::Pod>(
    file: &File,
    elems: usize,
    offset: u64,
    h: &mut Xxh3,
) -> Result<Vec<T>, ReadFailure> {
    let mut out = vec![T::zeroed(); elems];
    let mut pos = 0u64;
    for piece in bytemuck::cast_slice_mut::<T, u8>(&mut out).chunks_mut(READ_PIECE_BYTES) {
        pread_exact(file, piece, offset + pos).map_err(read_err)?;
        h.write(piece);
        pos += piece.len() as u64;
    }
    Ok(out)
}

/// Fast path: `pread` straight into the vector's uninitialised capacity (no zeroing pass),
/// hashing each piece while it is cache-hot.
#[cfg(unix)]
fn read_elems_fast<T: bytemuck::Pod>(
    file: &File,
    elems: usize,
    offset: u64,
    h: &mut Xxh3,
) -> Result<Vec<T>, ReadFailure> {
    use std::os::unix::io::AsRawFd;
    let total = elems
        .checked_mul(std::mem::size_of::<T>())
        .ok_or(CorruptReason::InvalidHeader("shape overflows"))?;
    let mut out: Vec<T> = Vec::with_capacity(elems);
    let base = out.as_mut_ptr().cast::<u8>();
    let mut done = 0usize;
    while done < total {
        let want = (total - done).min(READ_PIECE_BYTES);
        let at = offset
            .checked_add(done as u64)
            .and_then(|x| libc::off_t::try_from(x).ok())
            .ok_or(CorruptReason::InvalidHeader("offset out of range"))?;
        // SAFETY: `base + done .. base + done + want` lies inside `out`'s allocation of
        // `total` bytes; the kernel only writes there, and nothing else aliases it.
        let n = unsafe { libc::pread(file.as_raw_fd(), base.add(done).cast(), want, at) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(read_err(e));
        }
        if n == 0 {
            return Err(CorruptReason::Read("unexpected end of file".into()).into());
        }
        let n = n as usize;
        // SAFETY: the kernel initialised these `n` bytes (n <= want).
        h.write(unsafe { std::slice::from_raw_parts(base.add(done), n) });
        done += n;
    }
    // SAFETY: all `total` bytes were initialised above, and every bit pattern is a valid `T`
    // (`Pod`).
    unsafe { out.set_len(elems) };
    Ok(out)
}

/// Reads and validates the header of an open file of length `actual_len`.
fn read_header(
    file: &File,
    actual_len: u64,
    id: &ChunkId,
    fingerprint: &[u8; 32],
) -> Result<Header, ReadFailure> {
    if actual_len < FIXED_LEN as u64 {
        return Err(CorruptReason::Length {
            expected: FIXED_LEN as u64,
            actual: actual_len,
        }
        .into());
    }
    let mut fixed = [0u8; FIXED_LEN];
    pread_exact(file, &mut fixed, 0).map_err(read_err)?;
    if fixed[0..8] != MAGIC {
        return Err(CorruptReason::BadMagic.into());
    }
    let version = u32_at(&fixed, 8);
    if version != VERSION {
        return Err(CorruptReason::UnsupportedVersion(version).into());
    }
    let hlen = u64::from(u32_at(&fixed, 12));
    if hlen < FIXED_LEN as u64 + 8 || hlen > MAX_HEADER_BYTES || hlen > actual_len {
        return Err(CorruptReason::InvalidHeader("header length out of range").into());
    }
    let mut h = vec![0u8; hlen as usize];
    pread_exact(file, &mut h, 0).map_err(read_err)?;
    let body = hlen as usize - 8;
    if Xxh3::oneshot(&h[..body]) != u64_at(&h, body) {
        return Err(CorruptReason::HeaderChecksum.into());
    }
    parse_header(&h, actual_len, id, fingerprint).map_err(ReadFailure::from)
}

/// Parses a checksum-verified header and checks it describes a sane layout.
fn parse_header(
    h: &[u8],
    actual_len: u64,
    id: &ChunkId,
    fingerprint: &[u8; 32],
) -> Result<Header, CorruptReason> {
    if &arr32_at(h, 16) != fingerprint {
        return Err(CorruptReason::FingerprintMismatch);
    }
    if &arr32_at(h, 48) != id.as_bytes() {
        return Err(CorruptReason::ChunkIdMismatch);
    }
    let dtype_code = u32_at(h, 80);
    let dtype =
        KvDtype::from_code(dtype_code).ok_or(CorruptReason::UnsupportedDtype(dtype_code))?;
    let (n_layers, n_kv_heads, head_dim, n_tokens) =
        (u32_at(h, 84), u32_at(h, 88), u32_at(h, 92), u32_at(h, 96));
    if header_len(u64::from(n_tokens), u64::from(n_layers)) != h.len() as u64 {
        return Err(CorruptReason::InvalidHeader(
            "header length disagrees with shape",
        ));
    }
    let data_offset = u64_at(h, 104);
    let file_len = u64_at(h, 112);
    if file_len != actual_len {
        return Err(CorruptReason::Length {
            expected: file_len,
            actual: actual_len,
        });
    }
    let token_ids = (0..n_tokens as usize)
        .map(|t| u32_at(h, FIXED_LEN + 4 * t))
        .collect();
    let meta = KvMeta {
        fingerprint: *fingerprint,
        dtype,
        n_layers,
        n_kv_heads,
        head_dim,
        n_tokens,
        token_ids,
    };
    let layer_len = meta
        .layer_bytes()
        .ok_or(CorruptReason::InvalidHeader("shape overflows"))?;
    let table = FIXED_LEN + 4 * n_tokens as usize;
    let mut layers = Vec::with_capacity(n_layers as usize);
    let mut min_offset = data_offset.max(h.len() as u64);
    for l in 0..n_layers as usize {
        let row = table + 24 * l;
        let e = LayerEntry {
            offset: u64_at(h, row),
            len: u64_at(h, row + 8),
            checksum: u64_at(h, row + 16),
        };
        let end = e.offset.checked_add(e.len);
        if e.len != layer_len || e.offset < min_offset || end.is_none_or(|x| x > file_len) {
            return Err(CorruptReason::InvalidHeader("layer table out of range"));
        }
        min_offset = e.offset + e.len;
        layers.push(e);
    }
    Ok(Header {
        meta,
        file_len,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tests::{bit_equal, sample_chunk};

    const FP: [u8; 32] = [9u8; 32];

    fn write_sample(dir: &Path, layers: u32, tokens: u32) -> (PathBuf, ChunkId, ChunkKvData) {
        let id = ChunkId([layers as u8; 32]);
        let data = sample_chunk(FP, 5, layers, tokens);
        let path = dir.join("c.a3kv");
        let f = File::create(&path).unwrap();
        let len = write_chunk(&f, &id, &data).unwrap();
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        (path, id, data)
    }

    fn corrupt_reason(path: &Path, id: &ChunkId, fp: &[u8; 32]) -> CorruptReason {
        match ChunkReader::open(path, id, fp).and_then(|r| crate::load::read_all(&r, 1)) {
            Err(ReadFailure::Corrupt(r)) => r,
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_bit_exact_and_layer_wise() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id, data) = write_sample(dir.path(), 4, 7);
        let r = ChunkReader::open(&path, &id, &FP).unwrap();
        assert!(bit_equal(&crate::load::read_all(&r, 1).unwrap(), &data));
        // Layers read out of order equal the stored ones.
        for l in [3, 0, 2] {
            assert_eq!(
                r.read_layer(l).unwrap().k.as_bytes(),
                data.layers[l].k.as_bytes()
            );
        }
        assert_eq!(r.header().layers[0].offset, DATA_ALIGN);
    }

    #[test]
    fn fast_read_matches_reference_twin() {
        let dir = tempfile::tempdir().unwrap();
        // Layers larger than one read piece, and an odd size, exercise the piece loop.
        for tokens in [7, 5000] {
            let (path, id, data) = write_sample(dir.path(), 2, tokens);
            let r = ChunkReader::open(&path, &id, &FP).unwrap();
            for l in 0..2 {
                let bits = |x: &LayerKv| (x.k.as_bytes().to_vec(), x.v.as_bytes().to_vec());
                let fast = r.read_layer(l).unwrap();
                assert_eq!(bits(&fast), bits(&r.read_layer_reference(l).unwrap()));
                assert_eq!(bits(&fast), bits(&data.layers[l]));
            }
        }
    }

    /// f16 and bf16 chunks: same layout at half the layer bytes, fast and reference reads
    /// agree bit for bit, a Redis-style layer value decodes to the same elements.
    #[test]
    fn sixteen_bit_chunks_round_trip_at_half_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f32_chunk = sample_chunk(FP, 5, 3, 700);
        let f32_len = f32_chunk.meta.layer_bytes().unwrap();
        for dtype in [KvDtype::F16, KvDtype::BF16] {
            let mut data = f32_chunk.clone();
            data.meta.dtype = dtype;
            for l in &mut data.layers {
                *l = std::sync::Arc::new(LayerKv {
                    k: KvVec::from_f32(dtype, &l.k.to_f32_vec()),
                    v: KvVec::from_f32(dtype, &l.v.to_f32_vec()),
                });
            }
            data.validate(&FP).unwrap();
            let id = ChunkId([dtype.code() as u8 + 40; 32]);
            let path = dir.path().join(format!("{dtype}.a3kv"));
            write_chunk(&File::create(&path).unwrap(), &id, &data).unwrap();
            let r = ChunkReader::open(&path, &id, &FP).unwrap();
            assert_eq!(r.header().meta.dtype, dtype);
            assert_eq!(r.header().layers[1].len * 2, f32_len);
            assert!(bit_equal(&crate::load::read_all(&r, 2).unwrap(), &data));
            for l in 0..3 {
                let fast = r.read_layer(l).unwrap();
                let slow = r.read_layer_reference(l).unwrap();
                assert_eq!(fast.k.as_bytes(), slow.k.as_bytes());
                assert_eq!(fast.v.as_bytes(), slow.v.as_bytes());
                let value = parse_layer_value(&layer_value(&fast), r.header(), l).unwrap();
                assert_eq!(value.k.as_bytes(), data.layers[l].k.as_bytes());
                assert_eq!(value.v.dtype(), dtype);
            }
        }
    }

    #[test]
    fn zero_tokens_and_zero_layers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for (l, n) in [(0, 0), (3, 0), (0, 4)] {
            let (path, id, data) = write_sample(dir.path(), l, n);
            let r = ChunkReader::open(&path, &id, &FP).unwrap();
            assert!(bit_equal(&crate::load::read_all(&r, 1).unwrap(), &data));
        }
    }

    #[test]
    fn flipped_byte_in_layer_fails_only_that_layer() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id, _) = write_sample(dir.path(), 4, 7);
        let entry = ChunkReader::open(&path, &id, &FP).unwrap().header().layers[2];
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(entry.offset + entry.len - 3) as usize] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let r = ChunkReader::open(&path, &id, &FP).unwrap();
        assert!(r.read_layer(0).is_ok());
        assert!(r.read_layer(1).is_ok());
        assert!(matches!(
            r.read_layer(2),
            Err(ReadFailure::Corrupt(CorruptReason::LayerChecksum {
                layer: 2
            }))
        ));
        assert!(r.read_layer(3).is_ok());
    }

    #[test]
    fn header_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (path, id, _) = write_sample(dir.path(), 2, 3);
        let good = std::fs::read(&path).unwrap();
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut b = good.clone();
        b[0] = b'X';
        cases.push((b, "bad_magic"));
        let mut b = good.clone();
        b[8] = 2;
        cases.push((b, "version"));
        let mut b = good.clone();
        b[FIXED_LEN + 1] ^= 1; // a token id
        cases.push((b, "header_checksum"));
        cases.push((good[..good.len() - 1].to_vec(), "length"));
        cases.push((good[..50].to_vec(), "length"));
        cases.push((good[..FIXED_LEN + 4].to_vec(), "invalid_header"));
        let mut b = good.clone();
        b.push(0);
        cases.push((b, "length"));
        for (bytes, want) in cases {
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(corrupt_reason(&path, &id, &FP).label(), want);
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(
            corrupt_reason(&path, &id, &[1u8; 32]).label(),
            "fingerprint"
        );
        assert_eq!(
            corrupt_reason(&path, &ChunkId([0xee; 32]), &FP).label(),
            "chunk_id"
        );
        assert!(matches!(
            ChunkReader::open(&dir.path().join("missing"), &id, &FP),
            Err(ReadFailure::NotFound)
        ));
    }
}

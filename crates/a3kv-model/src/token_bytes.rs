//! The raw bytes of one token. Byte-level BPE vocabularies (GPT-2, SmolLM2, Qwen2, Llama 3)
//! spell every byte as a printable character (GPT-2's `bytes_to_unicode`); this inverts that
//! map, so a token that holds part of a multi-byte character still gets its exact bytes
//! (what the OpenAI `logprobs` API reports as `bytes`).

/// The byte a byte-level BPE character stands for, if it is one.
///
/// GPT-2's map keeps the 188 printable bytes `!..=~`, `0xA1..=0xAC`, `0xAE..=0xFF` as the
/// same code point and moves the other 68 (`0x00..=0x20`, `0x7F..=0xA0`, `0xAD`), in order,
/// to `U+0100..U+0143`.
pub fn byte_level_byte(c: char) -> Option<u8> {
    let u = c as u32;
    match u {
        0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF => Some(u as u8),
        0x100..=0x120 => Some((u - 0x100) as u8),
        0x121..=0x142 => Some((u - 0x121 + 0x7F) as u8),
        0x143 => Some(0xAD),
        _ => None,
    }
}

/// The bytes of a byte-level BPE token string (e.g. `"Ġthe"` → `b" the"`). A character
/// outside the map (an added token's own text) stands for its UTF-8 bytes, as the
/// `tokenizers` ByteLevel decoder treats it.
pub fn byte_level_bytes(token: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match byte_level_byte(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2's `bytes_to_unicode`, written as in `encoder.py` (the reference).
    fn bytes_to_unicode() -> Vec<(u8, char)> {
        let mut bs: Vec<u32> = (0x21..=0x7E)
            .chain(0xA1..=0xAC)
            .chain(0xAE..=0xFF)
            .collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..=255u32 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        bs.into_iter()
            .zip(cs)
            .map(|(b, c)| (b as u8, char::from_u32(c).unwrap()))
            .collect()
    }

    #[test]
    fn inverts_gpt2_bytes_to_unicode() {
        let map = bytes_to_unicode();
        assert_eq!(map.len(), 256);
        for (b, c) in map {
            assert_eq!(byte_level_byte(c), Some(b), "{c:?}");
        }
        assert_eq!(byte_level_byte('\u{144}'), None);
        assert_eq!(byte_level_byte(' '), None);
    }

    #[test]
    fn token_strings_to_bytes() {
        assert_eq!(byte_level_bytes("Ġthe"), b" the");
        assert_eq!(byte_level_bytes("Ċ"), b"\n");
        // "é" is 0xC3 0xA9: one token may hold only its first byte.
        assert_eq!(byte_level_bytes("Ã"), vec![0xC3]);
        assert_eq!(byte_level_bytes("Ã©"), "é".as_bytes());
        assert_eq!(byte_level_bytes("<|im_end|>"), b"<|im_end|>");
        assert_eq!(byte_level_bytes("日"), "日".as_bytes());
    }
}

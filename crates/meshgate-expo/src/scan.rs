//! Byte scanning for the parser: character classes, and searches that look at 16 bytes at a time
//! (SSE2 on x86_64) or 8 bytes at a time (portable SWAR), for the short runs found in label text.

use memchr::{memchr, memchr2};

pub(super) const NAME_START: u8 = 1;
pub(super) const NAME_CHAR: u8 = 2;
pub(super) const LABEL_START: u8 = 4;
pub(super) const LABEL_CHAR: u8 = 8;

/// Character classes for names: `[a-zA-Z_:]` starts a metric name, `[a-zA-Z0-9_:]` continues it;
/// label names are the same without `:`.
pub(super) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let alpha = b.is_ascii_alphabetic() || b == b'_';
        let digit = b.is_ascii_digit();
        let mut v = 0;
        if alpha || b == b':' {
            v |= NAME_START | NAME_CHAR;
        }
        if digit {
            v |= NAME_CHAR | LABEL_CHAR;
        }
        if alpha {
            v |= LABEL_START | LABEL_CHAR;
        }
        t[c] = v;
        c += 1;
    }
    t
};

/// Whether `c` may start a metric name.
#[inline]
pub(super) fn is_name_start(c: u8) -> bool {
    CLASS[c as usize] & NAME_START != 0
}

/// Whether `c` may continue a metric name.
#[inline]
pub(super) fn is_name_char(c: u8) -> bool {
    CLASS[c as usize] & NAME_CHAR != 0
}

/// Whether `c` may start a label name.
#[inline]
pub(super) fn is_label_start(c: u8) -> bool {
    CLASS[c as usize] & LABEL_START != 0
}

/// Bytes searched inline before a long haystack is handed to `memchr`.
const INLINE_SPAN: usize = 64;

/// The offset of the first `a` at or after `i`.
#[inline(always)]
pub(super) fn find_byte(b: &[u8], mut i: usize, a: u8) -> Option<usize> {
    let stop = i.saturating_add(INLINE_SPAN);
    while i + wide::WIDTH <= b.len() {
        if i >= stop {
            return memchr(a, &b[i..]).map(|k| i + k);
        }
        let m = wide::eq_mask(b, i, a);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += wide::WIDTH;
    }
    swar::find_byte(b, i, a)
}

/// The offset of the first `a` or `c` at or after `i`.
#[inline(always)]
pub(super) fn find_either(b: &[u8], mut i: usize, a: u8, c: u8) -> Option<usize> {
    let stop = i.saturating_add(INLINE_SPAN);
    while i + wide::WIDTH <= b.len() {
        if i >= stop {
            return memchr2(a, c, &b[i..]).map(|k| i + k);
        }
        let m = wide::eq_mask(b, i, a) | wide::eq_mask(b, i, c);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += wide::WIDTH;
    }
    swar::find_either(b, i, a, c)
}

/// The offset of the first byte at or after `i` that cannot continue a name: a label name
/// (`[a-zA-Z0-9_]`), or a metric name (also `:`) if `colon`.
#[inline(always)]
pub(super) fn name_end(b: &[u8], mut i: usize, colon: bool) -> usize {
    while i + wide::WIDTH <= b.len() {
        let bad = !wide::name_mask(b, i, colon) & wide::FULL;
        if bad != 0 {
            return i + bad.trailing_zeros() as usize;
        }
        i += wide::WIDTH;
    }
    swar::name_end(b, i, colon)
}

/// 16 bytes at a time with SSE2, which every x86_64 CPU has.
#[cfg(target_arch = "x86_64")]
// Newer compilers call the SSE2 value intrinsics safe (the feature is always on for x86_64);
// older ones, down to the crate's rust-version, need the `unsafe` blocks.
#[allow(unused_unsafe)]
mod wide {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };

    pub(super) const WIDTH: usize = 16;
    pub(super) const FULL: u32 = 0xffff;

    /// The 16 bytes at `i..i + 16` (bounds-checked).
    #[inline(always)]
    fn load(b: &[u8], i: usize) -> __m128i {
        let chunk: &[u8; 16] = b[i..i + 16].try_into().expect("16 bytes");
        // SAFETY: `chunk` is 16 readable bytes, and the load has no alignment requirement.
        unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) }
    }

    #[inline(always)]
    fn splat(c: u8) -> __m128i {
        unsafe { _mm_set1_epi8(c as i8) }
    }

    /// Bit `k` set where byte `i + k` equals `a`.
    #[inline(always)]
    pub(super) fn eq_mask(b: &[u8], i: usize, a: u8) -> u32 {
        let v = load(b, i);
        unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(v, splat(a))) as u32 }
    }

    /// Bit `k` set where byte `i + k` is in `[a-zA-Z0-9_]` (or `:` if `colon`).
    #[inline(always)]
    pub(super) fn name_mask(b: &[u8], i: usize, colon: bool) -> u32 {
        let v = load(b, i);
        // Signed compares: bytes >= 0x80 are negative and fall outside every range.
        unsafe {
            let lower = _mm_or_si128(v, splat(0x20));
            let letter = _mm_and_si128(
                _mm_cmpgt_epi8(lower, splat(b'a' - 1)),
                _mm_cmplt_epi8(lower, splat(b'z' + 1)),
            );
            let digit = _mm_and_si128(
                _mm_cmpgt_epi8(v, splat(b'0' - 1)),
                _mm_cmplt_epi8(v, splat(b'9' + 1)),
            );
            let mut ok = _mm_or_si128(_mm_or_si128(letter, digit), _mm_cmpeq_epi8(v, splat(b'_')));
            if colon {
                ok = _mm_or_si128(ok, _mm_cmpeq_epi8(v, splat(b':')));
            }
            _mm_movemask_epi8(ok) as u32
        }
    }
}

/// Elsewhere the wide path is the 8-byte SWAR one (compiled everywhere so that it is tested).
#[cfg(not(target_arch = "x86_64"))]
use portable as wide;

#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
mod portable {
    use super::swar;

    pub(super) const WIDTH: usize = 8;
    pub(super) const FULL: u32 = 0xff;

    /// Bit `k` set where byte `i + k` equals `a`.
    #[inline(always)]
    pub(super) fn eq_mask(b: &[u8], i: usize, a: u8) -> u32 {
        swar::gather(swar::eq_exact(swar::load(b, i), a))
    }

    /// Bit `k` set where byte `i + k` is in `[a-zA-Z0-9_]` (or `:` if `colon`).
    #[inline(always)]
    pub(super) fn name_mask(b: &[u8], i: usize, colon: bool) -> u32 {
        swar::gather(swar::name_bytes(swar::load(b, i), colon))
    }
}

/// Word-at-a-time (8 bytes in a `u64`) versions: the tail of the wide searches on x86_64, and the
/// wide path elsewhere.
mod swar {
    use super::{CLASS, LABEL_CHAR, NAME_CHAR};

    pub(super) const LO: u64 = 0x0101_0101_0101_0101;
    pub(super) const HI: u64 = 0x8080_8080_8080_8080;

    /// Every byte of the word set to `c`.
    #[inline(always)]
    const fn splat(c: u8) -> u64 {
        LO * c as u64
    }

    /// The 8 bytes at `i..i + 8` as a little-endian word (bounds-checked).
    #[inline(always)]
    pub(super) fn load(b: &[u8], i: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(word)
    }

    /// High bit set in exactly the bytes of `x7` (a word of 7-bit bytes) that equal `c` (< 0x80).
    #[inline(always)]
    pub(super) fn eq_bytes(x7: u64, c: u8) -> u64 {
        let y = x7 ^ splat(c);
        !((y + splat(0x7f)) | y) & HI
    }

    /// High bit set in exactly the bytes of `x7` (a word of 7-bit bytes) within `lo..=hi`.
    #[inline(always)]
    fn range_bytes(x7: u64, lo: u8, hi: u8) -> u64 {
        (x7 + splat(0x80 - lo)) & !(x7 + splat(0x7f - hi)) & HI
    }

    /// High bit set in exactly the bytes of `x` that are in `[a-zA-Z0-9_]`, plus `:` if `colon`.
    #[inline(always)]
    pub(super) fn name_bytes(x: u64, colon: bool) -> u64 {
        let x7 = x & !HI;
        // Folding case with 0x20 maps A-Z onto a-z and moves nothing else into a-z.
        let mut ok = range_bytes(x7 | splat(0x20), b'a', b'z')
            | range_bytes(x7, b'0', b'9')
            | eq_bytes(x7, b'_');
        if colon {
            ok |= eq_bytes(x7, b':');
        }
        // Non-ASCII bytes are never name bytes.
        ok & !x & HI
    }

    /// High bit set in each byte where `x` is zero; the lowest set bit is exact (higher ones may be
    /// false positives, which callers never look at).
    #[inline(always)]
    fn zero_bytes(x: u64) -> u64 {
        x.wrapping_sub(LO) & !x & HI
    }

    /// High bit set in exactly the bytes of `x` that equal `a`.
    #[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
    #[inline(always)]
    pub(super) fn eq_exact(x: u64, a: u8) -> u64 {
        let y = x ^ splat(a);
        !(((y & !HI) + splat(0x7f)) | y) & HI
    }

    /// Packs the high bit of byte `k` into bit `k`.
    #[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
    #[inline(always)]
    pub(super) fn gather(hi: u64) -> u32 {
        let mut m = 0;
        for k in 0..8 {
            m |= (((hi >> (8 * k + 7)) & 1) as u32) << k;
        }
        m
    }

    #[inline(always)]
    pub(super) fn find_byte(b: &[u8], mut i: usize, a: u8) -> Option<usize> {
        let pa = splat(a);
        while i + 8 <= b.len() {
            let t = zero_bytes(load(b, i) ^ pa);
            if t != 0 {
                return Some(i + (t.trailing_zeros() / 8) as usize);
            }
            i += 8;
        }
        (i..b.len()).find(|&k| b[k] == a)
    }

    #[inline(always)]
    pub(super) fn find_either(b: &[u8], mut i: usize, a: u8, c: u8) -> Option<usize> {
        let (pa, pc) = (splat(a), splat(c));
        while i + 8 <= b.len() {
            let w = load(b, i);
            let t = zero_bytes(w ^ pa) | zero_bytes(w ^ pc);
            if t != 0 {
                return Some(i + (t.trailing_zeros() / 8) as usize);
            }
            i += 8;
        }
        (i..b.len()).find(|&k| b[k] == a || b[k] == c)
    }

    #[inline(always)]
    pub(super) fn name_end(b: &[u8], mut i: usize, colon: bool) -> usize {
        while i + 8 <= b.len() {
            let bad = !name_bytes(load(b, i), colon) & HI;
            if bad != 0 {
                return i + (bad.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        let class = if colon { NAME_CHAR } else { LABEL_CHAR };
        while i < b.len() && CLASS[b[i] as usize] & class != 0 {
            i += 1;
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value at every position and start offset, against byte-at-a-time answers, on
    /// haystacks long enough to cross both the 16-byte and 8-byte paths and their tails.
    #[test]
    fn searches_agree_with_byte_at_a_time() {
        let base: Vec<u8> = b"abcXYZ_019az_AZ:abcdefghijklmnopqrstuvwxyz_ABCDEFGH".to_vec();
        for colon in [false, true] {
            let class = if colon { NAME_CHAR } else { LABEL_CHAR };
            for len in [0usize, 5, 8, 15, 16, 17, 24, 31, 33, 40] {
                for at in 0..len.max(1) {
                    for c in 0..=255u8 {
                        let mut buf = base[..len].to_vec();
                        if !colon && len > 15 {
                            buf[15] = b'q';
                        }
                        if at < len {
                            buf[at] = c;
                        }
                        for start in [0, 1, 3, 7, 9] {
                            if start > len {
                                continue;
                            }
                            let want = (start..len)
                                .find(|&k| CLASS[buf[k] as usize] & class == 0)
                                .unwrap_or(len);
                            assert_eq!(name_end(&buf, start, colon), want, "{c:#x}@{at}/{len}");
                            let want = (start..len).find(|&k| buf[k] == c);
                            assert_eq!(find_byte(&buf, start, c), want, "{c:#x}@{at}/{len}");
                            let want = (start..len).find(|&k| buf[k] == c || buf[k] == b'_');
                            assert_eq!(find_either(&buf, start, c, b'_'), want);
                        }
                    }
                }
            }
        }
    }

    /// The portable 8-byte masks agree with the byte-at-a-time answers (and so with SSE2).
    #[test]
    fn portable_masks() {
        let mut buf = *b"aZ_9:-\"\xff";
        for c in 0..=255u8 {
            for at in 0..8 {
                let saved = buf[at];
                buf[at] = c;
                for colon in [false, true] {
                    let class = if colon { NAME_CHAR } else { LABEL_CHAR };
                    let want = (0..8).fold(0, |m, k| {
                        m | (u32::from(CLASS[buf[k] as usize] & class != 0) << k)
                    });
                    assert_eq!(portable::name_mask(&buf, 0, colon), want, "{c:#x}@{at}");
                }
                for a in [c, b'"', 0, 0xff, 0x7f, 0x80] {
                    let want = (0..8).fold(0, |m, k| m | (u32::from(buf[k] == a) << k));
                    assert_eq!(portable::eq_mask(&buf, 0, a), want, "{a:#x} in {buf:?}");
                }
                buf[at] = saved;
            }
        }
        assert_eq!(portable::WIDTH, 8);
        assert_eq!(portable::FULL, 0xff);
    }

    #[test]
    fn long_haystacks_and_out_of_range_starts() {
        let mut long = vec![b'x'; 300];
        long[250] = b'"';
        assert_eq!(find_byte(&long, 3, b'"'), Some(250));
        assert_eq!(find_either(&long, 3, b'\\', b'"'), Some(250));
        assert_eq!(find_byte(&long, 251, b'"'), None);
        assert_eq!(find_byte(&long, 400, b'"'), None);
        assert_eq!(find_either(&long, 400, b'"', b'x'), None);
        assert_eq!(name_end(&long, 0, false), 250);
        assert_eq!(name_end(&long, 400, false), 400);
    }
}

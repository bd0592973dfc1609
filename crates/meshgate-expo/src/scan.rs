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

/// What a 64-byte block of label text holds: bit `k` of each mask is about byte `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Block {
    pub(super) quote: u64,
    pub(super) backslash: u64,
    pub(super) equals: u64,
    pub(super) comma: u64,
    pub(super) close: u64,
    /// `[a-zA-Z0-9_]`.
    pub(super) label_char: u64,
    /// `[a-zA-Z_]`.
    pub(super) label_start: u64,
}

impl Block {
    /// The masks of the block that starts `by` bytes later (`by` < 64), the bytes past this one
    /// in no class.
    #[inline(always)]
    fn shifted(self, by: usize) -> Block {
        Block {
            quote: self.quote >> by,
            backslash: self.backslash >> by,
            equals: self.equals >> by,
            comma: self.comma >> by,
            close: self.close >> by,
            label_char: self.label_char >> by,
            label_start: self.label_start >> by,
        }
    }
}

/// The masks of a 64-byte block, byte at a time: the reference for [`wide::block`], and the
/// block classifier where there is no SSE2.
#[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
fn block_bytewise(b: &[u8; 64]) -> Block {
    let mut m = Block::default();
    for (k, &c) in b.iter().enumerate() {
        let bit = 1u64 << k;
        let set = |mask: &mut u64, on: bool| {
            if on {
                *mask |= bit
            }
        };
        set(&mut m.quote, c == b'"');
        set(&mut m.backslash, c == b'\\');
        set(&mut m.equals, c == b'=');
        set(&mut m.comma, c == b',');
        set(&mut m.close, c == b'}');
        set(&mut m.label_char, CLASS[c as usize] & LABEL_CHAR != 0);
        set(&mut m.label_start, CLASS[c as usize] & LABEL_START != 0);
    }
    m
}

/// Bit `k` set where an odd number of bits of `x` are set at or below `k`: with `x` the quotes,
/// the bytes from an opening quote up to (not including) its closing one.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// The bytes escaped by a backslash (the byte after each backslash that is not itself escaped),
/// `prev` carrying whether the first byte of the block is escaped by the previous block's last
/// backslash. Runs of backslashes alternate: an odd run escapes the byte after it (as in
/// simdjson's string scanner).
#[inline(always)]
fn escaped_bytes(backslash: u64, prev: &mut u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let backslash = backslash & !*prev;
    let follows = (backslash << 1) | *prev;
    let odd_starts = backslash & !EVEN & !follows;
    let (even_starts, overflow) = odd_starts.overflowing_add(backslash);
    *prev = u64::from(overflow);
    (EVEN ^ (even_starts << 1)) & follows
}

/// The label set that starts at `b[start]` (just past its `{`), validated 64 bytes at a time
/// when it has no blank outside its values. Returns the offset of the closing `}` and whether a
/// value holds an escape, or `None` if the set has a blank or is not valid (then the byte-by-byte
/// validation decides, and names the error when there is one). So a `Some` must mean exactly
/// what that validation accepts, which a property test checks.
///
/// Such a set is a sequence of `name="value"` separated by `,` (one trailing comma allowed):
/// outside the values only name bytes, `=`, `,` and the final `}` occur; every `=` is followed by
/// an opening quote and every opening quote follows an `=`; a closing quote is followed by `,`
/// or the end; a comma follows a closing quote; after a comma (and at the start) comes a name's
/// first byte or the end; an `=` follows a name byte; the end follows a closing quote, a comma
/// or nothing. Any name run then starts after a separator and ends at its `=`. A backslash
/// escapes the byte after it, which is not a quote then; it must be in a value, and escape a
/// backslash, a quote or `n`.
#[inline]
pub(super) fn plain_label_set(b: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut base = start;
    let (mut carry_escape, mut any_escape) = (0u64, 0u64);
    let mut inside = 0u64; // all ones while a value continues from the previous block
    let (mut after_eq, mut after_close, mut after_comma, mut after_name) = (0u64, 0u64, 1u64, 0u64);
    while base < b.len() {
        let block = if base + 64 <= b.len() {
            let chunk: &[u8; 64] = b[base..base + 64].try_into().expect("64 bytes");
            wide::block(chunk)
        } else if b.len() >= 64 {
            // The line's last 64 bytes, shifted so that bit 0 is `base`: the bits past the line
            // are clear, as for zero bytes, which outside a value are not plain (so a set
            // without its `}` is left to the exact validation).
            let chunk: &[u8; 64] = b[b.len() - 64..].try_into().expect("64 bytes");
            wide::block(chunk).shifted(base - (b.len() - 64))
        } else {
            let mut padded = [0u8; 64];
            padded[..b.len() - base].copy_from_slice(&b[base..]);
            wide::block(&padded)
        };
        // Most blocks hold no backslash and follow none.
        let escaped = if block.backslash | carry_escape != 0 {
            escaped_bytes(block.backslash, &mut carry_escape)
        } else {
            0
        };
        // The `n`s matter only where a byte is escaped, which few blocks have.
        let n = if escaped != 0 {
            byte_mask(b, base, b'n')
        } else {
            0
        };
        let escaping = block.backslash & !escaped;
        let quote = block.quote & !escaped;
        let value = prefix_xor(quote) ^ inside;
        let outside = !(value | quote);
        let open = quote & value;
        let close_quote = quote & !value;
        let ends = block.close & outside;
        let end = ends & ends.wrapping_neg();
        // The bytes up to and including the end (all of them when the set goes on).
        let upto = if end == 0 { !0 } else { end | (end - 1) };
        let equals = block.equals & outside;
        let comma = block.comma & outside;
        let name = block.label_char & outside;
        let follows_eq = (equals << 1) | after_eq;
        let follows_close = (close_quote << 1) | after_close;
        let follows_comma = (comma << 1) | after_comma;
        let follows_name = (name << 1) | after_name;
        let bad = (escaping & !value)
            | (escaped & !(block.backslash | block.quote | n))
            | (outside & !(name | equals | comma | end))
            | (follows_eq ^ open)
            | (follows_close & !(comma | end))
            | (comma & !follows_close)
            | (follows_comma & !((block.label_start & outside) | end))
            | (equals & !follows_name)
            | (end & !(follows_close | follows_comma));
        if bad & upto != 0 {
            return None;
        }
        any_escape |= escaping & upto;
        if end != 0 {
            return Some((base + end.trailing_zeros() as usize, any_escape != 0));
        }
        inside = if value >> 63 != 0 { !0 } else { 0 };
        after_eq = equals >> 63;
        after_close = close_quote >> 63;
        after_comma = comma >> 63;
        after_name = name >> 63;
        base += 64;
    }
    None
}

/// A cursor over the offsets of the quotes of a text, in order, found 64 bytes at a time.
#[derive(Debug, Clone)]
pub(super) struct Quotes {
    /// Offset of the block `mask` covers.
    base: usize,
    /// The quotes of that block not yet returned.
    mask: u64,
    /// Offset of the next block to load.
    next: usize,
    /// For [`Quotes::next_unescaped`]: the backslashes of the block past the last quote returned.
    backslash: u64,
    /// For [`Quotes::next_unescaped`]: whether the next block's first byte is escaped.
    carry: u64,
    /// For [`Quotes::next_unescaped`]: a backslash was passed in an earlier block since the last
    /// quote returned.
    pending: bool,
}

impl Quotes {
    /// A cursor at the start of the text.
    pub(super) fn new() -> Self {
        Quotes {
            base: 0,
            mask: 0,
            next: 0,
            backslash: 0,
            carry: 0,
            pending: false,
        }
    }

    /// A cursor that returns nothing more for a text of `len` bytes.
    pub(super) fn done(len: usize) -> Self {
        Quotes {
            base: len,
            next: len,
            ..Quotes::new()
        }
    }

    /// The offset in `b` (the same text every call) of the next quote.
    #[inline(always)]
    pub(super) fn next(&mut self, b: &[u8]) -> Option<usize> {
        while self.mask == 0 {
            if self.next >= b.len() {
                return None;
            }
            self.base = self.next;
            self.mask = byte_mask(b, self.base, b'"');
            self.next += 64;
        }
        let k = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + k)
    }

    /// The offset in `b` (the same text every call, read from its start) of the next quote that
    /// no backslash escapes, and whether a backslash lies between the quote returned before
    /// (or the start) and this one. Backslash runs are read as in [`plain_label_set`]; use one
    /// cursor for one kind of call only.
    #[inline(always)]
    pub(super) fn next_unescaped(&mut self, b: &[u8]) -> Option<(usize, bool)> {
        while self.mask == 0 {
            self.pending |= self.backslash != 0;
            if self.next >= b.len() {
                return None;
            }
            self.base = self.next;
            let backslash = byte_mask(b, self.base, b'\\');
            let escaped = if backslash | self.carry != 0 {
                escaped_bytes(backslash, &mut self.carry)
            } else {
                0
            };
            self.mask = byte_mask(b, self.base, b'"') & !escaped;
            self.backslash = backslash;
            self.next += 64;
        }
        let k = self.mask.trailing_zeros();
        // Bits 0..=k (all of them for k = 63).
        let upto = (2u64 << k).wrapping_sub(1);
        let passed = self.pending || self.backslash & upto != 0;
        self.backslash &= !upto;
        self.pending = false;
        self.mask &= self.mask - 1;
        Some((self.base + k as usize, passed))
    }
}

/// Bit `k` set where byte `i + k` is `c`, for the (up to) 64 bytes from `i`.
#[inline(always)]
fn byte_mask(b: &[u8], i: usize, c: u8) -> u64 {
    if i + 64 <= b.len() {
        wide::eq_block(b[i..i + 64].try_into().expect("64 bytes"), c)
    } else if b.len() >= 64 {
        let at = b.len() - 64;
        wide::eq_block(b[at..].try_into().expect("64 bytes"), c) >> (i - at)
    } else {
        let mut padded = [0u8; 64];
        padded[..b.len() - i].copy_from_slice(&b[i..]);
        wide::eq_block(&padded, c)
    }
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

    /// Bit `k` set where byte `k` of the block equals `a`.
    #[inline(always)]
    pub(super) fn eq_block(b: &[u8; 64], a: u8) -> u64 {
        let mut m = 0u64;
        for k in 0..4 {
            m |= u64::from(eq_mask(b, 16 * k, a)) << (16 * k);
        }
        m
    }

    /// Whether some byte of the block equals `a`: one mask for the 64 bytes.
    #[inline(always)]
    fn any_eq(b: &[u8; 64], a: u8) -> bool {
        let eq = |k: usize| unsafe { _mm_cmpeq_epi8(load(b, 16 * k), splat(a)) };
        let any = unsafe { _mm_or_si128(_mm_or_si128(eq(0), eq(1)), _mm_or_si128(eq(2), eq(3))) };
        unsafe { _mm_movemask_epi8(any) != 0 }
    }

    /// The masks of a 64-byte block, 16 bytes at a time. Backslashes and `}` are rare (a `}`
    /// ends each label set), so their masks are built only for the blocks that hold one.
    #[inline(always)]
    pub(super) fn block(b: &[u8; 64]) -> super::Block {
        let mut m = super::Block::default();
        if any_eq(b, b'\\') {
            m.backslash = eq_block(b, b'\\');
        }
        if any_eq(b, b'}') {
            m.close = eq_block(b, b'}');
        }
        for k in 0..4 {
            let v = load(b, 16 * k);
            let shift = 16 * k as u32;
            // Signed compares: bytes >= 0x80 are negative and fall outside every range.
            unsafe {
                let eq = |c: u8| _mm_movemask_epi8(_mm_cmpeq_epi8(v, splat(c))) as u16 as u64;
                let lower = _mm_or_si128(v, splat(0x20));
                let letter = _mm_or_si128(
                    _mm_and_si128(
                        _mm_cmpgt_epi8(lower, splat(b'a' - 1)),
                        _mm_cmplt_epi8(lower, splat(b'z' + 1)),
                    ),
                    _mm_cmpeq_epi8(v, splat(b'_')),
                );
                let digit = _mm_and_si128(
                    _mm_cmpgt_epi8(v, splat(b'0' - 1)),
                    _mm_cmplt_epi8(v, splat(b'9' + 1)),
                );
                let letter = _mm_movemask_epi8(letter) as u16 as u64;
                let digit = _mm_movemask_epi8(digit) as u16 as u64;
                m.quote |= eq(b'"') << shift;
                m.equals |= eq(b'=') << shift;
                m.comma |= eq(b',') << shift;
                m.label_start |= letter << shift;
                m.label_char |= (letter | digit) << shift;
            }
        }
        m
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

    /// The masks of a 64-byte block.
    #[inline(always)]
    pub(super) fn block(b: &[u8; 64]) -> super::Block {
        super::block_bytewise(b)
    }

    /// Bit `k` set where byte `i + k` equals `a`.
    #[inline(always)]
    pub(super) fn eq_mask(b: &[u8], i: usize, a: u8) -> u32 {
        swar::gather(swar::eq_exact(swar::load(b, i), a))
    }

    /// Bit `k` set where byte `k` of the block equals `a`.
    #[inline(always)]
    pub(super) fn eq_block(b: &[u8; 64], a: u8) -> u64 {
        let mut m = 0u64;
        for k in 0..8 {
            m |= u64::from(eq_mask(b, 8 * k, a)) << (8 * k);
        }
        m
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

    /// The 64-byte classifier (SSE2 on x86_64) agrees with the byte-at-a-time one for every byte
    /// value at every position.
    #[test]
    fn block_masks_agree_with_byte_at_a_time() {
        let mut buf = [0u8; 64];
        for (k, c) in buf.iter_mut().enumerate() {
            *c = b"a=\"Z9_,}\\ x\xc3\xa9-:{"[k % 16];
        }
        assert_eq!(wide::block(&buf), block_bytewise(&buf));
        assert_eq!(portable::block(&buf), block_bytewise(&buf));
        for at in 0..64 {
            for c in 0..=255u8 {
                let saved = buf[at];
                buf[at] = c;
                assert_eq!(wide::block(&buf), block_bytewise(&buf), "{c:#x}@{at}");
                for a in [c, b'n', b'"', b'\\'] {
                    let want = (0..64).fold(0u64, |m, k| m | (u64::from(buf[k] == a) << k));
                    assert_eq!(wide::eq_block(&buf, a), want, "{a:#x} {c:#x}@{at}");
                    assert_eq!(portable::eq_block(&buf, a), want, "{a:#x} {c:#x}@{at}");
                }
                buf[at] = saved;
            }
        }
    }

    #[test]
    fn plain_label_sets() {
        let ok = |s: &str| plain_label_set(s.as_bytes(), 0);
        assert_eq!(ok("}"), Some((0, false)));
        assert_eq!(ok("a=\"b\"} 1"), Some((5, false)));
        assert_eq!(ok("a=\"b\",} 1"), Some((6, false)));
        assert_eq!(ok(r#"a="},=\"",b="\\"} 1"#), Some((16, true)));
        assert_eq!(ok(r#"a="x\ny"}"#), Some((8, true)));
        assert_eq!(ok(r#"a="\\"} "#), Some((6, true)));
        assert_eq!(
            ok(r#"a="x"} \"#),
            Some((5, false)),
            "past the set is not its business"
        );
        assert_eq!(
            ok("a=\"},= x\"}"),
            Some((9, false)),
            "a value holds anything"
        );
        let long = format!(
            "{}z=\"1\"}}",
            "label_name=\"a value of some length\",".repeat(9)
        );
        assert_eq!(ok(&long), Some((long.len() - 1, false)));
        // Escapes across the 64-byte blocks, a run of backslashes ending at a block's last byte
        // included.
        let escapes = format!(
            "{}z=\"1\"}}",
            r#"label_name="a \"quoted\\ value\n","#.repeat(9)
        );
        assert_eq!(ok(&escapes), Some((escapes.len() - 1, true)));
        for pad in 0..70 {
            let s = format!("a=\"{}{}\\\\\\\\\\\"\"}}", "x".repeat(pad), "");
            assert_eq!(ok(&s), Some((s.len() - 1, true)), "{s:?}");
        }
        for bad in [
            "",
            "a=\"b\"",
            "a=\"b",
            " a=\"b\"}",
            "a =\"b\"}",
            "a=\"b\" }",
            "9=\"b\"}",
            "=\"b\"}",
            "a=b}",
            "a=\"b\"c=\"d\"}",
            "a=\"b\",,}",
            ",}",
            "a,b=\"c\"}",
            "a-b=\"c\"}",
            "a=\"b\"=}",
            "a==\"b\"}",
            "a}",
            r#"a="\x"}"#,
            r#"a="\"}"#,
            r#"a\="b"}"#,
            r#"a="b"\,c="d"}"#,
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
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

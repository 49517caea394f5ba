//! The chunked transfer coding (RFC 9112 §7.1): a decoder that takes a body off the front of a
//! buffer as it arrives, whatever the read boundaries, and the pieces an encoder writes.
//!
//! Two readings. `strict`, for a client's request body, where a lenient reading is a smuggling
//! risk behind another proxy: every line ends in CRLF, no whitespace anywhere in a chunk-size
//! line, extensions exactly `;name` or `;name=token` or `;name="quoted"`, no control byte but a
//! tab, trailer lines that are header fields. Lenient, for an upstream's response: whitespace
//! the grammar calls BWS is allowed. Both refuse an extension that is not well formed (an
//! unterminated quoted string above all: a quote-aware front end would read the bytes after
//! it as part of this chunk line, and the gateway as the next request), and bound every line and
//! the trailer section.

use bytes::{Buf, Bytes, BytesMut};

/// A chunk-size line (with extensions) longer than this is refused.
pub const MAX_CHUNK_LINE: usize = 4096;
/// Trailer fields (read, then dropped) beyond this many bytes in all are refused.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// The last chunk and the empty trailer section: the end of a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// A chunk size in hex holds at most this many digits (no overflow, leading zeros bounded).
const MAX_SIZE_DIGITS: usize = 15;

/// Where a chunked decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one, with this many bytes of them
    /// still allowed.
    Trailers(usize),
}

/// What one step of decoding gave.
#[derive(Debug)]
pub enum Decoded {
    Data(Bytes),
    /// The buffer holds no more of the body: read more.
    NeedMore,
    /// The body ended (last chunk and trailers consumed).
    End,
}

/// A chunked body that breaks the coding's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub &'static str);

/// Where the line at the front of `buf` ends (its `\n`), `None` until it has arrived; a line
/// longer than `max`, ended or not, is refused.
pub(crate) fn line_end(buf: &[u8], max: usize, too_long: &'static str) -> Result<Option<usize>, Malformed> {
    match memchr::memchr(b'\n', &buf[..buf.len().min(max + 1)]) {
        Some(eol) => Ok(Some(eol)),
        None if buf.len() > max => Err(Malformed(too_long)),
        None => Ok(None),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The size of a chunk-size line (CR removed), extensions checked and ignored.
fn chunk_size(line: &[u8], strict: bool) -> Result<u64, Malformed> {
    const BAD: Malformed = Malformed("bad chunk-size line");
    let ws = |b: u8| !strict && (b == b' ' || b == b'\t');
    let mut i = 0;
    // (a lenient reading takes whitespace before the size, as some servers send it)
    while i < line.len() && ws(line[i]) {
        i += 1;
    }
    let start = i;
    while i < line.len() && line[i].is_ascii_hexdigit() {
        i += 1;
    }
    let digits = &line[start..i];
    if digits.is_empty() || digits.len() > MAX_SIZE_DIGITS {
        return Err(Malformed("bad chunk size"));
    }
    let size = digits
        .iter()
        .fold(0u64, |n, b| n * 16 + u64::from((*b as char).to_digit(16).unwrap_or(0)));
    // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
    let skip_ws = |i: &mut usize| {
        while *i < line.len() && ws(line[*i]) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == line.len() {
            return Ok(size);
        }
        if line[i] != b';' {
            return Err(BAD);
        }
        i += 1;
        skip_ws(&mut i);
        let name = i;
        while i < line.len() && is_tchar(line[i]) {
            i += 1;
        }
        if i == name {
            return Err(BAD);
        }
        skip_ws(&mut i);
        if i < line.len() && line[i] == b'=' {
            i += 1;
            skip_ws(&mut i);
            if i < line.len() && line[i] == b'"' {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(Malformed("unterminated quoted string in a chunk extension")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match line.get(i + 1) {
                                Some(&c)
                                    if c == b'\t' || c == b' ' || c.is_ascii_graphic() || (!strict && c >= 0x80) => {}
                                _ => return Err(BAD),
                            }
                            i += 2;
                        }
                        Some(&c) if c == b'\t' || c == b' ' || c.is_ascii_graphic() || (!strict && c >= 0x80) => i += 1,
                        Some(_) => return Err(BAD),
                    }
                }
            } else {
                let value = i;
                while i < line.len() && is_tchar(line[i]) {
                    i += 1;
                }
                if i == value {
                    return Err(BAD);
                }
            }
        }
    }
}

/// A trailer line is a header field: `token ":" value`, no control byte but a tab.
fn valid_field_line(line: &[u8]) -> bool {
    let Some(colon) = memchr::memchr(b':', line) else {
        return false;
    };
    colon > 0
        && line[..colon].iter().all(|&b| is_tchar(b))
        && line[colon + 1..].iter().all(|&b| b == b'\t' || !b.is_ascii_control())
}

impl Chunked {
    /// A decoder at the start of a body.
    pub const fn new() -> Self {
        Chunked::Size
    }

    /// Takes what it can from the front of `buf`: one piece of data, or the end, or the news
    /// that more bytes are needed. Never consumes past the body's end.
    pub fn decode(&mut self, buf: &mut BytesMut, strict: bool) -> Result<Decoded, Malformed> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(eol) = line_end(buf, MAX_CHUNK_LINE, "chunk-size line too long")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let line = buf[..eol].strip_suffix(b"\r").ok_or(Malformed("bad chunk-size line"))?;
                    let size = chunk_size(line, strict)?;
                    buf.advance(eol + 1);
                    *self = if size == 0 {
                        Chunked::Trailers(MAX_TRAILERS)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = left.min(buf.len() as u64) as usize;
                    let data = buf.split_to(n).freeze();
                    *self = if n as u64 == left {
                        Chunked::DataEnd
                    } else {
                        Chunked::Data(left - n as u64)
                    };
                    return Ok(Decoded::Data(data));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        // a wrong first byte is wrong already
                        if buf.first().is_some_and(|b| *b != b'\r') {
                            return Err(Malformed("chunk data not followed by CRLF"));
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(budget) => {
                    let Some(eol) = line_end(buf, budget.min(MAX_CHUNK_LINE * 4), "trailer section too long")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let line = match buf[..eol].strip_suffix(b"\r") {
                        Some(line) => line,
                        None if strict => return Err(Malformed("bad trailer line")),
                        None => &buf[..eol],
                    };
                    let empty = line.is_empty();
                    if strict && !empty && !valid_field_line(line) {
                        return Err(Malformed("bad trailer line"));
                    }
                    buf.advance(eol + 1);
                    if empty {
                        *self = Chunked::Size;
                        return Ok(Decoded::End);
                    }
                    let left = budget.checked_sub(eol + 1).filter(|left| *left > 0);
                    *self = Chunked::Trailers(left.ok_or(Malformed("trailer section too long"))?);
                }
            }
        }
    }
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends a chunk's size line for `len` bytes of data (`len` > 0).
pub fn size_line(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn decode_with(input: &[u8], split: usize, strict: bool) -> Result<(Vec<u8>, usize), Malformed> {
        let mut state = Chunked::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        for piece in input.chunks(split.max(1)) {
            buf.extend_from_slice(piece);
            fed += piece.len();
            loop {
                match state.decode(&mut buf, strict)? {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::NeedMore => break,
                    Decoded::End => return Ok((out, fed - buf.len())),
                }
            }
        }
        Err(Malformed("incomplete"))
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for strict in [false, true] {
            for split in 1..wire.len() {
                let (body, used) = decode_with(wire, split, strict).unwrap();
                assert_eq!(body, b"hello, world", "split {split}");
                assert_eq!(used, wire.len());
            }
        }
        assert_eq!(
            decode_with(b"A\r\n0123456789\r\n0\r\n\r\n", 64, true).unwrap().0,
            b"0123456789"
        );
        // what follows the body is left alone
        let (_, used) = decode_with(b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 64, true).unwrap();
        assert_eq!(used, 11);
    }

    #[test]
    fn extensions_are_parsed_by_the_grammar() {
        for fine in [
            &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b;c=\"d e\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"q\\\"uote\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"\"\r\nhello\r\n0;last\r\n\r\n",
        ] {
            for strict in [false, true] {
                assert_eq!(
                    decode_with(fine, 64, strict).unwrap().0,
                    b"hello",
                    "{:?}",
                    String::from_utf8_lossy(fine)
                );
            }
        }
        // BWS: the grammar allows it, a strict reading does not
        let spaced = b"5 ; a = b\r\nhello\r\n0\r\n\r\n";
        assert!(decode_with(spaced, 64, false).is_ok());
        assert!(decode_with(spaced, 64, true).is_err());
        for bad in [
            // an unterminated quoted string: the smuggling case
            &b"0;a=\"\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;=b\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a=b c\r\nhello\r\n0\r\n\r\n",
            b"5;a b\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"b\"c\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"b\x01\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"b\\\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5,a\r\nhello\r\n0\r\n\r\n",
        ] {
            for strict in [false, true] {
                assert!(
                    decode_with(bad, 64, strict).is_err(),
                    "{:?} strict={strict}",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn bad_chunked_framing_is_refused() {
        for wire in [
            &b"x\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"fffffffffffffffff\r\n",
            b"0000000000000000005\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
        ] {
            for strict in [false, true] {
                assert!(
                    decode_with(wire, 64, strict).is_err(),
                    "{:?}",
                    String::from_utf8_lossy(wire)
                );
            }
        }
    }

    #[test]
    fn request_bodies_are_decoded_strictly() {
        // what a response may get away with, a request may not
        for wire in [
            &b" 5\r\nhello\r\n0\r\n\r\n"[..],
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nnot a header\r\n\r\n",
            b"5\r\nhello\r\n0\r\nx\x01: y\r\n\r\n",
        ] {
            assert!(
                decode_with(wire, 64, false).is_ok(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
            assert!(
                decode_with(wire, 64, true).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let mut long = b"5;a=".to_vec();
        long.extend(std::iter::repeat_n(b'b', MAX_CHUNK_LINE));
        long.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert!(decode_with(&long, 64, false).is_err());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..(MAX_TRAILERS / 10 + 1) {
            trailers.extend_from_slice(b"x-t: 1234\r\n");
        }
        trailers.extend_from_slice(b"\r\n");
        assert!(decode_with(&trailers, 4096, true).is_err());
        assert!(decode_with(&trailers, 4096, false).is_err());
    }

    #[test]
    fn size_lines_are_lower_case_hex() {
        for (n, want) in [
            (1, "1\r\n"),
            (0xabc, "abc\r\n"),
            (100_000, "186a0\r\n"),
            (usize::MAX >> 4, "fffffffffffffff\r\n"),
        ] {
            let mut out = Vec::new();
            size_line(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}

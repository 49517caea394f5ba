//! Reading a message body off a buffer by its framing: exactly a length, or the chunked coding.
//! The server (request bodies, strictly), the upstream client and the one-shot client (response
//! bodies, leniently) all read through it, so all stop exactly where the framing says the body
//! ends.

use bytes::BytesMut;

use super::chunked::{Chunked, Decoded, Malformed};
use super::request::BodyFraming;
use super::response::Framing;

/// A body that did not match its `Content-Length` (more bytes, or fewer before it ended).
#[derive(Debug, thiserror::Error)]
#[error("request body does not match its Content-Length")]
pub struct BodyLengthMismatch;

/// Where a body being read stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDecoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(Chunked),
}

impl BodyDecoder {
    pub fn new(framing: BodyFraming) -> Self {
        match framing {
            BodyFraming::Length(n) => BodyDecoder::Length(n),
            BodyFraming::Chunked => BodyDecoder::Chunked(Chunked::new()),
        }
    }

    /// The decoder of a response body framed by a length or chunked; `None` for a response
    /// without a body or one that runs until the connection closes.
    pub fn for_response(framing: Framing) -> Option<Self> {
        match framing {
            Framing::Length(n) => Some(BodyDecoder::Length(n)),
            Framing::Chunked => Some(BodyDecoder::Chunked(Chunked::new())),
            Framing::None | Framing::UntilClose => None,
        }
    }

    /// Takes the next piece of the body off the front of `buf` (never past its end), or says
    /// that the body ended, or that more bytes are needed. `strict`: see [`Chunked::decode`].
    pub fn decode(&mut self, buf: &mut BytesMut, strict: bool) -> Result<Decoded, Malformed> {
        match self {
            BodyDecoder::Length(0) => Ok(Decoded::End),
            BodyDecoder::Length(_) if buf.is_empty() => Ok(Decoded::NeedMore),
            BodyDecoder::Length(left) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                Ok(Decoded::Data(buf.split_to(n as usize).freeze()))
            }
            BodyDecoder::Chunked(state) => state.decode(buf, strict),
        }
    }

    /// Every byte of a length-framed body has been taken (a chunked body says so itself, with
    /// [`Decoded::End`]).
    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Length(0))
    }

    /// Bytes still to come, when the framing says.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length(n) => Some(*n),
            BodyDecoder::Chunked(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_is_read_to_the_byte_and_no_further() {
        let mut d = BodyDecoder::new(BodyFraming::Length(5));
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert!(matches!(d.decode(&mut buf, true), Ok(Decoded::Data(b)) if b == "hel"));
        assert!(matches!(d.decode(&mut buf, true), Ok(Decoded::NeedMore)));
        buf.extend_from_slice(b"loGET /");
        assert!(matches!(d.decode(&mut buf, true), Ok(Decoded::Data(b)) if b == "lo"));
        assert!(d.is_done());
        assert!(matches!(d.decode(&mut buf, true), Ok(Decoded::End)));
        assert_eq!(&buf[..], b"GET /");
    }
}

//! WebSocket frame headers (RFC 6455 section 5.2): parsing a client's (masked) frame header,
//! unmasking in place, and encoding the server's (unmasked) frame headers. Pure functions.

/// Opcodes of RFC 6455.
pub(crate) mod opcode {
    pub(crate) const CONTINUATION: u8 = 0x0;
    pub(crate) const TEXT: u8 = 0x1;
    pub(crate) const BINARY: u8 = 0x2;
    pub(crate) const CLOSE: u8 = 0x8;
    pub(crate) const PING: u8 = 0x9;
    pub(crate) const PONG: u8 = 0xA;
}

/// Longest payload of a control frame.
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    /// RSV1: a compressed message (permessage-deflate), checked by the stream.
    pub(crate) rsv1: bool,
    pub(crate) opcode: u8,
    /// The masking key, when the frame is masked.
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) payload_len: u64,
    /// Bytes of the header itself.
    pub(crate) header_len: usize,
}

/// A header that breaks the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    #[error("control frame fragmented or longer than 125 bytes")]
    BadControl,
    #[error("payload length with its most significant bit set")]
    LengthOverflow,
}

impl Header {
    /// Whether the opcode is a control opcode (close, ping, pong).
    pub(crate) fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses a frame header at the start of `buf`; `Ok(None)` when more bytes are needed.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Header>, HeaderError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x30 != 0 {
        return Err(HeaderError::ReservedBits);
    }
    let rsv1 = b0 & 0x40 != 0;
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        return Err(HeaderError::ReservedOpcode(opcode));
    }
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut header_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(b);
                let n = u64::from_be_bytes(eight);
                if n >> 63 != 0 {
                    return Err(HeaderError::LengthOverflow);
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode & 0x8 != 0 && (!fin || payload_len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(HeaderError::BadControl);
    }
    let mask = if masked {
        let Some(key) = buf.get(header_len..header_len + 4) else {
            return Ok(None);
        };
        header_len += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        rsv1,
        opcode,
        mask,
        payload_len,
        header_len,
    }))
}

/// Unmasks `payload` in place; `offset` is the payload's position in its frame (so a payload
/// unmasked in several pieces gets the right key bytes).
pub(crate) fn unmask(payload: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    let word = u32::from_ne_bytes(key);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i];
    }
}

/// Writes the header of an unmasked, unfragmented server frame into `out`; returns its length.
pub(crate) fn encode(out: &mut [u8; 10], opcode: u8, payload_len: usize) -> usize {
    out[0] = 0x80 | opcode;
    if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if let Ok(short) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        10
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_in_all_length_forms() {
        // Masked text "Hello" from RFC 6455 5.7.
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let header = parse(&frame).ok().flatten();
        let header = header.unwrap_or_else(|| panic!("complete"));
        assert_eq!(
            (
                header.fin,
                header.opcode,
                header.payload_len,
                header.header_len
            ),
            (true, opcode::TEXT, 5, 6)
        );
        let mut payload = frame[6..].to_vec();
        unmask(&mut payload, header.mask.unwrap_or_default(), 0);
        assert_eq!(payload, b"Hello");
        assert_eq!(parse(&[0x82, 0xFE, 0x01]), Ok(None));
        assert_eq!(
            parse(&[0x82, 0x7E, 0x01, 0x00])
                .ok()
                .flatten()
                .map(|h| h.payload_len),
            Some(256)
        );
        let long = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(
            parse(&long).ok().flatten().map(|h| h.payload_len),
            Some(65536)
        );
    }

    #[test]
    fn protocol_violations_are_refused() {
        assert_eq!(parse(&[0xA1, 0x80]), Err(HeaderError::ReservedBits));
        assert_eq!(parse(&[0x91, 0x80]), Err(HeaderError::ReservedBits));
        assert!(
            parse(&[0xC1, 0x80, 1, 2, 3, 4])
                .ok()
                .flatten()
                .is_some_and(|h| h.rsv1)
        );
        assert_eq!(parse(&[0x83, 0x80]), Err(HeaderError::ReservedOpcode(3)));
        assert_eq!(parse(&[0x09, 0x80]), Err(HeaderError::BadControl));
        assert_eq!(parse(&[0x89, 0xFE, 0, 126]), Err(HeaderError::BadControl));
        let huge = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse(&huge), Err(HeaderError::LengthOverflow));
    }

    #[test]
    fn unmasking_in_pieces_matches_unmasking_at_once() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..37).collect();
        let mut whole = data.clone();
        unmask(&mut whole, key, 0);
        let mut pieces = data.clone();
        let (a, b) = pieces.split_at_mut(7);
        unmask(a, key, 0);
        unmask(b, key, 7);
        assert_eq!(whole, pieces);
        unmask(&mut whole, key, 0);
        assert_eq!(whole, data);
    }

    #[test]
    fn server_headers_encode_lengths() {
        let mut out = [0u8; 10];
        assert_eq!(encode(&mut out, opcode::TEXT, 5), 2);
        assert_eq!(&out[..2], &[0x81, 5]);
        assert_eq!(encode(&mut out, opcode::BINARY, 300), 4);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        assert_eq!(encode(&mut out, opcode::BINARY, 70_000), 10);
        assert_eq!(out[1], 127);
    }
}

//! UTF-8 validation of a text message that arrives in fragments: each fragment is checked as
//! it arrives (so an invalid message fails at once, RFC 6455 section 8.1), a character split
//! between fragments is carried over, and the message must not end inside a character.

/// Validates the fragments of one text message, in order.
#[derive(Debug, Default)]
pub(crate) struct Utf8Validator {
    /// The start of a character whose rest is in the next fragment.
    pending: [u8; 4],
    pending_len: usize,
}

/// Bytes that are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

/// The length of the character a lead byte starts, or `None` for a byte no character starts
/// with.
fn char_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7F => Some(1),
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

impl Utf8Validator {
    /// Checks the next fragment.
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> Result<(), Invalid> {
        if self.pending_len > 0 {
            let need = char_len(self.pending[0]).ok_or(Invalid)?;
            let take = (need - self.pending_len).min(input.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&input[..take]);
            self.pending_len += take;
            input = &input[take..];
            match std::str::from_utf8(&self.pending[..self.pending_len]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() && self.pending_len < need => return Ok(()),
                Err(_) => return Err(Invalid),
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
            Err(_) => Err(Invalid),
        }
    }

    /// Checks that the message did not end inside a character.
    pub(crate) fn finish(&self) -> Result<(), Invalid> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(Invalid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fragments: &[&[u8]]) -> Result<(), Invalid> {
        let mut v = Utf8Validator::default();
        for f in fragments {
            v.feed(f)?;
        }
        v.finish()
    }

    #[test]
    fn characters_split_between_fragments_are_carried() {
        let text = "κόσμε €𝄞".as_bytes();
        for cut in 0..text.len() {
            assert_eq!(check(&[&text[..cut], &text[cut..]]), Ok(()), "cut at {cut}");
        }
        let singles: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(check(&singles), Ok(()));
    }

    #[test]
    fn invalid_bytes_fail_as_soon_as_they_arrive() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"ok "), Ok(()));
        assert_eq!(v.feed(&[0xFF]), Err(Invalid));
        let mut v = Utf8Validator::default();
        // F4 90 can never start a valid character (beyond U+10FFFF).
        assert_eq!(v.feed(&[0xF4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(Invalid));
        assert_eq!(
            check(&[&[0xE2, 0x82]]),
            Err(Invalid),
            "ends inside a character"
        );
        assert_eq!(check(&[&[0xED, 0xA0, 0x80]]), Err(Invalid), "surrogate");
    }
}

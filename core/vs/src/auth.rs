//! Datagram authentication and replay protection.
//!
//! Every datagram is sealed with XChaCha20-Poly1305 (the extended-nonce
//! variant of ChaCha20-Poly1305 from the `chacha20poly1305` crate) under the
//! cluster's 32-byte key. The 24-byte nonce is built from the sender's node
//! id, incarnation and per-(node, incarnation) datagram counter (see
//! [`Header::nonce`]); the cleartext header is the associated data, so a
//! changed sender, incarnation, counter or destination fails authentication.
//! The 192-bit nonce is what lets all three identifiers go in verbatim: the
//! 96-bit nonce of plain ChaCha20-Poly1305 cannot hold 4 + 8 + 8 bytes.
//!
//! Replay protection is a 64-datagram sliding window per sender, reset when
//! the sender shows up with a newer incarnation (an older incarnation's
//! datagrams are rejected by the caller before they get here).
//!
//! Everything works in place on caller-provided stack buffers: no allocation.

use super::wire::{Header, HEADER_LEN, TAG_LEN};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

/// The AEAD under the cluster key.
#[cfg_attr(feature = "explore", derive(Clone))]
pub(super) struct Auth {
    cipher: XChaCha20Poly1305,
}

/// Authentication failed (wrong key, modified datagram, wrong header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BadTag;

impl Auth {
    pub fn new(key: &[u8; 32]) -> Self {
        Auth { cipher: XChaCha20Poly1305::new(&Key::from(*key)) }
    }

    /// Encrypt `plain` in place; returns the tag to append.
    pub fn seal(&self, header: &Header, plain: &mut [u8]) -> Result<[u8; TAG_LEN], BadTag> {
        let aad: [u8; HEADER_LEN] = header.encode();
        let nonce = XNonce::from(header.nonce());
        let tag = self.cipher.encrypt_in_place_detached(&nonce, &aad, plain).map_err(|_| BadTag)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_slice());
        Ok(out)
    }

    /// Decrypt `cipher` in place if `tag` authenticates it under `header`.
    pub fn open(&self, header: &Header, cipher: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), BadTag> {
        let aad: [u8; HEADER_LEN] = header.encode();
        let nonce = XNonce::from(header.nonce());
        let tag = Tag::from(*tag);
        self.cipher.decrypt_in_place_detached(&nonce, &aad, cipher, &tag).map_err(|_| BadTag)
    }
}

/// Width of the replay window in datagrams.
pub(super) const REPLAY_WINDOW: u64 = 64;

/// Sliding replay window (RFC 4303 style): `top` is the highest counter
/// accepted, bit `i` of `bits` says `top - i` was accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ReplayWindow {
    top: u64,
    bits: u64,
}

impl ReplayWindow {
    pub const fn new() -> Self {
        ReplayWindow { top: 0, bits: 0 }
    }

    /// Would `counter` be fresh? (Does not record it.)
    pub fn check(&self, counter: u64) -> bool {
        if counter == 0 {
            return false;
        }
        if counter > self.top {
            return true;
        }
        let back = self.top - counter;
        back < REPLAY_WINDOW && self.bits & (1u64 << back) == 0
    }

    /// Record `counter` as seen. Call only after [`ReplayWindow::check`]
    /// and authentication both passed.
    pub fn commit(&mut self, counter: u64) {
        if counter > self.top {
            let shift = counter - self.top;
            self.bits = if shift >= REPLAY_WINDOW { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = counter;
        } else {
            let back = self.top - counter;
            if back < REPLAY_WINDOW {
                self.bits |= 1u64 << back;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Incarnation, NodeId};

    #[test]
    fn seal_open_roundtrip_and_tamper() {
        let a = Auth::new(&[7u8; 32]);
        let h = Header { sender: NodeId(2), inc: Incarnation(3), counter: 4, dest: 0 };
        let mut buf = *b"hello, cluster";
        let tag = a.seal(&h, &mut buf).unwrap();
        assert_ne!(&buf, b"hello, cluster");
        let mut c = buf;
        a.open(&h, &mut c, &tag).unwrap();
        assert_eq!(&c, b"hello, cluster");
        // Any header field change breaks authentication.
        for h2 in [
            Header { counter: 5, ..h },
            Header { dest: 1, ..h },
            Header { sender: NodeId(9), ..h },
            Header { inc: Incarnation(4), ..h },
        ] {
            let mut c = buf;
            assert!(a.open(&h2, &mut c, &tag).is_err());
        }
        let mut c = buf;
        c[0] ^= 1;
        assert!(a.open(&h, &mut c, &tag).is_err());
        let other = Auth::new(&[8u8; 32]);
        let mut c = buf;
        assert!(other.open(&h, &mut c, &tag).is_err());
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::new();
        assert!(!w.check(0));
        assert!(w.check(1));
        w.commit(1);
        assert!(!w.check(1));
        w.commit(5);
        assert!(w.check(3));
        w.commit(3);
        assert!(!w.check(3));
        assert!(w.check(4));
        w.commit(200);
        assert!(!w.check(200 - REPLAY_WINDOW));
        assert!(w.check(200 - REPLAY_WINDOW + 1));
        assert!(!w.check(5));
        w.commit(u64::MAX);
        assert!(!w.check(u64::MAX));
        assert!(w.check(u64::MAX - 1));
    }
}

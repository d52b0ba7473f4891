//! WeChat's message signatures and safe-mode (安全模式) encryption.
//!
//! Two details here differ from what a Rust crypto crate does by default, and both break
//! interoperability silently if got wrong:
//! - PKCS#7 padding is to a **32-byte** block (the platform's `WXBizMsgCrypt` pads to the
//!   key length), so CBC runs without padding and we pad and unpad by hand;
//! - the IV is the first 16 bytes of the key, and the plaintext carries a 16-byte random
//!   prefix, a big-endian length, the XML and the AppId, which must be checked.

use aes::Aes256;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::{alphabet, Engine as _};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The padding block WeChat uses (32, the AES-256 key length), not AES's 16.
pub const PAD_BLOCK: usize = 32;

/// Why a safe-mode payload was refused. None of these carry the payload itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("EncodingAESKey must be 43 characters of base64 that decode to 32 bytes")]
    BadKey,
    #[error("the Encrypt field is not base64")]
    NotBase64,
    #[error("the ciphertext length is not a multiple of the AES block")]
    BadLength,
    #[error("the padding is not PKCS#7 to 32 bytes (wrong key?)")]
    BadPadding,
    #[error("the decrypted message is truncated or its length field is wrong")]
    BadFrame,
    #[error("the message is for another AppId")]
    WrongAppId,
    #[error("the decrypted message is not UTF-8")]
    NotUtf8,
}

/// SHA-1 over the lexicographically sorted, concatenated parts, as lowercase hex. This is
/// both the URL `signature` (`token, timestamp, nonce`) and the safe-mode `msg_signature`
/// (`token, timestamp, nonce, Encrypt`).
pub fn signature(parts: &[&str]) -> String {
    let mut sorted: Vec<&str> = parts.to_vec();
    sorted.sort_unstable();
    let mut h = Sha1::new();
    for p in sorted {
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Compares a received signature with the expected one in constant time, ignoring ASCII
/// case (hex digits may come upper-case from some proxies).
pub fn signature_matches(expected: &str, received: &str) -> bool {
    let received = received.to_ascii_lowercase();
    expected.as_bytes().ct_eq(received.as_bytes()).into()
}

/// PKCS#7 to a 32-byte block: always adds 1..=32 bytes, each equal to the count.
pub fn pad(data: &mut Vec<u8>) {
    let n = PAD_BLOCK - data.len() % PAD_BLOCK;
    data.extend(std::iter::repeat_n(n as u8, n));
}

/// Removes 32-byte PKCS#7 padding, checking every padding byte.
pub fn unpad(data: &[u8]) -> Result<&[u8], CryptoError> {
    let n = usize::from(*data.last().ok_or(CryptoError::BadPadding)?);
    if n == 0 || n > PAD_BLOCK || n > data.len() {
        return Err(CryptoError::BadPadding);
    }
    let (body, padding) = data.split_at(data.len() - n);
    if padding.iter().any(|&b| usize::from(b) != n) {
        return Err(CryptoError::BadPadding);
    }
    Ok(body)
}

/// The console generates 43 arbitrary characters, so the last one usually carries
/// non-zero bits past the 32nd byte. Strict base64 (the crate's default) refuses those;
/// the platform's own samples decode leniently, and so must we.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// One EncodingAESKey, decoded. Its `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct AesKey([u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(***)")
    }
}

impl AesKey {
    /// `Base64_Decode(EncodingAESKey + "=")`: the console shows 43 characters.
    pub fn from_encoding_key(encoding_aes_key: &str) -> Result<Self, CryptoError> {
        let k = encoding_aes_key.trim();
        if k.len() != 43 {
            return Err(CryptoError::BadKey);
        }
        let bytes = KEY_BASE64
            .decode(format!("{k}="))
            .map_err(|_| CryptoError::BadKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadKey)?;
        Ok(AesKey(key))
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }

    /// Encrypts `xml` for `app_id` with a fresh random prefix; returns the base64 `Encrypt`.
    pub fn encrypt(&self, xml: &str, app_id: &str) -> String {
        self.encrypt_with_prefix(xml, app_id, rand::random::<[u8; 16]>())
    }

    /// As [`AesKey::encrypt`] with a given 16-byte prefix (tests pin it to compare output).
    pub fn encrypt_with_prefix(&self, xml: &str, app_id: &str, prefix: [u8; 16]) -> String {
        let mut plain = Vec::with_capacity(16 + 4 + xml.len() + app_id.len() + PAD_BLOCK);
        plain.extend_from_slice(&prefix);
        // A passive reply is far below 4 GB; saturate rather than wrap if ever not.
        let len = u32::try_from(xml.len()).unwrap_or(u32::MAX);
        plain.extend_from_slice(&len.to_be_bytes());
        plain.extend_from_slice(xml.as_bytes());
        plain.extend_from_slice(app_id.as_bytes());
        pad(&mut plain);
        let n = plain.len();
        let enc = cbc::Encryptor::<Aes256>::new(&self.0.into(), &self.iv().into());
        // The length is a multiple of 32 by construction, so no-padding CBC cannot fail.
        let cipher = match enc.encrypt_padded_mut::<NoPadding>(&mut plain, n) {
            Ok(c) => c.to_vec(),
            Err(_) => unreachable!("padded to a multiple of the block size"),
        };
        STANDARD.encode(cipher)
    }

    /// Decrypts a base64 `Encrypt` value and checks it is addressed to `app_id`.
    pub fn decrypt(&self, encrypted: &str, app_id: &str) -> Result<String, CryptoError> {
        let mut data = STANDARD
            .decode(encrypted.trim())
            .map_err(|_| CryptoError::NotBase64)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(CryptoError::BadLength);
        }
        let dec = cbc::Decryptor::<Aes256>::new(&self.0.into(), &self.iv().into());
        let plain = dec
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| CryptoError::BadLength)?;
        let body = unpad(plain)?;
        if body.len() < 20 {
            return Err(CryptoError::BadFrame);
        }
        let len = u32::from_be_bytes([body[16], body[17], body[18], body[19]]) as usize;
        let rest = &body[20..];
        if len > rest.len() {
            return Err(CryptoError::BadFrame);
        }
        let (xml, tail) = rest.split_at(len);
        if !bool::from(tail.ct_eq(app_id.as_bytes())) {
            return Err(CryptoError::WrongAppId);
        }
        String::from_utf8(xml.to_vec()).map_err(|_| CryptoError::NotUtf8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

    #[test]
    fn official_url_verification_vector() {
        let s = signature(&["AAAAA", "1714036504", "1514711492"]);
        assert_eq!(s, "f464b24fc39322e44b38aa78f5edd27bd1441696");
        assert!(signature_matches(
            &s,
            "F464B24FC39322E44B38AA78F5EDD27BD1441696"
        ));
        assert!(!signature_matches(
            &s,
            "f464b24fc39322e44b38aa78f5edd27bd1441697"
        ));
        assert!(!signature_matches(&s, ""));
    }

    /// The decryption sample shipped with the platform's `WXBizMsgCrypt` demo (token
    /// `spamtest`, AppId `wx2c2769f8efd9abc2`): an interoperability check against
    /// ciphertext that kefu did not produce.
    #[test]
    fn decrypts_the_platform_sample() {
        let encrypt = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
        assert_eq!(
            signature(&["spamtest", "1409735669", "1320562132", encrypt]),
            "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
        );
        let key = AesKey::from_encoding_key(KEY).unwrap();
        let xml = key.decrypt(encrypt, "wx2c2769f8efd9abc2").unwrap();
        assert!(
            xml.contains("<Content><![CDATA[abcdteT]]></Content>"),
            "{xml}"
        );
        assert!(xml.contains("oyORnuP8q7ou2gfYjqLzSIWZf0rs"), "{xml}");
        assert_eq!(
            key.decrypt(encrypt, "wx0000000000000000"),
            Err(CryptoError::WrongAppId)
        );
    }

    #[test]
    fn padding_is_to_32_bytes_including_the_edges() {
        for (len, added) in [
            (0, 32),
            (1, 31),
            (16, 16),
            (31, 1),
            (32, 32),
            (33, 31),
            (64, 32),
        ] {
            let mut v = vec![7u8; len];
            pad(&mut v);
            assert_eq!(v.len(), len + added, "length {len}");
            assert_eq!(v.len() % 32, 0);
            assert!(v[len..].iter().all(|&b| usize::from(b) == added));
            assert_eq!(unpad(&v).unwrap().len(), len);
        }
        // 16-byte PKCS#7 (what a default AES library produces) is refused when it claims
        // a count the data does not carry, and counts above 32 or zero are refused.
        assert_eq!(unpad(&[]), Err(CryptoError::BadPadding));
        assert_eq!(unpad(&[1, 2, 0]), Err(CryptoError::BadPadding));
        assert_eq!(unpad(&[33; 64]), Err(CryptoError::BadPadding));
        assert_eq!(unpad(&[5, 4, 4, 3, 4]), Err(CryptoError::BadPadding));
    }

    #[test]
    fn round_trip_at_every_block_edge_and_wrong_keys_fail() {
        let key = AesKey::from_encoding_key(KEY).unwrap();
        let other =
            AesKey::from_encoding_key("ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut").unwrap();
        // 16 + 4 + xml + 18-byte AppId: lengths around multiples of 32.
        for n in [0usize, 1, 9, 10, 11, 41, 42, 43, 300] {
            let xml = "x".repeat(n);
            let enc = key.encrypt(&xml, "wx2c2769f8efd9abc2");
            let raw = STANDARD.decode(&enc).unwrap();
            assert_eq!(raw.len() % 32, 0, "ciphertext of {n}");
            assert_eq!(key.decrypt(&enc, "wx2c2769f8efd9abc2").unwrap(), xml);
            assert!(other.decrypt(&enc, "wx2c2769f8efd9abc2").is_err());
        }
        let enc = key.encrypt("<xml>中文</xml>", "wxapp");
        assert_eq!(key.decrypt(&enc, "wxapp").unwrap(), "<xml>中文</xml>");
        assert_eq!(key.decrypt(&enc, "wxapq"), Err(CryptoError::WrongAppId));
        // Same prefix → same ciphertext; a fresh prefix each time otherwise.
        let a = key.encrypt_with_prefix("<xml/>", "wxapp", [1; 16]);
        assert_eq!(a, key.encrypt_with_prefix("<xml/>", "wxapp", [1; 16]));
        assert_ne!(
            key.encrypt("<xml/>", "wxapp"),
            key.encrypt("<xml/>", "wxapp")
        );
    }

    #[test]
    fn hostile_ciphertexts_are_errors_not_panics() {
        let key = AesKey::from_encoding_key(KEY).unwrap();
        assert_eq!(key.decrypt("%%%", "a"), Err(CryptoError::NotBase64));
        assert_eq!(key.decrypt("", "a"), Err(CryptoError::BadLength));
        assert_eq!(key.decrypt("AAAA", "a"), Err(CryptoError::BadLength));
        for n in [16usize, 32, 48, 64] {
            let junk = STANDARD.encode(vec![0xA5u8; n]);
            assert!(key.decrypt(&junk, "a").is_err());
        }
        // A frame whose length field points past the end.
        let mut plain = vec![0u8; 16];
        plain.extend_from_slice(&1000u32.to_be_bytes());
        plain.extend_from_slice(b"<xml/>");
        pad(&mut plain);
        let n = plain.len();
        let enc = cbc::Encryptor::<Aes256>::new(&key.0.into(), &key.iv().into())
            .encrypt_padded_mut::<NoPadding>(&mut plain, n)
            .unwrap()
            .to_vec();
        assert_eq!(
            key.decrypt(&STANDARD.encode(enc), "a"),
            Err(CryptoError::BadFrame)
        );
        assert!(AesKey::from_encoding_key("short").is_err());
        assert!(AesKey::from_encoding_key(&"!".repeat(43)).is_err());
    }
}

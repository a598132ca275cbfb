//! The cluster key file: 32 raw bytes, or 64 hex digits (surrounding
//! whitespace and a trailing newline allowed).

use std::path::Path;

use tracing::warn;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path}: {reason}")]
    Format { path: String, reason: String },
}

/// Parse key file contents: exactly 32 bytes are taken raw; anything else
/// must be 64 hex digits after trimming whitespace.
pub fn parse_key(bytes: &[u8]) -> Result<[u8; 32], String> {
    let key = if bytes.len() == 32 {
        let mut k = [0u8; 32];
        k.copy_from_slice(bytes);
        k
    } else {
        let text = bytes.trim_ascii();
        if text.len() != 64 {
            return Err(format!(
                "expected 32 raw bytes or 64 hex digits, found {} bytes ({} after trimming whitespace)",
                bytes.len(),
                text.len()
            ));
        }
        let mut k = [0u8; 32];
        for (i, pair) in text.chunks(2).enumerate() {
            let hex = |c: u8| -> Result<u8, String> {
                match c {
                    b'0'..=b'9' => Ok(c - b'0'),
                    b'a'..=b'f' => Ok(c - b'a' + 10),
                    b'A'..=b'F' => Ok(c - b'A' + 10),
                    _ => Err(format!("not a hex digit at offset {}: {:?}", 2 * i, c as char)),
                }
            };
            k[i] = hex(pair[0])? << 4 | hex(pair[1])?;
        }
        k
    };
    if key == [0u8; 32] {
        return Err("the key is all zeros".into());
    }
    Ok(key)
}

/// Read and parse a key file. Warns when the file is readable by others.
pub fn load_key(path: &Path) -> Result<[u8; 32], KeyError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read { path: shown.clone(), source })?;
    if let Ok(md) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if md.permissions().mode() & 0o077 != 0 {
            warn!(path = %shown, mode = format!("{:o}", md.permissions().mode() & 0o777), "key file is accessible by group or others");
        }
    }
    parse_key(&bytes).map_err(|reason| KeyError::Format { path: shown, reason })
}

/// Format a key as 64 lowercase hex digits (what `load_key` reads back).
pub fn key_to_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_hex() {
        let raw: Vec<u8> = (1..=32).collect();
        let k = parse_key(&raw).unwrap();
        assert_eq!(&k[..], &raw[..]);
        let hex = format!("  {}\n", key_to_hex(&k));
        assert_eq!(parse_key(hex.as_bytes()).unwrap(), k);
        assert_eq!(parse_key(key_to_hex(&k).to_uppercase().as_bytes()).unwrap(), k);
    }

    #[test]
    fn errors_are_clear() {
        let e = parse_key(b"abc\n").unwrap_err();
        assert!(e.contains("found 4 bytes (3 after trimming"), "{e}");
        let mut bad = "0".repeat(63);
        bad.push('g');
        assert!(parse_key(bad.as_bytes()).unwrap_err().contains("not a hex digit at offset 62"));
        assert!(parse_key(&[0u8; 32]).unwrap_err().contains("all zeros"));
        let missing = load_key(Path::new("/nonexistent/cohort.key")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read key file /nonexistent/cohort.key"), "{missing}");
    }
}

//! Object identifiers the agency CA puts into certificates, and the DER of the one custom
//! extension (the Matrix cross-signing master key).
//!
//! govmx OIDs live under the private enterprise arc `1.3.6.1.4.1.59999.7` (**placeholder**: an
//! operator must register an IANA Private Enterprise Number and change [`GOVMX_ARC`] before
//! production; verifiers take the OIDs from here, so it is a one-constant change).

/// The govmx arc (placeholder PEN, see the module documentation).
pub const GOVMX_ARC: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7];

/// Extension `id-govmx-matrixMasterKey` (`<arc>.1.1`), non-critical:
/// `SEQUENCE { algorithm UTF8String ("ed25519"), publicKey UTF8String (unpadded base64) }`.
pub const EXT_MATRIX_MASTER_KEY: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7, 1, 1];

/// Extended key usage `id-govmx-kp-agencyIdentity` (`<arc>.3.1`).
pub const EKU_AGENCY_IDENTITY: &[u64] = &[1, 3, 6, 1, 4, 1, 59999, 7, 3, 1];

/// The DER content octets of [`EKU_AGENCY_IDENTITY`] (what rustls-webpki's `KeyUsage` wants).
pub const EKU_AGENCY_IDENTITY_DER: &[u8] = &[
    0x2b, 0x06, 0x01, 0x04, 0x01, 0x83, 0xd4, 0x5f, 0x07, 0x03, 0x01,
];

/// X.520 `organizationIdentifier` (2.5.4.97): the agency id in the subject.
pub const DN_ORGANIZATION_IDENTIFIER: &[u64] = &[2, 5, 4, 97];

/// The only master key algorithm Matrix cross-signing uses.
pub const MASTER_KEY_ALGORITHM: &str = "ed25519";

/// DER of the master key extension's value for an unpadded base64 Ed25519 key.
pub(crate) fn encode_master_key(unpadded_base64: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    push_utf8(&mut body, MASTER_KEY_ALGORITHM);
    push_utf8(&mut body, unpadded_base64);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Parses the master key extension's value strictly; returns the unpadded base64 key.
pub(crate) fn decode_master_key(der: &[u8]) -> Option<&str> {
    let (tag, body, rest) = read_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return None;
    }
    let (tag, algorithm, rest) = read_tlv(body)?;
    if tag != 0x0c || algorithm != MASTER_KEY_ALGORITHM.as_bytes() {
        return None;
    }
    let (tag, key, rest) = read_tlv(rest)?;
    if tag != 0x0c || !rest.is_empty() {
        return None;
    }
    std::str::from_utf8(key).ok()
}

fn push_utf8(out: &mut Vec<u8>, text: &str) {
    out.push(0x0c);
    push_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        out.push(0x82);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

/// One DER TLV with a definite, minimally encoded length of at most two bytes.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&len, rest) = rest.split_first()?;
            if len < 0x80 {
                return None;
            }
            (usize::from(len), rest)
        }
        0x82 => {
            let bytes = rest.get(..2)?;
            let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            if len <= 0xff {
                return None;
            }
            (len, &rest[2..])
        }
        _ => return None,
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use x509_parser::der_parser::oid::Oid;

    use super::*;

    #[test]
    fn eku_der_matches_the_oid() {
        let oid = Oid::from(EKU_AGENCY_IDENTITY).unwrap();
        assert_eq!(oid.as_bytes(), EKU_AGENCY_IDENTITY_DER);
        assert!(EKU_AGENCY_IDENTITY.starts_with(GOVMX_ARC));
        assert!(EXT_MATRIX_MASTER_KEY.starts_with(GOVMX_ARC));
    }

    #[test]
    fn master_key_round_trip_and_strictness() {
        let key = "VGhpcyBpcyBub3QgYSByZWFsIGtleSBidXQgMzIgYnk";
        let der = encode_master_key(key);
        assert_eq!(decode_master_key(&der), Some(key));
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(decode_master_key(&trailing), None);
        assert_eq!(decode_master_key(&der[..der.len() - 1]), None);
        let mut other_alg = der;
        other_alg[4] = b'E';
        assert_eq!(decode_master_key(&other_alg), None);
        assert_eq!(decode_master_key(&[]), None);
        assert_eq!(decode_master_key(&[0x30, 0x81, 0x05]), None);
    }
}

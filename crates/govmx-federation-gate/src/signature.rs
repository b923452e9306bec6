//! X-Matrix request signatures: the signed JSON object and Ed25519 verification.
//!
//! The signed object is `{method, uri, origin, destination, content?}` in Matrix canonical JSON
//! (sorted keys, no insignificant whitespace, integers only), where `uri` is the request path
//! and query exactly as received and `destination` is the header's `destination` or, when a
//! server omits it, our own server name (what Synapse does). Signatures are unpadded standard
//! base64; padded and URL-safe forms are accepted too.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde_json::{Map, Value};

use crate::xmatrix::XMatrix;

/// Why a request signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The request body cannot be put into canonical JSON (floats, out-of-range integers).
    #[error("request content is not canonical-JSON compatible: {0}")]
    NotCanonical(String),
    /// The `sig` parameter does not decode to 64 bytes.
    #[error("signature is not 64 bytes of base64")]
    BadEncoding,
    /// The signature does not verify with the key.
    #[error("signature does not verify with key {0}")]
    Mismatch(String),
}

/// The canonical JSON text a peer signs for this request.
pub fn signed_json(
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Result<String, SignatureError> {
    let mut object = Map::new();
    object.insert("method".into(), Value::from(method));
    object.insert("uri".into(), Value::from(uri));
    object.insert("origin".into(), Value::from(origin));
    object.insert("destination".into(), Value::from(destination));
    if let Some(content) = content {
        object.insert("content".into(), content.clone());
    }
    let canonical = ruma_common::canonical_json::to_canonical_value(Value::Object(object))
        .map_err(|e| SignatureError::NotCanonical(e.to_string()))?;
    Ok(canonical.to_string())
}

/// Verifies the header's signature over the request with `key`.
///
/// `our_server_name` stands in for the destination when the header has none.
pub fn verify(
    header: &XMatrix,
    method: &str,
    uri: &str,
    our_server_name: &str,
    content: Option<&Value>,
    key: &VerifyingKey,
) -> Result<(), SignatureError> {
    let destination = header.destination.as_deref().unwrap_or(our_server_name);
    let message = signed_json(method, uri, &header.origin, destination, content)?;
    let bytes = decode_sig(&header.sig).ok_or(SignatureError::BadEncoding)?;
    let signature = Signature::from_bytes(&bytes);
    key.verify_strict(message.as_bytes(), &signature)
        .map_err(|_| SignatureError::Mismatch(header.key.clone()))
}

/// Signs a request the way a homeserver does and returns the header parameters.
///
/// For tests, fuzzing and tools; the gate itself never signs.
pub fn sign(
    signing_key: &SigningKey,
    key_id: &str,
    method: &str,
    uri: &str,
    origin: &str,
    destination: &str,
    content: Option<&Value>,
) -> Result<XMatrix, SignatureError> {
    let message = signed_json(method, uri, origin, destination, content)?;
    let sig = signing_key.sign(message.as_bytes());
    Ok(XMatrix {
        origin: origin.to_owned(),
        destination: Some(destination.to_owned()),
        key: key_id.to_owned(),
        sig: STANDARD_NO_PAD.encode(sig.to_bytes()),
    })
}

fn decode_sig(sig: &str) -> Option<[u8; 64]> {
    let bytes = STANDARD_NO_PAD
        .decode(sig)
        .or_else(|_| STANDARD.decode(sig))
        .or_else(|_| URL_SAFE_NO_PAD.decode(sig))
        .ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn canonical_form() {
        let content = serde_json::json!({"b": 1, "a": {"z": "ü", "y": [true, null]}});
        let text = signed_json("PUT", "/x?y=1", "o", "d", Some(&content)).unwrap();
        assert_eq!(
            text,
            r#"{"content":{"a":{"y":[true,null],"z":"ü"},"b":1},"destination":"d","method":"PUT","origin":"o","uri":"/x?y=1"}"#
        );
        let float = serde_json::json!({"f": 1.5});
        assert!(matches!(
            signed_json("PUT", "/", "o", "d", Some(&float)),
            Err(SignatureError::NotCanonical(_))
        ));
    }

    #[test]
    fn sign_then_verify() {
        let content = serde_json::json!({"pdus": []});
        let header = sign(
            &key(1),
            "ed25519:k",
            "PUT",
            "/p",
            "a.example",
            "b.example",
            Some(&content),
        )
        .unwrap();
        let public = key(1).verifying_key();
        assert_eq!(
            verify(&header, "PUT", "/p", "b.example", Some(&content), &public),
            Ok(())
        );
        // Another key, another URI, another body, another destination: all fail.
        let other = key(2).verifying_key();
        assert!(verify(&header, "PUT", "/p", "b.example", Some(&content), &other).is_err());
        assert!(verify(&header, "PUT", "/q", "b.example", Some(&content), &public).is_err());
        assert!(verify(&header, "PUT", "/p", "b.example", None, &public).is_err());
        let mut moved = header.clone();
        moved.destination = Some("c.example".into());
        assert!(verify(&moved, "PUT", "/p", "b.example", Some(&content), &public).is_err());
        // Without a destination in the header our own name is what was signed.
        let mut legacy = header.clone();
        legacy.destination = None;
        assert_eq!(
            verify(&legacy, "PUT", "/p", "b.example", Some(&content), &public),
            Ok(())
        );
        let mut garbage = header;
        garbage.sig = "c2ln".into();
        assert_eq!(
            verify(&garbage, "PUT", "/p", "b.example", Some(&content), &public),
            Err(SignatureError::BadEncoding)
        );
    }
}

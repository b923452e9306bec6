//! A hand-written reader for the usual shape of one federation member in JSON syntax.
//!
//! serde's derived `Deserialize` for [`FederationMember`] spends most of a large list's parse
//! time on generic machinery: a visitor per field, the field names matched through an enum, each
//! server name deserialised into a `String` that is validated and then copied once more. This
//! reader handles the shape every generator and every hand-written list uses: an object with the
//! known keys in any order, each at most once, strings without escapes. It answers `None` for
//! anything else (an escape, a control character, an unknown or repeated key, a missing field, a
//! value of another type, a malformed server name, a repeated signing key id), and the caller
//! then deserialises that element with serde, which reads it as before or reports the precise
//! error. So the reader only ever returns what serde would return for the same bytes: never
//! wider, never another value (the tests compare both on valid, invalid and mutated members).

use std::collections::BTreeMap;

use crate::model::{FederationMember, Organisation, ServerClass};
use crate::units::ServerNameSpec;

/// The member whose `{` is at byte `at` of `text`, and the offset just after its `}`;
/// `None` when the element is not in the shape this reader handles (see the module docs).
pub(crate) fn member(text: &str, at: usize) -> Option<(FederationMember, usize)> {
    let mut cursor = Cursor {
        text,
        bytes: text.as_bytes(),
        at,
    };
    let mut server_name = None;
    let mut organisation = None;
    let mut class = None;
    let mut signing_keys = None;
    let mut delegated_hosts = None;
    cursor.object(|cursor, key| {
        match key {
            "serverName" if server_name.is_none() => {
                server_name = Some(ServerNameSpec::parse(cursor.string()?).ok()?);
            }
            "organisation" if organisation.is_none() => {
                organisation = Some(cursor.organisation()?);
            }
            "class" if class.is_none() => {
                class = Some(match cursor.string()? {
                    "agency" => ServerClass::Agency,
                    "citizen" => ServerClass::Citizen,
                    "infrastructure" => ServerClass::Infrastructure,
                    _ => return None,
                });
            }
            "signingKeys" if signing_keys.is_none() => {
                let mut keys = BTreeMap::new();
                cursor.object(|cursor, id| {
                    let key = cursor.string()?;
                    // A repeated key id is an error serde reports with its position.
                    keys.insert(id.to_owned(), key.to_owned())
                        .is_none()
                        .then_some(())
                })?;
                signing_keys = Some(keys);
            }
            "delegatedHosts" if delegated_hosts.is_none() => {
                delegated_hosts = Some(cursor.strings()?);
            }
            _ => return None,
        }
        Some(())
    })?;
    let member = FederationMember {
        server_name: server_name?,
        organisation: organisation?,
        class: class?,
        signing_keys: signing_keys.unwrap_or_default(),
        delegated_hosts: delegated_hosts.unwrap_or_default(),
    };
    Some((member, cursor.at))
}

/// A position in the text being read.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// The next byte after JSON whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
        self.bytes.get(self.at).copied()
    }

    /// Consumes `byte` (after whitespace).
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// A string without escapes or control characters, borrowed from the text.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        let len = first_special(self.bytes.get(start..)?)?;
        if self.bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // Both ends are ASCII quotes, so this is a char boundary of the (valid UTF-8) text.
        self.text.get(start..start + len)
    }

    /// The items of an object (`{…}`) or array (`[…]`): `item` reads each one; commas between.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Cursor<'a>) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                byte if byte == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object; `field` reads the value of each key (the cursor after the colon).
    fn object(
        &mut self,
        mut field: impl FnMut(&mut Cursor<'a>, &'a str) -> Option<()>,
    ) -> Option<()> {
        self.items(b'{', b'}', |cursor| {
            let key = cursor.string()?;
            cursor.eat(b':')?;
            field(cursor, key)
        })
    }

    /// An array of strings.
    fn strings(&mut self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        self.items(b'[', b']', |cursor| {
            out.push(cursor.string()?.to_owned());
            Some(())
        })?;
        Some(out)
    }

    /// `{"id": …, "displayName": …}` in either order.
    fn organisation(&mut self) -> Option<Organisation> {
        let mut id = None;
        let mut display_name = None;
        self.object(|cursor, key| {
            match key {
                "id" if id.is_none() => id = Some(cursor.string()?.to_owned()),
                "displayName" if display_name.is_none() => {
                    display_name = Some(cursor.string()?.to_owned());
                }
                _ => return None,
            }
            Some(())
        })?;
        Some(Organisation {
            id: id?,
            display_name: display_name?,
        })
    }
}

/// Whether `byte` ends an unescaped string here: a quote, a backslash or a control character.
fn is_special(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// The offset of the first [special](is_special) byte, eight bytes at a time: a byte-wise loop
/// was the largest single cost of reading a 100,000-server list.
fn first_special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    // `(x - ONES) & !x & HIGH_BITS` flags the zero bytes of `x` (and `x - n * ONES` the bytes
    // below `n`); a borrow can only flag bytes above a true one, so the lowest flag is exact.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH_BITS;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        let x = u64::from_le_bytes(eight);
        let found = below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1)
            | below(x, 0x20);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = words
        .remainder()
        .iter()
        .position(|&byte| is_special(byte))?;
    Some(at + tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde's reading of the element at the start of `text`: the member and the offset after it.
    fn serde(text: &str) -> Option<(FederationMember, usize)> {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<FederationMember>();
        let member = stream.next()?.ok()?;
        Some((member, stream.byte_offset()))
    }

    /// The reader agrees with serde on `text`: the same member and end, or `None` where serde
    /// also fails or the shape is one the reader leaves to serde. Returns whether it read it.
    #[track_caller]
    fn agrees(text: &str) -> bool {
        match member(text, 0) {
            Some(read) => {
                assert_eq!(Some(&read), serde(text).as_ref(), "{text}");
                true
            }
            None => false,
        }
    }

    const PLAIN: &str = r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "Organisation 1"}, "class": "agency"}"#;

    #[test]
    fn first_special_finds_the_first_quote_backslash_or_control_byte() {
        let naive = |bytes: &[u8]| bytes.iter().position(|&byte| is_special(byte));
        let alphabet = [
            b'a', b' ', b'"', b'\\', 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xff, 0x00, b'!', b'#', b'[',
            b']',
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..40 {
            for _ in 0..500 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly plain bytes, so that the special ones land anywhere.
                        if seed.is_multiple_of(8) {
                            alphabet[(seed >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + (seed >> 16) as u8 % 26
                        }
                    })
                    .collect();
                assert_eq!(first_special(&bytes), naive(&bytes), "{bytes:?}");
            }
        }
    }

    #[test]
    fn reads_the_usual_shapes_as_serde_does() {
        for text in [
            PLAIN,
            r#"{"class":"citizen","organisation":{"displayName":"Ämter für Bürger","id":"org"},"serverName":"127.0.0.2:8448"}"#,
            "{ \"serverName\" : \"[::1]:8448\" ,\n\t\"organisation\" : { \"id\" : \"o\" , \"displayName\" : \"\" } ,\r\n \"class\" : \"infrastructure\" }",
            r#"{"serverName": "a.example", "organisation": {"id": "o", "displayName": "O"}, "class": "agency", "signingKeys": {"ed25519:a": "AAAA", "ed25519:b": "BBBB"}, "delegatedHosts": ["fed.a.example:8448", "x:1"]}"#,
            r#"{"serverName": "a.example", "organisation": {"id": "o", "displayName": "O"}, "class": "agency", "signingKeys": {}, "delegatedHosts": []}"#,
        ] {
            assert!(agrees(text), "the reader should read {text}");
        }
        // What follows the element is left alone.
        let text = format!("{PLAIN} , {PLAIN}]");
        let (_, end) = member(&text, 0).unwrap();
        assert_eq!(end, PLAIN.len());
        assert_eq!(member(&text, end + 3).unwrap().1, text.len() - 1);
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        for text in [
            // Escapes and control characters: serde decodes them.
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "A \"B\""}, "class": "agency"}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "\u00c4"}, "class": "agency"}"#,
            "{\"serverName\": \"s1.example\", \"organisation\": {\"id\": \"org-1\", \"displayName\": \"a\tb\"}, \"class\": \"agency\"}",
            r#"{"server\u004eame": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency"}"#,
            // Unknown, repeated and missing keys.
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency", "extra": 1}"#,
            r#"{"serverName": "s1.example", "serverName": "s2.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency"}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1"}, "class": "agency"}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x", "id": "y"}, "class": "agency"}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency", "signingKeys": {"ed25519:a": "A", "ed25519:a": "B"}}"#,
            // Other types, bad values, broken syntax.
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "Agency"}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": {"agency": null}}"#,
            r#"{"serverName": "not a name", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency"}"#,
            r#"{"serverName": 5, "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency"}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency", "signingKeys": null}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency", "delegatedHosts": [1]}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency",}"#,
            r#"{"serverName": "s1.example" "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency"}"#,
            r#"{"serverName": "s1.example", "organisation": {"id": "org-1", "displayName": "x"}, "class": "agency""#,
            r#"["serverName"]"#,
            "",
        ] {
            assert!(!agrees(text), "the reader should leave {text} to serde");
        }
    }

    /// Every prefix and thousands of single-byte mutations of members: whenever the reader
    /// answers, serde answers the same.
    #[test]
    fn agrees_with_serde_on_mutations() {
        let full = r#"{"serverName": "a.example:8448", "organisation": {"id": "o-1", "displayName": "O"}, "class": "citizen", "signingKeys": {"ed25519:k": "AbC"}, "delegatedHosts": ["h.example:443"]}"#;
        let mut read = 0;
        for base in [PLAIN, full] {
            for end in 0..=base.len() {
                agrees(&base[..end]);
            }
            let alphabet = b" \t\"\\{}[],:0aZ-.\x01";
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            for _ in 0..20_000 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut bytes = base.as_bytes().to_vec();
                let at = (seed % bytes.len() as u64) as usize;
                let with = alphabet[(seed >> 32) as usize % alphabet.len()];
                match (seed >> 48) % 3 {
                    0 => bytes[at] = with,
                    1 => bytes.insert(at, with),
                    _ => {
                        bytes.remove(at);
                    }
                }
                if let Ok(text) = String::from_utf8(bytes) {
                    read += usize::from(agrees(&text));
                }
            }
        }
        // Mutations inside values (names, slugs, whitespace) still read: the fast path is
        // exercised, not only refused.
        assert!(read > 5_000, "only {read} mutated members were read");
    }
}

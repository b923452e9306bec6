//! Parallel deserialisation of a large federation list in JSON syntax.
//!
//! A 100,000-server list is ~14 MB of JSON; serde_json reads it at ~450 MB/s on one core, which
//! dominates a gate's list reload. The `servers` array is cut into one chunk per thread and the
//! chunks are deserialised concurrently. The cut points are *guessed* (the first `},{` after an
//! even split of the bytes) and then proven by the parse itself:
//!
//! - The array's opening `[` is found by a small, string-aware scan of the top-level object, and
//!   the rest of the document (`"servers":[]` in place of the array) is deserialised strictly as
//!   a [`FederationList`], so the prefix up to the `[` reads exactly as a sequential parse reads it.
//! - Chunk 0 starts right after that `[`, a true element boundary. Each chunk deserialises
//!   element after element; chunk *k* must land **exactly** on the start of chunk *k + 1* after a
//!   comma (so that start is a true boundary too: induction), and the last chunk must end at the
//!   array's closing `]`.
//!
//! JSON tokenisation of a prefix does not depend on what follows, so when every check holds the
//! result is the one a sequential parse produces. When any check fails (a guessed cut inside a
//! string, any syntax or type error) the caller falls back to the sequential parse, which also
//! produces the precise error. Wrong guesses cost time, never correctness.
//!
//! Also here: the scoped-thread fan-out the checks and the member index of a large list use
//! ([`in_parts`], with [`slice_range`] and [`partition`] to cut the work).

use crate::model::{FederationList, FederationMember};

/// Below this many bytes of `servers` array a single thread is faster than the hand-off.
const MIN_CHUNK_BYTES: usize = 1 << 20;

/// Upper bound of threads used for one document.
const MAX_THREADS: usize = 8;

/// The federation list in `text` (JSON syntax), deserialised on up to `threads` threads, or
/// `None` when the text is small, has no top-level `servers` array where a plain scan finds it,
/// or anything in it fails to deserialise (the caller then parses sequentially).
///
/// Chunk 0 is deserialised into `buffer`'s memory when the buffer has room for the whole array
/// (the other chunks are appended to it); the buffer is taken whenever the array is parsed here.
/// Without such a buffer (a process's first large list), one more thread allocates and touches
/// the memory for the whole array while the chunks are parsed, and every chunk is copied into
/// it: a copy into fresh memory would fault its pages in one by one on the critical path.
///
/// `precheck` runs on each chunk's members right after they are parsed, on the same thread
/// (while they are still in that core's cache, and without another round of threads); its
/// results come back in chunk order.
pub(crate) fn federation_list<P: Send>(
    text: &str,
    threads: usize,
    buffer: &mut Vec<FederationMember>,
    precheck: impl Fn(&[FederationMember]) -> P + Sync,
) -> Option<(FederationList, Vec<P>)> {
    let start = servers_array_start(text.as_bytes())?;
    let threads = threads
        .min(MAX_THREADS)
        .min((text.len() - start) / MIN_CHUNK_BYTES);
    if threads < 2 {
        return None;
    }
    let starts = chunk_starts(text, start, threads);
    let estimate = estimate_members(text, start);
    let precheck = &precheck;
    let checked = |chunk: Option<Chunk>| chunk.map(|chunk| (precheck(&chunk.members), chunk));
    let (chunks, destination): (Vec<Option<(P, Chunk)>>, _) = std::thread::scope(|scope| {
        let chunk = |k: usize| {
            let to = starts.get(k + 1).copied();
            checked(parse_chunk(text, starts[k], to, to.unwrap_or(text.len())))
        };
        // First, so that its pages are in place before the chunks are done. No thread (the
        // OS refused one): chunk 0 reserves room for the whole array, as with a buffer.
        let destination = (buffer.capacity() < estimate)
            .then(|| {
                std::thread::Builder::new()
                    .spawn_scoped(scope, move || {
                        crate::MemberBuffer::prefaulted(estimate + estimate / 8).0
                    })
                    .ok()
            })
            .flatten();
        // A thread the OS refuses is no error: that chunk is parsed here afterwards.
        let spawned: Vec<_> = (1..starts.len())
            .map(|k| {
                (
                    k,
                    std::thread::Builder::new().spawn_scoped(scope, move || chunk(k)),
                )
            })
            .collect();
        // Chunk 0 (parsed here) reserves room for the whole array, so appending the others does
        // not move it; in the buffer's memory when there is one. With a destination it is
        // copied like the others.
        // The buffer is taken either way: with a destination it was too small, and is freed
        // here rather than handed back to be offered again.
        let mut first = std::mem::take(buffer);
        first.clear();
        if destination.is_some() {
            first = Vec::new();
        }
        let reserve_until = match (&destination, starts.get(1)) {
            (Some(_), Some(&next)) => next,
            _ => text.len(),
        };
        let mut chunks = vec![checked(parse_chunk_into(
            first,
            text,
            starts[0],
            starts.get(1).copied(),
            reserve_until,
        ))];
        for (k, spawned) in spawned {
            chunks.push(match spawned {
                Ok(thread) => thread.join().ok().flatten(),
                Err(_) => chunk(k),
            });
        }
        let destination = destination.and_then(|thread| thread.join().ok());
        (chunks, destination)
    });
    let mut members = destination.unwrap_or_default();
    let mut end = None;
    let mut prechecked = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let (result, chunk) = chunk?;
        prechecked.push(result);
        end = chunk.array_end;
        if members.capacity() == 0 {
            members = chunk.members;
        } else {
            members.extend(chunk.members);
        }
    }
    // Every chunk but the last one ended on its successor's start (`parse_chunk` checks);
    // the last one must have met the closing bracket.
    let end = end?;
    let mut rest = String::with_capacity(start + text.len() - end);
    rest.push_str(&text[..start]);
    rest.push_str(&text[end..]);
    let mut list: FederationList = serde_json::from_str(&rest).ok()?;
    if !list.servers.is_empty() {
        return None;
    }
    list.servers = members;
    Some((list, prechecked))
}

/// Bytes at the start of the `servers` array that [`estimate_members`] looks at.
const SAMPLE_BYTES: usize = 64 << 10;

/// Fewer bytes than the smallest member a list can hold
/// (`{"serverName":"a","organisation":{"id":"a","displayName":""},"class":"agency"}` has 78).
const MIN_MEMBER_BYTES: usize = 64;

/// How many members the `servers` array that starts at `start` holds, estimated from how many
/// `"serverName"` keys (one per member) its first [`SAMPLE_BYTES`] have; 0 when the sample has
/// none. Only sizes memory: a wrong estimate costs a reallocation or unused room, never a
/// different result. Never more than fit in the text at [`MIN_MEMBER_BYTES`] each: the parse
/// runs before the signatures are checked, and a sample crowded with keys must not size
/// memory beyond what a real list could need.
fn estimate_members(text: &str, start: usize) -> usize {
    let mut end = (start + SAMPLE_BYTES).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let sample = text.get(start..end).unwrap_or_default();
    let found = sample.matches("\"serverName\"").count();
    if found == 0 {
        return 0;
    }
    let span = text.len() - start;
    (span / (sample.len() / found).max(1)).min(span / MIN_MEMBER_BYTES)
}

/// `part(k)` for every `k` in `0..parts`, in that order: part 0 on the calling thread, the
/// others on scoped threads at the same time. A thread the OS refuses is no error: that part
/// runs on the calling thread afterwards. A panic in a part is resumed here.
pub(crate) fn in_parts<T: Send>(parts: usize, part: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if parts < 2 {
        return (0..parts).map(part).collect();
    }
    let part = &part;
    std::thread::scope(|scope| {
        let spawned: Vec<_> = (1..parts)
            .map(|k| {
                let thread = std::thread::Builder::new().spawn_scoped(scope, move || part(k));
                (k, thread)
            })
            .collect();
        let mut results = Vec::with_capacity(parts);
        results.push(part(0));
        for (k, thread) in spawned {
            results.push(match thread {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => part(k),
            });
        }
        results
    })
}

/// The partition (of `parts`, a power of two) of a 64-bit hash: bits 40 and up, so that it
/// does not correlate with what a hashbrown table uses of the same hash (the low bits for the
/// bucket, the top 7 bits for the tag).
pub(crate) fn partition(digest: u64, parts: usize) -> usize {
    (digest >> 40) as usize & (parts - 1)
}

/// The half-open range of slice `k` when `len` items are cut into slices of `per_part`.
pub(crate) fn slice_range(k: usize, per_part: usize, len: usize) -> std::ops::Range<usize> {
    let from = (k * per_part).min(len);
    from..(from + per_part).min(len)
}

/// What one chunk yielded.
struct Chunk {
    members: Vec<FederationMember>,
    /// The offset of the array's closing `]` when the chunk ended there.
    array_end: Option<usize>,
}

/// Deserialises the elements from `from` on; stops exactly at `to` (the next chunk's first
/// element, after a comma) or, for the last chunk (`to == None`), at the closing `]`. Reserves
/// room for the elements that fit in the bytes up to `reserve_until`, estimated from the
/// first 64.
fn parse_chunk(text: &str, from: usize, to: Option<usize>, reserve_until: usize) -> Option<Chunk> {
    parse_chunk_into(Vec::new(), text, from, to, reserve_until)
}

/// [`parse_chunk`] appending to `members` (empty, possibly with capacity to spare).
fn parse_chunk_into(
    mut members: Vec<FederationMember>,
    text: &str,
    from: usize,
    to: Option<usize>,
    reserve_until: usize,
) -> Option<Chunk> {
    let bytes = text.as_bytes();
    let mut at = from;
    loop {
        // The usual shape by hand; anything else (escapes, errors) through serde.
        at = match crate::member_json::member(text, at) {
            Some((member, end)) => {
                members.push(member);
                skip_whitespace(bytes, end)
            }
            None => {
                let mut stream = serde_json::Deserializer::from_str(text.get(at..)?)
                    .into_iter::<FederationMember>();
                members.push(stream.next()?.ok()?);
                skip_whitespace(bytes, at + stream.byte_offset())
            }
        };
        if members.len() == 64 {
            let per_element = (at - from) / 64 + 1;
            let estimate = reserve_until.saturating_sub(at) / per_element;
            // A buffer that already has room is not moved.
            if members.capacity() - members.len() < estimate {
                members.reserve(estimate * 11 / 10);
            }
        }
        match bytes.get(at)? {
            b',' => {
                at = skip_whitespace(bytes, at + 1);
                match to {
                    Some(to) if at == to => {
                        return Some(Chunk {
                            members,
                            array_end: None,
                        });
                    }
                    Some(to) if at > to => return None,
                    _ => {}
                }
            }
            b']' if to.is_none() => {
                return Some(Chunk {
                    members,
                    array_end: Some(at),
                });
            }
            _ => return None,
        }
    }
}

/// `threads` start offsets: `start` and, for each further thread, the first `{` that follows
/// `}` and `,` (with optional whitespace) after an even split of the remaining bytes. Guesses that
/// collide or find nothing are dropped.
fn chunk_starts(text: &str, start: usize, threads: usize) -> Vec<usize> {
    let bytes = text.as_bytes();
    let span = text.len() - start;
    let mut starts = vec![start];
    for k in 1..threads {
        let mut at = start + span * k / threads;
        while let Some(found) = text.get(at..).and_then(|rest| rest.find('}')) {
            at = skip_whitespace(bytes, at + found + 1);
            if bytes.get(at) != Some(&b',') {
                continue;
            }
            at = skip_whitespace(bytes, at + 1);
            if bytes.get(at) == Some(&b'{') {
                if at > *starts.last().unwrap_or(&0) {
                    starts.push(at);
                }
                break;
            }
        }
    }
    starts
}

/// The offset just after the `[` that opens the value of the top-level key `servers`, found by
/// a string-aware scan of the keys and values before it. `None` when the text is not an object,
/// the key is spelt with escapes, or the value is not an array.
fn servers_array_start(bytes: &[u8]) -> Option<usize> {
    let mut at = skip_whitespace(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    loop {
        at = skip_whitespace(bytes, at);
        let key_end = skip_string(bytes, at)?;
        let key = &bytes[at + 1..key_end - 1];
        at = skip_whitespace(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        at = skip_whitespace(bytes, at + 1);
        if key == b"servers" {
            return (bytes.get(at) == Some(&b'[')).then_some(at + 1);
        }
        at = skip_whitespace(bytes, skip_value(bytes, at)?);
        if bytes.get(at) != Some(&b',') {
            return None;
        }
        at += 1;
    }
}

/// The offset after the JSON string that starts at `at`.
fn skip_string(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut at = at + 1;
    loop {
        match *bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// The offset after the JSON value that starts at `at` (only used on the small header before
/// the `servers` array; the strict parse of the rest checks that value again).
fn skip_value(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => skip_string(bytes, at),
        b'{' | b'[' => {
            let (mut depth, mut at) = (0usize, at);
            loop {
                match *bytes.get(at)? {
                    b'"' => {
                        at = skip_string(bytes, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let scalar = bytes[at..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
                .count();
            (scalar > 0).then_some(at + scalar)
        }
    }
}

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A federation list in JSON syntax with `n` members, `separator` between elements and
    /// `organisation` rendering each member's organisation object.
    fn list(n: usize, separator: &str, organisation: impl Fn(usize) -> String) -> String {
        let members: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"serverName": "s{i}.example.de", "organisation": {}, "class": "{}"}}"#,
                    organisation(i),
                    if i % 3 == 0 { "citizen" } else { "agency" }
                )
            })
            .collect();
        format!(
            r#"{{"apiVersion": "govmx.de/v1", "kind": "FederationList",
  "metadata": {{"name": "a \"servers\": [ list", "version": 3, "issued": "2026-01-01T00:00:00Z", "maxAge": "30d"}},
  "servers": [{}]}}"#,
            members.join(separator)
        )
    }

    /// Every fifth organisation name has escapes (serde reads that member), the others are
    /// in the shape `member_json` reads by hand.
    fn plain(i: usize) -> String {
        if i.is_multiple_of(5) {
            format!(r#"{{"id": "org-{i}", "displayName": "Organisation {i} \u00e4 \"x\""}}"#)
        } else {
            format!(r#"{{"displayName": "Organisation {i} ä", "id": "org-{i}"}}"#)
        }
    }

    /// The list [`federation_list`] parses, without prechecks.
    fn parse_list(
        text: &str,
        threads: usize,
        buffer: &mut Vec<FederationMember>,
    ) -> Option<FederationList> {
        federation_list(text, threads, buffer, |_| ()).map(|(list, _)| list)
    }

    /// The precheck sees every member once, on the chunk's own thread, and its results come
    /// back in chunk order.
    #[test]
    fn prechecks_cover_the_chunks_in_order() {
        let text = list(40_000, ",", plain);
        let (parsed, firsts) = federation_list(&text, 8, &mut Vec::new(), |members| {
            (
                members.len(),
                members.first().map(|m| m.server_name.0.to_string()),
            )
        })
        .unwrap();
        assert!(firsts.len() > 2, "{} chunks", firsts.len());
        assert_eq!(
            firsts.iter().map(|(n, _)| n).sum::<usize>(),
            parsed.servers.len()
        );
        let mut at = 0;
        for (n, first) in firsts {
            assert_eq!(
                first.as_deref(),
                Some(parsed.servers[at].server_name.0.as_str())
            );
            at += n;
        }
    }

    fn sequential(text: &str) -> FederationList {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {}", &text[..400]))
    }

    #[test]
    fn chunks_give_the_sequential_result() {
        for separator in [",", ",\n    ", " , "] {
            let text = list(40_000, separator, plain);
            let expected = sequential(&text);
            for threads in [2, 3, 8] {
                let starts = chunk_starts(
                    &text,
                    servers_array_start(text.as_bytes()).unwrap(),
                    threads,
                );
                assert_eq!(starts.len(), threads, "{separator:?}: one chunk per thread");
                assert_eq!(
                    parse_list(&text, threads, &mut Vec::new()).as_ref(),
                    Some(&expected),
                    "{separator:?}, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn a_buffer_with_room_receives_the_members() {
        let text = list(40_000, ",", plain);
        let expected = sequential(&text);
        // Room for the members and 1/8 more, as a gate prepares it.
        let mut buffer = crate::MemberBuffer::prefaulted(45_000).0;
        let memory = buffer.as_ptr();
        let parsed = parse_list(&text, 4, &mut buffer).unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(parsed.servers.as_ptr(), memory, "members not in the buffer");
        assert_eq!(buffer.capacity(), 0, "the buffer was taken");
        // Too small a buffer: the same result in new memory.
        let mut small = crate::MemberBuffer::prefaulted(10).0;
        assert_eq!(parse_list(&text, 4, &mut small).unwrap(), expected);
    }

    /// The estimate that sizes the memory of a first large list is close to the truth (the
    /// sample is the array's first 64 KiB, here with shorter names than the rest: +5 %), and
    /// nothing without `"serverName"` keys.
    #[test]
    fn the_member_estimate_is_close() {
        let text = list(40_000, ",\n", plain);
        let start = servers_array_start(text.as_bytes()).unwrap();
        let estimate = estimate_members(&text, start);
        assert!((36_000..=44_000).contains(&estimate), "{estimate}");
        assert_eq!(estimate_members(&text, text.len() - 2), 0);
        assert_eq!(estimate_members("{\"servers\": [\"ä\"]}", 13), 0);
        // A sample crowded with keys: capped at the smallest possible members.
        let crowded = format!("{{\"servers\": [{}]}}", "\"serverName\",".repeat(100_000));
        let span = crowded.len() - 13;
        assert_eq!(estimate_members(&crowded, 13), span / MIN_MEMBER_BYTES);
    }

    /// Without a buffer the members land in memory prepared on another thread while the chunks
    /// were parsed: sized by the estimate with 1/8 to spare, so appending did not move it.
    #[test]
    fn without_a_buffer_the_members_land_in_prepared_memory() {
        let text = list(40_000, ",", plain);
        let parsed = parse_list(&text, 4, &mut Vec::new()).unwrap();
        assert_eq!(parsed, sequential(&text));
        let estimate = estimate_members(&text, servers_array_start(text.as_bytes()).unwrap());
        assert_eq!(parsed.servers.capacity(), estimate + estimate / 8);
    }

    #[test]
    fn a_cut_guessed_inside_a_string_falls_back() {
        // One organisation name in the middle holds `},{` over and over, so the guessed cut for
        // two threads lands inside that string: chunk 0 steps over it and the guess is refused.
        let n = 40_000;
        let text = list(n, ",", |i| {
            if i == n / 2 {
                format!(
                    r#"{{"id": "org-{i}", "displayName": "{}"}}"#,
                    "x},{y ".repeat(30_000)
                )
            } else {
                plain(i)
            }
        });
        let start = servers_array_start(text.as_bytes()).unwrap();
        let cut = chunk_starts(&text, start, 2)[1];
        let inside = text.find("x},{y").unwrap();
        assert!(
            cut > inside && cut < inside + 30_000 * 6,
            "the guess lands in the string"
        );
        assert_eq!(parse_list(&text, 2, &mut Vec::new()), None);
        // The sequential parse in `parse_document` still reads it.
        assert_eq!(sequential(&text).servers.len(), n);
    }

    #[test]
    fn invalid_elements_and_documents_fall_back() {
        let text = list(40_000, ",", plain);
        let broken = [
            // A type error in the last chunk.
            {
                let last = text.rfind("citizen").unwrap();
                format!("{}ministry{}", &text[..last], &text[last + 7..])
            },
            // An unknown key in the first chunk.
            text.replacen(r#""serverName""#, r#""servername""#, 1),
            // The array is not closed.
            text.replacen("}]}", "}}", 1),
            // A second `servers` key after the array.
            text.replacen("}]}", r#"}], "servers": []}"#, 1),
            // Trailing garbage.
            format!("{text} x"),
        ];
        for (i, text) in broken.iter().enumerate() {
            assert_eq!(parse_list(text, 2, &mut Vec::new()), None, "case {i}");
            assert!(
                serde_json::from_str::<FederationList>(text).is_err(),
                "case {i}"
            );
        }
    }

    #[test]
    fn header_scan_finds_only_the_top_level_key() {
        let at = |text: &str| servers_array_start(text.as_bytes());
        assert_eq!(at(r#"{"servers": [1]}"#), Some(13));
        assert_eq!(
            at(
                r#" { "a" : {"servers": [1]}, "b": [1, {"c": "]"}], "n": -1.5e3, "t": true, "servers":[]}"#
            ),
            Some(84)
        );
        assert_eq!(at(r#"{"a\"servers": [1]}"#), None);
        assert_eq!(at(r#"{"serv\u0065rs": [1]}"#), None);
        assert_eq!(at(r#"{"servers": {}}"#), None);
        assert_eq!(at(r#"["servers", []]"#), None);
        assert_eq!(at(r#"{"a": "unterminated"#), None);
        assert_eq!(at(""), None);
    }

    #[test]
    fn a_chunk_must_end_exactly_on_the_next_start() {
        let text = list(10, ",\n", plain);
        let start = servers_array_start(text.as_bytes()).unwrap();
        let third = text.match_indices(r#"{"serverName""#).nth(2).unwrap().0;
        let two = parse_chunk(&text, start, Some(third), 0).expect("two elements");
        assert_eq!((two.members.len(), two.array_end), (2, None));
        for wrong in [third - 2, third + 1] {
            assert!(
                parse_chunk(&text, start, Some(wrong), 0).is_none(),
                "cut at {wrong}"
            );
        }
        let rest = parse_chunk(&text, third, None, 0).expect("the rest");
        assert_eq!(
            (rest.members.len(), rest.array_end),
            (8, Some(text.len() - 2))
        );
        // A chunk that is not the last one may not run into the end of the array.
        assert!(parse_chunk(&text, third, Some(text.len()), 0).is_none());
    }

    #[test]
    fn small_lists_stay_on_one_thread() {
        let text = list(100, ",", plain);
        assert_eq!(parse_list(&text, 8, &mut Vec::new()), None);
    }
}

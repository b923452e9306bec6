//! clamd `VERSION` over TCP (`zVERSION\0`): engine, signature database version and its date.
//!
//! clamd answers `ClamAV 1.4.3/27471/Mon Nov 23 09:12:00 2026` with official databases loaded,
//! and just `ClamAV 1.4.3` when it only has local signatures (then the DB age is unknown and no
//! DB series are exported).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::{
    CollectError,
    cache::{Snapshot, Value, unix_seconds},
};

/// Longest `VERSION` reply we read.
const MAX_REPLY: u64 = 1024;

/// A parsed `VERSION` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClamdVersion {
    /// Engine version, e.g. `1.4.3`.
    pub engine: String,
    /// Signature database version (`daily` number), when clamd reports one.
    pub db_version: Option<u64>,
    /// Build time of the signature database, when clamd reports one.
    pub db_time: Option<OffsetDateTime>,
}

/// Parses a `VERSION` reply; `None` when it is not one.
pub fn parse_version(raw: &[u8]) -> Option<ClamdVersion> {
    let text = std::str::from_utf8(raw).ok()?;
    let text = text.trim_end_matches(['\0', '\n', '\r', ' ']);
    let rest = text.strip_prefix("ClamAV ")?;
    let mut parts = rest.splitn(3, '/');
    let engine = parts.next()?.trim();
    if engine.is_empty()
        || engine.len() > 32
        || !engine
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'))
    {
        return None;
    }
    let db_version = parts.next().and_then(|v| v.trim().parse().ok());
    let db_time = parts.next().and_then(parse_ctime);
    Some(ClamdVersion {
        engine: engine.to_owned(),
        db_version,
        db_time,
    })
}

/// `Mon Nov 23 09:12:00 2026` (ctime without the newline, the day possibly space-padded), UTC.
fn parse_ctime(s: &str) -> Option<OffsetDateTime> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    let [_weekday, month, day, hms, year] = fields.as_slice() else {
        return None;
    };
    let month = match *month {
        "Jan" => Month::January,
        "Feb" => Month::February,
        "Mar" => Month::March,
        "Apr" => Month::April,
        "May" => Month::May,
        "Jun" => Month::June,
        "Jul" => Month::July,
        "Aug" => Month::August,
        "Sep" => Month::September,
        "Oct" => Month::October,
        "Nov" => Month::November,
        "Dec" => Month::December,
        _ => return None,
    };
    let mut hms = hms.split(':').map(|p| p.parse::<u8>().ok());
    let (Some(Some(h)), Some(Some(m)), Some(Some(sec)), None) =
        (hms.next(), hms.next(), hms.next(), hms.next())
    else {
        return None;
    };
    let date = Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    let time = Time::from_hms(h, m, sec).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Asks clamd at `address` for its version. The caller bounds the time.
pub async fn version(address: &str) -> Result<ClamdVersion, CollectError> {
    let io = |source| CollectError::Io {
        what: format!("clamd {address}"),
        source,
    };
    let mut stream = TcpStream::connect(address).await.map_err(io)?;
    stream.write_all(b"zVERSION\0").await.map_err(io)?;
    let mut reply = Vec::new();
    (&mut stream)
        .take(MAX_REPLY)
        .read_to_end(&mut reply)
        .await
        .map_err(io)?;
    parse_version(&reply).ok_or_else(|| {
        CollectError::Malformed(format!(
            "clamd {address}: not a VERSION reply: {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(80)])
        ))
    })
}

/// The clamd facts as a snapshot.
pub fn snapshot(version: &ClamdVersion) -> Snapshot {
    let mut snap = Snapshot::default();
    snap.gauge(
        "govmx_clamd_build_info",
        "clamd engine version (always 1)",
        vec![("engine", version.engine.clone())],
        Value::Set(1.0),
    );
    snap.set(
        "govmx_clamd_signature_db_known",
        "1 when clamd reports a signature database version and date, 0 with only local signatures",
        f64::from(u8::from(
            version.db_version.is_some() && version.db_time.is_some(),
        )),
    );
    if let Some(v) = version.db_version {
        snap.set(
            "govmx_clamd_signature_db_version",
            "Version of clamd's signature database (daily)",
            v as f64,
        );
    }
    if let Some(t) = version.db_time {
        let ts = unix_seconds(t.into());
        snap.set(
            "govmx_clamd_signature_db_timestamp_seconds",
            "Build time of clamd's signature database",
            ts,
        );
        snap.gauge(
            "govmx_clamd_signature_db_age_seconds",
            "Age of clamd's signature database at scrape time",
            Vec::new(),
            Value::SecondsSince(ts),
        );
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_replies() {
        let check = |raw: &[u8], expect: Option<(&str, Option<u64>, Option<i64>)>| {
            let got = parse_version(raw).map(|v| {
                (
                    v.engine,
                    v.db_version,
                    v.db_time.map(|t| t.unix_timestamp()),
                )
            });
            let expect = expect.map(|(e, v, t)| (e.to_owned(), v, t));
            assert_eq!(got, expect, "{:?}", String::from_utf8_lossy(raw));
        };
        check(
            b"ClamAV 1.4.3/27471/Mon Nov 23 09:12:00 2026\0",
            Some(("1.4.3", Some(27_471), Some(1_795_425_120))),
        );
        check(
            b"ClamAV 1.0.7/27000/Sun Nov  1 00:00:00 2026\n",
            Some(("1.0.7", Some(27_000), Some(1_793_491_200))),
        );
        check(b"ClamAV 1.4.3\0", Some(("1.4.3", None, None)));
        check(
            b"ClamAV 1.4.3/27471/garbage\0",
            Some(("1.4.3", Some(27_471), None)),
        );
        check(b"PONG\0", None);
        check(b"ClamAV \0", None);
        check(b"ClamAV a\"b/1/x", None);
        check(b"\xff\xfe", None);
        check(b"", None);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"ClamAV 0123456789./: JanNovMonSun\0\n\xff";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut raw: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if next() % 2 == 0 {
                raw.splice(0..0, b"ClamAV ".iter().copied());
            }
            let _ = parse_version(&raw);
        }
    }
}

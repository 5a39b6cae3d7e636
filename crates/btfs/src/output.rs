//! Rendering of command results: every command returns a value that serialises to JSON
//! (`--enc json`) and knows how to print itself as text (the default).
//!
//! Text output policy: strings that come from torrents, peers, trackers or the store
//! (names, paths, comments, client names, error messages) pass through [`clean`] before
//! they reach a terminal, so an escape sequence inside them is shown, not acted on. JSON
//! output is left as it is (JSON escapes control characters itself).

use serde::Serialize;
use std::borrow::Cow;
use std::io::{self, Write};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    Text,
    Json,
}

/// A command's result.
pub trait Output: Serialize {
    fn write_text(&self, w: &mut dyn Write) -> io::Result<()>;
}

pub fn emit<T: Output>(value: &T, enc: Encoding) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut w = io::BufWriter::new(stdout.lock());
    let r = match enc {
        Encoding::Text => value.write_text(&mut w),
        Encoding::Json => serde_json::to_writer_pretty(&mut w, value)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(w)),
    };
    match r.and_then(|()| w.flush()) {
        // A closed pipe (`btfs … | head`) is not an error worth reporting.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Commands that a later part of btfs provides exit with this code (EX_UNAVAILABLE).
pub const EXIT_UNAVAILABLE: u8 = 69;

/// The error of a command that this build does not provide yet.
#[derive(Debug)]
pub struct Unavailable(pub String);

impl std::error::Error for Unavailable {}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn report_error(e: &anyhow::Error, enc: Encoding) -> ExitCode {
    let message = format!("{e:#}");
    let code = if e.downcast_ref::<Unavailable>().is_some() {
        EXIT_UNAVAILABLE
    } else {
        1
    };
    match enc {
        Encoding::Text => eprintln!("Error: {}", clean(&message)),
        Encoding::Json => eprintln!(
            "{}",
            serde_json::json!({ "Message": message, "Code": code, "Type": "error" })
        ),
    }
    ExitCode::from(code)
}

/// Text made safe for a terminal: control characters (C0, DEL, C1) and the
/// bidirectional-text controls (which can make a name read backwards) are escaped as Rust
/// escapes them (`\u{1b}`, `\n`); printable Unicode is kept as it is.
pub fn clean(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `1.5 MiB`-style sizes.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time, without a date library.
pub fn utc_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain name é 名前.mkv"), "plain name é 名前.mkv");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
        assert_eq!(clean("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(clean("x\ny\tz\r"), "x\\ny\\tz\\r");
        assert_eq!(clean("\u{7f}\u{9b}31m"), "\\u{7f}\\u{9b}31m");
        assert_eq!(clean("evil\u{202e}gpj.exe"), "evil\\u{202e}gpj.exe");
        for c in (0u32..0x20).chain(0x7f..0xa0) {
            let s = char::from_u32(c).unwrap().to_string();
            assert!(!clean(&s).chars().any(|c| c.is_control()), "{c:#x}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(5), "5 B");
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(1536), "1.50 KiB");
        assert_eq!(human_size(1 << 30), "1 GiB");
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_date(-1), "1969-12-31 23:59:59 UTC");
    }
}

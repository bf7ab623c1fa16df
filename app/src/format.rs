//! Human-readable numbers for the panel; pure functions, so server and browser render alike.

use std::fmt;

/// `value` with `decimals` decimals, as `{:.N}` writes it, but by integer arithmetic: float
/// formatting (`core::fmt`'s Grisu and Dragon) was a tenth of the panel's render time and
/// about 10 KB of the browser bundle. Ties round away from zero (`{:.N}` rounds them to even);
/// `decimals` is at most 6.
#[derive(Clone, Copy, Debug)]
pub struct Fixed(pub f64, pub u32);

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Fixed(value, decimals) = *self;
        if value.is_nan() {
            return f.write_str("NaN");
        }
        let scale = 10u64.pow(decimals.min(6));
        // Saturates for magnitudes over u64::MAX / scale, far beyond anything the panel shows.
        let scaled = (value.abs() * scale as f64).round() as u64;
        if value.is_sign_negative() && scaled != 0 {
            f.write_str("-")?;
        }
        write!(f, "{}", scaled / scale)?;
        if scale > 1 {
            write!(
                f,
                ".{:0width$}",
                scaled % scale,
                width = decimals.min(6) as usize
            )?;
        }
        Ok(())
    }
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `96.0 MiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    Bytes(n).to_string()
}

/// [`bytes`] as a `Display`, to write into a larger string without a `String` of its own.
#[derive(Clone, Copy, Debug)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        let n = self.0;
        if n < 1024 {
            return write!(f, "{n} B");
        }
        let mut value = n as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit < UNITS.len() - 1 {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{} {}", Fixed(value, 1), UNITS[unit])
    }
}

/// A duration in seconds as `45s`, `12m 05s`, `3h 07m`, `2d 04h`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// How long ago something happened: `just now` under a second, else `3s ago`, `2m 05s ago`.
pub fn ago(secs: u64) -> String {
    match secs {
        0 => "just now".to_string(),
        secs => format!("{} ago", duration(secs)),
    }
}

/// A percentage with one decimal: `12.5 %`.
pub fn percent(value: f64) -> String {
    format!("{} %", Fixed(value, 1))
}

/// The time of day of a Unix timestamp in milliseconds, `14:05:09`: in the browser's time zone
/// once hydrated; in UTC (marked so) when rendered on the server, which cannot know it.
pub fn time_of_day(unix_ms: u64) -> String {
    #[cfg(feature = "hydrate")]
    {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(unix_ms as f64));
        format!(
            "{:02}:{:02}:{:02}",
            date.get_hours(),
            date.get_minutes(),
            date.get_seconds()
        )
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let secs = unix_ms / 1000 % 86_400;
        format!(
            "{:02}:{:02}:{:02} UTC",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_writes_what_the_standard_formatter_writes() {
        for i in -20_000..20_000 {
            let value = f64::from(i) * 0.001_37;
            for decimals in 0..4 {
                // Ties (and the float noise around them) are where the two roundings differ.
                let scaled = value.abs() * 10f64.powi(decimals as i32);
                if (scaled.fract() - 0.5).abs() < 1e-6 {
                    continue;
                }
                let standard = format!("{value:.*}", decimals as usize);
                // `{:.N}` writes a negative zero as `-0.0`; `Fixed` writes `0.0`.
                let standard = match standard.strip_prefix('-') {
                    Some(rest) if rest.bytes().all(|b| b == b'0' || b == b'.') => rest.to_string(),
                    _ => standard,
                };
                assert_eq!(
                    Fixed(value, decimals).to_string(),
                    standard,
                    "{value} to {decimals}"
                );
            }
        }
        assert_eq!(Fixed(2.5, 0).to_string(), "3");
        assert_eq!(Fixed(-0.04, 1).to_string(), "0.0");
        assert_eq!(Fixed(f64::NAN, 1).to_string(), "NaN");
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(96 * 1024 * 1024), "96.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn durations_show_the_two_largest_units() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(725), "12m 05s");
        assert_eq!(duration(3 * 3600 + 7 * 60), "3h 07m");
        assert_eq!(duration(2 * 86_400 + 4 * 3600), "2d 04h");
    }

    #[test]
    fn ages_say_just_now_under_a_second() {
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(3), "3s ago");
        assert_eq!(ago(125), "2m 05s ago");
    }

    #[test]
    fn on_the_server_the_time_of_day_is_utc_and_says_so() {
        assert_eq!(
            time_of_day(((14 * 3600 + 5 * 60 + 9) * 1000) as u64),
            "14:05:09 UTC"
        );
    }
}

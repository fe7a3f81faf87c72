//! Value parsers for numeric flags with a range: a value outside it (or not finite) is refused by
//! the argument parser, naming the flag and the range, before any work starts (instead of a
//! panic or an unbounded allocation later).

use std::fmt::Display;
use std::str::FromStr;

/// A parser for a number in `lo..=hi` (NaN and infinities are outside every range).
pub fn within<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
    T::Err: Display,
{
    move |s: &str| {
        let v: T = s.trim().parse().map_err(|e| format!("`{s}`: {e}"))?;
        // `lo <= v && v <= hi` is false for NaN.
        if lo <= v && v <= hi {
            Ok(v)
        } else {
            Err(format!("{s} is not between {lo} and {hi}"))
        }
    }
}

/// Seconds between progress lines: 0 (every step) to a day.
pub const LOG_EVERY: (f64, f64) = (0.0, 86_400.0);
/// Pixels of one figure or explain panel.
pub const PANEL: (u32, u32) = (16, 2048);
/// Pixels of a generated SynthRS image (the tiny profile uses 64).
pub const SYNTH_SIZE: (usize, usize) = (16, 2048);
/// A device memory share in GiB: 1 MiB to 1 PiB.
pub const MEMORY_GIB: (f64, f64) = (1.0 / 1024.0, 1024.0 * 1024.0);
/// A UNet timestep: SD-1.x was trained on 0 to 999.
pub const TIMESTEP: (f64, f64) = (0.0, 999.0);
/// Samples an evaluation may be limited to (0 would print the metrics of nothing).
pub const EVAL_LIMIT: (usize, usize) = (1, usize::MAX);
/// SynthRS's object size multiplier.
pub const OBJECT_SCALE: (f32, f32) = (0.05, 4.0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_the_range_or_not_numbers_are_refused() {
        let seconds = within(LOG_EVERY.0, LOG_EVERY.1);
        assert_eq!(seconds("0").unwrap(), 0.0);
        assert_eq!(seconds("86400").unwrap(), 86_400.0);
        for bad in ["inf", "NaN", "-1", "1e9", "abc"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(
            seconds("inf").unwrap_err(),
            "inf is not between 0 and 86400"
        );
        let panel = within(PANEL.0, PANEL.1);
        assert_eq!(panel("16").unwrap(), 16);
        assert!(panel("4000000000").is_err() && panel("15").is_err() && panel("-3").is_err());
    }
}

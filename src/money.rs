//! Currencies and amounts: parsing at the edge, integer minor units inside.
//!
//! A request carries an [`AmountArg`]: the decimal number the gateway sent, in
//! major units, normalized so that two spellings of one number (`"12.3"`,
//! `"012.30"`) are the same value. Only the shard that owns the account knows
//! its currency, so only the shard turns an `AmountArg` into minor units (or
//! decides it is `invalid_amount`).
//!
//! No floating point anywhere: text is parsed digit by digit, and
//! `rust_decimal::Decimal` converts through its exact mantissa and scale.

use crate::hash;
use rust_decimal::Decimal;
use std::fmt;

/// The currencies this engine supports, with their ISO 4217 minor-unit exponents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Currency {
    /// Chinese yuan: exponent 2.
    CNY,
    /// US dollar: exponent 2.
    USD,
    /// Euro: exponent 2.
    EUR,
    /// Pound sterling: exponent 2.
    GBP,
    /// Hong Kong dollar: exponent 2.
    HKD,
    /// Singapore dollar: exponent 2.
    SGD,
    /// Japanese yen: exponent 0 (no minor unit).
    JPY,
    /// South Korean won: exponent 0 (no minor unit).
    KRW,
    /// Bahraini dinar: exponent 3.
    BHD,
    /// Kuwaiti dinar: exponent 3.
    KWD,
}

impl Currency {
    /// Every supported currency, in discriminant order (the byte the log
    /// stores).
    pub const ALL: [Currency; 10] = [
        Currency::CNY,
        Currency::USD,
        Currency::EUR,
        Currency::GBP,
        Currency::HKD,
        Currency::SGD,
        Currency::JPY,
        Currency::KRW,
        Currency::BHD,
        Currency::KWD,
    ];

    /// The exact ISO code, upper case; anything else is not supported.
    pub fn parse(code: &str) -> Option<Currency> {
        Currency::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The ISO 4217 alphabetic code, as the line format spells it.
    pub fn code(self) -> &'static str {
        match self {
            Currency::CNY => "CNY",
            Currency::USD => "USD",
            Currency::EUR => "EUR",
            Currency::GBP => "GBP",
            Currency::HKD => "HKD",
            Currency::SGD => "SGD",
            Currency::JPY => "JPY",
            Currency::KRW => "KRW",
            Currency::BHD => "BHD",
            Currency::KWD => "KWD",
        }
    }

    /// Digits after the decimal point in major units.
    pub fn exponent(self) -> u32 {
        match self {
            Currency::JPY | Currency::KRW => 0,
            Currency::BHD | Currency::KWD => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Powers of ten up to the largest exponent, without a loop.
const POW10: [u64; 4] = [1, 10, 100, 1000];

/// The largest exponent of any supported currency: a number with more
/// fractional digits is invalid whatever the account.
const EXPONENT_MAX: u32 = 3;

/// An amount as a request states it, in major units, before the account's
/// currency is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AmountArg {
    /// `mantissa * 10^-scale`, normalized: no trailing zero in the mantissa
    /// while `scale > 0`, and `scale <= 3`. Zero is `{0, 0}`. `digits` is
    /// how many fractional digits the text had, trailing zeros included
    /// (saturating at 255): SPEC counts them against the currency's
    /// exponent ("1.230" is invalid in USD), though "1.230" and "1.23" are
    /// the same number for replays.
    Decimal {
        /// The digits without the point: the value times `10^scale`.
        mantissa: u64,
        /// Digits after the point once trailing zeros are dropped, 0..=3.
        scale: u32,
        /// Digits after the point as written, trailing zeros included
        /// (saturating at 255).
        digits: u8,
    },
    /// Not a valid amount in any currency: not of the form
    /// `[0-9]+(\.[0-9]+)?`, or too many fractional digits, or too large.
    /// Kept only as a fingerprint of its normalized text, so that a replay
    /// of the same (invalid) request is still recognised.
    Invalid {
        /// A fixed hash of the text, so that the same invalid amount
        /// compares equal to itself (and a retry of it is a replay).
        fingerprint: u64,
    },
}

impl AmountArg {
    /// Parses the line format's amount text exactly (SPEC, "Money").
    pub fn parse(text: &str) -> AmountArg {
        let bytes = text.as_bytes();
        let (int_part, frac_part) = match text.find('.') {
            Some(dot) => (&bytes[..dot], Some(&bytes[dot + 1..])),
            None => (bytes, None),
        };
        let well_formed = !int_part.is_empty()
            && int_part.iter().all(u8::is_ascii_digit)
            && frac_part.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit));
        if !well_formed {
            return AmountArg::Invalid {
                fingerprint: hash::bytes(0xA1, bytes),
            };
        }
        let digits = frac_part.map_or(0, |f| u8::try_from(f.len()).unwrap_or(u8::MAX));
        // Normalize: no leading zeros in the integer part, no trailing zeros
        // in the fraction.
        let int_part = trim_leading_zeros(int_part);
        let frac_part = trim_trailing_zeros(frac_part.unwrap_or(&[]));
        let scale = frac_part.len();
        let digits_count = int_part.len() + frac_part.len();
        if scale as u32 <= EXPONENT_MAX && digits_count <= 19 {
            let mantissa = int_part
                .iter()
                .chain(frac_part)
                .fold(0u64, |m, d| m * 10 + u64::from(d - b'0'));
            return AmountArg::Decimal {
                mantissa,
                scale: scale as u32,
                digits,
            };
        }
        let mut normalized = Vec::with_capacity(digits_count + 2);
        normalized.extend_from_slice(if int_part.is_empty() { b"0" } else { int_part });
        if !frac_part.is_empty() {
            normalized.push(b'.');
            normalized.extend_from_slice(frac_part);
        }
        AmountArg::Invalid {
            fingerprint: hash::bytes(0xA2, &normalized),
        }
    }

    /// An amount in major units from a `rust_decimal::Decimal`, the way an
    /// embedding gateway usually holds money. Negative numbers are invalid.
    /// Unlike the line format, trailing zeros of the `Decimal`'s scale do
    /// not count against the currency (arithmetic leaves them: 10.00 * 1.5
    /// is 15.000), so `15.000` is a valid USD amount here.
    pub fn from_decimal(value: Decimal) -> AmountArg {
        if value.is_sign_negative() && !value.is_zero() {
            return AmountArg::Invalid {
                fingerprint: hash::bytes(0xA1, value.to_string().as_bytes()),
            };
        }
        AmountArg::parse(&value.normalize().to_string())
    }

    /// An amount given directly in minor units of the account's currency
    /// `exponent`; for embedders that already hold integers.
    pub fn from_minor(minor: u64, exponent: u32) -> AmountArg {
        let mut mantissa = minor;
        let mut scale = exponent;
        while scale > 0 && mantissa != 0 && mantissa.is_multiple_of(10) {
            mantissa /= 10;
            scale -= 1;
        }
        if mantissa == 0 {
            scale = 0;
        }
        AmountArg::Decimal {
            mantissa,
            scale,
            digits: scale as u8,
        }
    }

    /// Minor units in a currency of `exponent`, if the number has no more
    /// fractional digits than that and fits 63 bits. Zero is allowed here;
    /// callers that need `> 0` check it.
    pub fn to_minor(self, exponent: u32) -> Option<i64> {
        match self {
            AmountArg::Decimal {
                mantissa,
                scale,
                digits,
            } if u32::from(digits) <= exponent => {
                debug_assert!(scale <= u32::from(digits));
                let factor = POW10[(exponent - scale) as usize];
                let minor = mantissa.checked_mul(factor)?;
                i64::try_from(minor).ok()
            }
            _ => None,
        }
    }

    /// Minor units if the amount is a valid *positive* amount for `exponent`.
    pub fn to_positive_minor(self, exponent: u32) -> Option<i64> {
        self.to_minor(exponent).filter(|&m| m > 0)
    }

    /// A value that is equal for two amounts exactly when SPEC says they
    /// compare equal.
    pub fn fingerprint(self) -> u64 {
        match self {
            // Not `digits`: "12.3" and "12.30" are the same number.
            AmountArg::Decimal {
                mantissa, scale, ..
            } => hash::mix(hash::mix(0xA3, mantissa), u64::from(scale)),
            AmountArg::Invalid { fingerprint } => fingerprint,
        }
    }
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len());
    &digits[first..]
}

fn trim_trailing_zeros(digits: &[u8]) -> &[u8] {
    let end = digits.iter().rposition(|&d| d != b'0').map_or(0, |p| p + 1);
    &digits[..end]
}

/// Formats minor units as a decimal string with exactly `exponent` fractional
/// digits (SPEC: "balance ... with exactly the currency's exponent digits").
pub fn format_minor(minor: i64, exponent: u32) -> String {
    let mut out = String::with_capacity(24);
    write_minor(&mut out, minor, exponent);
    out
}

/// As [`format_minor`], for figures that sum many accounts (a merchant's)
/// and may pass 2^63-1 minor units.
pub fn format_minor_wide(minor: i128, exponent: u32) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(44);
    if minor < 0 {
        out.push('-');
    }
    let magnitude = minor.unsigned_abs();
    if exponent == 0 {
        let _ = write!(out, "{magnitude}");
        return out;
    }
    let factor = 10u128.pow(exponent);
    let _ = write!(
        out,
        "{}.{:0width$}",
        magnitude / factor,
        magnitude % factor,
        width = exponent as usize
    );
    out
}

/// As [`format_minor`], appending to `out`.
pub fn write_minor(out: &mut String, minor: i64, exponent: u32) {
    use std::fmt::Write;
    if minor < 0 {
        out.push('-');
    }
    let magnitude = minor.unsigned_abs();
    if exponent == 0 {
        let _ = write!(out, "{magnitude}");
        return;
    }
    let factor = 10u64.pow(exponent);
    let _ = write!(
        out,
        "{}.{:0width$}",
        magnitude / factor,
        magnitude % factor,
        width = exponent as usize
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(text: &str, exponent: u32) -> Option<i64> {
        AmountArg::parse(text).to_positive_minor(exponent)
    }

    #[test]
    fn parses_exact_amounts() {
        assert_eq!(minor("12.34", 2), Some(1234));
        assert_eq!(minor("100.5", 2), Some(10050));
        assert_eq!(minor("0012.3", 2), Some(1230));
        assert_eq!(minor("500", 0), Some(500));
        assert_eq!(minor("1.234", 3), Some(1234));
        assert_eq!(minor("0.001", 3), Some(1));
    }

    #[test]
    fn rejects_malformed_text() {
        for text in [
            "", ".", "1.", ".5", "-1", "+1", "1e3", " 1", "1 ", "1,00", "0x10", "1.2.3", "١", "NaN",
        ] {
            assert!(
                matches!(AmountArg::parse(text), AmountArg::Invalid { .. }),
                "{text:?} must be invalid"
            );
        }
    }

    #[test]
    fn precision_counts_even_zeros() {
        assert_eq!(minor("1.230", 2), None, "SPEC: 1.230 is invalid in USD");
        assert_eq!(minor("1.230", 3), Some(1230));
        assert_eq!(minor("1.20", 2), Some(120));
        assert_eq!(minor("5.000", 2), None);
        assert_eq!(minor("0.0", 0), None);
        assert_eq!(
            AmountArg::parse("0.0").to_minor(0),
            None,
            "an overdraft 0.0 in JPY"
        );
        assert_eq!(minor("1.234", 2), None);
        assert_eq!(minor("1.5", 0), None);
        assert_eq!(minor("1.0", 0), None);
        assert_eq!(minor("1", 0), Some(1));
    }

    #[test]
    fn zero_is_not_a_positive_amount() {
        assert_eq!(minor("0", 2), None);
        assert_eq!(minor("0.00", 2), None);
        assert_eq!(AmountArg::parse("0.00").to_minor(2), Some(0));
    }

    #[test]
    fn sixty_three_bits_is_the_limit() {
        assert_eq!(minor("9223372036854775807", 0), Some(i64::MAX));
        assert_eq!(minor("9223372036854775808", 0), None);
        assert_eq!(minor("92233720368547758.07", 2), Some(i64::MAX));
        assert_eq!(minor("92233720368547758.08", 2), None);
        assert_eq!(minor("9223372036854775.807", 3), Some(i64::MAX));
        assert_eq!(minor("99999999999999999999999", 0), None);
        assert_eq!(minor("18446744073709551615", 0), None);
    }

    #[test]
    fn equal_numbers_have_equal_fingerprints() {
        let fp = |t: &str| AmountArg::parse(t).fingerprint();
        assert_eq!(fp("12.3"), fp("12.30"));
        assert_eq!(fp("012.3"), fp("12.300"));
        assert_eq!(fp("1.2340"), fp("1.234"));
        assert_eq!(fp("0"), fp("0.000"));
        assert_eq!(
            fp("1.23456"),
            fp("01.234560"),
            "invalid numbers still compare as numbers"
        );
        assert_eq!(
            fp("123456789012345678901234"),
            fp("00123456789012345678901234.000")
        );
        assert_ne!(fp("12.3"), fp("12.31"));
        assert_ne!(fp("1.23456"), fp("1.23457"));
        assert_ne!(fp("abc"), fp("abd"));
        assert_eq!(fp("abc"), fp("abc"));
    }

    #[test]
    fn decimal_and_minor_constructors_agree_with_text() {
        let d = |s: &str| AmountArg::from_decimal(s.parse::<Decimal>().unwrap());
        assert_eq!(d("12.30"), AmountArg::parse("12.3"));
        assert_eq!(
            d("15.000").to_positive_minor(2),
            Some(1500),
            "a Decimal's scale is lenient"
        );
        assert_eq!(d("500"), AmountArg::parse("500"));
        assert_eq!(d("0.001"), AmountArg::parse("0.001"));
        assert!(matches!(d("-1"), AmountArg::Invalid { .. }));
        assert_eq!(AmountArg::from_minor(1230, 2), AmountArg::parse("12.3"));
        assert_eq!(AmountArg::from_minor(0, 2), AmountArg::parse("0"));
        assert_eq!(AmountArg::from_minor(7, 0), AmountArg::parse("7"));
    }

    #[test]
    fn formats_with_exactly_the_exponent_digits() {
        assert_eq!(format_minor(5125, 2), "51.25");
        assert_eq!(format_minor(0, 2), "0.00");
        assert_eq!(format_minor(-1000, 2), "-10.00");
        assert_eq!(format_minor(-5, 2), "-0.05");
        assert_eq!(format_minor(500, 0), "500");
        assert_eq!(format_minor(1, 3), "0.001");
        assert_eq!(format_minor(i64::MAX, 2), "92233720368547758.07");
        assert_eq!(format_minor(i64::MIN + 1, 3), "-9223372036854775.807");
    }

    #[test]
    fn format_then_parse_round_trips() {
        for exponent in [0, 2, 3] {
            for value in [1i64, 9, 10, 99, 100, 12345, 1 << 40, i64::MAX] {
                let text = format_minor(value, exponent);
                assert_eq!(minor(&text, exponent), Some(value), "{text}");
            }
        }
    }
}

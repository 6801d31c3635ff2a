//! Numbers as written: whether a JSON number literal is exactly the number the validator sees.
//!
//! serde_json reads a number with a fraction or an exponent, or an integer outside the i64 and
//! u64 ranges, as an `f64` (correctly rounded: jsonschema turns on serde_json's
//! `float_roundtrip`), and jsonschema judges that double. `0.99999999999999999` becomes `1.0`,
//! which passes `integer, minimum 1`, while an upstream that reads decimals exactly sees less
//! than 1. The gateway forwards the bytes it was sent, so it refuses such a number rather than
//! judging a neighbour of it.
//!
//! The rule: a literal read as a double must spell that double's shortest round-trip decimal
//! (the digits JavaScript, Python, Java, Go and Rust print for it), in any notation: `0.1`,
//! `1e2`, `100.0`, `1.50E+1`, `-0`. Each double then has exactly one accepted decimal value;
//! accepted literals are ordered as their doubles are, and one is an integer exactly when its
//! double is. So `type`, `minimum`, `maximum`, their exclusive forms, `const` and `enum` answer
//! for the number as written, against a schema whose own numbers follow the same rule (schema
//! files are read by the same parser). Integers within i64 and u64 are held exactly by
//! serde_json and compared exactly by jsonschema: they are not this module's concern.
//!
//! Cost: a literal of at most 15 significant digits whose value is `m × 10^e` with `|e| <= 22`
//! (nearly every number a client sends) is checked with one multiplication or division of
//! doubles (both operands exact, so the result is correctly rounded: Clinger's fast path), and
//! any decimal of at most 15 significant digits is the shortest form of its double (`DBL_DIG`).
//! Other literals are compared with the double formatted by the standard library's shortest
//! formatting, on the stack. Literals longer than [`MAX_LITERAL_LEN`] are refused unread.

use std::fmt::{self, Write};

/// The longest number literal read, in bytes. The shortest form of any double fits in 24
/// (`-2.2250738585072014e-308`); 64 leaves room for trailing zeros and positional notation
/// (`0.000000000000000000001`) and refuses a 10⁶-digit fraction without reading it.
pub const MAX_LITERAL_LEN: usize = 64;

/// Why a number literal is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberProblem {
    /// The double it is read as prints as another decimal: validating the double would judge
    /// a different number.
    Inexact,
    /// Longer than [`MAX_LITERAL_LEN`] bytes.
    TooLong,
}

impl NumberProblem {
    /// The problem, worded to follow "a number" (`... has a number at /a that ...`).
    pub fn describe(self) -> String {
        match self {
            NumberProblem::Inexact => "does not round-trip through a 64-bit float".to_string(),
            NumberProblem::TooLong => format!("is longer than {MAX_LITERAL_LEN} characters"),
        }
    }

    /// The requirement, worded to follow a field (`query.perPage must be ...`).
    pub fn requirement(self) -> String {
        match self {
            NumberProblem::Inexact => {
                "must be a number that round-trips through a 64-bit float".to_string()
            }
            NumberProblem::TooLong => {
                format!("must be a number of at most {MAX_LITERAL_LEN} characters")
            }
        }
    }
}

/// Exact powers of ten as doubles: 10^22 is the largest that a double holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Whether `literal`, a JSON number that serde_json read as `value`, is exactly `value`'s
/// shortest decimal (see the module docs). `literal` is expected to be JSON number syntax;
/// anything else is refused as inexact.
pub fn check(literal: &[u8], value: f64) -> Result<(), NumberProblem> {
    if literal.len() > MAX_LITERAL_LEN {
        return Err(NumberProblem::TooLong);
    }
    let Some(decimal) = Decimal::parse(literal) else {
        return Err(NumberProblem::Inexact);
    };
    if decimal.count == 0 {
        // Every spelling of zero (`0`, `-0`, `0.0e7`) is exactly zero; a double of zero from a
        // literal that is not zero is an underflow (`1e-400`).
        return if value == 0.0 {
            Ok(())
        } else {
            Err(NumberProblem::Inexact)
        };
    }
    if !value.is_finite() || value == 0.0 || value.is_sign_negative() != decimal.negative {
        return Err(NumberProblem::Inexact);
    }
    if decimal.count <= 15 {
        let scale = decimal.exponent - (decimal.count as i64 - 1);
        if let Some(&power) = POW10.get(scale.unsigned_abs() as usize) {
            let significand = decimal.significand() as f64;
            let nearest = if scale >= 0 {
                significand * power
            } else {
                significand / power
            };
            if nearest == value.abs() {
                return Ok(());
            }
        }
    }
    if decimal.is_shortest_of(value.abs()) {
        Ok(())
    } else {
        Err(NumberProblem::Inexact)
    }
}

/// A literal's value as significant digits and a decimal exponent: `d.ddd × 10^exponent`,
/// with no leading or trailing zero digits.
struct Decimal<'a> {
    negative: bool,
    /// The digits of the literal without sign, point or exponent (possibly with zeros around
    /// the significant ones).
    mantissa: &'a [u8],
    /// Index in `mantissa` (point included) of the first significant digit.
    first: usize,
    /// How many significant digits, from the first to the last non-zero one; 0 for zero.
    count: usize,
    /// The power of ten of the first significant digit.
    exponent: i64,
}

impl<'a> Decimal<'a> {
    fn parse(literal: &'a [u8]) -> Option<Decimal<'a>> {
        let (negative, rest) = match literal.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, literal),
        };
        let split = rest
            .iter()
            .position(|b| matches!(b, b'e' | b'E'))
            .unwrap_or(rest.len());
        let (mantissa, exponent_part) = rest.split_at(split);
        let written_exponent = match exponent_part.split_first() {
            None => 0,
            Some((_, digits)) => parse_exponent(digits)?,
        };
        let point = mantissa
            .iter()
            .position(|&b| b == b'.')
            .unwrap_or(mantissa.len());
        let mut first = None;
        let mut last = 0;
        // Significant digits counted without the point; `index` counts digits only.
        let mut index = 0usize;
        let mut first_index = 0usize;
        for (at, &byte) in mantissa.iter().enumerate() {
            match byte {
                b'.' => continue,
                b'0' => {}
                b'1'..=b'9' => {
                    if first.is_none() {
                        first = Some(at);
                        first_index = index;
                    }
                    last = index;
                }
                _ => return None,
            }
            index += 1;
        }
        let Some(first) = first else {
            return Some(Decimal {
                negative,
                mantissa,
                first: 0,
                count: 0,
                exponent: 0,
            });
        };
        // The digit at digit index `first_index` stands for 10^(point - 1 - first_index).
        let exponent = point as i64 - 1 - first_index as i64 + written_exponent;
        Some(Decimal {
            negative,
            mantissa,
            first,
            count: last - first_index + 1,
            exponent,
        })
    }

    /// The significant digits, in order.
    fn digits(&self) -> impl Iterator<Item = u8> + '_ {
        self.mantissa
            .get(self.first..)
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(u8::is_ascii_digit)
            .take(self.count)
    }

    /// The significant digits as an integer; only called with at most 15 of them.
    fn significand(&self) -> u64 {
        self.digits()
            .fold(0, |acc, digit| acc * 10 + u64::from(digit - b'0'))
    }

    /// Whether these digits and exponent are the shortest round-trip form of `positive`,
    /// as the standard library's `{:e}` formatting prints it (`1.5e-7`, `1e2`).
    fn is_shortest_of(&self, positive: f64) -> bool {
        let mut printed = Stack::default();
        if write!(printed, "{positive:e}").is_err() {
            return false;
        }
        let text = printed.as_bytes();
        let Some(e) = text.iter().position(|&b| b == b'e') else {
            return false;
        };
        let (digits, exponent) = text.split_at(e);
        let Some(exponent) = exponent.get(1..).and_then(parse_exponent) else {
            return false;
        };
        let digits = digits.iter().copied().filter(u8::is_ascii_digit);
        exponent == self.exponent && digits.eq(self.digits())
    }
}

/// An exponent's optional sign and digits; saturated far beyond any double's range (the
/// literal is at most 64 bytes, but its exponent may still overflow an integer).
fn parse_exponent(text: &[u8]) -> Option<i64> {
    const CAP: i64 = 1_000_000;
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        Some((b'+', digits)) => (false, digits),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = (value * 10 + i64::from(byte - b'0')).min(CAP);
    }
    Some(if negative { -value } else { value })
}

/// A small formatting buffer on the stack: the longest `{:e}` of a positive double is 23 bytes.
#[derive(Default)]
struct Stack {
    bytes: [u8; 32],
    len: usize,
}

impl Stack {
    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

impl Write for Stack {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

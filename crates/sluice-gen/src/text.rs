//! Decimal and hexadecimal digits written straight into byte buffers, without allocating.

/// Writes the lowest `dst.len()` decimal digits of `n` into `dst`, zero-padded on the left.
pub(crate) fn fill_decimal(dst: &mut [u8], mut n: u64) {
    for digit in dst.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Appends `n` in decimal, zero-padded to at least `min_width` digits (at most 20).
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64, min_width: usize) {
    // u64::MAX has 20 digits.
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let start = start.min(digits.len().saturating_sub(min_width));
    out.extend_from_slice(&digits[start..]);
}

/// Appends the 32 lowercase hexadecimal digits of `n`, most significant first.
pub(crate) fn push_hex_u128(out: &mut Vec<u8>, n: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0; 32];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[(n >> (124 - 4 * i)) as usize & 0xf];
    }
    out.extend_from_slice(&digits);
}

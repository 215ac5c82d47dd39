//! Identifiers and numbers as text, written without `fmt` because they run once or twice per
//! record: the hex of an event ID's hash and the decimal digits of line numbers and times.

/// First 16 bytes of a hash as 32 lower-case hex characters.
pub fn hex16(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for &b in &bytes[..16] {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// `n` in decimal, written into `buf`: the source label and the event ID's key write numbers
/// for every record, and `fmt` machinery costs more than the digits.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ASCII digits")
}

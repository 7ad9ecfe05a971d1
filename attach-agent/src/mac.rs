//! MAC addresses as users write them (`02:42:0a:00:00:02`) and as the Engine API and CNI
//! results show them: one parser for every front, so all refuse the same inputs.

/// A unicast, non-zero MAC written as six two-digit hex octets separated by `:` (or all by
/// `-`, as Go's `net.ParseMAC` also takes); any case.
pub fn parse(s: &str) -> Option<[u8; 6]> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = s.split(sep).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    // A unicast address only: the low bit of the first octet marks multicast.
    (mac[0] & 1 == 0 && mac != [0; 6]).then_some(mac)
}

/// `aa:bb:cc:dd:ee:ff`, lower case.
pub fn text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_macs_parse_and_print_back() {
        assert_eq!(parse("02:42:0a:01:00:05"), Some([2, 0x42, 10, 1, 0, 5]));
        assert_eq!(parse("02-42-0A-01-00-05"), Some([2, 0x42, 10, 1, 0, 5]));
        assert_eq!(text([2, 0x42, 10, 1, 0, 5]), "02:42:0a:01:00:05");
        for bad in [
            "",
            "02:42:0a:01:00",
            "02:42:0a:01:00:05:06",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "2:42:a:1:0:5",
            "02:42:0a:01:00:+5",
            "02:42-0a:01:00:05",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}

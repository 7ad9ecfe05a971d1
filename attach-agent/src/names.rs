//! Names: the rules every container, network and host name obeys wherever it comes from (the
//! API, CNI, the cluster store), and Docker-style generated container names
//! (`adjective_scientist`) for `create` without `--name`.

/// The longest container or network name: a file name under /run/netns, a DNS label chain.
pub const NAME_MAX: usize = 64;
/// The longest hostname (a DNS name).
pub const HOSTNAME_MAX: usize = 253;

/// A container or network name: DNS label rules, no `/` or `..`, at most [`NAME_MAX`].
pub fn is_valid_name(name: &str) -> bool {
    resolver::records::valid_name(name) && name.len() <= NAME_MAX
}

/// A network interface name: 1 to 15 printable characters, no `/`, `:` or space, not `.` or
/// `..` (the kernel's rules, and safe in a /sys path).
pub fn is_valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// A hostname or alias: a DNS name of letters, digits, `-` and `_` labels, since it is served
/// and written to /etc/hosts (a newline or a space would forge lines there).
pub fn is_valid_hostname(name: &str) -> bool {
    name.len() <= HOSTNAME_MAX
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
        })
}

const LEFT: &[&str] = &[
    "admiring", "bold", "brave", "busy", "calm", "clever", "eager", "elated", "epic", "focused",
    "gallant", "happy", "jolly", "keen", "lucid", "modest", "nifty", "quirky", "serene", "vibrant",
];
const RIGHT: &[&str] = &[
    "babbage", "curie", "darwin", "einstein", "euler", "feynman", "galileo", "hopper", "kepler",
    "lamport", "lovelace", "meitner", "noether", "pasteur", "ritchie", "shannon", "tesla",
    "thompson", "turing", "wozniak",
];

/// A name for which `taken` is false.
pub fn generate(taken: impl Fn(&str) -> bool) -> String {
    loop {
        let base = format!(
            "{}_{}",
            LEFT[fastrand::usize(..LEFT.len())],
            RIGHT[fastrand::usize(..RIGHT.len())]
        );
        if !taken(&base) {
            return base;
        }
        let numbered = format!("{base}{}", fastrand::u32(1..1000));
        if !taken(&numbered) {
            return numbered;
        }
    }
}

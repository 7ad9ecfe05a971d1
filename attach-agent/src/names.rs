//! Docker-style generated container names (`adjective_scientist`), for `create` without
//! `--name`.

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

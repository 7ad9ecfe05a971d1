//! Output as the docker CLI prints it: its table layout, its indented JSON; and `K=V` flags.

use std::collections::BTreeMap;
use std::io::Write;

/// `K=V` (or a bare `K`, with an empty value) flags as a map, as `--label` and `--opt` take them.
pub fn key_values(items: &[String]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect()
}

/// Print Docker's table layout (Go's tabwriter with minwidth 10, padding 3): each column as wide as
/// its widest cell plus 3, at least 10; the first column holds 12-character ids.
pub fn print_table(rows: &[Vec<String>]) {
    let _ = std::io::stdout()
        .lock()
        .write_all(format_table(rows).as_bytes());
}

/// See [`print_table`]: the text it prints.
pub fn format_table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            let widest = rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
            let widest = if i == 0 { widest.max(12) } else { widest };
            (widest + 3).max(10) - 3
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i] + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Indented by four spaces, as `docker inspect` prints.
pub fn print_json(v: &impl serde::Serialize) {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_ok() {
        println!("{}", String::from_utf8_lossy(&buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_laid_out_as_docker_does() {
        let rows = vec![
            vec![
                "NETWORK ID".to_string(),
                "NAME".into(),
                "DRIVER".into(),
                "SCOPE".into(),
            ],
            vec![
                "58797851913d".to_string(),
                "demo".into(),
                "bridge".into(),
                "local".into(),
            ],
        ];
        assert_eq!(
            format_table(&rows),
            "NETWORK ID     NAME      DRIVER    SCOPE\n58797851913d   demo      bridge    local\n"
        );
    }

    #[test]
    fn key_values_keep_bare_keys() {
        let kv = key_values(&["a=1".into(), "b".into(), "c=x=y".into()]);
        assert_eq!(kv["a"], "1");
        assert_eq!(kv["b"], "");
        assert_eq!(kv["c"], "x=y");
    }
}

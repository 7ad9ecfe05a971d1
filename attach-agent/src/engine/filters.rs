//! Docker's `filters` query parameter, and the network filters of `GET /networks`.

use std::collections::{BTreeMap, HashMap};

use super::{bad_request, ApiResult};
use crate::state::{Network, State};

/// Docker's `filters` query parameter: `{"name":{"x":true}}` or the older `{"name":["x"]}`.
pub fn parse_filters(raw: Option<&String>) -> ApiResult<HashMap<String, Vec<String>>> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let v: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| bad_request(format!("invalid filter: {e}")))?;
    let mut out = HashMap::new();
    let obj = v
        .as_object()
        .ok_or_else(|| bad_request("invalid filter: not an object"))?;
    for (k, vals) in obj {
        let list: Vec<String> = match vals {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
            _ => return Err(bad_request(format!("invalid filter '{k}'"))),
        };
        out.insert(k.clone(), list);
    }
    Ok(out)
}

pub fn label_matches(labels: &BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    }
}

/// The filters `GET /networks` knows; any other is refused, as the Engine does.
pub const NETWORK_FILTERS: [&str; 7] =
    ["name", "id", "label", "driver", "type", "dangling", "scope"];

pub fn check_network_filters(filters: &HashMap<String, Vec<String>>) -> ApiResult<()> {
    match filters
        .keys()
        .find(|k| !NETWORK_FILTERS.contains(&k.as_str()))
    {
        Some(k) => Err(bad_request(format!("invalid filter '{k}'"))),
        None => Ok(()),
    }
}

/// Whether `net` passes every filter: within one filter any value may match, and a filter
/// without values passes everything.
pub fn network_matches(
    filters: &HashMap<String, Vec<String>>,
    net: &Network,
    state: &State,
) -> bool {
    filters.iter().all(|(k, vals)| {
        vals.is_empty()
            || vals.iter().any(|v| match k.as_str() {
                "name" => net.name.contains(v.as_str()),
                "id" => net.id.starts_with(v.as_str()),
                "label" => label_matches(&net.labels, v),
                "driver" => net.driver.name() == v,
                "type" => v == "custom",
                "scope" => v == net.scope(),
                "dangling" => {
                    let used = state
                        .containers
                        .values()
                        .any(|c| c.endpoint(&net.id).is_some());
                    (v == "true" || v == "1") != used
                }
                _ => false,
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::test_network;

    fn filters(raw: &str) -> HashMap<String, Vec<String>> {
        parse_filters(Some(&raw.to_string())).unwrap()
    }

    #[test]
    fn both_forms_of_the_parameter_parse() {
        assert_eq!(filters(r#"{"name":{"web":true}}"#)["name"], ["web"]);
        assert_eq!(filters(r#"{"name":["a","b"]}"#)["name"], ["a", "b"]);
        assert!(parse_filters(None).unwrap().is_empty());
        assert!(parse_filters(Some(&"{".to_string())).is_err());
        assert!(parse_filters(Some(&r#"{"name":1}"#.to_string())).is_err());
        assert!(check_network_filters(&filters(r#"{"colour":["red"]}"#)).is_err());
        assert!(check_network_filters(&filters(r#"{"label":["a"]}"#)).is_ok());
    }

    #[test]
    fn networks_match_every_filter_and_any_value() {
        let mut net = test_network("frontend", "10.8.0.0/24", None);
        net.labels.insert("tier".into(), "web".into());
        let state = State::default();
        let m = |raw: &str| network_matches(&filters(raw), &net, &state);
        assert!(m(r#"{"name":["front"]}"#), "name is a substring match");
        assert!(
            m(&format!(r#"{{"id":["{}"]}}"#, &net.id[..6])),
            "id is a prefix match"
        );
        assert!(m(r#"{"label":["tier"]}"#) && m(r#"{"label":["tier=web"]}"#));
        assert!(!m(r#"{"label":["tier=db"]}"#));
        assert!(m(r#"{"driver":["bridge"]}"#) && !m(r#"{"driver":["overlay"]}"#));
        assert!(m(r#"{"scope":["local"]}"#) && m(r#"{"type":["custom"]}"#));
        assert!(m(r#"{"dangling":["true"]}"#), "no container uses it");
        assert!(m(r#"{"name":["nope","front"]}"#), "any value of one filter");
        assert!(
            !m(r#"{"name":["front"],"driver":["overlay"]}"#),
            "every filter"
        );
    }
}

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
